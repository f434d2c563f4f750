"""RLCheckpointCallback: best and periodic checkpoints like the legacy callback's, RL state saved and restored,
and a clear error for a monitored metric that is not logged."""

from __future__ import annotations

import os

import pytest
import pytorch_lightning as pl
import torch

from fxai_compat import LegacyTrainer, fit, read_training_checkpoint
from fxai_compat.callbacks import MissingMetricError, RLCheckpointCallback, create_checkpoint_callback
from fxai_compat.callbacks.checkpoint import RL_CHECKPOINT_KEY
from legacy_callbacks import CheckpointCallback


from conftest import tiny


def test_best_cycle_and_files_match_legacy(tmp_path):
    # Episodes of 40 steps with 32-step rollouts: no episode ends in cycle 0, so its reward is NaN (never the best).
    cfg = tiny(tmp_path, cycles=4, episode_length=40, checkpoint_every=0, eval_every=0)
    legacy = CheckpointCallback(tmp_path / "legacy", save_freq=2)
    LegacyTrainer(cfg, [legacy]).train()
    native = create_checkpoint_callback({"save_dir": str(tmp_path / "native"), "save_freq": 2})
    trainer = fit(cfg, [native])

    assert legacy.best_cycle is not None and legacy.best_cycle != 0
    assert native.best_cycle == legacy.best_cycle
    assert native.best_reward == legacy.best_reward  # exact: compared as Python floats, not float32 tensors
    files = set(os.listdir(tmp_path / "native"))
    legacy_periodic = {f for f in os.listdir(tmp_path / "legacy") if f.startswith("model_cycle_")}
    assert {f"model_cycle_{c:04d}.pt" for c in (1, 3)} == legacy_periodic
    assert files == {f"best-cycle{legacy.best_cycle:04d}.ckpt", "model-cycle0001.ckpt", "model-cycle0003.ckpt",
                     "last.ckpt"}

    best = read_training_checkpoint(native.best_model_path)
    assert best.rl_state["cycles_completed"] == legacy.best_cycle + 1
    raw = torch.load(native.best_model_path, weights_only=True)
    saved = raw[RL_CHECKPOINT_KEY]
    assert saved["best"] == {"monitor": "train/episode_reward_mean", "best_cycle": legacy.best_cycle,
                             "best_reward": legacy.best_reward}
    assert saved["counters"]["cycle"] == legacy.best_cycle
    assert saved["episode_stats"]["train/episode_reward_mean"] == legacy.best_reward
    assert trainer.checkpoint_callback is native  # Lightning sees it as the checkpoint callback


def test_resume_restores_best_cycle_and_global_rng(tmp_path):
    cfg = tiny(tmp_path, cycles=2, checkpoint_every=0, eval_every=0)
    first = RLCheckpointCallback(tmp_path / "ckpt", save_every_n_cycles=1)
    torch.manual_seed(1234)
    fit(cfg, [first])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)

    class RngProbe(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.rng = torch.get_rng_state()

    probe = RngProbe()
    resumed = RLCheckpointCallback(tmp_path / "ckpt", save_every_n_cycles=1)
    torch.manual_seed(999)  # a different global state; the checkpoint's must come back
    fit(cfg.replace(cycles=3), [probe, resumed], ckpt_path="last")
    assert torch.equal(probe.rng, saved[RL_CHECKPOINT_KEY]["rng"]["torch"])
    assert resumed.best_cycle is not None
    assert resumed.best_cycle == (first.best_cycle if resumed.best_reward == first.best_reward else 2)
    assert len(resumed.periodic_paths) == 3  # two restored from the first run's state, one new


def test_missing_monitored_metric_raises_listing_the_metrics(tmp_path):
    cfg = tiny(tmp_path, cycles=1, checkpoint_every=0, eval_every=0)
    with pytest.raises(MissingMetricError) as info:
        fit(cfg, [RLCheckpointCallback(tmp_path / "c", monitor="episode_reward_mean")])
    message = str(info.value)
    assert "monitors 'episode_reward_mean', which was not logged" in message
    assert "train/episode_reward_mean" in message and "train/loss" in message
    assert "is logged as 'train/episode_reward_mean'" in message
    assert isinstance(info.value, KeyError)  # as the legacy callback's error
    assert not os.path.exists(tmp_path / "c" / "last.ckpt")


def test_sharing_last_ckpt_with_the_periodic_checkpoints_is_refused(tmp_path):
    cfg = tiny(tmp_path, cycles=1)  # the host adds its periodic CycleCheckpoint in cfg.checkpoint_dir
    with pytest.raises(ValueError, match="RLCheckpointCallback and CycleCheckpoint both keep last.ckpt in .*ckpt"):
        fit(cfg, [RLCheckpointCallback(cfg.checkpoint_dir)])


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="without '/'"):
        RLCheckpointCallback("x", filename="train/{cycle}")
    with pytest.raises(ValueError, match="Unknown option\\(s\\) 'every'.*accepted options: save_dir"):
        create_checkpoint_callback({"save_dir": "x", "every": 3})
    with pytest.raises(ValueError, match="save_freq must be a positive int"):
        create_checkpoint_callback({"save_dir": "x", "save_freq": 0})
    with pytest.raises(ValueError, match="monitor must be a legacy metric name"):
        create_checkpoint_callback({"save_dir": "x", "monitor": "reward"})
    assert create_checkpoint_callback({"save_dir": "x", "enabled": False}) is None
    cb = create_checkpoint_callback({"save_dir": "x", "monitor": "eval_episode_reward_mean"})
    assert (cb.monitor, cb.mode) == ("val/episode_reward_mean", "max")


def test_periodic_saves_only_link_last_instead_of_writing_it_again(tmp_path):
    from fxai_compat import NotifyingCheckpointIO

    cfg = tiny(tmp_path, cycles=6, checkpoint_every=0, eval_every=0)
    callback = RLCheckpointCallback(tmp_path / "periodic", monitor=None, save_every_n_cycles=2)
    io, written = NotifyingCheckpointIO(), []
    io.listeners.append(lambda path: written.append(os.path.basename(path)))
    fit(cfg, [callback], plugins=[io])
    # ModelCheckpoint on its own (save_top_k=0) writes a full last.ckpt after each periodic save and every cycle after.
    assert written == ["model-cycle0001.ckpt", "model-cycle0003.ckpt", "model-cycle0005.ckpt"]
    last = tmp_path / "periodic" / "last.ckpt"
    assert os.path.islink(last) and os.path.realpath(last) == str(tmp_path / "periodic" / "model-cycle0005.ckpt")
    assert read_training_checkpoint(last).rl_state["cycles_completed"] == 6
