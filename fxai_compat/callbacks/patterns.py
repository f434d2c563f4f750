"""Advanced callback patterns for RL runs: ``CompositeRLCallback``, ``StateMachineCallback`` and ``DistributedRLCallback``.

Real, tested versions of the refactoring guide's section 5 sketches:

* ``CompositeRLCallback`` runs ordered children as one callback: every Lightning hook and every RL
  hook is forwarded to the children that implement it, in order; hooks no child implements are
  switched off (set to ``None``, which Lightning and the RL bus skip); the children's states are
  saved and restored under one key.
* ``StateMachineCallback`` moves training through named phases. At the end of each cycle the
  current phase's transitions are checked in order; the first whose condition holds moves to its
  target phase, whose settings apply from the next cycle: the optimizers' learning rate, and the PPO
  entropy coefficient (the exploration knob; ``TrainConfig`` is frozen, so the running core gets a
  copy of its config with the new ``ent_coef``; the module's saved hyperparameters keep the
  starting value). The phase is exposed (``phase``, ``phase_index``, logged ``phase/index``) and
  checkpointed; on resume the current phase's settings are applied again.
* ``DistributedRLCallback`` computes the reward statistics of all ranks' episodes each cycle
  (``torch.distributed.all_gather_object``: ranks finish different numbers of episodes, which
  rules out ``strategy.all_gather``'s same-shape tensors) and logs
  ``distributed/global_reward_mean``, ``distributed/global_reward_std`` (population std) and
  ``distributed/global_episodes`` on every rank.

>>> machine = StateMachineCallback(
...     [Phase("explore", ent_coef=0.02), Phase("exploit", lr=1e-4, ent_coef=0.0)],
...     [Transition("explore", "exploit", after_cycles(10))])
>>> machine.phase, [p.name for p in machine.phases]
('explore', ['explore', 'exploit'])
>>> CompositeRLCallback([DistributedRLCallback()]).on_validation_start is None  # no child uses it
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping

from ..fast_paths import log_value
from ..lightning_host import RL_HOOKS
from .base import RLCallback, is_rl_noop

__all__ = ["CompositeRLCallback", "StateMachineCallback", "Phase", "Transition", "after_cycles", "metric_at_least",
           "DistributedRLCallback", "LIGHTNING_HOOKS"]

#: Every hook Lightning calls on a callback, from ``pytorch_lightning.Callback`` itself (stays right across versions).
LIGHTNING_HOOKS: tuple[str, ...] = tuple(
    name for name, member in vars(pl.Callback).items()
    if callable(member) and (name.startswith("on_") or name in ("setup", "teardown")))
# Lightning calls these without checking callable(): they must stay methods.
_ALWAYS_CALLED = ("on_save_checkpoint", "on_load_checkpoint")


# -- CompositeRLCallback --------------------------------------------------------------------------
class CompositeRLCallback(RLCallback):
    """Several callbacks as one: every Lightning and RL hook forwarded to the children, in order.

    Checkpoint and early-stopping callbacks cannot be children: Lightning finds them by type
    (``ckpt_path="last"``, ``trainer.checkpoint_callback``) and runs them after the module's
    ``on_train_epoch_end``; pass those to the Trainer directly.
    """

    def __init__(self, callbacks: Sequence[pl.Callback]):
        super().__init__()
        self.callbacks = list(callbacks)
        for child in self.callbacks:
            if not isinstance(child, pl.Callback):
                raise TypeError(f"CompositeRLCallback children must be pytorch_lightning callbacks; got "
                                f"{type(child).__name__} (wrap legacy callbacks with fxai_compat.LegacyCallbackAdapter).")
            if isinstance(child, (Checkpoint, EarlyStopping)):
                raise TypeError(f"CompositeRLCallback cannot hold {type(child).__name__}: Lightning finds checkpoint "
                                f"and early-stopping callbacks by type and runs them after the module; pass it to "
                                f"the Trainer directly.")
        for hook in LIGHTNING_HOOKS:
            listeners = [getattr(c, hook) for c in self.callbacks if _overrides(c, hook)]
            if hook in _ALWAYS_CALLED or listeners:
                setattr(self, hook, _forward(listeners))
            else:
                setattr(self, hook, None)  # Lightning skips hooks that are not callable
        for hook in RL_HOOKS.values():
            listeners = [getattr(c, hook) for c in self.callbacks if not is_rl_noop(getattr(c, hook, None))]
            setattr(self, hook, _forward(listeners) if listeners else None)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(children=[child.state_key for child in self.callbacks])

    def state_dict(self) -> dict[str, Any]:
        states = {}
        for index, child in enumerate(self.callbacks):
            state = child.state_dict()
            if state:
                states[f"{index}:{child.state_key}"] = state
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for index, child in enumerate(self.callbacks):
            state = state_dict.get(f"{index}:{child.state_key}")
            if state:
                child.load_state_dict(state)


def _overrides(callback: pl.Callback, hook: str) -> bool:
    method = getattr(callback, hook, None)
    if not callable(method):
        return False
    func = getattr(method, "__func__", None)
    return func is None or func is not getattr(pl.Callback, hook, None)


def _forward(listeners: list[Callable[..., Any]]) -> Callable[..., None]:
    def forward(*args: Any, **kwargs: Any) -> None:
        for listener in listeners:
            listener(*args, **kwargs)
    return forward


# -- StateMachineCallback -------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """A training phase and what changes on entering it (``None``: unchanged)."""

    name: str
    lr: float | None = None
    """Learning rate of every parameter group of every optimizer, from this phase on."""
    ent_coef: float | None = None
    """PPO entropy coefficient (exploration), from this phase on."""
    on_enter: Callable[["pl.Trainer", "pl.LightningModule", "Phase"], None] | None = None
    """Anything else to change on entry, called with (trainer, pl_module, phase)."""


@dataclass(frozen=True)
class Transition:
    """Move from ``source`` to ``target`` at the end of a cycle where ``when(trainer, pl_module)`` is true."""

    source: str
    target: str
    when: Callable[["pl.Trainer", "pl.LightningModule"], bool]


def _cycles_done(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> int:
    core = getattr(pl_module, "core", None)
    return core.cycles_completed if core is not None else trainer.current_epoch + 1


def after_cycles(n: int) -> Callable[["pl.Trainer", "pl.LightningModule"], bool]:
    """Condition: at least ``n`` cycles are done (counting from the start of the whole run)."""
    def condition(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> bool:
        return _cycles_done(trainer, pl_module) >= n
    condition.__qualname__ = f"after_cycles({n})"
    return condition


def metric_at_least(name: str, value: float) -> Callable[["pl.Trainer", "pl.LightningModule"], bool]:
    """Condition: the metric ``name`` logged this cycle is at least ``value`` (NaN or missing: false)."""
    def condition(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> bool:
        exact = getattr(pl_module, "exact_logged", None) or {}
        current = exact.get(name, trainer.callback_metrics.get(name))
        current = float(current) if current is not None else math.nan
        return current >= value
    condition.__qualname__ = f"metric_at_least({name!r}, {value!r})"
    return condition


class StateMachineCallback(pl.Callback):
    """Training phases with user-defined transitions that change the learning rate and the entropy coefficient.

    Args:
        phases: the phases; the first is the initial one unless ``initial`` names another.
        transitions: checked in order at the end of each cycle, among those leaving the current phase.
        initial: name of the starting phase.
    """

    def __init__(self, phases: Sequence[Phase], transitions: Sequence[Transition], initial: str | None = None):
        super().__init__()
        self.phases = list(phases)
        if not self.phases:
            raise ValueError("StateMachineCallback needs at least one Phase.")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"StateMachineCallback phase names must be unique; got {names}.")
        self.transitions = list(transitions)
        for t in self.transitions:
            for end in (t.source, t.target):
                if end not in names:
                    raise ValueError(f"Transition {t.source!r} -> {t.target!r} names unknown phase {end!r}; "
                                     f"phases are: {', '.join(names)}.")
            if not callable(t.when):
                raise ValueError(f"Transition {t.source!r} -> {t.target!r}: when must be callable(trainer, pl_module); "
                                 f"got {t.when!r}.")
        if initial is not None and initial not in names:
            raise ValueError(f"StateMachineCallback initial phase {initial!r} is not one of: {', '.join(names)}.")
        self._by_name = {p.name: p for p in self.phases}
        self.phase: str = initial or names[0]
        #: Transitions taken: {"cycle" (the cycle after which it happened), "from", "to"}.
        self.history: list[dict[str, Any]] = []

    @property
    def phase_index(self) -> int:
        return next(i for i, p in enumerate(self.phases) if p.name == self.phase)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(phases=[p.name for p in self.phases])

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Fresh run: the initial phase's settings; resumed run: the restored phase's (ent_coef is not in the checkpoint).
        self._apply(self._by_name[self.phase], trainer, pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        log_value(pl_module, "phase/index", self.phase_index, on_step=False, on_epoch=True)
        target = None
        for transition in self.transitions:
            if transition.source == self.phase and transition.when(trainer, pl_module):
                target = transition.target
                break
        if trainer.world_size > 1:  # conditions may read rank-local values: rank 0 decides for all
            target = trainer.strategy.broadcast(target, src=0)
        if target is None or target == self.phase:
            return
        core = getattr(pl_module, "core", None)
        cycle = core.cycle if core is not None else trainer.current_epoch
        self.history.append({"cycle": cycle, "from": self.phase, "to": target})
        self.phase = target
        self._apply(self._by_name[target], trainer, pl_module)

    @staticmethod
    def _apply(phase: Phase, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if phase.lr is not None:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = phase.lr
        if phase.ent_coef is not None:
            core = getattr(pl_module, "core", None)
            if core is None:
                raise ValueError(f"Phase {phase.name!r} sets ent_coef, which needs a module with a PPO core "
                                 f"(PPOLightningModule); use on_enter= for other modules.")
            core.config = core.config.replace(ent_coef=phase.ent_coef)
        if phase.on_enter is not None:
            phase.on_enter(trainer, pl_module, phase)

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["phase"] not in self._by_name:
            raise ValueError(f"The checkpoint's phase {state_dict['phase']!r} is not one of this StateMachineCallback's "
                             f"phases ({', '.join(self._by_name)}).")
        self.phase = state_dict["phase"]
        self.history = [dict(h) for h in state_dict["history"]]


# -- DistributedRLCallback ------------------------------------------------------------------------
class DistributedRLCallback(RLCallback):
    """Reward statistics over the episodes of all ranks, per cycle (``history``; logged ``distributed/*``)."""

    def __init__(self, prefix: str = "distributed/"):
        super().__init__()
        self.prefix = prefix
        #: One record per cycle: cycle, episodes, global_reward_mean, global_reward_std, episodes_per_rank.
        self.history: list[dict[str, Any]] = []
        self._rewards: list[float] = []

    def on_rl_episode_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        self._rewards.append(float(payload["reward"]))

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._rewards = []

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        local, self._rewards = self._rewards, []
        if trainer.world_size > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(parts, local)
        else:
            parts = [local]
        rewards = [r for part in parts for r in part]
        mean = float(np.mean(rewards)) if rewards else math.nan
        std = float(np.std(rewards)) if rewards else math.nan
        core = getattr(pl_module, "core", None)
        self.history.append({"cycle": core.cycle if core is not None else trainer.current_epoch,
                             "episodes": len(rewards), "global_reward_mean": mean, "global_reward_std": std,
                             "episodes_per_rank": [len(part) for part in parts]})
        for name, value in (("global_reward_mean", mean), ("global_reward_std", std),
                            ("global_episodes", float(len(rewards)))):
            # The same value on every rank after the gather: no sync_dist reduction needed.
            log_value(pl_module, self.prefix + name, value, on_step=False, on_epoch=True)
