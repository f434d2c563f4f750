"""Saves the policy's weights when the monitored metric improves, and every ``save_freq`` cycles."""

import math
import os

import torch

from .base import BaseCallback


class CheckpointCallback(BaseCallback):
    def __init__(self, save_dir, save_freq: int = 10, monitor: str = "episode_reward_mean"):
        if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(f"CheckpointCallback save_freq must be a positive int (cycles); got {save_freq!r}.")
        self.save_dir = os.fspath(save_dir)
        self.save_freq = save_freq
        self.monitor = monitor
        self.best_reward = -math.inf
        self.best_cycle = None
        self.saved_paths = []  # every file written, in order; best_model.pt recurs when it improves

    def on_cycle_complete(self, trainer, metrics):
        if self.monitor not in metrics:
            raise KeyError(
                f"CheckpointCallback monitors {self.monitor!r}, which is not in the metrics; "
                f"available metrics: {', '.join(sorted(metrics))}."
            )
        value = metrics[self.monitor]
        cycle = metrics["cycle"]
        if not math.isnan(value) and value > self.best_reward:
            self.best_reward = float(value)
            self.best_cycle = cycle
            self.save_checkpoint(trainer.model, "best_model.pt")
        # Cycles are counted from 1 here: save_freq=10 saves after the 10th cycle (index 9).
        if (cycle + 1) % self.save_freq == 0:
            self.save_checkpoint(trainer.model, f"model_cycle_{cycle:04d}.pt")

    def save_checkpoint(self, model, filename):
        os.makedirs(self.save_dir, exist_ok=True)
        path = os.path.join(self.save_dir, filename)
        # Write aside and rename, so a reader never sees a half-written file.
        tmp_path = f"{path}.tmp-{os.getpid()}"
        torch.save(model.state_dict(), tmp_path)
        os.replace(tmp_path, path)
        self.saved_paths.append(path)
        return path

    def state_dict(self):
        return {"best_reward": self.best_reward, "best_cycle": self.best_cycle}

    def load_state_dict(self, state):
        self.best_reward = state["best_reward"]
        self.best_cycle = state["best_cycle"]
