"""The per-callback legacy/native toggle: each built-in pair in a real fit under both implementations (the job done,
the same observables), override precedence, every validation error, user registration, and the ``train`` command
saying (and logging) which implementation each callback used."""

from __future__ import annotations

import glob
import math
import os
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import fxai_compat
from fxai_compat import ConfigError, LegacyCallbackAdapter, fit
from fxai_compat.callbacks import RLCallback
from fxai_compat.callbacks.continuous_training import continue_training
from fxai_compat.cli import load_run_config, main
from fxai_compat.toggle import (BUILTIN_PORTS, ENV_VAR, REGISTRY, build_callbacks, parse_impl_overrides,
                                register_port, resolve_impls, validate_callbacks)
from legacy_callbacks import BaseCallback

from conftest import normalize, same, tiny
from test_native_wandb import read_history

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parent.parent


# -- each built-in pair, legacy and native, in a real fit -------------------------------------------

def _options(name: str, d: Path) -> dict:
    return {
        "metrics": {"window_size": 5},
        "checkpoint": {"save_dir": str(d / "best"), "save_freq": 1},
        "wandb": {"project": "toggle-test", "mode": "offline", "dir": str(d)},
        "evaluation": {"reward_threshold": None},
        "continuous_training": {"checkpoint_dir": str(d / "versions"), "keep_versions": 2},
        # One study per implementation (its first trial is never pruned), both in one SQLite file.
        "optuna": {"study_name": f"toggle-{d.name}", "storage": f"sqlite:///{d.parent / 'optuna.db'}"},
    }[name]


def _config(d: Path):
    return tiny(d, cycles=3, eval_every=1, checkpoint_every=1, hidden_sizes=(8,))


def _run(name: str, impl: str, root: Path, sessions: int = 1):
    """Build ``{name: options + impl}`` with build_callbacks and fit it (``sessions`` times, each a new process's
    worth of objects); returns the last (built, trainer)."""
    d = root / impl
    d.mkdir(parents=True, exist_ok=True)
    section = {name: {**_options(name, d), "impl": impl}}
    for _ in range(sessions):
        built = build_callbacks({"callbacks": section}, env={})
        assert built.impls == {name: impl} and built.sources == {name: "config"}
        assert built.describe() == f"{name}={impl} (config)"
        side = built.legacy if impl == "legacy" else built.native
        assert list(side) == [name] and not (built.native if impl == "legacy" else built.legacy)
        if impl == "legacy":
            assert [type(cb) for cb in built.callbacks] == [LegacyCallbackAdapter]
        else:
            assert built.callbacks == [built.native[name]]
        if built.loggers:
            # A W&B run another test left open would be returned by the new WandbLogger's wandb.init.
            from wandb.sdk import wandb_setup

            wandb_setup.singleton().finish_all_active_runs()
        run = continue_training if (name, impl) == ("continuous_training", "native") else fit
        try:
            trainer = run(_config(d), built.callbacks, logger=built.loggers or False)
        finally:
            for logger in built.loggers:  # a WandbLogger keeps its run open for the next one in this process
                logger.experiment.finish()
    return built, trainer


