"""Reliability: crash and resume, faults inside callbacks, bad input, a failing DDP rank, a long run.

Everything runs for real (CPU, tiny configs). Processes that are killed or run under DDP are subprocesses
(``tests/scripts/reliability_*.py``) with a hard timeout; the rest runs in-process through ``cli.main``
and ``fit``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from conftest import stop_processes, tiny

from fxai_compat import fit
from fxai_compat.adapter import LegacyCallbackAdapter
from fxai_compat.checkpoints import CheckpointError, read_training_checkpoint
from fxai_compat.cli import main
from legacy_callbacks import EVENTS

SCRIPTS = Path(__file__).parent / "scripts"
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("FXAI_CALLBACK_IMPL", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(path) -> dict[str, torch.Tensor]:
    return read_training_checkpoint(path).model


def _assert_same_params(a, b, tol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tol, rtol=0), key


def _all_checkpoints_read(ckpt_dir) -> list[str]:
    names = sorted(p.name for p in Path(ckpt_dir).glob("cycle-*.ckpt"))
    for name in names:
        read_training_checkpoint(Path(ckpt_dir) / name)  # raises CheckpointError on a damaged file
    return names


# --------------------------------------------------------------------------- 1. crash and resume

CRASH_TRAIN = dict(n_envs=2, n_steps=32, episode_length=24, cycles=6, update_epochs=2, minibatch_size=24, eval_every=2,
                   eval_episodes=2, checkpoint_every=2, hidden_sizes=[16, 16], data_length=2000, seed=3)


def _write_run(tmp_path, name, **train) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    data = {"train": {**CRASH_TRAIN, "checkpoint_dir": str(run_dir / "ckpt"), **train},
            "trainer": {"enable_progress_bar": False},
            "callbacks": {"metrics": {"window_size": 5}}}  # a legacy callback with state (through the adapter)
    path = run_dir / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _kill_when(proc, ready, timeout=90.0):
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fails if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed:\n{out[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the moment to kill the run")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _interrupted_runs(tmp_path, *host: str):
    """Two ``train`` runs of ``reliability_train.py`` killed by SIGKILL, one inside its third cycle (cycle-0001 is
    written; the end of each cycle sleeps 0.6 s), one while its second checkpoint's temp file is on disk (before
    the rename), and an uninterrupted reference run in this process. Returns the three runs' config files."""
    cycle_cfg, write_cfg, ref_cfg = (_write_run(tmp_path, n) for n in ("mid_cycle", "mid_write", "reference"))
    command = [sys.executable, str(SCRIPTS / "reliability_train.py"), *host, "--config"]
    mid_cycle = subprocess.Popen([*command, str(cycle_cfg)], text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=_env(RELIABILITY_SLOW="cycle", RELIABILITY_SLEEP="0.6"))
    mid_write = subprocess.Popen([*command, str(write_cfg)], text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=_env(RELIABILITY_SLOW="write", RELIABILITY_SLEEP="60"))
    try:
        assert main(["train", *host, "--config", str(ref_cfg)]) == 0
        first, seen = cycle_cfg.parent / "ckpt" / "cycle-0001.ckpt", []

        def inside_cycle_three():
            if first.exists() and not seen:
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] > 0.3

        _kill_when(mid_cycle, inside_cycle_three)
        write_dir = write_cfg.parent / "ckpt"
        _kill_when(mid_write, lambda: any(write_dir.glob(".cycle-0003.ckpt.*.tmp")))
    finally:
        stop_processes((mid_cycle, mid_write))
    # the partial file is on disk under its temp name only
    assert any(write_dir.glob(".cycle-0003.ckpt.*.tmp")) and not (write_dir / "cycle-0003.ckpt").exists()
    return cycle_cfg, write_cfg, ref_cfg


