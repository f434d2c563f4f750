"""One meaning of "how many cycles a resumed run trains" (TrainConfig.cycles, fxai_compat.resume_cycles) on every path:
the legacy ContinuousTrainingCallback on both hosts, LegacyTrainer's resume_from, Lightning's ckpt_path and the
native continue_training. A 12-cycle run interrupted after cycle 9 (by a crash, or a real SIGKILL) and started
again ends at 12 cycles in all on every path; started once more, a continuous-training path adds 12."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fxai_compat.checkpoints import TrainingCheckpoint
from fxai_compat.parity import check_port_parity, parity_config
from fxai_compat.parity.continuous_check import PATHS, Interrupt, check_continuous_port, run_session
from fxai_compat.toggle import PortPair

from conftest import stop_processes, tiny

SCRIPT = Path(__file__).resolve().parent / "scripts" / "resume_session.py"
CONTINUOUS = ("legacy-callback/legacy-host", "legacy-callback/lightning", "native")


def config(root):
    return tiny(root, cycles=12, checkpoint_every=3, eval_every=0)


def test_an_interrupted_run_is_finished_on_every_path_and_a_finished_one_continued(tmp_path):
    first, rerun, again = {}, {}, {}
    for path in PATHS:
        root = tmp_path / path.replace("/", "_")
        first[path] = run_session(path, config(root), root, interrupt=Interrupt(9))
        rerun[path] = run_session(path, config(root), root)
        if path in CONTINUOUS:
            again[path] = run_session(path, config(root), root)
    for path in PATHS:
        assert first[path]["interrupted"] and first[path]["newest_version"] == 9, (path, first[path])
        assert (rerun[path]["resumed_from"], rerun[path]["cycles_trained"], rerun[path]["cycles_total"]) == (9, 3, 12), \
            (path, rerun[path])
    for path in CONTINUOUS:  # a finished run's checkpoint: a new run of `cycles` cycles
        assert (again[path]["resumed_from"], again[path]["cycles_trained"], again[path]["cycles_total"]) == (12, 12, 24), \
            (path, again[path])
    # The same training, whichever path: the finished runs' weights agree.
    reference = torch.tensor(rerun["resume_from/legacy-host"]["weights"])
    for path in PATHS:
        assert torch.allclose(torch.tensor(rerun[path]["weights"]), reference, atol=1e-6), path
    assert torch.allclose(torch.tensor(again["native"]["weights"]),
                          torch.tensor(again["legacy-callback/legacy-host"]["weights"]), atol=1e-6)


def test_a_sigkilled_run_is_finished_on_every_continuous_training_path(tmp_path):
    procs = {path: subprocess.Popen([sys.executable, str(SCRIPT), path, str(tmp_path / path.replace("/", "_")), "9"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for path in CONTINUOUS}
    try:
        for path, proc in procs.items():
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == -9 and "not killed" not in out, (path, proc.returncode, out)
    finally:
        stop_processes(procs.values())
    for path in CONTINUOUS:
        root = tmp_path / path.replace("/", "_")
        record = run_session(path, config(root), root)
        assert (record["resumed_from"], record["cycles_trained"], record["cycles_total"]) == (9, 3, 12), (path, record)


def ckpt(done, target, **kw):
    return TrainingCheckpoint("x", {}, None, {}, run_cycles_done=done, target_cycles=target, **kw)


def test_which_checkpoints_count_as_interrupted():
    assert ckpt(9, 12, checkpoint_every=3).interrupted
    assert not ckpt(12, 12, checkpoint_every=3).interrupted  # finished
    assert not ckpt(9, 12, checkpoint_every=3, stopped=True).interrupted  # a callback stopped it: ended as planned
    # Written after the run's last due checkpoint (10 of 12, every 5): a finished run looks the same; counted as
    # finished, so a rerun never repeats the last two cycles forever.
    assert not ckpt(10, 12, checkpoint_every=5).interrupted
    assert not ckpt(3, None).interrupted  # an old checkpoint without its target: a new run, as before
    assert ckpt(4, 12, finished=False).interrupted and not ckpt(4, 12, finished=True).interrupted  # version info


class OneCycleTooMany:
    """A deliberately broken native port: after a resume it trains one cycle more than planned."""

    def __new__(cls, checkpoint_dir, keep_versions=None):
        from fxai_compat.callbacks.continuous_training import ContinuousTrainingCallback

        class Broken(ContinuousTrainingCallback):
            def on_load_checkpoint(self, trainer, pl_module, checkpoint):
                super().on_load_checkpoint(trainer, pl_module, checkpoint)
                trainer.fit_loop.max_epochs += 1

        return Broken(checkpoint_dir, keep_versions=keep_versions)


def test_a_port_training_one_cycle_too_many_after_resume_is_caught_by_name(tmp_path):
    from legacy_callbacks import ContinuousTrainingCallback

    pair = PortPair("continuous_broken", ContinuousTrainingCallback, OneCycleTooMany, check=check_continuous_port)
    result = check_port_parity(pair, parity_config(), workdir=tmp_path)
    assert not result.ok and result.status == "FAILED"
    assert result.divergence.what == "cycle 1, cycles_trained: session 1: value: 2.0 != 3.0 (|diff| 1 > 1e-06)"
    assert {h["observable"] for h in result.history if not h["ok"]} >= {"cycles_trained", "cycles_total", "weights"}


def test_continuous_training_port_parity_compares_every_session(tmp_path):
    result = check_port_parity("continuous_training", parity_config(), workdir=tmp_path)
    assert result.ok, result.summary()
    assert {name: n for name, (n, _) in result.counts.items()} == dict.fromkeys(
        ["resumed_from", "cycles_trained", "cycles_total", "newest_version", "weights"], 3)
    trained = [(h["legacy"], h["native"]) for h in result.history if h["observable"] == "cycles_trained"]
    assert trained == [(2.0, 2.0), (2.0, 2.0), (4.0, 4.0)]  # interrupted at 2 of 4, finished, continued
    assert result.history[0]["info"]["interrupted"] == "SIGKILL after 2 cycles"  # a real kill, in a child process
    versions = next(h["info"]["versions"] for h in reversed(result.history))
    assert versions["legacy"][-1] == "version_0004.ckpt" and versions["native"][-1] == "version_0001.ckpt"
