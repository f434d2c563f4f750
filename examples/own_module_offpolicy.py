"""Your own off-policy LightningModule, trained with FxAI's six legacy callbacks, unchanged.

The twin of ``own_module.py`` for the step-based style (Lightning's DQN template): one step of a single
``gymnasium.Env`` per ``training_step``, a replay buffer, one optimizer update per step once the buffer is
warm, and a validation loop playing greedy episodes on a second env. The module knows nothing of
fxai_compat; ``wrap_env`` wraps both envs (the evaluation one with ``role="eval"``, so its episodes feed
``on_evaluation_end`` and never count as training episodes), and ``LegacyCallbackAdapter`` wraps each
legacy callback.

    python examples/own_module_offpolicy.py           # ~10 epochs on CartPole, outputs under runs/own_module_offpolicy
    python examples/own_module_offpolicy.py --small   # a few seconds (what `make test` runs)
"""

from __future__ import annotations

import argparse
import os
import random
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytorch_lightning as pl
import torch
from legacy_callbacks import create_callbacks
from torch import nn
from torch.utils.data import DataLoader

from fxai_compat import LegacyCallbackAdapter, wrap_env


class DQN(pl.LightningModule):
    def __init__(self, env: gym.Env, val_env: gym.Env, steps_per_epoch: int = 200, warm_start: int = 64,
                 batch_size: int = 32, gamma: float = 0.99, val_episodes: int = 3):
        super().__init__()
        self.env, self.val_env = env, val_env
        self.steps_per_epoch, self.warm_start, self.batch_size, self.gamma = steps_per_epoch, warm_start, batch_size, gamma
        self.val_episodes = val_episodes
        obs_dim, n_actions = env.observation_space.shape[0], env.action_space.n
        self.q = nn.Sequential(nn.Linear(obs_dim, 64), nn.ReLU(), nn.Linear(64, n_actions))
        self.buffer: deque = deque(maxlen=10_000)
        self.obs = None
        self.env_steps = 0

    @torch.no_grad()
    def play_step(self) -> None:
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=0)
        epsilon = max(0.05, 1.0 - self.env_steps / 1000)
        if random.random() < epsilon:
            action = self.env.action_space.sample()
        else:
            action = int(self.q(torch.as_tensor(self.obs)).argmax())
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.append((self.obs, action, reward, terminated, next_obs))
        self.obs = self.env.reset()[0] if terminated or truncated else next_obs
        self.env_steps += 1

    def train_dataloader(self):
        return DataLoader(range(self.steps_per_epoch), batch_size=None)

    def training_step(self, batch, batch_idx):
        self.play_step()
        if len(self.buffer) < self.warm_start:
            return None  # Lightning skips the update
        obs, actions, rewards, dones, next_obs = map(np.array, zip(*random.sample(self.buffer, self.batch_size)))
        q = self.q(torch.as_tensor(obs)).gather(1, torch.as_tensor(actions).unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            best_next = self.q(torch.as_tensor(next_obs)).max(1).values
        target = torch.as_tensor(rewards, dtype=torch.float32) + self.gamma * best_next * torch.as_tensor(1.0 - dones)
        loss = nn.functional.smooth_l1_loss(q, target.float())
        self.log("loss", loss, on_step=False, on_epoch=True, batch_size=1)
        return loss

    def val_dataloader(self):
        return DataLoader([0], batch_size=None)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        returns = []
        for episode in range(self.val_episodes):
            obs, _ = self.val_env.reset(seed=1000 + episode)
            done, total = False, 0.0
            while not done:
                obs, reward, terminated, truncated, _ = self.val_env.step(int(self.q(torch.as_tensor(obs)).argmax()))
                total += reward
                done = terminated or truncated
            returns.append(total)
        self.log("val_reward", float(np.mean(returns)), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.q.parameters(), lr=1e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: 3 short epochs")
    parser.add_argument("--out", default="runs/own_module_offpolicy", help="where the callbacks write")
    args = parser.parse_args(argv)
    out = Path(args.out)
    os.environ.setdefault("WANDB_SILENT", "true")
    epochs, steps = (3, 60) if args.small else (10, 500)
    random.seed(0)
    torch.manual_seed(0)

    env = wrap_env(gym.make("CartPole-v1"))                    # training episodes
    val_env = wrap_env(gym.make("CartPole-v1"), role="eval")   # evaluation episodes, kept apart
    module = DQN(env, val_env, steps_per_epoch=steps, warm_start=32 if args.small else 64)

    trial = optuna.create_study(direction="maximize").ask()
    legacy = create_callbacks({
        "metrics": {"window_size": 20},
        "checkpoint": {"save_dir": str(out / "best"), "save_freq": 5},
        "wandb": {"project": "own-module-offpolicy", "mode": "offline", "dir": str(out)},
        "evaluation": {"reward_threshold": 475.0},
        "continuous_training": {"checkpoint_dir": str(out / "versions")},
        "optuna": {"trial": trial},
    })
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=str(out),
        callbacks=[LegacyCallbackAdapter(cb) for cb in legacy]
        + [pl.callbacks.ModelCheckpoint(dirpath=str(out / "checkpoints"), every_n_epochs=1, save_top_k=1)])
    trainer.fit(module)

    metrics_cb, evaluation_cb = legacy[0], legacy[3]
    last = metrics_cb.history[-1]
    print(f"trained {len(metrics_cb.history)} epochs: {last['timesteps_total']} env steps, "
          f"{len(metrics_cb.rewards)} episodes in the window (mean {metrics_cb.window_stats()['reward_window_mean']:.1f}); "
          f"{evaluation_cb.num_evaluations} evaluations, best {evaluation_cb.best_reward:.1f}; outputs under {out}")
    return {"history": metrics_cb.history, "callbacks": legacy, "trainer": trainer, "env": env, "val_env": val_env}


if __name__ == "__main__":
    main()
