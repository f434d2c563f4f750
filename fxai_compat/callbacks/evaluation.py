"""``EvaluationCallback``: records each evaluation, tracks the best one, and stops training at a reward threshold.

The native port of ``legacy_callbacks.EvaluationCallback``. Evaluation itself is Lightning's
validation loop: ``PPOLightningModule`` evaluates in ``validation_step`` every ``eval_every`` cycles
and logs ``val/episode_reward_mean``, ``val/episode_reward_std``, ``val/episode_length_mean`` and
``val/win_rate``. This callback reads the results in ``on_validation_epoch_end`` (the module's exact
``last_eval_results`` when it keeps them, else the logged ``val/*`` values), appends them with the
cycle index to ``history`` (the same records as the legacy ``history``), tracks ``best_reward`` /
``best_cycle``, logs ``val/best_episode_reward_mean``, and, once the reward reaches
``reward_threshold``, sets ``trainer.should_stop``: the current cycle completes (metrics,
checkpoints), no new one starts, as with the legacy ``trainer.stop_training``. Under DDP the stop
decision is combined across ranks with ``trainer.strategy.reduce_boolean_decision`` (any rank
reaching the threshold stops all), so no rank keeps training alone. Lightning's sanity-check
validation is ignored.

>>> cb = EvaluationCallback(reward_threshold=200.0)
>>> cb.best_cycle is None and cb.history == [] and cb.num_evaluations == 0
True
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from ..fast_paths import log_value
from .base import MissingMetricError

__all__ = ["EvaluationCallback"]

_RESULT_KEYS = ("episode_reward_mean", "episode_reward_std", "episode_length_mean", "win_rate")


class EvaluationCallback(pl.Callback):
    """Evaluation history, best evaluation, optional stop at ``reward_threshold`` (synchronized across ranks)."""

    def __init__(self, reward_threshold: float | None = None):
        super().__init__()
        if reward_threshold is not None and (isinstance(reward_threshold, bool)
                                             or not isinstance(reward_threshold, (int, float))):
            raise ValueError(f"EvaluationCallback reward_threshold must be a number or None; got {reward_threshold!r}.")
        self.reward_threshold = reward_threshold
        self.num_evaluations = 0
        self.history: list[dict[str, Any]] = []
        self.best_reward = -math.inf
        self.best_cycle: int | None = None
        self.stopped_at_cycle: int | None = None

    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self.num_evaluations += 1

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking:
            return
        results = self._results(trainer, pl_module)
        core = getattr(pl_module, "core", None)
        cycle = core.cycle if core is not None else trainer.current_epoch
        self.history.append(dict(results, cycle=cycle))
        reward = results["episode_reward_mean"]
        if not math.isnan(reward) and reward > self.best_reward:
            self.best_reward = float(reward)
            self.best_cycle = cycle
        log_value(pl_module, "val/best_episode_reward_mean", self.best_reward, on_step=False, on_epoch=True)
        reached = self.reward_threshold is not None and reward >= self.reward_threshold
        if trainer.strategy.reduce_boolean_decision(bool(reached), all=False):
            trainer.should_stop = True
            if self.stopped_at_cycle is None:
                self.stopped_at_cycle = cycle

    @staticmethod
    def _results(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Any]:
        exact = getattr(pl_module, "last_eval_results", None)
        if exact is not None:
            return dict(exact)
        metrics = trainer.callback_metrics
        if "val/episode_reward_mean" not in metrics:
            raise MissingMetricError("EvaluationCallback", "val/episode_reward_mean", metrics,
                                     "Log it from validation_step (PPOLightningModule does).")
        results = {key: float(metrics[f"val/{key}"]) if f"val/{key}" in metrics else math.nan for key in _RESULT_KEYS}
        results["episodes"] = getattr(getattr(pl_module, "config", None), "eval_episodes", None)
        return results

    def state_dict(self) -> dict[str, Any]:
        return {"num_evaluations": self.num_evaluations, "history": [dict(record) for record in self.history],
                "best_reward": self.best_reward, "best_cycle": self.best_cycle,
                "stopped_at_cycle": self.stopped_at_cycle}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_evaluations = state_dict["num_evaluations"]
        self.history = [dict(record) for record in state_dict["history"]]
        self.best_reward = state_dict["best_reward"]
        self.best_cycle = state_dict["best_cycle"]
        self.stopped_at_cycle = state_dict["stopped_at_cycle"]
