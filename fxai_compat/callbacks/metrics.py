"""``MetricsCallback``: rolling windows of episode reward and length, logged once per cycle.

The native port of ``legacy_callbacks.MetricsCallback``. The hot path (``on_rl_episode_end``, once
per finished episode) only appends to two ``collections.deque(maxlen=window_size)`` (~0.03 us);
torchmetrics' ``RunningMean`` is not used because it costs ~2 ms per update. At the end of each
cycle (``on_train_epoch_end``) it logs with ``pl_module.log(..., on_epoch=True)``:

* ``metrics/reward_window_mean``, ``metrics/reward_window_std``, ``metrics/length_window_mean``,
  ``metrics/length_window_std``: mean and population std (numpy's ``ddof=0``) of the windows,
  NaN while a window is empty; the same numbers as the legacy ``window_stats()``;
* ``metrics/episode_reward_epoch``, ``metrics/episode_length_epoch``: the cycle's mean over the
  episodes of *all* ranks, through torchmetrics ``MeanMetric`` (its ``compute()`` is a collective
  under DDP, so every rank calls it every cycle).

Under several processes the windows are global: each rank buffers its episodes during the cycle
and at cycle end the buffers are gathered (one ``all_gather_object``) and appended in the order the
legacy adapter delivers them on rank 0 (vector step, then global ``env_index``), so every rank
holds the same windows and the legacy callback, wrapped, would report the same values.

>>> cb = MetricsCallback(window_size=2)
>>> for reward, length in [(1.0, 10), (2.0, 20), (4.0, 30)]:
...     cb.on_rl_episode_end(None, None, {"reward": reward, "length": length})
>>> cb.window_stats()
{'reward_window_mean': 3.0, 'reward_window_std': 1.0, 'length_window_mean': 25.0, 'length_window_std': 5.0}
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torchmetrics

from ..fast_paths import log_value
from ..lightning_host import LOGGED_METRICS
from .base import RLCallback

__all__ = ["MetricsCallback"]

WINDOW_KEYS = ("reward_window_mean", "reward_window_std", "length_window_mean", "length_window_std")


class MetricsCallback(RLCallback):
    """Rolling reward/length windows (``window_stats()``, logged per cycle) and per-cycle history.

    Args:
        window_size: how many of the most recent episodes the windows hold.
        prefix: prefix of the logged names (default ``"metrics/"``).
    """

    def __init__(self, window_size: int = 100, prefix: str = "metrics/"):
        super().__init__()
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"MetricsCallback window_size must be a positive int; got {window_size!r}.")
        if not isinstance(prefix, str):
            raise ValueError(f"MetricsCallback prefix must be a string; got {prefix!r}.")
        self.window_size = window_size
        self.prefix = prefix
        self.rewards: deque[float] = deque(maxlen=window_size)
        self.lengths: deque[float] = deque(maxlen=window_size)
        #: One record per cycle: cycle, timesteps_total, episode_reward_mean and the window stats
        #: (the legacy callback's ``history``).
        self.history: list[dict[str, Any]] = []
        #: The exact values logged at the end of the last cycle.
        self.last_logged: dict[str, float] = {}
        self._cycle_rewards: list[float] = []
        self._cycle_lengths: list[float] = []
        self._pending: list[tuple[int, int, float, float]] | None = None  # DDP: this cycle's episodes, merged at cycle end
        self._reward_epoch = torchmetrics.MeanMetric().set_dtype(torch.float64)
        self._length_epoch = torchmetrics.MeanMetric().set_dtype(torch.float64)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(window_size=self.window_size, prefix=self.prefix)

    # -- the hot path -----------------------------------------------------------------------------
    def on_rl_episode_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        reward, length = float(payload["reward"]), float(payload["length"])
        self._cycle_rewards.append(reward)
        self._cycle_lengths.append(length)
        if self._pending is None:
            self.rewards.append(reward)
            self.lengths.append(length)
        else:
            core = getattr(pl_module, "core", None)
            step = core.vector_steps if core is not None else len(self._pending)
            self._pending.append((step, int(payload.get("env_index", 0)), reward, length))

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._pending = [] if trainer.world_size > 1 else None
        self._cycle_rewards, self._cycle_lengths = [], []

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._pending is not None:
            self._merge_ranks()
        reward_epoch = self._epoch_mean(self._reward_epoch, self._cycle_rewards)
        length_epoch = self._epoch_mean(self._length_epoch, self._cycle_lengths)
        self._cycle_rewards, self._cycle_lengths = [], []
        stats = self.window_stats()
        logged = {f"{self.prefix}{key}": value for key, value in stats.items()}
        logged[f"{self.prefix}episode_reward_epoch"] = reward_epoch
        logged[f"{self.prefix}episode_length_epoch"] = length_epoch
        for name, value in logged.items():
            # Identical on every rank (global windows, synced MeanMetric): no sync_dist needed.
            log_value(pl_module, name, value, on_step=False, on_epoch=True)
        self.last_logged = logged
        self.history.append({**self._cycle_record(trainer, pl_module), **stats})

    # -- results ----------------------------------------------------------------------------------
    def window_stats(self) -> dict[str, float]:
        """Mean and population std (numpy's ddof=0) of the windows; NaN while a window is empty."""
        return {
            "reward_window_mean": _mean(self.rewards),
            "reward_window_std": _std(self.rewards),
            "length_window_mean": _mean(self.lengths),
            "length_window_std": _std(self.lengths),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": list(self.rewards), "lengths": list(self.lengths),
                "history": [dict(record) for record in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The windows keep this callback's window_size, even if the saved one differed (as the legacy one does).
        self.rewards = deque(state_dict["rewards"], maxlen=self.window_size)
        self.lengths = deque(state_dict["lengths"], maxlen=self.window_size)
        self.history = [dict(record) for record in state_dict.get("history", [])]

    # -- helpers ----------------------------------------------------------------------------------
    def _merge_ranks(self) -> None:
        import torch.distributed as dist

        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._pending)
        self._pending = []
        for _, _, reward, length in sorted((item for part in gathered for item in part), key=lambda e: (e[0], e[1])):
            self.rewards.append(reward)
            self.lengths.append(length)

    @staticmethod
    def _epoch_mean(metric: torchmetrics.MeanMetric, values: list[float]) -> float:
        # An empty update keeps compute() silent on a rank without episodes; compute() syncs under DDP.
        metric.update(torch.tensor(values, dtype=torch.float64))
        value = float(metric.compute())
        metric.reset()
        return value

    @staticmethod
    def _cycle_record(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Any]:
        exact = getattr(pl_module, "exact_logged", None)
        source = exact if exact else trainer.callback_metrics
        record: dict[str, Any] = {}
        for key in ("cycle", "timesteps_total", "episode_reward_mean"):
            value = source.get(LOGGED_METRICS[key], math.nan)
            value = value.item() if hasattr(value, "item") else value
            record[key] = int(value) if key != "episode_reward_mean" and not math.isnan(value) else value
        return record


def _mean(values) -> float:
    return float(np.mean(values)) if values else math.nan


def _std(values) -> float:
    return float(np.std(values)) if values else math.nan
