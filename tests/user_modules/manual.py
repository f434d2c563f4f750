"""PPO with manual optimization: one rollout per ``training_step``, then ``nb_optim_iters`` x minibatches
of ``opt.step()`` calls inside it (with ``two_optimizers=True``, an actor and a critic optimizer, each
stepped once per minibatch). The dataloader only ticks: ``rollouts_per_epoch`` training steps an epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .envs import EnvRunner, resolve_env
from .nets import gae, mlp, ppo_losses


class ManualPPOModule(pl.LightningModule):
    def __init__(self, env: Any, val_env: Any = None, *, steps_per_epoch: int = 32, batch_size: int = 16,
                 nb_optim_iters: int = 2, rollouts_per_epoch: int = 1, two_optimizers: bool = False,
                 lr: float = 3e-3, gamma: float = 0.99, lam: float = 0.95, clip_ratio: float = 0.2,
                 hidden: int = 16, val_episodes: int = 2, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["env", "val_env"])
        self.automatic_optimization = False
        torch.manual_seed(seed)
        self.env = EnvRunner(resolve_env(env), seed=seed)
        val = resolve_env(val_env)
        self.val_env = EnvRunner(val, seed=seed + 1000) if val is not None else None
        self.actor = mlp(self.env.obs_dim, self.env.n_actions, hidden)
        self.critic = mlp(self.env.obs_dim, 1, hidden)
        self.rng = np.random.default_rng(seed)
        self.optimizer_steps = 0  # the module's own count (tests compare it with update events)
        self.episode_log = self.env.finished

    @torch.no_grad()
    def collect(self) -> list[torch.Tensor]:
        hp, env = self.hparams, self.env
        if env.obs is None:
            env.reset()
        T, N = hp.steps_per_epoch, env.num_envs
        obs_b, act_b, logp_b = [], [], []
        val_b, rew_b, done_b, valid_b = (np.zeros((T, N)) for _ in range(4))
        for t in range(T):
            obs = torch.as_tensor(env.obs)
            dist = torch.distributions.Categorical(logits=self.actor(obs))
            actions = dist.sample()
            obs_b.append(obs)
            act_b.append(actions)
            logp_b.append(dist.log_prob(actions))
            val_b[t] = self.critic(obs).squeeze(-1).numpy()
            _, rew_b[t], done_b[t], valid_b[t] = env.step(actions.numpy())
        last = self.critic(torch.as_tensor(env.obs)).squeeze(-1).numpy()
        adv, ret = gae(rew_b, val_b, done_b, valid_b.astype(bool), last, hp.gamma, hp.lam)
        keep = torch.as_tensor(valid_b.reshape(-1).astype(bool))
        return [torch.stack(obs_b).reshape(T * N, -1)[keep], torch.stack(act_b).reshape(-1)[keep],
                torch.stack(logp_b).reshape(-1)[keep], torch.as_tensor(adv.reshape(-1), dtype=torch.float32)[keep],
                torch.as_tensor(ret.reshape(-1), dtype=torch.float32)[keep]]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(list(range(self.hparams.rollouts_per_epoch)), batch_size=None)

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        first = len(self.env.finished)
        obs, actions, logp_old, adv, ret = self.collect()
        ended = self.env.finished[first:]
        if ended:
            self.log("avg_ep_reward", float(np.mean([r for _, r, _ in ended])), on_step=False, on_epoch=True,
                     batch_size=1)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        losses = []
        for _ in range(hp.nb_optim_iters):
            perm = torch.as_tensor(self.rng.permutation(len(obs)))
            for start in range(0, len(obs), hp.batch_size):
                idx = perm[start:start + hp.batch_size]
                policy_loss, value_loss, entropy = ppo_losses(self.actor, self.critic, obs[idx], actions[idx],
                                                              logp_old[idx], adv[idx], ret[idx], hp.clip_ratio)
                loss = policy_loss + value_loss - 0.01 * entropy
                for opt in optimizers:
                    opt.zero_grad()
                self.manual_backward(loss)
                for opt in optimizers:
                    opt.step()
                    self.optimizer_steps += 1
                losses.append(float(loss.detach()))
        self.log("loss", float(np.mean(losses)), on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self):
        if self.hparams.two_optimizers:
            return [torch.optim.Adam(self.actor.parameters(), lr=self.hparams.lr),
                    torch.optim.Adam(self.critic.parameters(), lr=self.hparams.lr)]
        return torch.optim.Adam(list(self.actor.parameters()) + list(self.critic.parameters()), lr=self.hparams.lr)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(list(range(1 if self.val_env is not None else 0)), batch_size=None)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        returns = self.val_env.run_episodes(lambda o: self.actor(torch.as_tensor(o)).argmax(-1).numpy(),
                                            self.hparams.val_episodes)
        self.log("val_reward", float(np.mean(returns)), batch_size=1)
