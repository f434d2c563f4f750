"""Reliability, round two: resume whatever ``last.ckpt`` says, one run per directory, interrupts, remote storage.

Real CPU runs on tiny configs. The link gap of Lightning's ``last.ckpt`` step is reproduced as the on-disk
state a kill there leaves (good cycle files, the link missing or dangling), and the atomic link is tested by
failing the link step itself. The lock and the Ctrl-C test use real second processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import torch
import yaml
from conftest import stop_processes, tiny

from fxai_compat import fit
from fxai_compat.adapter import LegacyCallbackAdapter
from fxai_compat.checkpoints import read_training_checkpoint
from fxai_compat.cli import main
from fxai_compat.lightning_host import NotifyingCheckpointIO, RLModelCheckpoint
from fxai_compat.resume_point import find_resume_checkpoint

SCRIPTS = Path(__file__).parent / "scripts"
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")

TRAIN = dict(n_envs=2, n_steps=16, episode_length=20, update_epochs=1, minibatch_size=16, eval_every=0,
             checkpoint_every=1, hidden_sizes=[8], data_length=500, seed=5)


def _run_file(tmp_path, name="run", **train) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"train": {**TRAIN, "cycles": 4, "checkpoint_dir": str(run_dir / "ckpt"), **train},
            "trainer": {"enable_progress_bar": False}, "callbacks": {}}
    path = run_dir / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("cycle-*.ckpt")}


# --------------------------------------------------------------------------- the link gap


@pytest.mark.parametrize("host", ["lightning", "legacy"])
@pytest.mark.parametrize("link", ["missing", "dangling"])
def test_a_run_killed_in_the_link_gap_resumes_from_its_newest_cycle_checkpoint(tmp_path, capsys, host, link):
    """Lightning's link step deletes last.ckpt, then re-links it: a kill in between leaves good cycle files and no
    (or a dangling) link. The rerun resumes from the newest good cycle file, says so, and overwrites none."""
    cfg = _run_file(tmp_path)
    ckpt = cfg.parent / "ckpt"
    assert main(["train", "--host", host, "--config", str(cfg)]) == 0
    last = ckpt / "last.ckpt"
    if last.exists() or last.is_symlink():
        last.unlink()
    if link == "dangling":
        os.symlink("cycle-0099.ckpt", last)
    before = _stamps(ckpt)
    capsys.readouterr()
    assert main(["train", "--host", host, "--config", str(cfg), "--set", "cycles=6"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {ckpt / 'cycle-0003.ckpt'} at cycle 4, {4 * 16 * 2} env steps" in out, out
    assert "trained 6 cycles in all" in out
    after = _stamps(ckpt)
    assert {name: after[name] for name in before} == before  # nothing written over
    assert sorted(after) == [f"cycle-{i:04d}.ckpt" for i in range(6)]
    if host == "lightning":
        assert os.readlink(last) == "cycle-0005.ckpt"


def test_the_last_link_is_replaced_atomically(tmp_path, monkeypatch):
    """A failure (a kill) at any point of the link step leaves the previous last.ckpt in place."""
    cfg = tiny(tmp_path, cycles=2, checkpoint_every=1, eval_every=0)
    fit(cfg, logger=False)
    ckpt = Path(cfg.checkpoint_dir)
    assert os.readlink(ckpt / "last.ckpt") == "cycle-0001.ckpt"

    class Killed(BaseException):
        pass

    for step in ("symlink", "replace"):
        real = getattr(os, step)

        def dies(*args, **kwargs):
            raise Killed(step)

        monkeypatch.setattr(os, step, dies)
        trainer = type("T", (), {"is_global_zero": True, "strategy": type("S", (), {"barrier": lambda self: None})()})()
        with pytest.raises(Killed):
            RLModelCheckpoint._link_checkpoint(trainer, str(ckpt / "cycle-0000.ckpt"), str(ckpt / "last.ckpt"))
        monkeypatch.setattr(os, step, real)
        assert os.readlink(ckpt / "last.ckpt") == "cycle-0001.ckpt", step
        assert sorted(p.name for p in ckpt.iterdir()) == ["cycle-0000.ckpt", "cycle-0001.ckpt", "last.ckpt"]
    RLModelCheckpoint._link_checkpoint(trainer, str(ckpt / "cycle-0000.ckpt"), str(ckpt / "last.ckpt"))
    assert os.readlink(ckpt / "last.ckpt") == "cycle-0000.ckpt"


def test_resuming_behind_the_newest_checkpoint_warns(tmp_path, capsys):
    cfg = _run_file(tmp_path)
    ckpt = cfg.parent / "ckpt"
    assert main(["train", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--resume-from", str(ckpt / "cycle-0001.ckpt")]) == 0
    captured = capsys.readouterr()
    assert f"resumed from {ckpt / 'cycle-0001.ckpt'} at cycle 2, 64 env steps" in captured.out
    assert f"is behind the newest checkpoint on disk, {ckpt / 'cycle-0003.ckpt'} (cycle 4)" in captured.err


def test_a_damaged_newest_checkpoint_is_skipped_and_none_readable_is_refused(tmp_path):
    from fxai_compat.checkpoints import CheckpointError

    cfg = tiny(tmp_path, cycles=2, checkpoint_every=1, eval_every=0)
    fit(cfg, logger=False)
    ckpt = Path(cfg.checkpoint_dir)
    newest = ckpt / "cycle-0001.ckpt"
    newest.write_bytes(newest.read_bytes()[:200])
    point = find_resume_checkpoint(ckpt, "lightning")
    assert point.path == str(ckpt / "cycle-0000.ckpt") and list(point.skipped) == [str(newest)]
    (ckpt / "cycle-0000.ckpt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none reads back.*--fresh"):
        find_resume_checkpoint(ckpt, "lightning")


# --------------------------------------------------------------------------- one run per directory


def test_a_second_run_on_the_same_checkpoint_dir_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    cfg = _run_file(tmp_path, cycles=1)
    ckpt = cfg.parent / "ckpt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fxai_compat.run_lock import RunLock; RunLock(sys.argv[1]).acquire();"
         " print('held', flush=True); time.sleep(120)", str(ckpt)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"in use by another training run (pid {holder.pid}" in err and len(err.splitlines()) == 1, err
        assert not (cfg.parent / "lightning_logs").exists() and not list(ckpt.glob("*.ckpt"))
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        stop_processes((holder,))
    assert main(["train", "--config", str(cfg)]) == 0  # the killed holder's lock is taken over, with a message
    out = capsys.readouterr().out
    assert f"took over the lock of pid {holder.pid}" in out, out
    assert "trained 1 cycles in all" in out
    assert not (ckpt / ".fxai-run.lock").exists()  # a run that ends removes its lock


# --------------------------------------------------------------------------- interrupts


def test_ctrl_c_on_the_lightning_host_exits_130_and_the_same_command_resumes(tmp_path, capsys):
    cfg = _run_file(tmp_path, cycles=30)
    ckpt = cfg.parent / "ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", RELIABILITY_SLOW="cycle",
               RELIABILITY_SLEEP="0.3")
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "reliability_train.py"), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while not (ckpt / "cycle-0001.ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        stop_processes((proc,))
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "fxai-compat: interrupted; rerun the same command to resume", err[-2000:]
    assert "Traceback" not in err
    done = read_training_checkpoint(ckpt / "last.ckpt").rl_state["cycles_completed"]
    assert main(["train", "--config", str(cfg), "--set", f"cycles={done + 1}"]) == 0
    assert f"at cycle {done}," in capsys.readouterr().out


def test_a_keyboard_interrupt_from_a_legacy_callback_reaches_the_caller_as_such(tmp_path):
    from legacy_callbacks import BaseCallback

    class StopsByHand(BaseCallback):
        def on_cycle_complete(self, trainer, metrics):
            if trainer.cycle >= 1:
                raise KeyboardInterrupt("stop here")

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as caught:
        fit(tiny(tmp_path, cycles=3, eval_every=0), [LegacyCallbackAdapter(StopsByHand())], logger=False)
    assert str(caught.value) == "stop here"
    assert any("StopsByHand" in note and "on_cycle_complete" in note for note in caught.value.__notes__)
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning left SIGINT ignored; fit puts it back


# --------------------------------------------------------------------------- remote storage


def test_checkpoints_resume_and_continuous_training_on_fsspec_memory(tmp_path, monkeypatch, capsys):
    from fxai_compat import LegacyTrainer
    from fxai_compat.callbacks.continuous_training import continue_training
    from legacy_callbacks import ContinuousTrainingCallback as LegacyContinuous

    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would show up here as a "memory:" folder
    memory = fsspec.filesystem("memory")
    root = f"memory://fxai-{os.getpid()}-{time.monotonic_ns()}"
    cfg = tiny(tmp_path, cycles=2, checkpoint_every=1, eval_every=0, checkpoint_dir=f"{root}/run/ckpt")
    heard: list[str] = []
    io = NotifyingCheckpointIO()
    io.listeners.append(heard.append)
    fit(cfg, plugins=[io], logger=False)
    assert heard == [f"{root}/run/ckpt/cycle-0000.ckpt", f"{root}/run/ckpt/cycle-0001.ckpt"]
    stored = memory.cat_file(f"{root}/run/ckpt/last.ckpt".split("://", 1)[1])
    assert torch.load(__import__("io").BytesIO(stored), weights_only=True)["fxai_rl_state"]["cycles_completed"] == 2
    trainer = fit(cfg.replace(cycles=3), ckpt_path=f"{root}/run/ckpt/last.ckpt", logger=False)
    assert trainer.lightning_module.core.cycles_completed == 3
    assert f"resumed from {root}/run/ckpt/last.ckpt at cycle 2" in capsys.readouterr().out
    fsspec.filesystem("memory").rm(f"{root}/run/ckpt/last.ckpt".split("://", 1)[1])  # the newest file still is found
    point = find_resume_checkpoint(f"{root}/run/ckpt", "lightning")
    assert point.path == f"{root}/run/ckpt/cycle-0002.ckpt" and point.checkpoint.rl_state["cycles_completed"] == 3

    native = cfg.replace(checkpoint_dir=f"{root}/native/ckpt")
    for _ in range(2):
        trainer = continue_training(native, logger=False, keep_versions=1)
    assert trainer.lightning_module.core.cycles_completed == 4
    assert sorted(memory.ls(f"{root}/native/ckpt/versions".split("://", 1)[1], detail=False))[-1].endswith(
        "version_0001.ckpt")

    legacy = cfg.replace(checkpoint_dir=f"{root}/legacy/ckpt")
    for _ in range(2):
        trainer = LegacyTrainer(legacy, [LegacyContinuous(f"{root}/legacy/versions")]).train()
    assert trainer.core.cycles_completed == 4
    assert [p.rsplit("/", 1)[1] for p in memory.ls(f"{root}/legacy/versions".split("://", 1)[1], detail=False)] == [
        f"version_{i:04d}.ckpt" for i in range(1, 5)]
    adapted = cfg.replace(checkpoint_dir=f"{root}/adapted/ckpt")
    for _ in range(2):
        trainer = fit(adapted, [LegacyCallbackAdapter(LegacyContinuous(f"{root}/adapted/versions"))], logger=False)
    assert trainer.lightning_module.core.cycles_completed == 4
    out = capsys.readouterr().out  # every continuing run said where it continued from
    assert f"resumed from {root}/native/ckpt/versions/last.ckpt at cycle 2" in out
    assert f"resumed from {root}/legacy/versions/version_0002.ckpt at cycle 2" in out
    assert f"resumed from {root}/adapted/versions/version_0002.ckpt at cycle 2" in out
    assert os.listdir(tmp_path) == []  # nothing local
