"""W&B: an offline WandbLogger run with RLWandbCallback's episodes and histograms, read back from the run file and
compared with the legacy WandbCallback's run; refusals for configurations that cannot work."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from fxai_compat import LegacyTrainer, fit
from fxai_compat.callbacks import RLCallback, RLWandbCallback, create_wandb_logger
from fxai_compat.callbacks.wandb import episode_frames
from fxai_compat.parity.wandb_files import read_offline_run
from legacy_callbacks import WandbCallback


from conftest import tiny


def read_history(run_dir, settle_seconds: float = 20.0) -> list[dict]:
    """The ``history`` records of the offline run under ``run_dir``, read with the parity toolkit's own reader
    once wandb-core has written them."""
    return read_offline_run(run_dir, settle_seconds).history


class EpisodeLog(RLCallback):
    def __init__(self):
        self.rewards = []

    def on_rl_episode_end(self, trainer, pl_module, payload):
        self.rewards.append(payload["reward"])


def test_offline_run_holds_episodes_histograms_and_metrics_like_legacy(tmp_path):
    cfg = tiny(tmp_path, cycles=3, checkpoint_every=0, eval_every=0)
    legacy = WandbCallback(project="fxai-test", mode="offline", dir=str(tmp_path / "legacy"))
    LegacyTrainer(cfg, [legacy]).train()

    # Lightning's metric names (the switch; the default, legacy names, is proven by tests/test_parity_wandb.py).
    logger = create_wandb_logger({"project": "fxai-test", "mode": "offline", "dir": str(tmp_path / "native"),
                                  "metric_names": "lightning"})
    log = EpisodeLog()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(cfg, [log, RLWandbCallback(video_every_n_cycles=1, metric_names="lightning")], logger=logger)
    logger.experiment.finish()

    native = read_history(tmp_path / "native")
    episodes = [r["episode/reward"] for r in native if "episode/reward" in r]
    assert episodes == log.rewards and len(episodes) > 0
    actions = [r for r in native if "charts/action_distribution/_type" in r]
    assert len(actions) == cfg.cycles
    for record in actions:
        assert len(record["charts/action_distribution/bins"]) == 4  # three discrete actions, one bin each
        assert sum(record["charts/action_distribution/values"]) == cfg.rollout_size
        assert record["charts/value_estimates/_type"] == "histogram"
    train_means = [r["train/episode_reward_mean"] for r in native if "train/episode_reward_mean" in r]
    moviepy_missing = importlib.util.find_spec("moviepy") is None
    video_warnings = [w for w in caught if "moviepy is not installed" in str(w.message)]
    assert len(video_warnings) == (1 if moviepy_missing else 0)  # once, not once per cycle
    assert any("videos/episode" in k for r in native for k in r) == (not moviepy_missing)

    # Parity with the legacy callback's run: the same episodes, the same per-cycle metrics.
    old = read_history(tmp_path / "legacy")
    assert [r["episode/reward"] for r in old if "episode/reward" in r] == episodes
    old_means = [r["episode_reward_mean"] for r in old if "episode_reward_mean" in r]
    assert np.allclose(train_means, old_means, rtol=1e-6, atol=1e-6)  # self.log stores float32


def test_log_model_offline_and_unknown_options_are_refused():
    with pytest.raises(ValueError, match="log_model=True uploads checkpoints.*mode is 'offline'.*mode='online'"):
        create_wandb_logger({"mode": "offline", "log_model": True})
    with pytest.raises(ValueError, match="Unknown option\\(s\\) 'log_episodes'.*RLWandbCallback\\(log_episodes"):
        create_wandb_logger({"log_episodes": False})
    with pytest.raises(ValueError, match="mode must be one of 'offline', 'online', 'disabled'; got 'dryrun'"):
        create_wandb_logger(mode="dryrun")


def test_callback_without_a_wandb_logger_says_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="has none \\(loggers: CSVLogger\\).*logger=create_wandb_logger"):
        fit(tiny(tmp_path, cycles=1), [RLWandbCallback()])


def test_fx_episode_frames_are_a_video_array(tmp_path):
    from fxai_compat import PPOLightningModule

    module = PPOLightningModule(tiny(tmp_path))
    frames = episode_frames(module, max_steps=30)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1] == 3
    assert frames.shape[0] == 24  # one frame per step of the (24-step) episode
    assert frames[-1].any() and not np.array_equal(frames[0], frames[-1])
