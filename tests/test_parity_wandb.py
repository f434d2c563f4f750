"""W&B port parity: the legacy callback's offline run and the native port's are read back from their files
(names, steps, values, config, summary) and must agree; the native port logs the legacy names by default, so a
dashboard built on legacy runs keeps working, and a port that renames a metric is caught by that name."""

from __future__ import annotations

import pytest

from fxai_compat.callbacks.wandb import RLWandbCallback, create_wandb_logger
from fxai_compat.parity import check_port_parity, parity_config
from fxai_compat.parity.wandb_check import OBSERVABLES, check_wandb_port
from fxai_compat.parity.wandb_files import read_offline_run
from fxai_compat.toggle import PortPair
from legacy_callbacks import WandbCallback

LEGACY_NAMES = ["approx_kl", "clip_fraction", "cycle", "entropy", "episode/length", "episode/reward",
                "episode_length_mean", "episode_reward_mean", "episodes_total", "eval_episode_reward_mean",
                "eval_win_rate", "loss", "policy_loss", "timesteps_total", "value_loss"]


def test_native_wandb_run_reads_back_like_the_legacy_run(tmp_path):
    result = check_port_parity("wandb", parity_config(), workdir=tmp_path,
                               options={"project": "p", "config": {"team": "fx"}})
    assert result.ok and result.status == "ok", result.summary()
    assert {k: n for k, (n, _) in result.counts.items()} == {"metric_names": 1, "cycle_metrics": 4, "episodes": 4,
                                                             "config": 1, "summary": 1}
    assert list(result.counts) == list(OBSERVABLES)
    legacy, native = read_offline_run(tmp_path / "legacy"), read_offline_run(tmp_path / "native")
    assert legacy.metric_names() == LEGACY_NAMES
    assert native.metric_names() == sorted(LEGACY_NAMES + ["charts/action_distribution", "charts/value_estimates"])
    # Same rows at the same W&B steps: a dashboard's x-axis (_step) lines up.
    assert [r["_step"] for r in native.history] == [r["_step"] for r in legacy.history]
    assert native.config["team"] == legacy.config["team"] == "fx" and native.config["cycles"] == 4
    assert native.summary["episode_reward_mean"] == pytest.approx(legacy.summary["episode_reward_mean"], abs=1e-6)


class RenamingWandbCallback(RLWandbCallback):
    """A deliberately broken port: logs ``episode_reward_mean`` as ``episode_reward``."""

    def on_train_epoch_end(self, trainer, pl_module):
        original = pl_module.cycle_metrics
        pl_module.cycle_metrics = lambda: {("episode_reward" if k == "episode_reward_mean" else k): v
                                           for k, v in original().items()}
        try:
            super().on_train_epoch_end(trainer, pl_module)
        finally:
            del pl_module.cycle_metrics


def renaming_port(project="fxai", mode="offline", dir=None, name=None, config=None, log_episodes=True):
    logger = create_wandb_logger({"project": project, "mode": mode, "dir": dir, "name": name, "config": config})
    return RenamingWandbCallback(log_episodes=log_episodes, video_every_n_cycles=None), logger


def test_a_renamed_metric_is_caught_by_name(tmp_path):
    pair = PortPair("wandb_renamed", WandbCallback, renaming_port, check=check_wandb_port)
    result = check_port_parity(pair, parity_config(cycles=2), workdir=tmp_path)
    assert not result.ok and result.status == "FAILED"
    what = result.divergence.what
    assert "metric_names" in what and "logged by legacy only: ['episode_reward_mean']" in what, what
    assert "by native only: ['episode_reward']" in what
    bad = [h["observable"] for h in result.history if not h["ok"]]
    assert bad == ["metric_names", "cycle_metrics", "cycle_metrics", "summary"]  # every place it shows


def test_lightning_names_are_a_documented_switch(tmp_path):
    from fxai_compat import fit

    from conftest import tiny

    logger = create_wandb_logger({"mode": "offline", "dir": str(tmp_path), "metric_names": "lightning"})
    fit(tiny(tmp_path, cycles=1), [RLWandbCallback(metric_names="lightning", video_every_n_cycles=None)],
        logger=logger)
    logger.experiment.finish()
    names = read_offline_run(tmp_path).metric_names()
    assert "train/episode_reward_mean" in names and "trainer/global_step" in names
    assert "episode_reward_mean" not in names
    with pytest.raises(ValueError, match="metric_names must be one of 'legacy', 'lightning'; got 'new'"):
        RLWandbCallback(metric_names="new")
    mixed = create_wandb_logger({"mode": "disabled", "metric_names": "lightning"})
    with pytest.raises(ValueError, match="differ; pass create_wandb_logger\\(metric_names='legacy'\\)"):
        fit(tiny(tmp_path / "mixed", cycles=1), [RLWandbCallback()], logger=mixed)


def test_other_native_metrics_join_the_cycle_rows_instead_of_adding_rows(tmp_path):
    from fxai_compat import fit
    from fxai_compat.callbacks import EvaluationCallback, MetricsCallback

    from conftest import tiny

    cfg = tiny(tmp_path, cycles=2, eval_every=1)
    logger = create_wandb_logger({"mode": "offline", "dir": str(tmp_path / "native")})
    fit(cfg, [RLWandbCallback(video_every_n_cycles=None), MetricsCallback(window_size=5), EvaluationCallback()],
        logger=logger)
    logger.experiment.finish()
    rows = read_offline_run(tmp_path / "native").history
    cycle_rows = [r for r in rows if "cycle" in r]
    assert len(cycle_rows) == 2 and all("episode/reward" in r for r in rows if "cycle" not in r)
    for row in cycle_rows:  # the native callbacks' metrics are in the cycle's row, not rows of their own
        assert "metrics/reward_window_mean" in row and "val/best_episode_reward_mean" in row
        assert "eval_episode_reward_mean" in row and "train/episode_reward_mean" not in row
    assert [r["_step"] for r in rows] == list(range(len(rows)))
