"""2-process CPU DDP fits of a tiny config; each rank prints one JSON line (run by test_lightning_host.py).

``strategy="ddp"`` re-executes this script for rank 1, so it has to be a file. Usage:
``python ddp_host_fit.py OUT_DIR``. Three fits run in the same two processes: an uninterrupted run
(``OUT_DIR/full``), then a run stopped after cycle 2 and its resume from ``last`` (``OUT_DIR/resumed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from fxai_compat import TrainConfig, fit
from fxai_compat.lightning_host import NotifyingCheckpointIO


class RankProbe(pl.Callback):
    """Records, on its own rank, the RL events this rank's module announces and the checkpoint writes."""

    def __init__(self):
        self.returns: list[tuple[int, float]] = []
        self.env_indices: set[int] = set()
        self.episode_indices: list[int] = []
        self.first_obs: list[float] | None = None
        self.saved: list[str] = []
        self.eval_rewards: list[float] = []
        self.logged: list[list] = []  # per cycle: the module's exact logged counters and reward mean

    def setup(self, trainer, pl_module, stage):
        NotifyingCheckpointIO.of(trainer).listeners.append(lambda path: self.saved.append(Path(path).name))

    def on_rl_episode_start(self, trainer, pl_module, info):
        self.env_indices.add(info["env_index"])
        self.episode_indices.append(info["episode_index"])

    def on_rl_episode_end(self, trainer, pl_module, info):
        self.returns.append((pl_module.core.cycle, info["reward"]))
        self.env_indices.add(info["env_index"])

    def on_rl_rollout_start(self, trainer, pl_module, payload):
        if self.first_obs is None:
            self.first_obs = pl_module.core._next_obs.reshape(-1).tolist()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.eval_rewards.append(pl_module.last_eval_results["episode_reward_mean"])

    def on_train_epoch_end(self, trainer, pl_module):
        logged = pl_module.exact_logged
        self.logged.append([logged["train/timesteps_total"], logged["train/episodes_total"],
                            logged["train/episode_reward_mean"]])


class StopAfter(pl.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def config(out_dir: Path) -> TrainConfig:
    return TrainConfig(n_envs=2, n_steps=32, episode_length=24, cycles=4, update_epochs=2, minibatch_size=24,
                       eval_every=2, eval_episodes=2, checkpoint_every=2, checkpoint_dir=str(out_dir / "ckpt"),
                       hidden_sizes=(16, 16), data_length=2000, seed=3)


def run(cfg: TrainConfig, *extra: pl.Callback, brief: bool = False, **kwargs) -> dict:
    probe = RankProbe()
    trainer = fit(cfg, [probe, *extra], strategy="ddp", devices=2, logger=False, **kwargs)
    core = trainer.lightning_module.core
    flat = torch.cat([p.detach().reshape(-1) for p in trainer.lightning_module.policy.parameters()])
    summary = {"rank": trainer.global_rank, "world_size": trainer.world_size, "core_rank": core.rank,
               "param_sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
               "total_timesteps": core.total_timesteps, "num_episodes": core.num_episodes,
               "cycles_completed": core.cycles_completed, "num_updates": core.num_updates,
               "saved": probe.saved, "eval_rewards": probe.eval_rewards, "episode_returns": probe.returns,
               "logged": probe.logged}
    if not brief:
        summary.update(env_indices=sorted(probe.env_indices), episode_indices=probe.episode_indices,
                       first_obs=probe.first_obs)
    return summary


def main(out_dir: str) -> None:
    out = Path(out_dir)
    full = run(config(out / "full"))
    stopped = run(config(out / "resumed"), StopAfter(1), brief=True)
    resumed = run(config(out / "resumed"), brief=True, ckpt_path="last")
    line = json.dumps({"rank": full["rank"], "full": full, "stopped": stopped, "resumed": resumed})
    # One write() per line: both ranks share the parent's stdout pipe (unbuffered when PYTHONUNBUFFERED is
    # set, when print() writes the text and the newline separately); a single write of less than PIPE_BUF
    # bytes is atomic, so the two ranks' lines cannot interleave.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (line + "\n").encode())


if __name__ == "__main__":
    main(sys.argv[1])
