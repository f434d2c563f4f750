"""`TrainConfig`: the one typed description of a PPO run that both training hosts read."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

__all__ = ["TrainConfig", "ConfigError", "MAX_SEED", "estimate_memory_bytes"]

#: The largest seed numpy's legacy seeding (``np.random.seed``) accepts; every seed the hosts derive stays in range.
MAX_SEED = 2**32 - 1
#: Integers longer than this in a config are refused as typos (Python itself refuses to parse beyond 4300 digits).
_MAX_DIGITS = 30


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a PPO run. Same config + same seed = same numbers, on either host.

    One *cycle* is: collect ``n_steps`` vector steps from ``n_envs`` environments, then
    ``update_epochs`` passes over the rollout in minibatches of ``minibatch_size`` transitions
    (one optimizer step each), then evaluation and checkpointing when they are due.
    """

    # --- environment -------------------------------------------------------------------------
    env: str = "fx"
    """``"fx"`` for the built-in FX trading environment, or any gymnasium id (e.g. ``CartPole-v1``)."""
    n_envs: int = 4
    """Environments stepped together (a vector environment)."""
    episode_length: int = 128
    """FX env only: steps per episode (an episode is a trading session)."""
    obs_window: int = 8
    """FX env only: how many recent log-returns the observation shows."""
    transaction_cost: float = 0.0001
    """FX env only: cost per unit of position change, in log-return units."""
    data_length: int = 20_000
    """FX env only: length of the built-in synthetic price series."""
    price_csv: str | None = None
    """FX env only: a CSV with a ``close`` column to trade instead of the synthetic series."""
    vector_env: str = "sync"
    """Gymnasium ids only: ``"sync"`` steps the ``n_envs`` environments one after the other in this process,
    ``"async"`` each in its own worker process (gymnasium's ``AsyncVectorEnv``), for environments whose step
    is slow; same seed, same results. (The FX env steps all its environments in one numpy call.)"""

    # --- rollout and PPO ---------------------------------------------------------------------
    n_steps: int = 128
    """Vector steps per cycle (the rollout holds ``n_steps * n_envs`` transitions)."""
    cycles: int = 20
    """Cycles this run trains. A run started from a checkpoint, on any path (``resume_from``, ``ckpt_path``, a
    legacy callback's ``trainer.load_checkpoint`` in ``on_training_start`` under either host, the native
    ``continue_training``): if the checkpoint's run was *interrupted* (killed or crashed before its cycles, not
    stopped by a callback) the new run finishes it, counting the cycles it already did (a 12-cycle run killed
    after cycle 9 and run again ends at 12); if that run had *finished*, continuous training starts a new run of
    ``cycles`` more (``resume_from``/``ckpt_path`` of a finished run have nothing left). See ``fxai_compat.resume_cycles``."""
    update_epochs: int = 4
    minibatch_size: int = 128
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)

    # --- evaluation and checkpoints ----------------------------------------------------------
    eval_every: int = 5
    """Evaluate every this many cycles, counting from 1 (0 disables evaluation)."""
    eval_episodes: int = 4
    checkpoint_every: int = 5
    """Write a full checkpoint every this many cycles, counting from 1 (0 disables)."""
    checkpoint_dir: str = "runs/checkpoints"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):  # NaN passes every comparison below, inf most of them: refuse both by name
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{f.name} must be a finite number, got {value}")
        if problems:
            raise ConfigError("Invalid TrainConfig: " + "; ".join(problems) + ".")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be an integer from 0 to {MAX_SEED} (numpy's seed range), got "
                            f"{_short(self.seed)}")
        for name in ("n_envs", "n_steps", "cycles", "update_epochs", "minibatch_size", "eval_episodes",
                     "episode_length", "obs_window", "data_length"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 (off) or a positive integer, got {getattr(self, name)}")
        for name in ("lr", "clip", "max_grad_norm"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{name} must be a positive number, got {value}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.vector_env not in ("sync", "async"):
            problems.append(f"vector_env must be 'sync' or 'async', got {self.vector_env!r}")
        elif self.vector_env == "async" and self.env == "fx":
            problems.append("vector_env 'async' applies to gymnasium environments; the FX env steps all its "
                            "environments in one numpy call, so use vector_env 'sync' with env 'fx'")
        if self.transaction_cost < 0:
            problems.append(f"transaction_cost must be >= 0, got {self.transaction_cost}")
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            problems.append(f"hidden_sizes must be a non-empty list of positive integers, got {list(self.hidden_sizes)}")
        if self.minibatch_size > self.rollout_size and not problems:
            problems.append(
                f"minibatch_size ({self.minibatch_size}) is larger than the rollout "
                f"(n_steps * n_envs = {self.rollout_size}); lower minibatch_size or collect more steps")
        if self.env == "fx" and self.episode_length + self.obs_window + 2 > self.data_length and not self.price_csv:
            problems.append(f"data_length ({self.data_length}) is too short for episode_length "
                            f"{self.episode_length} plus obs_window {self.obs_window}")
        if problems:
            raise ConfigError("Invalid TrainConfig: " + "; ".join(problems) + ".")
        _refuse_if_too_big(self)

    # ------------------------------------------------------------------------------------------
    @property
    def rollout_size(self) -> int:
        return self.n_steps * self.n_envs

    @property
    def minibatches_per_epoch(self) -> int:
        """Minibatches per update epoch; the last one is smaller when the rollout does not divide evenly."""
        return -(-self.rollout_size // self.minibatch_size)

    def eval_due(self, cycles_done_in_run: int) -> bool:
        """Evaluation is due on the ``cycles_done_in_run``-th cycle of this run (counting from 1)."""
        return self.eval_every > 0 and cycles_done_in_run % self.eval_every == 0

    def checkpoint_due(self, cycles_done_in_run: int) -> bool:
        return self.checkpoint_every > 0 and cycles_done_in_run % self.checkpoint_every == 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_mapping({**self.to_dict(), **changes})

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a plain mapping, checking every key and type; errors name the key and what was expected."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} must be a mapping of TrainConfig fields, got {type(data).__name__}.")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"Unknown key(s) in {source}: {', '.join(unknown)}. "
                              f"Valid TrainConfig keys are: {', '.join(known)}.")
        hints = get_type_hints(cls)
        values = {name: _coerce(name, value, hints[name], source) for name, value in data.items()}
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        """Load from a YAML file holding TrainConfig fields (a ``train:`` section is used if present)."""
        data = load_yaml(path)
        if isinstance(data, Mapping) and "train" in data:
            data = data["train"]
        return cls.from_mapping(data or {}, source=str(path))


def load_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file, turning unreadable and malformed files into one-line ``ConfigError``s."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ConfigError(f"Config file {path} holds a value Python cannot read ({_first_sentence(exc)}); "
                          f"check the numbers in it.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file {path} is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}.") from None


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    text = str(hint)
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name} must be {expected}, got {value!r} ({type(value).__name__}).")

    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_MAX_DIGITS:
        raise ConfigError(f"{source}: {name} is a {len(str(abs(value)))}-digit number ({_short(value)}); "
                          f"no setting takes a value that large.")
    if text in ("int", "<class 'int'>"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if text in ("float", "<class 'float'>"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if text in ("bool", "<class 'bool'>"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if text in ("str", "<class 'str'>"):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if "str | None" in text or "Optional[str]" in text:
        if value is not None and not isinstance(value, str):
            raise bad("a string or null")
        return value
    if "tuple" in text:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers")
        if any(abs(v) >= 10**_MAX_DIGITS for v in value):
            raise ConfigError(f"{source}: {name} holds a number with more than {_MAX_DIGITS} digits; "
                              f"no layer is that wide.")
        return tuple(value)
    return value


def _short(value: Any) -> str:
    """A number for an error message: a 5000-digit literal is shown by its length, not printed whole."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:8]}...{text[-4:]} ({len(text.lstrip('-'))} digits)"


def _first_sentence(exc: BaseException) -> str:
    return (str(exc).split(";")[0].split("\n")[0] or type(exc).__name__).rstrip(".")


def estimate_memory_bytes(config: TrainConfig) -> int:
    """A lower bound of the memory one process of the run needs: the rollout buffers, the policy with its
    gradients and Adam state, a minibatch's activations, the price series and the environments' own arrays.
    The observation size of a gymnasium environment is not known before it is made; 1 is assumed (a bound)."""
    obs = config.obs_window + 1 if config.env == "fx" else 1
    rollout = config.n_steps * config.n_envs * (obs + 6) * 4  # float32 observations, then actions, logprobs ...
    widths = [obs, *config.hidden_sizes]
    params = sum(a * b + b for a, b in zip(widths, widths[1:])) + widths[-1] * 4 + 4  # trunk, actor and critic heads
    training = params * 4 * 4  # parameters, gradients, two Adam moments
    activations = config.minibatch_size * sum(config.hidden_sizes) * 4 * 3
    series = config.data_length * 8 * 2 if config.env == "fx" and not config.price_csv else 0
    envs = config.n_envs * (10 * 8 + 2 * obs * 4) + max(config.n_envs, config.eval_episodes) * obs * 4
    return rollout + training + activations + series + envs


def available_memory_bytes() -> int | None:
    """Memory the system can give a new allocation now (``MemAvailable`` plus free swap), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.split()[1:]}
        return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def _refuse_if_too_big(config: TrainConfig) -> None:
    needed = estimate_memory_bytes(config)
    if needed < 256 * 2**20:  # the common case: not worth reading /proc
        return
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise ConfigError(f"Invalid TrainConfig: this run needs at least {needed / 2**30:.1f} GiB of memory "
                          f"(rollout n_steps * n_envs = {_short(config.rollout_size)} transitions, hidden_sizes "
                          f"{list(config.hidden_sizes) if len(str(list(config.hidden_sizes))) < 60 else '...'}, "
                          f"data_length {_short(config.data_length)}) and {available / 2**30:.1f} GiB are "
                          f"available; lower n_steps, n_envs, hidden_sizes or data_length.")
