"""Continuous training: running the same command again continues the run (counters, weights, one version
further) exactly as the legacy callback does; an interrupted session is finished, not extended."""

from __future__ import annotations

import csv
import os

import pytest
import pytorch_lightning as pl
import torch

from fxai_compat import LegacyTrainer, fit
from fxai_compat.callbacks import ContinuousTrainingCallback, continue_training
from fxai_compat.callbacks.continuous_training import VERSION_INFO_KEY, read_version_info
from legacy_callbacks import ContinuousTrainingCallback as LegacyContinuousTrainingCallback


from conftest import tiny


def _params(policy):
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()])


def test_running_twice_continues_like_legacy(tmp_path):
    cfg = tiny(tmp_path / "native", cycles=2)
    first = continue_training(cfg)
    second = continue_training(cfg)

    legacy_cfg = tiny(tmp_path / "legacy", cycles=2)
    for _ in range(2):  # the legacy recipe: the same command twice
        legacy = LegacyTrainer(legacy_cfg, [LegacyContinuousTrainingCallback(tmp_path / "legacy" / "versions")]).train()

    core, legacy_core = second.lightning_module.core, legacy.core
    assert (core.cycles_completed, core.total_timesteps, core.num_episodes) == (
        legacy_core.cycles_completed, legacy_core.total_timesteps, legacy_core.num_episodes) == (4, 256, 10)
    assert torch.allclose(_params(second.lightning_module.policy), _params(legacy_core.policy), atol=1e-6)

    keepers = [next(cb for cb in t.callbacks if isinstance(cb, ContinuousTrainingCallback)) for t in (first, second)]
    assert [k.version for k in keepers] == [0, 1]
    assert keepers[0].resumed_from is None and keepers[1].resumed_from.endswith("last.ckpt")
    ckpt_dir = tmp_path / "native" / "ckpt" / "versions"
    assert sorted(os.listdir(ckpt_dir)) == ["last.ckpt", "version_0000.ckpt", "version_0001.ckpt"]
    assert os.path.realpath(ckpt_dir / "last.ckpt") == str(ckpt_dir / "version_0001.ckpt")
    info = read_version_info(ckpt_dir / "last.ckpt")
    assert info["version"] == 1 and info["cycles_done"] == info["target_cycles"] == 4 and info["session_finished"]
    assert [s["version"] for s in info["previous_sessions"]] == [0]
    # One logger version per session, each with its own cycles.
    logs = tmp_path / "native" / "lightning_logs"
    assert sorted(os.listdir(logs)) == ["version_0", "version_1"]
    rows = list(csv.DictReader(open(logs / "version_1" / "metrics.csv")))
    assert _logged_cycles(logs / "version_1") == [2.0, 3.0]
    assert [(float(r["training/version"]), float(r["training/resumed"])) for r in rows if r.get("training/version")] == [
        (1.0, 1.0), (1.0, 1.0)]


def _logged_cycles(log_dir):
    return sorted({float(r["train/cycle"]) for r in csv.DictReader(open(log_dir / "metrics.csv")) if r.get("train/cycle")})


class Crash(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if pl_module.core.cycle == 2:
            raise RuntimeError("simulated crash in cycle 2")


def test_an_interrupted_session_is_finished_not_extended(tmp_path):
    cfg = tiny(tmp_path, cycles=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        continue_training(cfg, [Crash()])
    versions = tmp_path / "ckpt" / "versions"
    info = read_version_info(versions / "last.ckpt")
    assert (info["version"], info["cycles_done"], info["target_cycles"], info["session_finished"]) == (0, 2, 4, False)

    again = continue_training(cfg)
    keeper = next(cb for cb in again.callbacks if isinstance(cb, ContinuousTrainingCallback))
    assert keeper.version == 0 and again.lightning_module.core.cycles_completed == 4
    reference = fit(tiny(tmp_path / "reference", cycles=4))
    assert torch.allclose(_params(again.lightning_module.policy), _params(reference.lightning_module.policy), atol=1e-6)
    assert sorted(os.listdir(versions)) == ["last.ckpt", "version_0000.ckpt"]
    # The interrupted part's metrics stay; the finishing part logs next to them.
    logs = tmp_path / "lightning_logs"
    assert sorted(os.listdir(logs)) == ["version_0", "version_0-part2"]
    assert _logged_cycles(logs / "version_0")[:2] == [0.0, 1.0]
    assert _logged_cycles(logs / "version_0-part2") == [2.0, 3.0]


def test_keep_versions_keeps_the_newest_sessions(tmp_path):
    cfg = tiny(tmp_path, cycles=1, eval_every=0)
    for _ in range(3):
        trainer = continue_training(cfg, keep_versions=2)
    assert trainer.lightning_module.core.cycles_completed == 3
    versions = tmp_path / "ckpt" / "versions"
    assert sorted(os.listdir(versions)) == ["last.ckpt", "version_0001.ckpt", "version_0002.ckpt"]
    assert torch.load(versions / "last.ckpt", weights_only=True)[VERSION_INFO_KEY]["version"] == 2


def test_planned_arguments_are_refused_and_options_validated(tmp_path):
    with pytest.raises(ValueError, match="continue_training plans max_epochs itself.*cycles="):
        continue_training(tiny(tmp_path), max_epochs=10)
    with pytest.raises(ValueError, match="keep_versions must be None \\(keep all\\) or a positive int; got 0"):
        ContinuousTrainingCallback(tmp_path, keep_versions=0)


@pytest.mark.parametrize("checkpoint_every, every_n_cycles, saved_after", [
    (2, None, [1, 3]),  # default: when the run's periodic checkpoints are due, as the legacy callback copies
    (0, None, [3]),     # no periodic checkpoints: the final state only
    (2, 1, [0, 1, 2, 3]),
])
def test_save_cadence_follows_the_runs_checkpoints_by_default(tmp_path, checkpoint_every, every_n_cycles, saved_after):
    from fxai_compat import NotifyingCheckpointIO

    cfg = tiny(tmp_path, cycles=4, eval_every=0, checkpoint_every=checkpoint_every)
    keeper = ContinuousTrainingCallback(tmp_path / "versions", every_n_cycles=every_n_cycles)
    io, written = NotifyingCheckpointIO(), []
    io.listeners.append(lambda path: written.append(
        (os.path.basename(path), read_version_info(path)["cycles_done"] - 1)))
    fit(cfg, [keeper], plugins=[io])
    assert [cycle for name, cycle in written if name.startswith("version_")] == saved_after
    assert read_version_info(tmp_path / "versions" / "last.ckpt")["cycles_done"] == 4
    with pytest.raises(ValueError, match="every_n_cycles must be None \\(the run's checkpoint_every\\) or a positive"):
        ContinuousTrainingCallback(tmp_path, every_n_cycles=0)
