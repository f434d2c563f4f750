"""Rolling windows of episode reward and length, and a per-cycle history of them."""

from collections import deque
import math

import numpy as np

from .base import BaseCallback


class MetricsCallback(BaseCallback):
    def __init__(self, window_size: int = 100):
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"MetricsCallback window_size must be a positive int; got {window_size!r}.")
        self.window_size = window_size
        self.rewards = deque(maxlen=window_size)
        self.lengths = deque(maxlen=window_size)
        self.history = []

    def on_episode_end(self, episode_info):
        self.rewards.append(float(episode_info["reward"]))
        self.lengths.append(float(episode_info["length"]))

    def on_metrics_computed(self, metrics):
        record = {
            "cycle": metrics["cycle"],
            "timesteps_total": metrics["timesteps_total"],
            "episode_reward_mean": metrics["episode_reward_mean"],
        }
        record.update(self.window_stats())
        self.history.append(record)

    def on_cycle_complete(self, trainer, metrics):
        for key, value in self.window_stats().items():
            trainer.context.set(f"metrics/{key}", value)

    def window_stats(self):
        """Mean and population std (numpy's ddof=0) of the windows; NaN while a window is empty."""
        return {
            "reward_window_mean": _mean(self.rewards),
            "reward_window_std": _std(self.rewards),
            "length_window_mean": _mean(self.lengths),
            "length_window_std": _std(self.lengths),
        }

    def state_dict(self):
        return {
            "rewards": list(self.rewards),
            "lengths": list(self.lengths),
            "history": [dict(record) for record in self.history],
        }

    def load_state_dict(self, state):
        # The windows keep this callback's window_size, even if the saved one differed.
        self.rewards = deque(state["rewards"], maxlen=self.window_size)
        self.lengths = deque(state["lengths"], maxlen=self.window_size)
        self.history = [dict(record) for record in state["history"]]


def _mean(values):
    return float(np.mean(values)) if values else math.nan


def _std(values):
    return float(np.std(values)) if values else math.nan