def _history(run_dir, timeout=20.0):
    """The offline run's history records. wandb-core writes the run file asynchronously: run.finish() can return
    before the history is on disk (seen under load: a complete 21 kB file a moment later, none of it at first)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_history(run_dir)
        if any("episode/reward" in r for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _same_observables(name, legacy_built, native_built):
    pair = REGISTRY[name]
    legacy_cb, native_cb = legacy_built.legacy[name], native_built.native[name]
    for obs in pair.observables:
        a, b = normalize(obs.legacy(legacy_cb)), normalize(obs.native(native_cb))
        assert same(a, b, obs.tolerance), (name, obs.name, a, b)
    return len(pair.observables)


def _params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.policy.parameters()])


@pytest.mark.parametrize("name", BUILTIN_PORTS)
def test_each_builtin_pair_does_its_job_under_both_implementations(name, tmp_path):
    sessions = 2 if name == "continuous_training" else 1
    (legacy, legacy_trainer), (native, native_trainer) = (_run(name, impl, tmp_path, sessions)
                                                          for impl in ("legacy", "native"))
    lcb, ncb = legacy.legacy[name], native.native[name]
    cycles = _config(tmp_path).cycles

    if name == "metrics":
        for cb in (lcb, ncb):
            assert [r["cycle"] for r in cb.history] == list(range(cycles))
            assert all(math.isfinite(v) for v in cb.window_stats().values())
        assert same(normalize(lcb.history), normalize(ncb.history))
    elif name == "checkpoint":
        assert lcb.best_cycle is not None and lcb.best_cycle == ncb.best_cycle
        legacy_files = sorted(os.listdir(tmp_path / "legacy" / "best"))
        assert legacy_files == ["best_model.pt"] + [f"model_cycle_{c:04d}.pt" for c in range(cycles)]
        native_files = set(os.listdir(tmp_path / "native" / "best"))
        assert {f"model-cycle{c:04d}.ckpt" for c in range(cycles)} | {f"best-cycle{ncb.best_cycle:04d}.ckpt"} <= native_files
    elif name == "wandb":
        histories = []
        for impl in ("legacy", "native"):
            assert glob.glob(str(tmp_path / impl / "wandb" / "offline-run-*" / "run-*.wandb"))
            records = _history(tmp_path / impl)
            histories.append([r["episode/reward"] for r in records if "episode/reward" in r])
            assert histories[-1], (impl, [sorted(r) for r in records])
        assert same(normalize(histories[0]), normalize(histories[1])), histories
        assert lcb.run is not None and native.loggers and native.loggers[0].experiment is not None
    elif name == "evaluation":
        for cb in (lcb, ncb):
            assert cb.num_evaluations == cycles and [r["cycle"] for r in cb.history] == list(range(cycles))
            assert cb.best_cycle is not None and cb.stopped_at_cycle is None
    elif name == "continuous_training":
        # The second session resumed from the first on both sides and continued the same run.
        assert lcb.resumed_from.endswith("version_0003.ckpt") and ncb.resumed_from.endswith("last.ckpt")
        assert ncb.version == 1
        legacy_core, native_core = legacy_trainer.lightning_module.core, native_trainer.lightning_module.core
        assert (legacy_core.cycles_completed, legacy_core.total_timesteps, legacy_core.num_episodes) == (
            native_core.cycles_completed, native_core.total_timesteps, native_core.num_episodes)
        assert legacy_core.cycles_completed == 2 * cycles
        assert torch.allclose(_params(legacy_trainer.lightning_module), _params(native_trainer.lightning_module),
                              atol=1e-6)
        # keep_versions: 2 on both sides.
        assert sorted(os.listdir(tmp_path / "legacy" / "versions")) == ["version_0005.ckpt", "version_0006.ckpt"]
        assert sorted(os.listdir(tmp_path / "native" / "versions")) == ["last.ckpt", "version_0000.ckpt",
                                                                        "version_0001.ckpt"]
    elif name == "optuna":
        for built, cb in ((legacy, lcb), (native, ncb)):
            study, trial = built.extras["optuna_study"], built.extras["optuna_trial"]
            assert cb.reports and [s for s, _ in cb.reports] == sorted(s for s, _ in cb.reports)
            study.tell(trial, cb.reports[-1][1])
            stored = optuna.load_study(study_name=study.study_name,
                                       storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[trial.number]
            assert stored.state == optuna.trial.TrialState.COMPLETE
            assert stored.intermediate_values == dict(cb.reports)

    compared = _same_observables(name, legacy, native)
    assert compared == {"metrics": 1, "checkpoint": 2, "wandb": 0, "evaluation": 2, "continuous_training": 0,
                        "optuna": 1}[name]


# -- which implementation: precedence ---------------------------------------------------------------

SECTION = {"metrics": {"window_size": 5, "impl": "native"}, "evaluation": {},
           "checkpoint": {"save_dir": "unused", "impl": "legacy"}}


@pytest.mark.parametrize("cli, env, expected", [
    ({}, {}, {"metrics": ("native", "config"), "evaluation": ("legacy", "default"), "checkpoint": ("legacy", "config")}),
    ({}, {ENV_VAR: "evaluation=native,metrics=legacy"},
     {"metrics": ("legacy", ENV_VAR), "evaluation": ("native", ENV_VAR), "checkpoint": ("legacy", "config")}),
    ({"metrics": "native"}, {ENV_VAR: "metrics=legacy"},
     {"metrics": ("native", "--impl"), "evaluation": ("legacy", "default"), "checkpoint": ("legacy", "config")}),
    ({}, {ENV_VAR: "all=native"},
     {"metrics": ("native", ENV_VAR), "evaluation": ("native", ENV_VAR), "checkpoint": ("native", ENV_VAR)}),
    # all= beats the config and lower layers; a named callback beats all= within a layer
    ({"all": "legacy"}, {ENV_VAR: "evaluation=native"},
     {"metrics": ("legacy", "--impl"), "evaluation": ("legacy", "--impl"), "checkpoint": ("legacy", "--impl")}),
    ({"all": "legacy", "evaluation": "native"}, {ENV_VAR: "all=native"},
     {"metrics": ("legacy", "--impl"), "evaluation": ("native", "--impl"), "checkpoint": ("legacy", "--impl")}),
    ({}, {ENV_VAR: "all=legacy,checkpoint=native"},
     {"metrics": ("legacy", ENV_VAR), "evaluation": ("legacy", ENV_VAR), "checkpoint": ("native", ENV_VAR)}),
])
def test_override_precedence_cli_env_config_default(cli, env, expected):
    assert resolve_impls(SECTION, cli, env) == expected


def test_overrides_reach_build_callbacks_and_the_process_environment(tmp_path, monkeypatch):
    section = {"metrics": {"window_size": 5}, "evaluation": {"impl": "native"},
               "checkpoint": {"save_dir": str(tmp_path / "best")}}
    monkeypatch.setenv(ENV_VAR, "metrics=native")
    built = build_callbacks({"callbacks": section}, ["checkpoint=native"])  # env=None: the process environment
    assert built.impls == {"metrics": "native", "evaluation": "native", "checkpoint": "native"}
    assert built.sources == {"metrics": ENV_VAR, "evaluation": "config", "checkpoint": "--impl"}
    assert not any(isinstance(cb, LegacyCallbackAdapter) for cb in built.callbacks)
    assert built.describe() == (f"metrics=native ({ENV_VAR}), evaluation=native (config), "
                                f"checkpoint=native (--impl)")
    # A mapping, a comma list and a bare mode (= all) are accepted as the impl argument.
    assert build_callbacks({"callbacks": section}, {"all": "legacy"}).impls == dict.fromkeys(section, "legacy")
    assert build_callbacks(section, "all=legacy,evaluation=native", env={}).impls == {
        "metrics": "legacy", "evaluation": "native", "checkpoint": "legacy"}
    assert build_callbacks(section, "legacy", env={}).impls == dict.fromkeys(section, "legacy")
    # In config order, each as its implementation: legacy ones adapted, native ones as they are.
    mixed = build_callbacks(section, env={})
    assert [type(cb).__name__ for cb in mixed.callbacks] == ["LegacyCallbackAdapter", "EvaluationCallback",
                                                             "LegacyCallbackAdapter"]
    assert [type(cb).__name__ for cb in mixed.legacy.values()] == ["MetricsCallback", "CheckpointCallback"]
    # enabled: false leaves an entry out.
    assert build_callbacks({"metrics": {"enabled": False}, "evaluation": None}, env={}).impls == {"evaluation": "legacy"}
    assert parse_impl_overrides(" checkpoint = native ,metrics=legacy", source="x") == {
        "checkpoint": "native", "metrics": "legacy"}


# -- validation errors ------------------------------------------------------------------------------

@pytest.fixture
def registry():
    """REGISTRY as it was before the test (user pairs registered by a test must not leak)."""
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


class LegacyOnly(BaseCallback):
    def __init__(self, level: int = 1):
        self.level = level

    def on_episode_end(self, episode_info):
        pass


@pytest.mark.parametrize("section, impl, env, message", [
    ({"metrcs": {}}, None, {}, "Unknown callback(s) 'metrcs' in the callbacks section; known callbacks: "
                               "metrics, checkpoint, wandb, evaluation, continuous_training, optuna"),
    ({"metrics": {"impl": "nativ"}}, None, {}, "callbacks.metrics.impl is 'nativ'; choose one of legacy, native, shadow"),
    ({"metrics": {}}, ["metrics=nativ"], {}, "--impl: unknown implementation 'nativ' for 'metrics'"),
    ({"metrics": {}}, {"all": "nativ"}, {}, "--impl: unknown implementation 'nativ' for 'all'"),
    ({"metrics": {}}, None, {ENV_VAR: "metrics=Native"},
     f"environment variable {ENV_VAR}: unknown implementation 'Native' for 'metrics'"),
    ({"metrics": {}}, ["metrics"], {}, "--impl: expected NAME=IMPL (e.g. checkpoint=native or all=legacy), got 'metrics'"),
    ({"metrics": {}}, ["checkpoint=native"], {},
     "--impl names callback 'checkpoint', which the config does not have (its callbacks: metrics; registered ports: "),
    ({"metrics": {}}, None, {ENV_VAR: "evaluation=native"}, f"{ENV_VAR} names callback 'evaluation'"),
    ({"optuna": {"trial": None, "report_step": "cycle", "impl": "native"}}, None, {},
     "callbacks.optuna: the native implementation does not accept option(s) report_step; it accepts: trial, monitor"),
    ({"continuous_training": {"checkpoint_dir": "x", "every_n_cycles": 2}}, None, {},
     "callbacks.continuous_training: the legacy implementation does not accept option(s) every_n_cycles"),
    ({"metrics": {"prefix": "m/", "impl": "native"}}, None, {},
     "callbacks.metrics: the native implementation does not accept option(s) prefix; it accepts: window_size"),
    ({"checkpoint": {"save_freq": 2, "impl": "native"}}, None, {},
     "callbacks.checkpoint: the native implementation needs option(s) save_dir"),
    ({"metrics": 5}, None, {}, "callbacks.metrics must be a mapping of options (or empty); got int 5"),
    ({"legacy_only": {"impl": "native"}}, None, {},
     "callbacks.legacy_only: impl 'native' asked for, but legacy_only has no native port yet; use impl: legacy"),
    ({"legacy_only": {"level": 2}}, ["all=native"], {}, "legacy_only has no native port yet"),
])
def test_validation_errors_are_actionable(section, impl, env, message, registry):
    register_port("legacy_only", legacy=LegacyOnly, native=None)
    with pytest.raises(ConfigError) as error:
        build_callbacks({"callbacks": section}, impl, env=env)
    assert message in str(error.value)
    with pytest.raises(ConfigError):  # the same check without building anything
        validate_callbacks({"callbacks": section}, impl, env=env)


def test_bad_values_are_config_errors_on_both_sides(tmp_path):
    for impl in ("legacy", "native"):
        with pytest.raises(ConfigError, match=rf"callbacks.metrics: cannot build the {impl} MetricsCallback: "
                                              r"MetricsCallback window_size must be a positive int; got 0"):
            build_callbacks({"metrics": {"window_size": 0, "impl": impl}}, env={})
        with pytest.raises(ConfigError, match="callbacks.wandb: cannot build the .*mode must be one of"):
            build_callbacks({"wandb": {"mode": "sometimes", "impl": impl}}, env={})


def test_a_late_error_builds_nothing_before_it(tmp_path):
    """Everything is checked first: the optuna entry must not have asked a trial when a later entry is wrong."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    section = {"optuna": {"study_name": "early", "storage": storage}, "metrics": {"window_size": 5, "bogus": 1}}
    with pytest.raises(ConfigError, match="does not accept option.s. bogus"):
        build_callbacks(section, env={})
    assert not (tmp_path / "optuna.db").exists()


