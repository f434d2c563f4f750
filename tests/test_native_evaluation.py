"""EvaluationCallback: Lightning's validation loop evaluates; history, best and threshold stop equal the legacy callback's."""

from __future__ import annotations

import math

import pytest

from fxai_compat import LegacyTrainer, fit
from fxai_compat.callbacks import EvaluationCallback
from legacy_callbacks import EvaluationCallback as LegacyEvaluationCallback


from conftest import same, tiny


def test_history_and_best_match_legacy(tmp_path):
    cfg = tiny(tmp_path, cycles=4, checkpoint_every=0)
    legacy = LegacyEvaluationCallback()
    LegacyTrainer(cfg, [legacy]).train()
    native = EvaluationCallback()
    trainer = fit(cfg, [native], num_sanity_val_steps=1)  # the sanity check must not count as an evaluation

    assert [record["cycle"] for record in native.history] == [1, 3]
    assert same(native.history, legacy.history)
    assert (native.num_evaluations, native.best_cycle, native.best_reward) == (
        legacy.num_evaluations, legacy.best_cycle, legacy.best_reward)
    metrics = trainer.callback_metrics
    last = native.history[-1]
    assert metrics["val/episode_reward_mean"].item() == pytest.approx(last["episode_reward_mean"], rel=1e-6)
    assert metrics["val/win_rate"].item() == pytest.approx(last["win_rate"], rel=1e-6)
    assert metrics["val/best_episode_reward_mean"].item() == pytest.approx(native.best_reward, rel=1e-6)
    assert native.stopped_at_cycle is None and trainer.lightning_module.core.cycles_completed == 4


def test_reward_threshold_stops_after_the_current_cycle_like_legacy(tmp_path):
    cfg = tiny(tmp_path, cycles=6)
    legacy = LegacyEvaluationCallback(reward_threshold=-math.inf)
    legacy_trainer = LegacyTrainer(cfg.replace(checkpoint_dir=str(tmp_path / "legacy")), [legacy]).train()
    native = EvaluationCallback(reward_threshold=-math.inf)
    trainer = fit(cfg, [native])

    assert native.stopped_at_cycle == legacy.stopped_at_cycle == 1
    assert trainer.lightning_module.core.cycles_completed == legacy_trainer.core.cycles_completed == 2
    # The stopping cycle completes: its periodic checkpoint (due after cycle 2) is written.
    assert (tmp_path / "ckpt" / "cycle-0001.ckpt").exists()
    assert same(native.history, legacy.history)
    restored = EvaluationCallback()
    restored.load_state_dict(native.state_dict())
    assert same(restored.state_dict(), legacy.state_dict())


def test_threshold_must_be_a_number():
    with pytest.raises(ValueError, match="reward_threshold must be a number or None; got '200'"):
        EvaluationCallback(reward_threshold="200")
