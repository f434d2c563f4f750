"""The env side of one Lightning run for ``wrap_env`` (Level 2 of bringing your own module): the
:class:`EnvEventHub`, one per trainer, holding the counters, the rollout boundaries and the evaluation
episodes of the wrapped envs bound to that run, and announcing their events on the run's shared
``RLEventBus``. The wrappers and how they bind are in :mod:`fxai_compat.envwrap`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pytorch_lightning.callbacks import Callback

from .rl_events import RLEventBus

__all__ = ["EnvEventHub", "hub_of", "with_eval_episodes", "ENV_RL_EVENTS"]

#: The RL events a training ``wrap_env`` announces.
ENV_RL_EVENTS = ("episode_start", "rollout_start", "step_start", "step_end", "episode_end", "rollout_end")
_HUB_ATTR = "_fxai_env_hub"


def hub_of(trainer: Any) -> "EnvEventHub | None":
    """The live hub of ``trainer`` (None if no wrapped env is bound to it)."""
    hub = getattr(trainer, _HUB_ATTR, None)
    return hub if hub is not None and hub.live else None


def with_eval_episodes(trainer: Any, values: dict[str, Any], *, results: bool = False) -> dict[str, Any]:
    """``values`` (a cycle's ``metrics``, or with ``results=True`` the ``eval_results``) with what a
    ``role="eval"`` wrapped env's episodes gave in this cycle's validation, if it played any."""
    hub = hub_of(trainer)
    found = hub.last_eval_results if hub is not None else None
    if found is not None:
        if results:
            values.update(found)
        else:
            values["eval_episode_reward_mean"] = found["episode_reward_mean"]
            values["eval_win_rate"] = found["win_rate"]
    return values


class EnvEventHub(Callback):
    """The env side of one Lightning run: counters, the cycle's episodes, rollout boundaries, and delivery
    of the wrapped envs' RL events to every callback defining ``on_rl_<event>(trainer, pl_module, payload)``.

    Placed first in ``trainer.callbacks``, so that it closes an open rollout before any other callback hears
    of an update or of the epoch's end. Not created by users: :func:`attach` and the wrappers make it.
    """

    def __init__(self, trainer: Any, pl_module: Any):
        super().__init__()
        self.trainer, self.pl_module = trainer, pl_module
        self.live = True
        self.wrappers: list = []
        self.n_train_envs = 0
        # The contract's counters (training envs only); the run's RL event bus keeps copies that the
        # legacy callbacks' trainer views read (``RLCounters``).
        self.vector_steps = 0
        self.total_timesteps = 0
        self.num_episodes = 0
        self._episodes_started = 0
        self.rollout_open = False
        self._rollout_from = 0
        self._rollout_returns: list[float] = []
        self._eval_episodes: list[tuple[float, int, float]] = []
        self.last_eval_results: dict[str, Any] | None = None
        self.connected = False
        self.quiet = True
        setattr(trainer, _HUB_ATTR, self)
        # A new list object: a hook loop running over the old one right now (setup) is not disturbed.
        trainer.callbacks = [self] + [cb for cb in trainer.callbacks if not isinstance(cb, EnvEventHub)]

    def connect(self) -> None:
        """At the first env use inside fit (every callback is set up by then): the bus and who listens."""
        if self.connected:
            return
        self.connected = True
        trainer = self.trainer
        # Events go out on the run's shared RL event bus (the Level-3 protocol), which also keeps the
        # counters a legacy callback's trainer view reads (fed here without building payloads nobody reads).
        self.bus = RLEventBus.of(trainer, self.pl_module)
        self.emit = self.bus.emit
        self.counters = self.bus.counters
        if self.counters is not None and (self.total_timesteps or self.num_episodes):
            # Resumed from a checkpoint (load_state_dict): the counters continue where the run left them.
            self.counters.total_timesteps, self.counters.num_episodes = self.total_timesteps, self.num_episodes
            self.counters.seen_step_end = True
        self.wants = {event: bool(self.bus.listeners[event]) for event in ENV_RL_EVENTS}
        for event, wanted in self.wants.items():  # attributes: the per-step tests are attribute loads
            setattr(self, f"want_{event}", wanted)
        # Nobody to tell: no RL listener and no legacy adapter (which reads counters and metrics).
        from .adapter import LegacyCallbackAdapter

        self.quiet = not any(self.wants.values()) and not any(isinstance(cb, LegacyCallbackAdapter)
                                                              for cb in trainer.callbacks)

    @property
    def state_key(self) -> str:
        return "fxai_compat.EnvEventHub"

    def bind(self, wrapper: Any) -> None:
        if wrapper in self.wrappers:
            return
        if wrapper._hub is not None and wrapper._hub is not self:
            wrapper._hub.unbind(wrapper)
        self.wrappers.append(wrapper)
        if wrapper.role == "train":
            wrapper._env_base = self.n_train_envs
            self.n_train_envs += wrapper._n
        wrapper._hub = self
        wrapper._fast = None  # its first use inside fit announces the episodes it began before (_resolve)

    def unbind(self, wrapper: Any) -> None:
        if wrapper in self.wrappers:
            self.wrappers.remove(wrapper)
        wrapper._hub = wrapper._fast = None
        if wrapper._began:  # its running episodes are announced again to the next run (e.g. a second fit)
            wrapper._unannounced[:] = True

    # -- events -------------------------------------------------------------------------------------
    def steps_counted(self) -> None:
        """A step without a ``step_end`` listener: only the bus's counters learn the new total."""
        counters = self.counters
        if counters is not None:
            counters.total_timesteps = self.total_timesteps
            counters.seen_step_end = True

    def new_episode_index(self) -> int:
        index = self._episodes_started
        self._episodes_started += 1
        return index

    def open_rollout(self) -> None:
        self.rollout_open = True
        if self.counters is not None:
            self.counters.seen_step_end = True  # env steps are counted from now on (see the wrappers' step)
        self._rollout_from = self.total_timesteps
        self._rollout_returns = []
        if self.want_rollout_start:
            self.emit("rollout_start", None)

    def close_rollout(self) -> None:
        if not self.rollout_open:
            return
        self.rollout_open = False
        if self.want_rollout_end:
            returns = self._rollout_returns
            self.emit("rollout_end", {"steps": self.total_timesteps - self._rollout_from, "episodes": len(returns),
                                      "reward_mean": _mean(returns)})

    def episode_ended(self, ret: float, length: int) -> None:
        self.num_episodes += 1
        self._rollout_returns.append(ret)

    def eval_episode_ended(self, ret: float, length: int, win_rate: float) -> None:
        if not self.trainer.sanity_checking:
            self._eval_episodes.append((ret, length, win_rate))

    # -- Lightning hooks (this callback runs first) -----------------------------------------------------
    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.rollout_open:
            self.close_rollout()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.rollout_open:
            self.close_rollout()

    def on_rl_update_start(self, trainer, pl_module, payload) -> None:
        if self.rollout_open:  # a module announcing its updates (Level 3) starts one before its backward
            self.close_rollout()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.last_eval_results = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.close_rollout()

    def on_train_end(self, trainer, pl_module) -> None:
        self.close_rollout()  # steps taken after the last epoch's end (e.g. in the module's on_train_epoch_end)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._eval_episodes = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not any(w.role == "eval" for w in self.wrappers):
            return
        returns = [r for r, _, _ in self._eval_episodes]
        wins = [w for _, _, w in self._eval_episodes if not math.isnan(w)]
        self.last_eval_results = {
            "episode_reward_mean": _mean(returns), "episode_reward_std": float(np.std(returns)) if returns else math.nan,
            "episode_length_mean": _mean([n for _, n, _ in self._eval_episodes]), "episodes": len(returns),
            "win_rate": _mean(wins)}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        """The end of the fit: every wrapper unbinds (a later step outside fit passes through and warns)."""
        if not self.live:
            return
        self.live = False
        for wrapper in list(self.wrappers):
            self.unbind(wrapper)
        trainer = self.trainer
        trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self]

    def state_dict(self) -> dict[str, Any]:
        return {"vector_steps": self.vector_steps, "total_timesteps": self.total_timesteps,
                "num_episodes": self.num_episodes, "episodes_started": self._episodes_started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Counters from a checkpoint (a resume, or ``trainer.load_checkpoint`` by a legacy callback)."""
        self.vector_steps = state["vector_steps"]
        self.total_timesteps = state["total_timesteps"]
        self.num_episodes = state["num_episodes"]
        self._episodes_started = state["episodes_started"]
        if not self.connected and self.live:
            self.connect()  # a resume restores before the env's first use: on_checkpoint_loaded reads the counters
        if self.connected and self.counters is not None:
            self.counters.total_timesteps, self.counters.num_episodes = self.total_timesteps, self.num_episodes
            self.counters.seen_step_end = True  # the trainer view reads these counters from now on


def _mean(values: list) -> float:
    return float(sum(values) / len(values)) if values else math.nan
