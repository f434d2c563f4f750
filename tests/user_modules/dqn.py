"""Off-policy, step-based DQN with a replay buffer, in the style of Lightning's ``reinforce_learn_Qnet.py``.

One (vector) env step per ``training_step``; once the buffer holds ``warm_start`` transitions, each
``training_step`` also returns a TD loss on a sampled minibatch (automatic optimization: one
optimizer step). Before that it returns ``None`` and Lightning skips the optimizer step. An epoch is
``steps_per_epoch`` training steps.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .envs import EnvRunner, resolve_env
from .nets import mlp


class ReplayBuffer:
    def __init__(self, capacity: int):
        self.buffer: deque = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.buffer)

    def append(self, transition: tuple) -> None:
        self.buffer.append(transition)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.choice(len(self.buffer), batch_size, replace=False)
        obs, actions, rewards, dones, nxt = zip(*(self.buffer[i] for i in idx))
        return (torch.as_tensor(np.array(obs)), torch.as_tensor(np.array(actions)),
                torch.as_tensor(np.array(rewards), dtype=torch.float32),
                torch.as_tensor(np.array(dones), dtype=torch.float32), torch.as_tensor(np.array(nxt)))


class DQNModule(pl.LightningModule):
    def __init__(self, env: Any, val_env: Any = None, *, steps_per_epoch: int = 32, batch_size: int = 16,
                 warm_start: int = 32, replay_size: int = 1000, lr: float = 1e-3, gamma: float = 0.99,
                 eps_start: float = 1.0, eps_end: float = 0.05, eps_decay_steps: int = 200,
                 sync_rate: int = 20, hidden: int = 16, val_episodes: int = 2, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["env", "val_env"])
        torch.manual_seed(seed)
        self.env = EnvRunner(resolve_env(env), seed=seed)
        val = resolve_env(val_env)
        self.val_env = EnvRunner(val, seed=seed + 1000) if val is not None else None
        self.net = mlp(self.env.obs_dim, self.env.n_actions, hidden)
        self.target_net = mlp(self.env.obs_dim, self.env.n_actions, hidden)
        self.target_net.load_state_dict(self.net.state_dict())
        self.buffer = ReplayBuffer(replay_size)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.episode_log = self.env.finished

    def epsilon(self) -> float:
        hp = self.hparams
        frac = min(1.0, self.env_steps / hp.eps_decay_steps)
        return hp.eps_start + frac * (hp.eps_end - hp.eps_start)

    @torch.no_grad()
    def play_step(self) -> None:
        env = self.env
        if env.obs is None:
            env.reset()
        greedy = self.net(torch.as_tensor(env.obs)).argmax(-1).numpy()
        explore = self.rng.random(env.num_envs) < self.epsilon()
        actions = np.where(explore, self.rng.integers(env.n_actions, size=env.num_envs), greedy)
        before, rewards, dones, valid = env.step(actions)
        for i in np.flatnonzero(valid):
            self.buffer.append((before[i], int(actions[i]), float(rewards[i]), bool(dones[i]), env.obs[i]))
        self.env_steps += 1

    def train_dataloader(self) -> DataLoader:
        return DataLoader(list(range(self.hparams.steps_per_epoch)), batch_size=None)

    def training_step(self, batch, batch_idx):
        self.play_step()
        finished = self.env.finished
        if finished:
            self.log("avg_ep_reward", float(np.mean([r for _, r, _ in finished[-10:]])), on_step=False, on_epoch=True,
                     batch_size=1)
        self.log("epsilon", self.epsilon(), on_step=False, on_epoch=True, batch_size=1)
        if len(self.buffer) < max(self.hparams.warm_start, self.hparams.batch_size):
            return None
        obs, actions, rewards, dones, nxt = self.buffer.sample(self.hparams.batch_size, self.rng)
        q = self.net(obs).gather(1, actions.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            target = rewards + self.hparams.gamma * (1 - dones) * self.target_net(nxt).max(-1).values
        loss = torch.nn.functional.mse_loss(q, target)
        if self.global_step % self.hparams.sync_rate == 0:
            self.target_net.load_state_dict(self.net.state_dict())
        self.log("loss", loss, on_step=False, on_epoch=True, batch_size=1)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(list(range(1 if self.val_env is not None else 0)), batch_size=None)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        returns = self.val_env.run_episodes(lambda o: self.net(torch.as_tensor(o)).argmax(-1).numpy(),
                                            self.hparams.val_episodes)
        self.log("val_reward", float(np.mean(returns)), batch_size=1)
