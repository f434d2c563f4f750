"""A 2-process CPU DDP fit with adapter-wrapped legacy callbacks, for ``tests/test_adapter.py``.

Usage: ``python ddp_adapter_run.py OUT_DIR`` (MASTER_ADDR/MASTER_PORT from the environment), after
``write_start_checkpoint(OUT_DIR)`` (the test imports this file and calls it). Lightning re-executes
this script for rank 1. Rank 0 writes ``OUT_DIR/result.json`` (what the recorder saw); every rank
writes ``OUT_DIR/rank<r>.json`` (epochs run, whether its model started from the loaded file, a
checksum of its final model). The recorder asks for a stop at cycle 1 by returning False from
``on_cycle_complete``; another legacy callback calls ``trainer.load_checkpoint`` in on_training_start.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch

from fxai_compat import LegacyCallbackAdapter, PPOCore, TrainConfig, fit
from fxai_compat.checkpoints import LEGACY_FORMAT, write_atomic

warnings.filterwarnings("ignore")


class Recorder:
    """Records what rank 0 sees; stops the run at cycle 1."""

    def __init__(self):
        self.events = []
        self.episode_starts = []
        self.episode_ends = []
        self.step_end_widths = set()
        self.cycles = []
        self.counter_problems = []
        self.last_episodes = 0

    def on_training_start(self, trainer):
        self.events.append("on_training_start")

    def on_episode_start(self, episode_info):
        self.events.append("on_episode_start")
        self.episode_starts.append((episode_info["env_index"], episode_info["episode_index"]))

    def on_rollout_start(self, trainer):
        self.events.append("on_rollout_start")

    def on_step_end(self, trainer, step_info):
        self.events.append("on_step_end")
        self.step_end_widths.add(len(step_info["dones"]))
        if trainer.total_timesteps != step_info["total_timesteps"]:  # all environments together
            self.counter_problems.append(("step_end", trainer.total_timesteps, step_info["total_timesteps"]))

    def on_episode_end(self, trainer, episode_info):
        self.events.append("on_episode_end")
        self.episode_ends.append((episode_info["env_index"], episode_info["episode_index"]))
        if trainer.num_episodes != self.last_episodes + 1:  # counted as each episode ends, all ranks
            self.counter_problems.append(("episode_end", trainer.num_episodes, self.last_episodes))
        self.last_episodes = trainer.num_episodes

    def on_rollout_end(self, rollout_info):
        self.events.append("on_rollout_end")

    def on_update_end(self, update_info):
        self.events.append("on_update_end")

    def on_cycle_complete(self, trainer, metrics):
        self.events.append("on_cycle_complete")
        self.cycles.append(trainer.cycle)
        self.cycle_counters = (trainer.total_timesteps, trainer.num_episodes)
        return False if trainer.cycle == 1 else None


class FileWriter:
    """A side effect that must happen once: appends a line per event to OUT_DIR/writer.log."""

    def __init__(self, path):
        self.path = path

    def _write(self, what):
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{what} {os.getpid()}\n")

    def on_training_start(self):
        self._write("start")

    def on_cycle_complete(self):
        self._write("cycle")

    def on_training_end(self):
        self._write("end")


class LoadAtStart:
    """Loads OUT_DIR/start.ckpt in on_training_start (as ContinuousTrainingCallback does with its versions)."""

    def __init__(self, path):
        self.path = str(path)

    def on_training_start(self, trainer):
        trainer.load_checkpoint(self.path)


class EpochCounter(pl.Callback):
    """Per rank: epochs run, and whether the model at on_train_start is the one in start.ckpt."""

    def __init__(self, start_path):
        self.epochs = 0
        self.start_path = start_path
        self.started_from_file = None

    def on_train_start(self, trainer, pl_module):  # after the adapters' on_train_start
        saved = torch.load(self.start_path, weights_only=True)["model"]
        current = pl_module.policy.state_dict()
        self.started_from_file = all(torch.equal(saved[k], current[k]) for k in saved)

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs += 1


def config(out: Path) -> TrainConfig:
    return TrainConfig(n_envs=2, n_steps=32, episode_length=12, cycles=4, update_epochs=2, minibatch_size=48,
                       eval_every=0, checkpoint_every=0, checkpoint_dir=str(out / "ckpt"), hidden_sizes=(16, 16),
                       data_length=2000, seed=3)


def write_start_checkpoint(out: Path) -> Path:
    """A legacy-format checkpoint of a fresh run whose policy weights are shifted (so loading it shows)."""
    cfg = config(out)
    core = PPOCore(cfg)
    with torch.no_grad():
        for p in core.policy.parameters():
            p.add_(0.05)
    path = out / "start.ckpt"
    write_atomic({"format": LEGACY_FORMAT, "model": core.policy.state_dict(), "optimizer": None,
                  "rl_state": core.state_dict(), "callbacks": {}, "run_cycles_done": 0, "config": cfg.to_dict()}, path)
    return path


def main(out: Path) -> None:
    cfg = config(out)
    recorder, counter = Recorder(), EpochCounter(out / "start.ckpt")
    trainer = fit(cfg, [LegacyCallbackAdapter(recorder), LegacyCallbackAdapter(FileWriter(out / "writer.log")),
                        LegacyCallbackAdapter(LoadAtStart(out / "start.ckpt")), counter],
                  strategy="ddp", devices=2, default_root_dir=str(out / "logs"))
    rank = trainer.global_rank
    final = torch.cat([p.detach().reshape(-1) for p in trainer.lightning_module.policy.parameters()])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "epochs": counter.epochs, "episodes": trainer.lightning_module.core.num_episodes,
        "started_from_file": counter.started_from_file, "final_params": final.tolist()}))
    if rank == 0:
        result = {"n_envs": cfg.n_envs, "n_steps": cfg.n_steps,
                  "updates_per_cycle": cfg.update_epochs * cfg.minibatches_per_epoch,
                  "cycles": recorder.cycles, "episode_starts": recorder.episode_starts,
                  "episode_ends": recorder.episode_ends, "step_end_widths": sorted(recorder.step_end_widths),
                  "first_events": recorder.events[:40], "counts": Counter(recorder.events),
                  "counter_problems": recorder.counter_problems, "cycle_counters": recorder.cycle_counters}
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
