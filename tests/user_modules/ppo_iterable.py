"""On-policy PPO in the style of Lightning's RL templates (``reinforce_learn_ppo.py``).

``train_dataloader`` is a ``DataLoader`` over an ``IterableDataset`` whose generator collects a fresh
rollout of ``steps_per_epoch`` (vector) steps and then yields its samples, shuffled, for
``nb_optim_iters`` passes; the ``DataLoader`` batches them. Automatic optimization: one optimizer
step per batch. One epoch = one rollout.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from .envs import EnvRunner, resolve_env
from .nets import gae, mlp, ppo_losses


class ExperienceSourceDataset(IterableDataset):
    """Calls ``generate_batch`` each time it is iterated (the template's ExperienceSourceDataset)."""

    def __init__(self, generate_batch: Callable[[], Iterator[Any]]):
        self.generate_batch = generate_batch

    def __iter__(self) -> Iterator[Any]:
        return self.generate_batch()


class PPOModule(pl.LightningModule):
    def __init__(self, env: Any, val_env: Any = None, *, steps_per_epoch: int = 32, batch_size: int = 16,
                 nb_optim_iters: int = 2, lr: float = 3e-3, gamma: float = 0.99, lam: float = 0.95,
                 clip_ratio: float = 0.2, hidden: int = 16, val_episodes: int = 2, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["env", "val_env"])
        torch.manual_seed(seed)
        self.env = EnvRunner(resolve_env(env), seed=seed)
        val = resolve_env(val_env)
        self.val_env = EnvRunner(val, seed=seed + 1000) if val is not None else None
        self.actor = mlp(self.env.obs_dim, self.env.n_actions, hidden)
        self.critic = mlp(self.env.obs_dim, 1, hidden)
        self.rng = np.random.default_rng(seed)
        self.avg_ep_reward = 0.0
        self.avg_ep_len = 0.0
        self.episode_log = self.env.finished

    # -- data: a fresh rollout per epoch --------------------------------------------------------
    @torch.no_grad()
    def generate_trajectory_samples(self) -> Iterator[tuple]:
        hp, env = self.hparams, self.env
        if env.obs is None:
            env.reset()
        T, N = hp.steps_per_epoch, env.num_envs
        obs_buf = np.zeros((T, N, env.obs_dim), dtype=np.float32)
        act_buf = np.zeros((T, N), dtype=np.int64)
        logp_buf = np.zeros((T, N), dtype=np.float32)
        val_buf = np.zeros((T, N))
        rew_buf = np.zeros((T, N))
        done_buf = np.zeros((T, N))
        valid_buf = np.zeros((T, N), dtype=bool)
        first = len(env.finished)
        for t in range(T):
            obs = torch.as_tensor(env.obs)
            dist = torch.distributions.Categorical(logits=self.actor(obs))
            actions = dist.sample()
            obs_buf[t], act_buf[t] = env.obs, actions.numpy()
            logp_buf[t] = dist.log_prob(actions).numpy()
            val_buf[t] = self.critic(obs).squeeze(-1).numpy()
            _, rew_buf[t], dones, valid_buf[t] = env.step(actions.numpy())
            done_buf[t] = dones
        last = self.critic(torch.as_tensor(env.obs)).squeeze(-1).numpy()
        adv, ret = gae(rew_buf, val_buf, done_buf, valid_buf, last, hp.gamma, hp.lam)
        ended = env.finished[first:]
        if ended:
            self.avg_ep_reward = float(np.mean([r for _, r, _ in ended]))
            self.avg_ep_len = float(np.mean([n for _, _, n in ended]))
        keep = valid_buf.reshape(-1)
        samples = [a.reshape((T * N,) + a.shape[2:])[keep] for a in (obs_buf, act_buf, logp_buf, adv, ret)]
        for _ in range(hp.nb_optim_iters):
            for i in self.rng.permutation(len(samples[0])):
                yield tuple(np.asarray(s[i], dtype=np.float32 if s.dtype != np.int64 else np.int64) for s in samples)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(ExperienceSourceDataset(self.generate_trajectory_samples), batch_size=self.hparams.batch_size)

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        obs, actions, logp_old, adv, ret = batch
        policy_loss, value_loss, entropy = ppo_losses(self.actor, self.critic, obs, actions, logp_old, adv, ret,
                                                      self.hparams.clip_ratio)
        loss = policy_loss + value_loss - 0.01 * entropy
        self.log("avg_ep_reward", self.avg_ep_reward, prog_bar=True, on_step=False, on_epoch=True)
        self.log("avg_ep_len", self.avg_ep_len, on_step=False, on_epoch=True)
        self.log("loss", loss, on_step=False, on_epoch=True)
        self.log("loss_actor", policy_loss, on_step=False, on_epoch=True)
        self.log("loss_critic", value_loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(list(self.actor.parameters()) + list(self.critic.parameters()), lr=self.hparams.lr)

    # -- optional validation ----------------------------------------------------------------------
    def val_dataloader(self) -> DataLoader:
        return DataLoader(list(range(1 if self.val_env is not None else 0)), batch_size=None)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        returns = self.val_env.run_episodes(lambda o: self.actor(torch.as_tensor(o)).argmax(-1).numpy(),
                                            self.hparams.val_episodes)
        self.log("val_reward", float(np.mean(returns)), batch_size=1)
