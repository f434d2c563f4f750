"""The environment plumbing a user writes once: one stepping loop over a single or a vector env.

``EnvRunner`` presents either kind as a batch of ``num_envs`` environments, resets finished
episodes the way the env's autoreset mode requires (single env: ``reset()`` by hand; vector env:
NEXT_STEP, SAME_STEP or DISABLED), tracks each env's running return and length, and records finished
episodes. Transitions an env produced while auto-resetting (NEXT_STEP's reset step) are flagged
invalid so the learner skips them.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np


def make_cartpole(n_envs: int | None = None, autoreset_mode: str = "next_step") -> gym.Env:
    """``CartPole-v1``: one env (``n_envs=None``) or a ``SyncVectorEnv`` of ``n_envs`` with that autoreset mode
    (``"next_step"``, ``"same_step"`` or ``"disabled"``)."""
    if n_envs is None:
        return gym.make("CartPole-v1")
    mode = gym.vector.AutoresetMode[autoreset_mode.upper()]
    return gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode})


def resolve_env(env: Any) -> Any:
    """An env, or what a zero-argument factory returns."""
    if env is None or isinstance(env, (gym.Env, gym.vector.VectorEnv)):
        return env
    if callable(env):
        return env()
    return env  # duck-typed env (e.g. a wrapper object): used as is


class EnvRunner:
    """Steps a single env or a vector env as a batch of ``num_envs`` environments."""

    def __init__(self, env: Any, seed: int = 0):
        self.env = env
        self.is_vector = isinstance(env, gym.vector.VectorEnv) or hasattr(env, "num_envs")
        self.num_envs = int(getattr(env, "num_envs", 1)) if self.is_vector else 1
        space = env.single_observation_space if self.is_vector else env.observation_space
        aspace = env.single_action_space if self.is_vector else env.action_space
        self.obs_dim = int(np.prod(space.shape))
        self.n_actions = int(aspace.n)
        mode = env.metadata.get("autoreset_mode") if self.is_vector else None
        self.autoreset = getattr(mode, "name", str(mode or "NEXT_STEP")).lower()  # next_step / same_step / disabled
        self.seed = seed
        self.obs: np.ndarray | None = None
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.resetting = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: this env's next step is a reset
        self.finished: list[tuple[int, float, int]] = []  # (env_index, return, length), in order

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed)
        self.obs = self._batch(obs)
        self.returns[:] = 0
        self.lengths[:] = 0
        self.resetting[:] = False
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One (vector) step: returns (obs before, rewards, dones, valid) and advances ``self.obs``."""
        if self.obs is None:
            self.reset()
        before = self.obs
        if self.is_vector:
            obs, rewards, terminated, truncated, _ = self.env.step(np.asarray(actions))
        else:
            obs, reward, term, trunc, _ = self.env.step(int(actions[0]))
            obs, rewards = self._batch(obs), np.array([reward], dtype=np.float64)
            terminated, truncated = np.array([term]), np.array([trunc])
        rewards = np.asarray(rewards, dtype=np.float64)
        dones = np.logical_or(terminated, truncated)
        valid = ~self.resetting
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        for i in np.flatnonzero(dones & valid):
            self.finished.append((int(i), float(self.returns[i]), int(self.lengths[i])))
            self.returns[i] = 0.0
            self.lengths[i] = 0
        obs = self._batch(obs)
        if not self.is_vector:
            if dones[0]:
                obs = self._batch(self.env.reset()[0])
        elif self.autoreset == "next_step":
            self.resetting = dones & valid
        elif self.autoreset == "disabled" and dones.any():
            reset_obs, _ = self.env.reset(options={"reset_mask": dones})
            obs = np.where(dones[:, None], self._batch(reset_obs), obs)
        self.obs = obs
        return before, rewards, dones & valid, valid

    def _batch(self, obs: Any) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        return obs.reshape(self.num_envs, self.obs_dim)

    def run_episodes(self, policy: Callable[[np.ndarray], np.ndarray], episodes: int) -> list[float]:
        """Play ``episodes`` whole episodes (greedy ``policy``) from a fresh reset; their returns."""
        self.reset()
        out: list[float] = []
        start = len(self.finished)
        while len(self.finished) - start < episodes:
            self.step(policy(self.obs))
        out = [ret for _, ret, _ in self.finished[start:start + episodes]]
        return out