def test_sigkill_mid_cycle_and_mid_checkpoint_write_then_rerun_resumes_and_matches_uninterrupted(tmp_path, capsys):
    # Both interrupted runs start at once (subprocesses); the uninterrupted reference runs meanwhile in-process.
    cycle_cfg, write_cfg, ref_cfg = _interrupted_runs(tmp_path)
    reference = read_training_checkpoint(ref_cfg.parent / "ckpt" / "cycle-0005.ckpt")
    for cfg in (cycle_cfg, write_cfg):
        ckpt_dir = cfg.parent / "ckpt"
        assert _all_checkpoints_read(ckpt_dir) == ["cycle-0001.ckpt"]  # only complete files carry the name
        assert read_training_checkpoint(ckpt_dir / "last.ckpt").run_cycles_done == 2
        capsys.readouterr()
        # the same command again: it resumes from the newest complete checkpoint, no manual step
        assert main(["train", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert f"resumed from {ckpt_dir / 'cycle-0001.ckpt'} at cycle 2, " in out  # last.ckpt's target
        assert "trained 6 cycles in all" in out
        final = read_training_checkpoint(ckpt_dir / "cycle-0005.ckpt")
        _assert_same_params(final.model, reference.model)
        for key in ("total_timesteps", "num_episodes", "cycles_completed", "num_updates", "vector_steps"):
            assert final.rl_state[key] == reference.rl_state[key], key
        # the legacy MetricsCallback's state came back through the adapter: its history is the whole run's
        assert final.callbacks["MetricsCallback"] == reference.callbacks["MetricsCallback"]
        assert len(final.callbacks["MetricsCallback"]["history"]) == 6

    # a finished run, run again: nothing to train, nothing overwritten, exit 0
    before = {p.name: p.stat().st_mtime_ns for p in (write_cfg.parent / "ckpt").glob("cycle-*.ckpt")}
    assert main(["train", "--config", str(write_cfg)]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (write_cfg.parent / "ckpt").glob("cycle-*.ckpt")} == before


def test_sigkill_under_the_legacy_host_then_the_same_command_resumes_and_matches_uninterrupted(tmp_path, capsys):
    """``--host legacy`` killed mid-cycle and mid-checkpoint-write: the same command again resumes from the newest
    complete checkpoint the legacy loop wrote (never the temp file) and ends where an uninterrupted run ends."""
    cycle_cfg, write_cfg, ref_cfg = _interrupted_runs(tmp_path, "--host", "legacy")
    reference_out = capsys.readouterr().out
    ref_dir = ref_cfg.parent / "ckpt"
    summary = [line for line in reference_out.splitlines() if line.startswith("host: legacy; trained 6 cycles")]
    assert len(summary) == 1, reference_out
    for cfg in (cycle_cfg, write_cfg):
        ckpt_dir = cfg.parent / "ckpt"
        assert _all_checkpoints_read(ckpt_dir) == ["cycle-0001.ckpt"] and not (ckpt_dir / "last.ckpt").exists()
        assert read_training_checkpoint(ckpt_dir / "cycle-0001.ckpt").run_cycles_done == 2
        kept = (ckpt_dir / "cycle-0001.ckpt").stat().st_mtime_ns
        # the same command again: no --resume-from, no manual step
        assert main(["train", "--host", "legacy", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert f"resumed from {ckpt_dir / 'cycle-0001.ckpt'} at cycle 2, " in out, out
        # continued, not started over (a deterministic fresh run would end with the same numbers, rewriting this)
        assert (ckpt_dir / "cycle-0001.ckpt").stat().st_mtime_ns == kept
        assert summary[0] in out  # 6 cycles in all, the same env steps, episodes and last reward as uninterrupted
        assert _all_checkpoints_read(ckpt_dir) == ["cycle-0001.ckpt", "cycle-0003.ckpt", "cycle-0005.ckpt"]
        for name in ("cycle-0003.ckpt", "cycle-0005.ckpt"):  # the counters continue: cycle numbers and totals
            resumed, reference = read_training_checkpoint(ckpt_dir / name), read_training_checkpoint(ref_dir / name)
            _assert_same_params(resumed.model, reference.model)
            for key in ("total_timesteps", "num_episodes", "cycles_completed", "num_updates", "vector_steps"):
                assert resumed.rl_state[key] == reference.rl_state[key], (name, key)
            assert resumed.run_cycles_done == reference.run_cycles_done
            assert resumed.callbacks["MetricsCallback"] == reference.callbacks["MetricsCallback"]
        assert len(resumed.callbacks["MetricsCallback"]["history"]) == 6


def test_the_legacy_host_resumes_its_last_written_checkpoint_and_fresh_starts_over(tmp_path, capsys):
    cfg = _write_run(tmp_path, "run", cycles=3, checkpoint_every=1, eval_every=0)
    ckpt_dir = cfg.parent / "ckpt"

    def train(*extra):
        assert main(["train", "--host", "legacy", "--config", str(cfg), *extra]) == 0
        return capsys.readouterr().out

    assert "resumed from" not in train()
    written = {p.name: p.stat().st_mtime_ns for p in ckpt_dir.glob("cycle-*.ckpt")}
    assert sorted(written) == ["cycle-0000.ckpt", "cycle-0001.ckpt", "cycle-0002.ckpt"]
    out = train()  # a finished run, run again: nothing to train, nothing overwritten
    assert f"resumed from {ckpt_dir / 'cycle-0002.ckpt'} at cycle 3, " in out and "nothing to train" in out
    assert "trained 3 cycles in all" in out
    assert {p.name: p.stat().st_mtime_ns for p in ckpt_dir.glob("cycle-*.ckpt")} == written
    out = train("--fresh", "--set", "cycles=1")
    assert "resumed from" not in out and "trained 1 cycles in all" in out
    # The newest checkpoint is the last one written (the fresh run's cycle-0000), not the highest-numbered one
    # (the old run's cycle-0002, which would resume a run that is not this one).
    out = train("--set", "cycles=2")
    assert f"resumed from {ckpt_dir / 'cycle-0000.ckpt'} at cycle 1, " in out and "trained 2 cycles in all" in out


def test_auto_resume_refuses_a_run_of_the_other_host(tmp_path, capsys):
    """Found in checkpoint_dir, the other host's run is neither resumed across hosts nor trained over."""
    for wrote, runs, message in (("legacy", "lightning", "was written by the legacy loop; --host lightning"),
                                 ("lightning", "legacy", "was written by Lightning; --host legacy")):
        cfg = _write_run(tmp_path, wrote, cycles=1, checkpoint_every=1, eval_every=0)
        assert main(["train", "--host", wrote, "--config", str(cfg)]) == 0
        capsys.readouterr()
        before = {p.name: p.stat().st_mtime_ns for p in (cfg.parent / "ckpt").iterdir()}
        assert main(["train", "--host", runs, "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "--fresh" in err and len(err.splitlines()) == 1, err
        assert {p.name: p.stat().st_mtime_ns for p in (cfg.parent / "ckpt").iterdir()} == before


def test_a_killed_continuous_training_run_resumes_from_its_newest_version_with_no_manual_step(tmp_path, capsys):
    cfg = _write_run(tmp_path, "ct")
    data = yaml.safe_load(cfg.read_text())
    versions = cfg.parent / "versions"
    data["callbacks"]["continuous_training"] = {"checkpoint_dir": str(versions)}
    cfg.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "reliability_train.py"), "--config", str(cfg)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(RELIABILITY_SLOW="write", RELIABILITY_SLEEP="60"))
    try:
        _kill_when(proc, lambda: any((cfg.parent / "ckpt").glob(".cycle-0003.ckpt.*.tmp")))
    finally:
        stop_processes((proc,))
    assert sorted(p.name for p in versions.glob("version_*.ckpt")) == ["version_0001.ckpt"]
    capsys.readouterr()
    assert main(["train", "--config", str(cfg)]) == 0  # the same command: the callback picks its newest version
    out = capsys.readouterr().out
    # continuous training resumes by itself, from its newest version, not from the periodic checkpoints
    assert f"resumed from {versions / 'version_0001.ckpt'} at cycle 2, " in out, out
    newest = sorted(versions.glob("version_*.ckpt"))[-1]
    # Version 1 (2 cycles) was the killed run's; the rerun finishes that run (TrainConfig.cycles): 6 in all.
    assert read_training_checkpoint(newest).rl_state["cycles_completed"] == 6


def test_fresh_ignores_an_interrupted_runs_last_checkpoint(tmp_path, capsys):
    cfg = _write_run(tmp_path, "run", cycles=2, checkpoint_every=1)
    assert main(["train", "--config", str(cfg), "--set", "cycles=1"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" not in out and "trained 2 cycles in all" in out


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous file intact and no temp file behind."""
    from fxai_compat import checkpoints

    target = tmp_path / "x.ckpt"
    checkpoints.write_atomic({"a": torch.zeros(3)}, target)
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600

    def broken_save(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.write_atomic({"a": torch.ones(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["x.ckpt"]


# --------------------------------------------------------------------------- 2. faults inside callbacks

#: Events that happen once per run (raised at their only occurrence); the others raise from cycle 1 on.
ONCE = ("on_training_start", "on_training_end", "on_checkpoint_loaded")
FAULT_CYCLES = 3


def _raiser(event, name="Raiser"):
    """A legacy callback defining only ``event``; it raises there (once per run, or at every occurrence
    from cycle 1 on) and counts its calls."""

    def method(self, trainer, **offered):
        self.calls += 1
        if event in ONCE or trainer.cycle >= 1:
            self.raised.append(ValueError(f"boom in {event} #{self.calls}"))
            raise self.raised[-1]

    def init(self):
        self.calls, self.raised = 0, []

    return type(name, (), {"__init__": init, event: method})()


def _counter(event):
    def method(self, trainer, **offered):
        self.calls += 1

    def init(self):
        self.calls = 0

    return type("Counter", (), {"__init__": init, event: method})()


class ExceptionSeen(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_exception(self, trainer, pl_module, exception):
        self.seen.append(exception)


def _fault_run(tmp_path, event, callbacks):
    """Fit the fault config with ``callbacks`` (from a checkpoint for on_checkpoint_loaded)."""
    cfg = tiny(tmp_path, cycles=FAULT_CYCLES, checkpoint_every=1, eval_every=2)
    ckpt_path = None
    if event == "on_checkpoint_loaded":
        fit(cfg.replace(cycles=1), logger=False)
        ckpt_path = str(Path(cfg.checkpoint_dir) / "last.ckpt")
    return cfg, lambda: fit(cfg, callbacks, ckpt_path=ckpt_path, logger=False)


def _resume_to_the_end(cfg):
    last = Path(cfg.checkpoint_dir) / "last.ckpt"
    trainer = fit(cfg, logger=False, ckpt_path=str(last) if last.exists() else None)
    assert trainer.lightning_module.core.cycles_completed == FAULT_CYCLES


@pytest.mark.parametrize("event", EVENTS)
def test_a_raising_legacy_callback_propagates_with_a_note_and_leaves_checkpoints_resumable(tmp_path, event):
    raiser, seen = _raiser(event), ExceptionSeen()
    cfg, run = _fault_run(tmp_path, event, [LegacyCallbackAdapter(raiser), seen])
    with pytest.raises(ValueError) as info:
        run()
    assert info.value is raiser.raised[0]  # its own type, the same object
    note = " ".join(getattr(info.value, "__notes__", []))
    for part in ("Raiser", f"event {event}", "Lightning hook", "epoch "):
        assert part in note, (part, note)
    assert seen.seen == [info.value]  # Lightning's on_exception ran
    names = _all_checkpoints_read(cfg.checkpoint_dir)  # every file present is a complete checkpoint
    if event not in ("on_training_start", "on_checkpoint_loaded"):
        assert names, "the run got past cycle 0: its checkpoints must be on disk"
    assert not list(Path(cfg.checkpoint_dir).glob(".*.tmp"))
    _resume_to_the_end(cfg)


@pytest.mark.parametrize("event", EVENTS)
def test_warn_and_disable_policies_keep_training_and_the_other_callbacks(tmp_path, event, caplog):
    warned, disabled, other = _raiser(event, "Warned"), _raiser(event, "Disabled"), _counter(event)
    adapters = [LegacyCallbackAdapter(warned, on_error="warn"), LegacyCallbackAdapter(disabled, on_error="disable"),
                LegacyCallbackAdapter(other)]
    cfg, run = _fault_run(tmp_path, event, adapters)
    with caplog.at_level(logging.WARNING, logger="legacy_callbacks"):
        trainer = run()
    assert trainer.lightning_module.core.cycles_completed == FAULT_CYCLES  # training continued
    assert warned.calls == other.calls  # warned at every error, still called every time
    assert len(warned.raised) >= 1 and len(disabled.raised) == 1  # switched off after its first error
    assert disabled.calls == other.calls - len(warned.raised) + 1
    for name, policy in (("Warned", "on_error='warn'"), ("Disabled", "on_error='disable'")):
        logged = [r.getMessage() for r in caplog.records if policy in r.getMessage()]
        assert len(logged) == 1, logged  # once, with the same detail as the note
        for part in (name, f"event {event}", "Lightning hook", "epoch "):
            assert part in logged[0], (part, logged[0])
    _all_checkpoints_read(cfg.checkpoint_dir)


class NativeRaiser(pl.Callback):
    def __init__(self):
        self.raised = None

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.raised = RuntimeError("native boom")
            raise self.raised


def test_a_raising_native_callback_has_the_same_guarantees(tmp_path):
    raiser, seen = NativeRaiser(), ExceptionSeen()
    cfg = tiny(tmp_path, cycles=FAULT_CYCLES, checkpoint_every=1, eval_every=2)
    with pytest.raises(RuntimeError) as info:
        fit(cfg, [raiser, seen], logger=False)
    assert info.value is raiser.raised and seen.seen == [info.value]
    # Callbacks run before ModelCheckpoint on on_train_epoch_end: epoch 1's checkpoint was never started.
    assert _all_checkpoints_read(cfg.checkpoint_dir) == ["cycle-0000.ckpt"]
    _resume_to_the_end(cfg)


# --------------------------------------------------------------------------- 3. bad input


class Marker:
    """Unpickling this creates a file: an arbitrary pickle must be refused, not executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("good"), cycles=1, checkpoint_every=1, eval_every=0)
    trainer = fit(cfg, logger=False)
    return Path(cfg.checkpoint_dir) / "cycle-0000.ckpt", trainer.lightning_module


def _bad_inputs(tmp_path, good):
    path, module = good
    data = path.read_bytes()
    marker = tmp_path / "pwned"
    files = {
        "truncated": data[: len(data) // 2],
        "not-a-checkpoint": b"cycle,reward\n1,2.0\n",
        "short-text": b"a,b\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save(module.policy.state_dict(), tmp_path / "state-dict.pt")
    torch.save({"payload": Marker(marker)}, tmp_path / "pickle-zip.pt")
    with open(tmp_path / "pickle-raw.pt", "wb") as handle:
        pickle.dump({"payload": Marker(marker)}, handle)
    return marker


BAD_CHECKPOINTS = {
    "truncated": "truncated or not a PyTorch checkpoint",
    "not-a-checkpoint": "truncated or not a PyTorch checkpoint",
    "short-text": "truncated or not a PyTorch checkpoint",
    "state-dict.pt": "bare model state dict",
    "pickle-zip.pt": "Refused to load",
    "pickle-raw.pt": "Refused to load",
}


def _assert_refused(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    code = main(["train", "--set", f"checkpoint_dir={run_dir / 'ckpt'}", "--set", "cycles=1",
                 "--set", "trainer.enable_progress_bar=false", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "\x1b" not in err and "weights_only=False" not in err, err  # no escape codes, no unsafe advice
    assert not run_dir.exists(), sorted(map(str, run_dir.rglob("*")))  # nothing written


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_a_bad_checkpoint_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, good_checkpoint, name):
    marker = _bad_inputs(tmp_path, good_checkpoint)
    _assert_refused(tmp_path, capsys, ["--resume-from", str(tmp_path / name)], BAD_CHECKPOINTS[name])
    with pytest.raises(CheckpointError):
        read_training_checkpoint(tmp_path / name)
    assert not marker.exists()  # the pickle was refused, not executed


def test_the_pickle_payload_is_real(tmp_path, good_checkpoint):
    """The test above would catch an executed payload: plain pickle.load does create the marker."""
    marker = _bad_inputs(tmp_path, good_checkpoint)
    with open(tmp_path / "pickle-raw.pt", "rb") as handle:
        pickle.load(handle)
    assert marker.exists()


def test_a_legacy_loop_checkpoint_given_to_lightning_and_a_broken_last_ckpt(tmp_path, capsys, good_checkpoint):
    from fxai_compat import LegacyTrainer

    cfg = tiny(tmp_path / "legacy", cycles=1, checkpoint_every=1, eval_every=0)
    legacy = LegacyTrainer(cfg).train()
    _assert_refused(tmp_path, capsys, ["--resume-from", legacy.checkpoint_paths[0]], "written by the legacy loop")
    # a damaged last.ckpt in checkpoint_dir (not written by this project: its writes are atomic) is not resumed
    # from silently, nor trained over: one line that says how to start over
    ckpt_dir = tmp_path / "other" / "ckpt"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "last.ckpt").write_bytes(good_checkpoint[0].read_bytes()[:100])
    code = main(["train", "--set", f"checkpoint_dir={ckpt_dir}", "--set", "cycles=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--fresh" in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(ckpt_dir)) == ["last.ckpt"]


def test_resume_from_under_the_legacy_host(tmp_path, capsys):
    from fxai_compat import LegacyTrainer

    cfg = tiny(tmp_path / "first", cycles=1, checkpoint_every=1, eval_every=0)
    first = LegacyTrainer(cfg).train().checkpoint_paths[0]
    same = [f"--set={key}={value}" for key, value in
            dict(n_envs=2, n_steps=32, episode_length=24, update_epochs=2, minibatch_size=24, hidden_sizes="[16,16]",
                 data_length=2000, seed=3, cycles=2, checkpoint_every=1, eval_every=0).items()]
    assert main(["train", "--host", "legacy", "--resume-from", first, *same,
                 "--set", f"checkpoint_dir={tmp_path / 'second' / 'ckpt'}"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {first} at cycle 1, " in out and "trained 2 cycles in all" in out
    # a checkpoint of another architecture than the config's (default hidden_sizes): one line, nothing written
    _assert_refused(tmp_path, capsys, ["--host", "legacy", "--resume-from", first], "another shape than this config's")


@pytest.mark.parametrize("content, message", [
    ("date,open\n2024-01-01,1.1\n2024-01-02,1.2\n", "no 'close' column"),
    ("date,close\n2024-01-01,1.1\n2024-01-02,nan\n2024-01-03,1.2\n", "line 3"),
    ("date,close\n2024-01-01,1.1\n2024-01-02,\n", "is not a number"),
], ids=["missing-column", "nan", "empty-value"])
def test_a_bad_price_csv_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, content, message):
    csv = tmp_path / "prices.csv"
    csv.write_text(content)
    _assert_refused(tmp_path, capsys, ["--set", f"price_csv={csv}", "--set", "env=fx"], message)


# --------------------------------------------------------------------------- 4. distributed


def test_a_raise_on_rank_one_ends_the_ddp_job_with_the_exception_reported(tmp_path):
    env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONWARNINGS="ignore")
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GLOBAL_RANK"):
        env.pop(name, None)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "reliability_ddp_raise.py"), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            start_new_session=True)  # its own process group: rank 1 is its child
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:  # a hang: the failing rank left the other waiting in a collective
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the DDP job hung after rank 1 raised")
    elapsed = time.monotonic() - start
    done = proc
    output = stdout + stderr
    assert (tmp_path / "rank0.started").exists() and (tmp_path / "rank1.started").exists(), output[-3000:]
    assert done.returncode != 0, output[-3000:]
    assert "rank 1 fails in on_rollout_end" in output and "ValueError" in output, output[-3000:]
    assert "RaiseOnRankOne" in output and "event on_rollout_end" in output, output[-3000:]  # the note
    assert "unreachable" not in output
    _all_checkpoints_read(tmp_path / "ckpt")
    assert elapsed < 150


# --------------------------------------------------------------------------- 5. load

LOAD_CYCLES = 106
PERIOD = 6  # evaluation and checkpoints every 2 cycles, 24-step episodes in 32-step rollouts: every 3


class LoadProbe:
    """Counts every legacy event per cycle and reads the process's RSS (``/proc/self/statm``) at cycles 10 and 100."""

    def __init__(self):
        self.counts, self.rss, self.current = [], {}, {}

    @staticmethod
    def _rss_bytes() -> int:
        import gc

        gc.collect()
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _count(event):
    def method(self, trainer, **offered):
        self.current[event] = self.current.get(event, 0) + 1
        if event == "on_cycle_complete":
            if trainer.cycle in (10, 100):
                self.rss[trainer.cycle] = self._rss_bytes()
            self.counts.append(self.current)
            self.current = {}
    method.__name__ = event
    return method


for _event in EVENTS:
    setattr(LoadProbe, _event, _count(_event))


def test_a_long_run_keeps_memory_flat_and_events_per_cycle_constant(tmp_path):
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc/self/statm (Linux)")
    from legacy_callbacks import MetricsCallback

    probe = LoadProbe()
    cfg = tiny(tmp_path, cycles=LOAD_CYCLES)
    trainer = fit(cfg, [LegacyCallbackAdapter(probe), LegacyCallbackAdapter(MetricsCallback(window_size=20))])
    assert trainer.lightning_module.core.cycles_completed == LOAD_CYCLES
    growth = probe.rss[100] - probe.rss[10]
    print(f"RSS at cycle 10: {probe.rss[10] / 2**20:.1f} MiB, growth to cycle 100: {growth / 2**20:.2f} MiB")
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB from cycle 10 to cycle 100"
    # on_checkpoint_saved of a cycle fires after its on_cycle_complete: it is counted in the next cycle's bucket
    counts = probe.counts
    assert len(counts) == LOAD_CYCLES
    for cycle in range(10, 10 + PERIOD):
        assert counts[cycle] == counts[cycle + 90], (cycle, counts[cycle], counts[cycle + 90])
    assert {c["on_step_end"] for c in counts} == {cfg.n_steps}
