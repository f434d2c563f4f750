"""Your own LightningModule, trained with FxAI's six legacy callbacks, unchanged.

An on-policy agent written the way Lightning's RL templates write it: ``train_dataloader`` is an
``IterableDataset`` that collects a fresh rollout from a vector env each epoch and yields its samples;
automatic optimization. The module knows nothing of fxai_compat. Two lines connect the legacy callbacks:

* ``wrap_env(...)`` around the env the module steps (Level 2: exact episode, step and rollout events,
  ``trainer.total_timesteps`` / ``num_episodes`` and the ``episode_reward_mean`` ... metric keys), and
* ``LegacyCallbackAdapter`` around each legacy callback in the Trainer's callbacks.

    python examples/own_module.py            # ~20 epochs of REINFORCE on CartPole, outputs under runs/own_module
    python examples/own_module.py --small    # a few seconds (what `make test` runs)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytorch_lightning as pl
import torch
from legacy_callbacks import create_callbacks
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from fxai_compat import LegacyCallbackAdapter, wrap_env


class RolloutDataset(IterableDataset):
    """Each iteration collects a fresh rollout and yields (observation, action, return-to-go) samples."""

    def __init__(self, module: "PolicyGradient"):
        self.module = module

    def __iter__(self):
        return self.module.collect()


class PolicyGradient(pl.LightningModule):
    """REINFORCE with a value baseline on a vector env (any gymnasium autoreset mode it reports)."""

    def __init__(self, env: gym.vector.VectorEnv, steps_per_epoch: int = 64, batch_size: int = 64, gamma: float = 0.99):
        super().__init__()
        self.env, self.steps, self.batch_size, self.gamma = env, steps_per_epoch, batch_size, gamma
        obs_dim, n_actions = env.single_observation_space.shape[0], env.single_action_space.n
        self.actor = nn.Sequential(nn.Linear(obs_dim, 32), nn.Tanh(), nn.Linear(32, n_actions))
        self.critic = nn.Sequential(nn.Linear(obs_dim, 32), nn.Tanh(), nn.Linear(32, 1))
        self.obs = None
        self.resetting = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: the next step only resets these envs

    @torch.no_grad()
    def collect(self):
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=0)
        obs_buf, act_buf, rew_buf, done_buf, valid_buf = [], [], [], [], []
        for _ in range(self.steps):
            actions = torch.distributions.Categorical(logits=self.actor(torch.as_tensor(self.obs))).sample().numpy()
            next_obs, rewards, terminated, truncated, _ = self.env.step(actions)
            obs_buf.append(self.obs), act_buf.append(actions), rew_buf.append(rewards)
            done_buf.append(terminated | truncated), valid_buf.append(~self.resetting)
            self.resetting = terminated | truncated
            self.obs = next_obs
        returns = np.zeros_like(np.asarray(rew_buf, dtype=np.float32))
        running = self.critic(torch.as_tensor(self.obs)).squeeze(-1).numpy()
        for t in reversed(range(self.steps)):
            running = rew_buf[t] + self.gamma * running * (1.0 - done_buf[t])
            returns[t] = running
        keep = np.asarray(valid_buf).reshape(-1)
        obs = np.asarray(obs_buf, dtype=np.float32).reshape(-1, self.obs.shape[1])[keep]
        acts, rets = np.asarray(act_buf).reshape(-1)[keep], returns.reshape(-1)[keep]
        for i in np.random.permutation(len(obs)):
            yield obs[i], acts[i], rets[i]

    def train_dataloader(self):
        return DataLoader(RolloutDataset(self), batch_size=self.batch_size)

    def training_step(self, batch, batch_idx):
        obs, actions, returns = batch
        values = self.critic(obs).squeeze(-1)
        advantage = (returns - values).detach()
        logp = torch.distributions.Categorical(logits=self.actor(obs)).log_prob(actions)
        loss = -(logp * advantage).mean() + 0.5 * (returns - values).pow(2).mean()
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: 3 epochs of a short rollout")
    parser.add_argument("--out", default="runs/own_module", help="where the callbacks write")
    args = parser.parse_args(argv)
    out = Path(args.out)
    os.environ.setdefault("WANDB_SILENT", "true")
    epochs, steps = (3, 32) if args.small else (20, 128)

    env = wrap_env(gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync"))  # the one line
    module = PolicyGradient(env, steps_per_epoch=steps)

    trial = optuna.create_study(direction="maximize").ask()
    legacy = create_callbacks({  # FxAI's six legacy callbacks, as its run configs create them
        "metrics": {"window_size": 20},
        "checkpoint": {"save_dir": str(out / "best"), "save_freq": 5},
        "wandb": {"project": "own-module", "mode": "offline", "dir": str(out)},
        "evaluation": {},
        "continuous_training": {"checkpoint_dir": str(out / "versions")},
        "optuna": {"trial": trial},
    })
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out),
        callbacks=[LegacyCallbackAdapter(cb) for cb in legacy]
        + [pl.callbacks.ModelCheckpoint(dirpath=str(out / "checkpoints"), every_n_epochs=1, save_top_k=1)])
    trainer.fit(module)

    metrics_cb, checkpoint_cb = legacy[0], legacy[1]
    last = metrics_cb.history[-1]
    print(f"trained {epochs} epochs: {last['timesteps_total']} env steps, episode_reward_mean "
          f"{last['episode_reward_mean']:.1f} in the last cycle, best {checkpoint_cb.best_reward:.1f} "
          f"(cycle {checkpoint_cb.best_cycle}); outputs under {out}")
    return {"history": metrics_cb.history, "callbacks": legacy, "trainer": trainer, "env": env}


if __name__ == "__main__":
    main()
