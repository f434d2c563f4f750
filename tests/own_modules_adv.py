"""Adversarial user modules for tests/test_own_module_adversarial.py (no fxai_compat inside the classes).

Styles not in ``tests/user_modules``: an A2C whose single env is created in ``setup()`` (gradient
clipping, ``accumulate_grad_batches``); a REINFORCE whose vector env lives in a ``LightningDataModule``
and is stepped by the dataloader, with a validation loop on a separate eval env; a two-optimizer
actor-critic with manual optimization. Each keeps its own ground truth of the episodes it saw end
(``true_episodes``: ``(env_index, return, length)``), counted from the raw step results.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset


def mlp(n_in: int, n_out: int, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class A2CSetupEnv(pl.LightningModule):
    """Single ``gymnasium.Env`` made in ``setup()`` by ``make_env``; n env steps per ``training_step``."""

    def __init__(self, make_env: Callable[[], Any], n_steps: int = 16, batches: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.make_env, self.n_steps, self.batches, self.seed = make_env, n_steps, batches, seed
        self.actor, self.critic = mlp(4, 2), mlp(4, 1)
        self.env = None
        self.true_episodes: list[tuple[int, float, int]] = []
        self.env_steps = 0
        self.step_losses: list[float] = []  # what each training_step returned

    def setup(self, stage: str) -> None:
        if self.env is None:
            self.env = self.make_env()
            self.obs, _ = self.env.reset(seed=self.seed)
            self.ret, self.len = 0.0, 0

    def train_dataloader(self):
        return DataLoader(range(self.batches), batch_size=None)

    def training_step(self, batch, batch_idx):
        logps, values, rewards = [], [], []
        for _ in range(self.n_steps):
            obs = torch.as_tensor(self.obs, dtype=torch.float32)
            dist = torch.distributions.Categorical(logits=self.actor(obs))
            action = dist.sample()
            self.obs, reward, terminated, truncated, _ = self.env.step(int(action))
            self.env_steps += 1
            self.ret += float(reward)
            self.len += 1
            if terminated or truncated:
                self.true_episodes.append((0, self.ret, self.len))
                self.ret, self.len = 0.0, 0
                self.obs, _ = self.env.reset()
            logps.append(dist.log_prob(action))
            values.append(self.critic(obs).squeeze(-1))
            rewards.append(float(reward))
        returns = torch.as_tensor(np.cumsum(rewards[::-1])[::-1].copy(), dtype=torch.float32)
        adv = returns - torch.stack(values)
        actor_loss = -(torch.stack(logps) * adv.detach()).mean()
        critic_loss = adv.pow(2).mean()
        self.log("actor_loss", actor_loss)
        self.log("critic_loss", critic_loss)
        loss = actor_loss + 0.5 * critic_loss
        self.step_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _Rollouts(IterableDataset):
    def __init__(self, dm: "VecEnvDataModule"):
        self.dm = dm

    def __iter__(self):
        for _ in range(self.dm.batches):
            yield self.dm.collect()


class VecEnvDataModule(pl.LightningDataModule):
    """Holds the train vector env (``make_env()``), steps it in the dataloader with the module's policy.

    Tracks true episodes for the vector env's autoreset mode (NEXT_STEP: the step after a done is a reset
    step that is not a transition; SAME_STEP: the done step resets; DISABLED: reset with reset_mask here).
    """

    def __init__(self, make_env: Callable[[], Any], make_eval_env: Callable[[], Any] | None = None,
                 n_steps: int = 16, batches: int = 3, seed: int = 0, reset_in_setup: bool = True):
        super().__init__()
        self.make_env, self.make_eval_env, self.reset_in_setup = make_env, make_eval_env, reset_in_setup
        self.n_steps, self.batches, self.seed = n_steps, batches, seed
        self.env = self.eval_env = None
        self.true_episodes: list[tuple[int, float, int]] = []
        self.true_eval_episodes: list[tuple[float, int]] = []
        self.transitions = 0

    def setup(self, stage: str) -> None:
        if self.env is None:
            self.env = self.make_env()
            self.eval_env = self.make_eval_env() if self.make_eval_env else None
            n = self.env.num_envs
            self.mode = self.env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
            self.obs = None
            self.ret, self.len = np.zeros(n), np.zeros(n, dtype=int)
            self.prev_done = np.zeros(n, dtype=bool)
            if self.reset_in_setup:
                self.obs, _ = self.env.reset(seed=self.seed)

    def train_dataloader(self):
        return DataLoader(_Rollouts(self), batch_size=None)

    def val_dataloader(self):
        return DataLoader(range(1), batch_size=None)

    @torch.no_grad()
    def collect(self):
        policy = self.trainer.lightning_module.policy
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=self.seed)
        obs_buf, act_buf, rew_buf = [], [], []
        for _ in range(self.n_steps):
            obs = torch.as_tensor(self.obs, dtype=torch.float32)
            action = torch.distributions.Categorical(logits=policy(obs)).sample().numpy()
            self.obs, reward, term, trunc, _ = self.env.step(action)
            done = np.logical_or(term, trunc)
            real = ~self.prev_done if self.mode == gym.vector.AutoresetMode.NEXT_STEP else np.ones_like(done)
            self.transitions += int(real.sum())
            for i in range(len(done)):
                if not real[i]:
                    continue
                self.ret[i] += reward[i]
                self.len[i] += 1
                if done[i]:
                    self.true_episodes.append((i, float(self.ret[i]), int(self.len[i])))
                    self.ret[i], self.len[i] = 0.0, 0
            if self.mode == gym.vector.AutoresetMode.DISABLED and done.any():
                self.obs, _ = self.env.reset(options={"reset_mask": done})
                self.prev_done = np.zeros_like(done)
            else:
                self.prev_done = done
            obs_buf.append(obs)
            act_buf.append(torch.as_tensor(action))
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
        return torch.stack(obs_buf), torch.stack(act_buf), torch.stack(rew_buf)


class ReinforceOnDataModule(pl.LightningModule):
    """REINFORCE fed by :class:`VecEnvDataModule`; a validation loop plays one greedy episode on its eval env."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.policy = mlp(4, 2)

    def training_step(self, batch, batch_idx):
        obs, act, rew = batch
        logp = torch.distributions.Categorical(logits=self.policy(obs)).log_prob(act)
        to_go = rew.flip(0).cumsum(0).flip(0)
        loss = -(logp * to_go).mean()
        self.log("loss", loss)
        self.log("mean_step_reward", rew.mean())
        return loss

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        dm = self.trainer.datamodule
        env = dm.eval_env
        if env is None:
            return
        obs, _ = env.reset(seed=123)
        ret, length, done = 0.0, 0, False
        while not done:
            action = int(self.policy(torch.as_tensor(obs, dtype=torch.float32)).argmax())
            obs, reward, term, trunc, _ = env.step(action)
            ret, length, done = ret + float(reward), length + 1, term or trunc
        dm.true_eval_episodes.append((ret, length))
        self.log("val_return", ret, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class TwoOptimizerAC(pl.LightningModule):
    """Manual optimization, actor and critic optimizers, each stepped ``k`` times per ``training_step``."""

    def __init__(self, env: Any, n_steps: int = 16, batches: int = 2, k: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.automatic_optimization = False
        self.env, self.n_steps, self.batches, self.k, self.seed = env, n_steps, batches, k, seed
        self.actor, self.critic = mlp(4, 2), mlp(4, 1)
        self.obs = None
        self.opt_steps = 0

    def train_dataloader(self):
        return DataLoader(range(self.batches), batch_size=None)

    def training_step(self, batch, batch_idx):
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=self.seed)
        obs_buf, act_buf, rew_buf = [], [], []
        with torch.no_grad():
            for _ in range(self.n_steps):
                obs = torch.as_tensor(self.obs, dtype=torch.float32)
                action = torch.distributions.Categorical(logits=self.actor(obs)).sample()
                self.obs, reward, *_ = self.env.step(action.numpy())
                obs_buf.append(obs), act_buf.append(action), rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
        obs, act, rew = torch.stack(obs_buf), torch.stack(act_buf), torch.stack(rew_buf)
        to_go = rew.flip(0).cumsum(0).flip(0)
        actor_opt, critic_opt = self.optimizers()
        for _ in range(self.k):
            value = self.critic(obs).squeeze(-1)
            critic_loss = (to_go - value).pow(2).mean()
            critic_opt.zero_grad()
            self.manual_backward(critic_loss)
            critic_opt.step()
            self.opt_steps += 1
            adv = (to_go - self.critic(obs).squeeze(-1)).detach()
            actor_loss = -(torch.distributions.Categorical(logits=self.actor(obs)).log_prob(act) * adv).mean()
            actor_opt.zero_grad()
            self.manual_backward(actor_loss)
            actor_opt.step()
            self.opt_steps += 1
        self.log("critic_loss", critic_loss)
        self.log("actor_loss", actor_loss)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.actor.parameters(), lr=1e-3), torch.optim.Adam(self.critic.parameters(), lr=1e-3)]


class EpochEndCollector(TwoOptimizerAC):
    """Collects the next epoch's rollout in ``on_train_epoch_end`` (the first in ``on_fit_start``); one
    optimizer step per ``training_step`` on it. The last collection is never trained on."""

    def collect(self):
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=self.seed)
        with torch.no_grad():
            for _ in range(self.n_steps):
                logits = self.actor(torch.as_tensor(self.obs, dtype=torch.float32))
                self.obs, *_ = self.env.step(torch.distributions.Categorical(logits=logits).sample().numpy())

    def on_fit_start(self):
        self.collect()

    def on_train_epoch_end(self):
        self.collect()

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()[0]
        opt.zero_grad()
        self.manual_backward(self.actor(torch.zeros(4)).pow(2).sum())
        opt.step()
