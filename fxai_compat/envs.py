"""Vector environments for the RL core: the built-in FX trading environment and any gymnasium id.

Both follow gymnasium's ``VectorEnv`` API with *same-step* auto-reset: when an environment's
episode ends, the observation returned by that ``step`` is already the first observation of its
next episode, and ``infos`` carry the finished episode's totals (``pnl``, ``trades``, ``wins``,
``closed_trades``). The training core counts episodes from ``terminations | truncations``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .config import ConfigError, TrainConfig

__all__ = ["FXTradingEnv", "synthetic_log_returns", "load_price_csv", "check_environment", "make_vector_env",
           "RETURN_SCALE", "SlowStep", "SLOW_CARTPOLE"]

#: Rewards are log-return P&L in units of 0.1 % so that per-step rewards are of order 1.
RETURN_SCALE = 1000.0


def synthetic_log_returns(length: int, seed: int) -> np.ndarray:
    """A seeded FX-like log-return series: regime-switching drift, noise and mean reversion.

    Trends persist for ~50 steps on average, so recent returns say something about the next one:
    a policy that follows the regime beats a random one, and the transaction cost punishes churning.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF0A1]))
    sigma, drift, switch, kappa = 1e-3, 6e-4, 0.02, 0.02
    regime = 1.0
    log_price, anchor = 0.0, 0.0
    out = np.empty(length, dtype=np.float64)
    noise = rng.standard_normal(length)
    flips = rng.random(length) < switch
    for t in range(length):
        if flips[t]:
            regime = -regime
        r = regime * drift + sigma * noise[t] - kappa * (log_price - anchor) * 0.1
        log_price += r
        anchor += 0.01 * (log_price - anchor)
        out[t] = r
    return out


def load_price_csv(path: str) -> np.ndarray:
    """Log-returns of the ``close`` column of a price CSV; refuses missing columns, NaNs and non-positive prices."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "close" not in fields:
                raise ConfigError(f"Price CSV {path} has no 'close' column (columns: {', '.join(fields) or 'none'}).")
            key = (reader.fieldnames or [])[fields.index("close")]
            closes = []
            for line_no, row in enumerate(reader, start=2):
                try:
                    value = float(row[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"Price CSV {path}, line {line_no}: close value {row[key]!r} is not a number.") from None
                if not math.isfinite(value) or value <= 0:
                    raise ConfigError(f"Price CSV {path}, line {line_no}: close value {value} must be a positive finite price.")
                closes.append(value)
    except OSError as exc:
        raise ConfigError(f"Cannot read price CSV {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Price CSV {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8 (plain ASCII is fine).") from None
    except csv.Error as exc:
        raise ConfigError(f"Price CSV {path} is not a readable CSV file: {exc}.") from None
    if len(closes) < 3:
        raise ConfigError(f"Price CSV {path} holds {len(closes)} prices; at least 3 are needed.")
    return np.diff(np.log(np.asarray(closes, dtype=np.float64)))


class FXTradingEnv(gym.vector.VectorEnv):
    """``num_envs`` FX trading sessions stepped together (numpy across environments).

    Observation: the last ``obs_window`` log-returns (scaled to unit variance) and the current
    position. Actions: 0 short, 1 flat, 2 long. Reward: position x next return minus
    ``transaction_cost`` x |position change|, in units of 0.1 %. An episode is ``episode_length``
    steps starting at a random point of the series; it ends by truncation.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, returns: np.ndarray, *, episode_length: int = 128, obs_window: int = 8,
                 transaction_cost: float = 1e-4, seed: int = 0):
        if len(returns) < episode_length + obs_window + 2:
            raise ConfigError(f"The price series has {len(returns)} returns; an episode of {episode_length} steps "
                              f"with an observation window of {obs_window} needs at least {episode_length + obs_window + 2}.")
        self.num_envs = num_envs
        self.returns = np.asarray(returns, dtype=np.float64)
        self.scale = float(self.returns.std()) or 1.0
        self.episode_length = episode_length
        self.obs_window = obs_window
        self.cost = transaction_cost
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_window + 1,), dtype=np.float32)
        self.single_action_space = spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(seed)
        n = num_envs
        self._t = np.zeros(n, dtype=np.int64)            # index of the last return the agent has seen
        self._steps = np.zeros(n, dtype=np.int64)
        self._position = np.zeros(n, dtype=np.int64)
        self._pnl = np.zeros(n, dtype=np.float64)
        self._trade_pnl = np.zeros(n, dtype=np.float64)
        self._trades = np.zeros(n, dtype=np.int64)
        self._wins = np.zeros(n, dtype=np.int64)
        self._closed = np.zeros(n, dtype=np.int64)
        self._offsets = np.arange(-obs_window + 1, 1)

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._start(np.ones(self.num_envs, dtype=bool))
        return self._observe(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64)
        new_position = actions - 1
        changed = new_position != self._position
        next_return = self.returns[self._t + 1]
        cost = self.cost * np.abs(new_position - self._position)
        step_pnl = new_position * next_return - cost

        # A trade is a holding period of one non-flat position; it closes when the position changes.
        closing = changed & (self._position != 0)
        self._wins += closing & (self._trade_pnl > 0)
        self._closed += closing
        self._trade_pnl = np.where(changed, 0.0, self._trade_pnl)
        self._trades += changed & (new_position != 0)
        self._trade_pnl += new_position * next_return - cost

        self._position = new_position
        self._pnl += step_pnl
        self._t += 1
        self._steps += 1
        truncated = self._steps >= self.episode_length
        terminated = np.zeros(self.num_envs, dtype=bool)
        if truncated.any():
            open_trade = truncated & (self._position != 0)
            self._wins += open_trade & (self._trade_pnl > 0)
            self._closed += open_trade
        infos = {"pnl": self._pnl.copy(), "trades": self._trades.copy(),
                 "wins": self._wins.copy(), "closed_trades": self._closed.copy()}
        if truncated.any():
            self._start(truncated)
        rewards = (step_pnl * RETURN_SCALE).astype(np.float32)
        return self._observe(), rewards, terminated, truncated, infos

    def close(self, **kwargs):  # nothing to release
        pass

    # -- state for exact resume ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state, "t": self._t.copy(), "steps": self._steps.copy(),
                "position": self._position.copy(), "pnl": self._pnl.copy(), "trade_pnl": self._trade_pnl.copy(),
                "trades": self._trades.copy(), "wins": self._wins.copy(), "closed": self._closed.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        for name in ("t", "steps", "position", "pnl", "trade_pnl", "trades", "wins", "closed"):
            getattr(self, "_" + name)[:] = np.asarray(state[name])

    def current_observation(self) -> np.ndarray:
        return self._observe()

    # ------------------------------------------------------------------------------------------
    def _start(self, mask: np.ndarray) -> None:
        count = int(mask.sum())
        low, high = self.obs_window - 1, len(self.returns) - self.episode_length - 1
        self._t[mask] = self._rng.integers(low, high, size=count)
        for arr in (self._steps, self._position, self._trades, self._wins, self._closed):
            arr[mask] = 0
        self._pnl[mask] = 0.0
        self._trade_pnl[mask] = 0.0

    def _observe(self) -> np.ndarray:
        window = self.returns[self._t[:, None] + self._offsets] / self.scale
        return np.concatenate([window, self._position[:, None]], axis=1).astype(np.float32)


