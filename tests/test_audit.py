"""``fxai-compat audit``: the stock callbacks are all ready; a user's package with a broken signature, a
trainer attribute outside the surface, a file that does not import and a duck-typed callback is reported
class by class; the JSON schema; exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fxai_compat.audit import CANNOT_ADAPT, NEEDS_ATTENTION, READY, SCHEMA_VERSION, audit
from fxai_compat.cli import main
from legacy_callbacks import CALLBACK_CLASSES, CallbackManager, CallbackSignatureError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "audit_pkg"


@pytest.fixture(autouse=True)
def clean_imports(monkeypatch):
    """Each test imports the audited code afresh; ports it registers do not outlive the test."""
    from fxai_compat.toggle import REGISTRY

    monkeypatch.delenv("FXAI_CALLBACK_IMPL", raising=False)
    registry = dict(REGISTRY)
    before = set(sys.modules)
    yield
    REGISTRY.clear()
    REGISTRY.update(registry)
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("audit_pkg", "userpkg", "plain_mod", "broken_mod") or name.startswith("_fxai_audit_"):
            del sys.modules[name]


def by_name(report):
    return {c.qualname: c for c in report.classes}


def test_the_six_stock_callbacks_are_ready_and_have_native_ports():
    from fxai_compat.toggle import REGISTRY

    report = audit("legacy_callbacks")
    assert report.kind == "package" and report.exit_code == 0
    assert all(f.imported and f.error is None for f in report.files)
    classes = by_name(report)
    assert set(classes) == {cls.__qualname__ for cls in CALLBACK_CLASSES.values()}
    for section, cls in CALLBACK_CLASSES.items():
        c = classes[cls.__qualname__]
        assert c.verdict == READY and c.verdict_text == "ready" and c.reasons == []
        assert c.kind == "subclass" and c.analysis == "imported" and c.module == cls.__module__
        assert c.port["name"] == section and REGISTRY[section].legacy is cls
        assert c.signature_problems == [] and c.outside_surface == []
    metrics = classes["MetricsCallback"]
    assert [(e.event, e.maps_to) for e in metrics.events] == [
        ("on_episode_end", "RL event episode_end"),
        ("on_metrics_computed", "Lightning on_train_epoch_end"),
        ("on_cycle_complete", "Lightning on_train_epoch_end")]
    assert [e.receives for e in metrics.events] == [["episode_info"], ["metrics"], ["trainer", "metrics"]]
    assert [(u["attr"], u["event"]) for u in metrics.trainer_uses] == [("context", "on_cycle_complete")]
    continuous = classes["ContinuousTrainingCallback"]
    assert {u["attr"] for u in continuous.trainer_uses} == {"load_checkpoint"}
    assert not any("load_checkpoint" in note for note in continuous.notes)  # it loads in on_training_start
    assert classes["CheckpointCallback"].port["native"] == "fxai_compat.toggle:_native_checkpoint"
    assert classes["OptunaCallback"].port["native"] == "fxai_compat.callbacks.optuna:OptunaPruningCallback"
    assert report.summary() == {"files": 11, "import_errors": 0, "classes": 6, "ready": 6,
                                "needs_attention": 0, "cannot_adapt": 0}


def test_a_users_package_is_reported_class_by_class():
    report = audit(str(FIXTURE))
    assert report.kind == "package" and report.exit_code == 1
    classes = by_name(report)
    assert set(classes) == {"RewardTracker", "WiderMetrics", "BadSignature", "PeeksAtTrainer",
                            "NeedsMissingDependency", "DuckTypedLogger"}  # not NotACallback, not the native port

    bad = classes["BadSignature"]
    assert bad.verdict == CANNOT_ADAPT and bad.verdict_text.startswith("cannot adapt: BadSignature.on_episode_end")
    assert [e.event for e in bad.events if e.error] == ["on_episode_end"]
    # The very check and message of wrapping it.
    with pytest.raises(CallbackSignatureError) as raised:
        CallbackManager([sys.modules["audit_pkg.broken_signature"].BadSignature()])
    assert bad.signature_problems == [str(raised.value)]
    assert "parameter 'info' has no default and is not offered by on_episode_end" in bad.signature_problems[0]

    peek = classes["PeeksAtTrainer"]
    assert peek.verdict == NEEDS_ATTENTION and peek.outside_surface == ["some_private_attr"]
    assert peek.verdict_text == ("needs attention: trainer.some_private_attr (on_cycle_complete, line 8) "
                                 "is outside the trainer surface")
    assert {u["attr"]: u["in_surface"] for u in peek.trainer_uses} == {
        "some_private_attr": False, "context": True, "cycle": True}

    missing = classes["NeedsMissingDependency"]
    assert missing.analysis == "static" and missing.verdict == NEEDS_ATTENTION and missing.kind == "subclass"
    assert "did not import (ModuleNotFoundError: No module named 'fxai_audit_missing_dependency')" in missing.verdict_text
    assert [(e.event, e.receives) for e in missing.events] == [("on_rollout_end", ["trainer", "rollout_info"])]
    assert [u["attr"] for u in missing.trainer_uses] == ["total_timesteps"]
    broken_file = next(f for f in report.files if f.module == "audit_pkg.import_error")
    assert not broken_file.imported and broken_file.error_line == 3 and broken_file.classes == 1
    assert broken_file.error == "ModuleNotFoundError: No module named 'fxai_audit_missing_dependency'"

    duck = classes["DuckTypedLogger"]
    assert duck.kind == "duck-typed" and duck.verdict == READY and duck.port is None
    assert [(e.event, e.wants_all) for e in duck.events] == [
        ("on_training_start", False), ("on_step_end", True), ("on_checkpoint_saved", False)]
    assert [e.maps_to for e in duck.events] == [
        "Lightning setup", "RL event step_end", "NotifyingCheckpointIO, after the file is written"]

    tracker = classes["RewardTracker"]  # its port is registered by the package itself, on import
    assert tracker.verdict == READY
    assert tracker.port == {"name": "reward_tracker", "native": "audit_pkg.native_ports:RewardTrackerPort"}
    wider = classes["WiderMetrics"]
    assert wider.verdict == READY and wider.port is None
    assert {e.defined_in for e in wider.events} == {"legacy_callbacks.metrics.MetricsCallback"}
    assert any("whose port is 'metrics'" in note for note in wider.notes)
    assert report.summary() == {"files": 7, "import_errors": 1, "classes": 6, "ready": 3,
                                "needs_attention": 2, "cannot_adapt": 1}


def test_a_file_that_does_not_import_gets_the_same_checks_from_its_source(tmp_path):
    """The static check of a file that fails to import says what importing it would have said."""
    body = textwrap.dedent('''
        import functools
        from legacy_callbacks import BaseCallback

        print("side effect at import")  # goes to stderr, never into --json output


        def shared(self, trainer, metrics):
            return trainer.core


        class Picky(BaseCallback):
            def on_step_end(self, trainer, step_info, extra, *, flag: bool = False):
                trainer.lightning_trainer.save_checkpoint("x")

            def on_update_end(self, info, /):
                pass

            @staticmethod
            def on_step_start(step):
                pass

            on_cycle_complete = shared
            on_episode_end = None


        class Child(Picky):
            on_step_end = None

            async def on_rollout_end(self, rollout_info):
                pass

            def on_evaluation_end(self, trainer, **kwargs):
                trainer.load_checkpoint(kwargs["eval_results"]["path"])
        ''')
    (tmp_path / "good" / "userpkg").mkdir(parents=True)
    (tmp_path / "bad" / "userpkg").mkdir(parents=True)
    for side in ("good", "bad"):
        (tmp_path / side / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "good" / "userpkg" / "mod.py").write_text(body)
    assert body.startswith("\n")  # the failing import takes that empty first line: the line numbers stay
    (tmp_path / "bad" / "userpkg" / "mod.py").write_text("import fxai_audit_not_installed" + body)
    imported = by_name(audit(str(tmp_path / "good")))
    for name in [n for n in sys.modules if n.split(".")[0] == "userpkg"]:
        del sys.modules[name]
    static = by_name(audit(str(tmp_path / "bad")))
    for name in ("Picky", "Child"):
        a, b = imported[name], static[name]
        assert (a.analysis, b.analysis) == ("imported", "static")
        assert [e.event for e in a.events] == [e.event for e in b.events]
        assert [e.receives for e in a.events] == [e.receives for e in b.events]
        assert a.signature_problems == b.signature_problems
        assert a.outside_surface == b.outside_surface
        assert [r for r in a.reasons] == [r for r in b.reasons if "did not import" not in r]
    picky = imported["Picky"]
    assert picky.verdict == CANNOT_ADAPT and len(picky.signature_problems) == 2
    assert "parameter 'extra' has no default and is not offered by on_step_end" in picky.signature_problems[0]
    assert "parameter 'info' has no default and is not offered by on_update_end" in picky.signature_problems[1]
    assert picky.outside_surface == ["core", "lightning_trainer"]
    assert "on_episode_end" not in [e.event for e in picky.events]  # set to None: turned off
    child = imported["Child"]
    assert [e.event for e in child.events] == ["on_step_start", "on_rollout_end", "on_update_end",  # contract order
                                               "on_evaluation_end", "on_cycle_complete"]
    assert any("on_rollout_end is async" in r for r in child.reasons)
    assert any("trainer.load_checkpoint in on_evaluation_end" in n for n in child.notes)


def test_a_lightning_callback_with_legacy_methods_cannot_be_adapted(tmp_path):
    (tmp_path / "plain_mod.py").write_text(textwrap.dedent('''
        import pytorch_lightning as pl

        class Confused(pl.Callback):
            def on_episode_end(self, episode_info):
                pass

        class Native(pl.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                pass
        '''))
    report = audit(str(tmp_path / "plain_mod.py"))
    assert report.kind == "file" and [c.qualname for c in report.classes] == ["Confused"]
    assert report.classes[0].verdict_text.startswith("cannot adapt: it is a Lightning callback")
    assert report.exit_code == 1


def test_json_output_follows_the_documented_schema(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("train: {n_envs: 2, n_steps: 32, minibatch_size: 32}\n"
                      "callbacks:\n  reward_tracker: {impl: shadow}\n  metrics: {impl: native}\n  nope: {}\n")
    code = main(["audit", str(FIXTURE), "--config", str(config), "--json"])
    out = capsys.readouterr().out
    data = json.loads(out)
    assert code == 1 == data["exit_code"]
    assert set(data) == {"schema", "target", "kind", "configs", "files", "classes", "warnings", "summary", "exit_code"}
    assert data["schema"] == SCHEMA_VERSION and data["kind"] == "package" and data["configs"] == [str(config)]
    assert set(data["summary"]) == {"files", "import_errors", "classes", "ready", "needs_attention", "cannot_adapt"}
    for f in data["files"]:
        assert set(f) == {"path", "module", "imported", "error", "error_line", "classes"}
    class_keys = {"name", "qualname", "module", "file", "line", "kind", "analysis", "bases", "events",
                  "signature_problems", "trainer_uses", "outside_surface", "port", "ports", "selected_by",
                  "legacy_selected", "verdict", "reasons", "verdict_text", "notes"}
    event_keys = {"event", "defined_in", "line", "source_kind", "source", "maps_to", "signature", "receives",
                  "wants_all", "error"}
    for c in data["classes"]:
        assert set(c) == class_keys
        assert c["verdict"] in ("ready", "needs attention", "cannot adapt")
        assert c["kind"] in ("subclass", "duck-typed") and c["analysis"] in ("imported", "static")
        assert c["verdict_text"].startswith(c["verdict"])
        for e in c["events"]:
            assert set(e) == event_keys and e["source_kind"] in ("rl", "lightning", "checkpoint_io")
        for use in c["trainer_uses"]:
            assert set(use) == {"attr", "event", "line", "in_surface"}
    classes = {c["qualname"]: c for c in data["classes"]}
    assert classes["RewardTracker"]["selected_by"] == [
        {"config": str(config), "entry": "reward_tracker", "impl": "shadow", "source": "config", "enabled": True}]
    assert classes["RewardTracker"]["legacy_selected"] is True  # shadow runs the legacy class as the control
    assert classes["DuckTypedLogger"]["legacy_selected"] is False and classes["DuckTypedLogger"]["selected_by"] == []
    assert any("callbacks.nope names no registered port" in w for w in data["warnings"])


def test_config_selection_follows_the_toggle_precedence(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("train: {n_envs: 2, n_steps: 32, minibatch_size: 32}\n"
                      "callbacks:\n  metrics: {impl: native}\n  checkpoint: {save_dir: best}\n"
                      "  evaluation: {enabled: false}\n")
    monkeypatch.setenv("FXAI_CALLBACK_IMPL", "checkpoint=shadow")
    classes = by_name(audit("legacy_callbacks", [str(config)]))
    pick = {name: [(s["impl"], s["source"], s["enabled"]) for s in classes[name].selected_by]
            for name in ("MetricsCallback", "CheckpointCallback", "EvaluationCallback", "WandbCallback")}
    assert pick == {"MetricsCallback": [("native", "config", True)],
                    "CheckpointCallback": [("shadow", "FXAI_CALLBACK_IMPL", True)],
                    "EvaluationCallback": [("legacy", "default", False)], "WandbCallback": []}
    assert classes["CheckpointCallback"].legacy_selected is True
    for name in ("MetricsCallback", "EvaluationCallback", "WandbCallback"):
        assert classes[name].legacy_selected is False
    assert any("no given run file runs this legacy class" in n for n in classes["MetricsCallback"].notes)


@pytest.mark.parametrize("target, config, code, message", [
    ("legacy_callbacks", None, 0, None),
    (str(FIXTURE), None, 1, None),
    (str(FIXTURE / "duck.py"), None, 0, None),
    ("legacy_callbacks.metrics", None, 0, None),
    ("no/such/folder", None, 2, "audit target no/such/folder does not exist."),
    ("no_such_module_anywhere", None, 2, "audit target 'no_such_module_anywhere' is not a file, a folder or an importable module."),
    ("no_such_pkg.sub", None, 2, "audit target 'no_such_pkg.sub' cannot be located (ModuleNotFoundError"),
    ("legacy_callbacks", "missing.yaml", 2, "Cannot read config file missing.yaml"),
    ("empty", None, 2, "is a folder without any .py file"),
])
def test_exit_codes(tmp_path, monkeypatch, capsys, target, config, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    argv = ["audit", target] + (["--config", config] if config else [])
    assert main(argv) == code
    captured = capsys.readouterr()
    if message is None:
        assert "legacy callback class(es)" in captured.out
    else:
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("fxai-compat: error: ") and message in captured.err


def test_module_and_file_targets_and_text_output(capsys):
    report = audit("legacy_callbacks.metrics")
    assert report.kind == "module" and [c.qualname for c in report.classes] == ["MetricsCallback"]
    report = audit(str(FIXTURE / "duck.py"))
    assert report.kind == "file" and report.classes[0].module == "audit_pkg.duck"
    assert main(["audit", str(FIXTURE)]) == 1
    out = capsys.readouterr().out
    assert "files that did not import (their classes were checked statically):" in out
    assert "  verdict   cannot adapt: BadSignature.on_episode_end(self, info)" in out
    assert "  trainer   context, cycle, some_private_attr (OUTSIDE THE SURFACE)" in out
    assert "  port      reward_tracker -> audit_pkg.native_ports:RewardTrackerPort" in out
    assert out.rstrip().endswith("6 legacy callback class(es) in 7 file(s): 3 ready, 2 need(s) attention, "
                                 "1 cannot be adapted; 1 file(s) did not import.")


def test_the_console_script(tmp_path):
    exe = Path(sys.executable).with_name("fxai-compat")
    env = {key: value for key, value in os.environ.items() if key != "FXAI_CALLBACK_IMPL"}
    result = subprocess.run([str(exe), "audit", "legacy_callbacks", "--json"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["ready"] == 6