# -- registering a pair -------------------------------------------------------------------------------

class LegacyEpisodes(BaseCallback):
    def __init__(self, every: int = 1):
        self.every, self.count = every, 0

    def on_episode_end(self, episode_info):
        self.count += 1


class NativeEpisodes(RLCallback):
    def __init__(self, every: int = 1):
        super().__init__()
        self.every, self.count = every, 0

    def on_rl_episode_end(self, trainer, pl_module, payload):
        self.count += 1


def test_user_pairs_register_in_one_line_and_run(registry, tmp_path):
    pair = register_port("episodes", legacy=LegacyEpisodes, native=NativeEpisodes,
                         observables={"count": (lambda cb: cb.count, lambda cb: cb.count)})
    assert REGISTRY["episodes"] is pair and pair.accepted("native") == ("every",)

    @register_port("episodes_too", legacy=LegacyEpisodes, observables={"count": (lambda c: c.count, lambda c: c.count)})
    class DecoratedNative(NativeEpisodes):
        pass

    assert DecoratedNative.__name__ == "DecoratedNative"  # the decorator returns the class itself
    assert REGISTRY["episodes_too"].native_factory() is DecoratedNative
    assert fxai_compat.register_port is register_port and fxai_compat.build_callbacks is build_callbacks

    section = {"episodes": {"every": 2}, "episodes_too": {"impl": "native"}}
    runs = {}
    for impl in ("legacy", "native"):
        built = build_callbacks(section, {"episodes": impl}, env={})
        fit(tiny(tmp_path / impl, cycles=2, hidden_sizes=(8,), checkpoint_every=0), built.callbacks, logger=False)
        runs[impl] = built
    assert isinstance(runs["native"].native["episodes_too"], DecoratedNative)
    legacy_cb, native_cb = runs["legacy"].legacy["episodes"], runs["native"].native["episodes"]
    assert legacy_cb.count > 0 and legacy_cb.every == 2 and native_cb.every == 2
    assert _same_observables("episodes", runs["legacy"], runs["native"]) == 1
    assert runs["native"].native["episodes_too"].count == legacy_cb.count