def check_environment(config: TrainConfig) -> None:
    """Refuse, before anything is built or written, an environment the run could not make: an unknown
    gymnasium id, or (FX) a price CSV that cannot be read. Cheap: the id is looked up, not made."""
    if config.env == "fx":
        if config.price_csv:
            load_price_csv(config.price_csv)
        return
    try:
        gym.spec(config.env)
    except gym.error.Error as exc:
        raise ConfigError(f"Unknown environment {config.env!r}: {exc}. Use 'fx' or a registered gymnasium id "
                          f"such as 'CartPole-v1'.") from None


class SlowStep(gym.Wrapper):
    """Makes an environment's ``step`` do a fixed amount of extra CPU work first: ``work`` iterations of a
    float recurrence in Python (25,000: about 1 ms on one core of the reference machine when it is quiet). Fixed
    work, not a sleep or a wall-clock wait, so that it occupies a core the way a simulator would and takes longer
    when cores are busy. For measuring ``vector_env: async`` on slow environments."""

    def __init__(self, env: gym.Env, work: int = 25_000):
        super().__init__(env)
        self.work = work

    def step(self, action):
        x = 0.0
        for _ in range(self.work):
            x = x * 0.5 + 1.0
        return self.env.step(action)


def _slow_cartpole(work: int = 25_000, **kwargs: Any) -> gym.Env:
    return SlowStep(gym.make("CartPole-v1", **kwargs), work)


#: CartPole-v1 with about 1 ms of CPU work per step (``SlowStep``): the slow environment of the benchmark.
SLOW_CARTPOLE = "fxai_compat/SlowCartPole-v1"
if SLOW_CARTPOLE not in gym.registry:
    gym.register(id=SLOW_CARTPOLE, entry_point=_slow_cartpole, max_episode_steps=500, kwargs={"work": 25_000})


def make_vector_env(config: TrainConfig, num_envs: int, seed: int, *, mode: str | None = None) -> gym.vector.VectorEnv:
    """The vector environment a config asks for, with same-step auto-reset.

    ``"fx"`` builds :class:`FXTradingEnv` on the synthetic series (or ``price_csv``); anything else
    is a gymnasium id made with ``gymnasium.make_vec`` (unknown ids raise a ``ConfigError``), stepped in
    this process or, with ``vector_env: async`` (``mode`` overrides it), in one worker process per
    environment (``AsyncVectorEnv``; each sub-environment gets the same seed as in the synchronous one,
    so the results are identical).
    """
    if config.env == "fx":
        returns = load_price_csv(config.price_csv) if config.price_csv else synthetic_log_returns(config.data_length, config.seed)
        return FXTradingEnv(num_envs, returns, episode_length=config.episode_length, obs_window=config.obs_window,
                            transaction_cost=config.transaction_cost, seed=seed)
    try:
        env = gym.make_vec(config.env, num_envs=num_envs, vectorization_mode=mode or config.vector_env,
                           vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    except gym.error.Error as exc:
        raise ConfigError(f"Unknown environment {config.env!r}: {exc}. Use 'fx' or a registered gymnasium id "
                          f"such as 'CartPole-v1'.") from None
    if not isinstance(env.single_action_space, spaces.Discrete):
        raise ConfigError(f"Environment {config.env!r} has a {type(env.single_action_space).__name__} action space; "
                          f"this PPO supports Discrete actions only.")
    env.reset(seed=seed)
    return env