def test_duplicate_names_need_replace(registry):
    with pytest.raises(ValueError, match="A port named 'metrics' is already registered; pass replace=True"):
        register_port("metrics", legacy=LegacyEpisodes, native=NativeEpisodes)
    with pytest.raises(ValueError, match="already registered"):
        register_port("checkpoint", legacy=LegacyEpisodes)(NativeEpisodes)
    register_port("metrics", legacy=LegacyEpisodes, native=NativeEpisodes, replace=True)
    assert REGISTRY["metrics"].legacy is LegacyEpisodes
    # A pair without a native port yet is one line too; it builds as legacy.
    register_port("legacy_only", LegacyOnly, None)
    assert REGISTRY["legacy_only"].native_factory() is None
    assert build_callbacks({"legacy_only": {"level": 3}}, env={}).legacy["legacy_only"].level == 3
    with pytest.raises(ValueError, match="needs the legacy callback class"):
        register_port("no_legacy", native=NativeEpisodes)


# -- the train command --------------------------------------------------------------------------------

def _write_run(tmp_path, callbacks):
    data = {"train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                      "minibatch_size": 32, "eval_every": 1, "eval_episodes": 2, "checkpoint_every": 1,
                      "checkpoint_dir": str(tmp_path / "ckpt"), "hidden_sizes": [8], "data_length": 1000},
            "trainer": {"enable_progress_bar": False}, "callbacks": callbacks}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_train_prints_and_logs_the_implementations_used(tmp_path, capsys, monkeypatch):
    path = _write_run(tmp_path, {"metrics": {"window_size": 5}, "evaluation": {"impl": "native"},
                                 "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 1}})
    monkeypatch.setenv(ENV_VAR, "metrics=native")
    assert main(["train", "--config", str(path), "--impl", "checkpoint=native"]) == 0
    out = capsys.readouterr().out
    assert (f"callback implementations: metrics=native ({ENV_VAR}), evaluation=native (config), "
            f"checkpoint=native (--impl)") in out
    hparams = yaml.safe_load(open(tmp_path / "lightning_logs" / "version_0" / "hparams.yaml"))
    assert hparams["callback_impl"] == {"metrics": "native", "evaluation": "native", "checkpoint": "native"}
    assert hparams["train"]["cycles"] == 2
    assert {f"model-cycle{c:04d}.ckpt" for c in range(2)} <= set(os.listdir(tmp_path / "best"))

    # The command line beats the environment, all= included (a run of its own: not a resume of the first).
    assert main(["train", "--config", str(path), "--impl", "all=legacy",
                 "--set", f"checkpoint_dir={tmp_path / 'second' / 'ckpt'}"]) == 0
    assert ("callback implementations: metrics=legacy (--impl), evaluation=legacy (--impl), "
            "checkpoint=legacy (--impl)") in capsys.readouterr().out
    hparams = yaml.safe_load(open(tmp_path / "second" / "lightning_logs" / "version_0" / "hparams.yaml"))
    assert hparams["callback_impl"] == dict.fromkeys(["metrics", "evaluation", "checkpoint"], "legacy")
    assert (tmp_path / "best" / "best_model.pt").is_file()


@pytest.mark.parametrize("args, env, message", [
    (["--impl", "metrics=nativ"], {}, "unknown implementation 'nativ'"),
    (["--impl", "metrcs=native"], {}, "names callback 'metrcs'"),
    (["--set", "callbacks.metrics.window_size=0"], {}, "window_size must be a positive int"),
    (["--set", "callbacks.metrics.impl=native", "--set", "callbacks.metrics.prefix=x"], {},
     "does not accept option(s) prefix"),
    ([], {ENV_VAR: "metrics"}, "expected NAME=IMPL"),
    (["--host", "legacy", "--impl", "metrics=native"], {}, "--host legacy runs legacy callbacks only"),
    (["--set", "callbacks.optuna.storage=postgresql://user:secret@127.0.0.1:1/db"], {},
     "Cannot open Optuna storage postgresql://user:***@127.0.0.1:1/db"),
])
def test_train_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, args, env, message):
    path = _write_run(tmp_path, {"metrics": {"window_size": 5}})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["train", "--config", str(path), *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "secret" not in captured.out + captured.err
    assert not (tmp_path / "ckpt").exists()


def test_train_tells_its_optuna_trial_the_outcome_on_a_journal_storage(tmp_path, capsys):
    """A journal:// storage in the config (optuna.create_study cannot open one from a URL) and the state
    Optuna actually recorded: a NaN result (no episode ended in the last cycle) is a FAIL, not "complete"."""
    log = tmp_path / "optuna.log"
    path = _write_run(tmp_path, {"optuna": {"study_name": "t", "storage": f"journal://{log}", "impl": "native"}})
    assert main(["train", "--config", str(path)]) == 0
    assert "optuna: trial 0 of study 't' complete" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="nan is not acceptable"):  # Optuna's word for it
        assert main(["train", "--config", str(path), "--impl", "optuna=legacy", "--set", "episode_length=500",
                     "--set", f"checkpoint_dir={tmp_path / 'long' / 'ckpt'}"]) == 0
    assert ("optuna: trial 1 of study 't' fail (the last cycle's episode_reward_mean is NaN)"
            in capsys.readouterr().out)
    trials = optuna.load_study(study_name="t", storage=JournalStorage(JournalFileBackend(str(log)))).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert sorted(trials[0].intermediate_values) == [0, 1]


# -- the example configs --------------------------------------------------------------------------------

@pytest.mark.parametrize("example, impls", [
    ("demo.yaml", dict.fromkeys(BUILTIN_PORTS, "legacy")),
    ("half_migrated.yaml", {"metrics": "native", "checkpoint": "native", "wandb": "legacy", "evaluation": "native",
                            "continuous_training": "legacy", "optuna": "legacy"}),
    ("all_native.yaml", dict.fromkeys(BUILTIN_PORTS, "native")),
    ("shadow.yaml", {"metrics": "shadow", "checkpoint": "legacy", "wandb": "legacy", "evaluation": "shadow",
                     "continuous_training": "legacy", "optuna": "legacy"}),
])
def test_example_configs_load_and_validate(example, impls):
    run = load_run_config(str(ROOT / "examples" / example))
    assert list(run.callbacks) == list(BUILTIN_PORTS)
    choices = validate_callbacks(run.callbacks, env={})
    assert {name: impl for name, (impl, _) in choices.items()} == impls
    assert resolve_impls(run.callbacks, env={}) == choices
    if example != "demo.yaml":
        assert run.train.cycles <= 20


def test_half_migrated_example_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example's paths are relative (runs/...)
    small = ["n_envs=2", "n_steps=32", "episode_length=24", "cycles=2", "update_epochs=1", "minibatch_size=32",
             "eval_every=1", "eval_episodes=2", "checkpoint_every=1", "hidden_sizes=[8]",
             "trainer.enable_progress_bar=false", "callbacks.wandb.mode=disabled"]
    args = ["train", "--config", str(ROOT / "examples" / "half_migrated.yaml")]
    for item in small:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "metrics=native (config), checkpoint=native (config), wandb=legacy (config)" in out
    assert "trained 2 cycles" in out
