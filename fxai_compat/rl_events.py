"""The RL event protocol: how a LightningModule (or an env wrapper inside it) announces RL events.

This is the public, documented way for module authors to give legacy callbacks, native ports and
``RLCallback`` subclasses the environment-level events Lightning knows nothing about (Level 3 of
"bring your own module"; ``PPOLightningModule`` speaks it too, and the Level-2 env wrapper uses it)::

    from fxai_compat import RLEventBus

    class MyModule(pl.LightningModule):
        rl_events_provided = ("episode_start", "step_start", "step_end", "episode_end")   # declared

        def training_step(self, batch, batch_idx):
            bus = RLEventBus.of(self.trainer, self)        # the trainer's bus (made on first use)
            bus.emit("step_start", self.vector_steps)
            ...
            bus.emit("step_end", {"step": ..., "total_timesteps": ..., "rewards": [...], "dones": [...],
                                  "actions": [...]})

* ``emit(event, payload)`` calls ``on_rl_<event>(trainer, pl_module, payload)`` on every trainer
  callback that defines it, in callback order (listeners resolved once, when the bus is made).
  ``wants(event)`` says whether anyone listens, so a module can skip building payloads.
* Payloads are those of the legacy contract (``RL_PAYLOAD_KEYS``). A payload that misses a key the
  contract requires raises :class:`RLPayloadError` at its event's **first** emit, naming the event
  and the key; each event is checked once per bus (the check then removes itself: no per-call cost).
* ``rl_events_provided`` (a class or instance attribute: event names, or ``"all"``) declares what
  the module announces, so that a callback needing an event nobody provides is refused at setup
  (see :func:`provided_events`). An object held by the module (an env wrapper) may declare the same
  way with ``fxai_rl_provides``; the adapter finds it among the module's attributes.

**Counters** (how ``trainer.total_timesteps`` / ``num_episodes`` reach a legacy callback's trainer view
in a module without ``core``): a bus made with ``counters=True`` (the default; ``RLEventBus.of`` makes
one) keeps :class:`RLCounters` from the payloads it carries, before any listener sees the event:
``total_timesteps`` is the latest ``step_end["total_timesteps"]``, ``num_episodes`` counts
``episode_end`` events, and the episodes ended in the current Lightning epoch (returns and lengths)
feed the legacy metric keys (``episode_reward_mean``, ``episode_length_mean``, ``timesteps_total``,
``episodes_total``) of that cycle's ``metrics``. An announcer therefore only emits; it never writes
counters itself. ``PPOLightningModule`` makes its bus with ``counters=False`` (its core counts).

``active_trainer()`` is the trainer whose ``fit`` of a user's own module is running in this process
(entered by ``LegacyCallbackAdapter`` at setup and left at teardown, or by anyone with :func:`enter_fit` /
:func:`leave_fit`); an env wrapper uses it to find the bus (``RLEventBus.of(active_trainer())``), and to
refuse being stepped outside ``fit``. Each ``enter_fit`` starts the trainer with a fresh shared bus.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .ppo import RL_EVENTS

__all__ = ["RLEventBus", "RLCounters", "RLPayloadError", "RL_HOOKS", "RL_PAYLOAD_KEYS", "rl_noop",
           "provided_events", "active_trainer", "enter_fit", "leave_fit", "PROVIDES_ATTR", "OBJECT_PROVIDES_ATTR",
           "LEVEL_OF_RL_EVENT", "unprovided_message", "MissingRLEventError"]

#: RL event -> the callback method that receives it.
RL_HOOKS = {event: f"on_rl_{event}" for event in RL_EVENTS}

#: RL event -> the keys its (dict) payload must hold (legacy contract, section 3). ``step_start``'s
#: payload is the vector step (an int), ``rollout_start``'s is ``None``.
RL_PAYLOAD_KEYS: dict[str, tuple[str, ...] | None] = {
    "episode_start": ("env_index", "episode_index"),
    "rollout_start": None,
    "step_start": None,
    "step_end": ("step", "total_timesteps", "rewards", "dones", "actions"),
    "episode_end": ("env_index", "episode_index", "reward", "length", "pnl", "trades", "win_rate"),
    "rollout_end": ("steps", "episodes", "reward_mean"),
    "update_start": ("update_index", "epoch", "minibatch"),
    "update_end": ("update_index", "epoch", "minibatch", "loss", "policy_loss", "value_loss", "entropy",
                   "approx_kl", "clip_fraction"),
}

#: What a module declares its announced RL events with (class or instance attribute).
PROVIDES_ATTR = "rl_events_provided"
#: What an object the module holds (an env wrapper) declares its announced RL events with.
OBJECT_PROVIDES_ATTR = "fxai_rl_provides"

_HINTS = {
    "episode_end": " Environments without FX semantics pass pnl=0.0, trades=0, win_rate=float('nan').",
    "update_end": " Losses a module does not compute are passed as float('nan').",
}


#: RL event -> the level of "bring your own module" that announces it on the RL bus (native ports see these).
LEVEL_OF_RL_EVENT: dict[str, int] = {"episode_start": 2, "step_start": 2, "step_end": 2, "episode_end": 2,
                                     "rollout_start": 3, "rollout_end": 3, "update_start": 3, "update_end": 3}

_LEVEL_TEXT = {2: "Level 2: wrap the module's environment with fxai_compat.wrap_env(env)",
               3: "Level 3: announce it with fxai_compat.RLEventBus and declare it in rl_events_provided"}


def unprovided_message(who: str, kind: str, event: str, pl_module: Any, rl_event: str) -> str:
    """One sentence: ``who`` needs ``event``, the module does not provide it, and which level would."""
    level = LEVEL_OF_RL_EVENT[rl_event]
    return (f"{who} ({kind}) needs the event {event!r}, which {type(pl_module).__name__} does not announce "
            f"(it announces: {', '.join(sorted(provided_events(pl_module))) or 'none'}); it would see nothing. "
            f"To provide it, use {_LEVEL_TEXT[level]}.")


class RLPayloadError(ValueError):
    """An RL event's payload does not have the contract's shape (raised at the event's first emit)."""


class MissingRLEventError(ValueError):
    """A callback needs an RL event the module does not announce (raised at setup, naming the event and the
    level of "bring your own module" that would provide it)."""


def rl_noop(func):
    """Marks a base-class RL hook as a no-op, so the bus never calls it (inherited no-ops cost nothing)."""
    func._fxai_rl_noop = True
    return func


def check_payload(event: str, payload: Any) -> None:
    """Raise :class:`RLPayloadError` if ``payload`` is not a valid payload of RL event ``event``."""
    if event not in RL_PAYLOAD_KEYS:
        raise RLPayloadError(f"Unknown RL event {event!r}; the RL events are: {', '.join(RL_EVENTS)}.")
    if event == "step_start":
        if isinstance(payload, bool) or not isinstance(payload, int) and not hasattr(payload, "__index__"):
            raise RLPayloadError(f"RL event 'step_start' takes the vector step as an int (steps so far); "
                                 f"got {type(payload).__name__} {payload!r}.")
        return
    keys = RL_PAYLOAD_KEYS[event]
    if keys is None:
        if payload is not None:
            raise RLPayloadError(f"RL event {event!r} takes no payload (None); got {type(payload).__name__}.")
        return
    if not isinstance(payload, dict):
        raise RLPayloadError(f"RL event {event!r} takes a dict payload with keys {', '.join(keys)}; "
                             f"got {type(payload).__name__}.")
    missing = [key for key in keys if key not in payload]
    if missing:
        raise RLPayloadError(f"RL event {event!r}: the payload is missing key {missing[0]!r}"
                             f"{' (and ' + ', '.join(map(repr, missing[1:])) + ')' if missing[1:] else ''}; "
                             f"the contract requires {', '.join(keys)}.{_HINTS.get(event, '')}")


class RLCounters:
    """Counters kept from the payloads a bus carries (see the module docstring)."""

    __slots__ = ("total_timesteps", "num_episodes", "epoch", "returns", "lengths", "seen_step_end",
                 "seen_episode_end", "_trainer")

    def __init__(self, trainer: Any = None):
        self.total_timesteps = 0
        self.num_episodes = 0
        self.seen_step_end = False
        self.seen_episode_end = False
        #: The Lightning epoch the episode lists below belong to, and the returns/lengths of its episodes.
        self.epoch = -1
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self._trainer = trainer

    def on_step_end(self, trainer: Any, pl_module: Any, payload: dict) -> None:
        self.total_timesteps = int(payload["total_timesteps"])
        self.seen_step_end = True

    def on_episode_end(self, trainer: Any, pl_module: Any, payload: dict) -> None:
        self.num_episodes += 1
        self.seen_episode_end = True
        epoch = trainer.current_epoch if trainer is not None else 0
        if epoch != self.epoch:
            self.epoch, self.returns, self.lengths = epoch, [], []
        self.returns.append(float(payload["reward"]))
        self.lengths.append(int(payload["length"]))

    def cycle_episodes(self, epoch: int) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes that ended during Lightning epoch ``epoch``."""
        return (self.returns, self.lengths) if epoch == self.epoch else ([], [])

    def legacy_metrics(self, epoch: int) -> dict[str, Any]:
        """The legacy metric keys these counters know for epoch ``epoch`` (only what was announced)."""
        out: dict[str, Any] = {}
        if self.seen_step_end:
            out["timesteps_total"] = self.total_timesteps
        if self.seen_episode_end or self.seen_step_end:
            returns, lengths = self.cycle_episodes(epoch)
            out["episodes_total"] = self.num_episodes
            out["episode_reward_mean"] = math.fsum(returns) / len(returns) if returns else math.nan
            out["episode_length_mean"] = sum(lengths) / len(lengths) if lengths else math.nan
        return out


class _Calls(dict):
    def __missing__(self, event: str):
        raise RLPayloadError(f"Unknown RL event {event!r}; the RL events are: {', '.join(RL_EVENTS)}.")


class RLEventBus:
    """Delivers a module's RL events to the callbacks that listen, resolved once per run.

    Args:
        trainer, pl_module: what listeners receive as their first two arguments.
        validate: check each event's first payload against ``RL_PAYLOAD_KEYS`` (once per event).
        counters: keep :class:`RLCounters` from the payloads (``bus.counters``; ``None`` when False).
    """

    def __init__(self, trainer: Any, pl_module: Any, *, validate: bool = True, counters: bool = True):
        self.trainer, self.pl_module = trainer, pl_module
        #: RL event -> the callbacks' bound ``on_rl_<event>`` methods, in callback order.
        self.listeners: dict[str, list[Callable[..., Any]]] = {}
        for event, hook in RL_HOOKS.items():
            found = []
            for cb in getattr(trainer, "callbacks", None) or ():
                fn = getattr(cb, hook, None)
                if callable(fn) and not getattr(fn, "_fxai_rl_noop", False):
                    found.append(fn)
            self.listeners[event] = found
        self.counters = RLCounters(trainer) if counters else None
        # What emit calls: the counters first (a listener reads them updated), then the listeners; before
        # them, until the first emit of the event, its payload check (which then takes itself out).
        calls = _Calls()
        for event, found in self.listeners.items():
            tracker = getattr(self.counters, f"on_{event}", None) if self.counters is not None else None
            calls[event] = ([tracker] if tracker is not None else []) + found
            if validate:
                calls[event] = [self._checker(event, calls[event])] + calls[event]
        self._calls = calls
        self._wanted = {event: bool(self.listeners[event]) or (counters and event in ("step_end", "episode_end"))
                        for event in RL_EVENTS}

    def _checker(self, event: str, rest: list[Callable[..., Any]]) -> Callable[..., Any]:
        def check(trainer: Any, pl_module: Any, payload: Any) -> None:
            check_payload(event, payload)
            self._calls[event] = rest  # checked: later emits go straight to the listeners
        return check

    def wants(self, event: str) -> bool:
        """Whether anyone (a listener, or the counters) reads ``event``: a module may skip building payloads."""
        return self._wanted[event]

    def emit(self, event: str, payload: Any) -> None:
        """Announce ``event`` with ``payload`` to every listener (``RLPayloadError`` if malformed, first time)."""
        trainer, module = self.trainer, self.pl_module
        for fn in self._calls[event]:
            fn(trainer, module, payload)

    @classmethod
    def of(cls, trainer: Any, pl_module: Any = None) -> "RLEventBus":
        """The trainer's shared bus (with counters), made on first use: every announcer of a run uses this one."""
        bus = getattr(trainer, "_fxai_rl_bus", None)
        if bus is None or (pl_module is not None and bus.pl_module is not pl_module):
            bus = cls(trainer, pl_module if pl_module is not None else getattr(trainer, "lightning_module", None))
            trainer._fxai_rl_bus = bus
        return bus

    @staticmethod
    def existing(trainer: Any) -> "RLEventBus | None":
        """The trainer's shared bus if some announcer has made one, else None."""
        return getattr(trainer, "_fxai_rl_bus", None)


def _declared(obj: Any, attr: str) -> frozenset[str] | None:
    value = getattr(obj, attr, None)
    if value is None:
        return None
    if value == "all":
        return frozenset(RL_EVENTS)
    events = frozenset([value] if isinstance(value, str) else value)
    unknown = sorted(events - set(RL_EVENTS))
    if unknown:
        raise RLPayloadError(f"{type(obj).__name__}.{attr} names unknown RL event(s) {', '.join(map(repr, unknown))}; "
                             f"the RL events are: {', '.join(RL_EVENTS)}.")
    return events


def provided_events(pl_module: Any, depth: int = 4) -> frozenset[str]:
    """The RL events ``pl_module`` announces, as declared (never guessed from behaviour).

    The module's own ``rl_events_provided`` (``PPOLightningModule``: all); plus what objects it (or its
    trainer's datamodule) holds declare with ``fxai_rl_provides`` (an env wrapper), searched through attributes, lists, tuples and
    dicts (of at most 64 items) up to ``depth`` levels (tensors and ``nn.Module`` children are not searched).
    """
    found = set(_declared(pl_module, PROVIDES_ATTR) or ())
    seen = {id(pl_module)}
    frontier: list[Any] = [pl_module]
    datamodule = getattr(getattr(pl_module, "_trainer", None), "datamodule", None)
    if datamodule is not None:  # an env kept by the trainer's LightningDataModule is the module's env too
        seen.add(id(datamodule))
        frontier.append(datamodule)
    for _ in range(depth):
        nxt: list[Any] = []
        for obj in frontier:
            for value in _children(obj):
                if id(value) in seen or _opaque(value):
                    continue
                seen.add(id(value))
                declared = _declared(value, OBJECT_PROVIDES_ATTR) if not isinstance(value, type) else None
                if declared:
                    found |= declared
                nxt.append(value)
        frontier = nxt
    return frozenset(found)


#: Containers longer than this are data (a replay buffer, a list of transitions), not where envs are kept.
_MAX_SEARCHED = 64


def _children(obj: Any) -> Iterable[Any]:
    if isinstance(obj, dict):
        return list(obj.values()) if len(obj) <= _MAX_SEARCHED else ()
    if isinstance(obj, (list, tuple)):
        return list(obj) if len(obj) <= _MAX_SEARCHED else ()
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return ()
    # gymnasium wrappers keep the wrapped env in their __dict__ ("env"), so a wrapper chain is searched too
    return [v for k, v in attrs.items() if k not in ("_modules", "_parameters", "_buffers", "_trainer")]


def _opaque(value: Any) -> bool:
    if value is None or isinstance(value, (str, bytes, int, float, bool, complex, type)):
        return True
    module = type(value).__module__ or ""
    return module.startswith(("torch", "numpy", "pytorch_lightning", "lightning"))


_ACTIVE: list[Any] = []


def enter_fit(trainer: Any) -> None:
    """Mark ``trainer``'s ``fit`` as running in this process (idempotent); a new fit gets a new shared bus."""
    if not any(t is trainer for t in _ACTIVE):
        _ACTIVE.append(trainer)
        trainer._fxai_rl_bus = None


def leave_fit(trainer: Any) -> None:
    """Mark ``trainer``'s ``fit`` as over."""
    _ACTIVE[:] = [t for t in _ACTIVE if t is not trainer]


def active_trainer() -> Any:
    """The trainer whose ``fit`` is running in this process (the innermost, if fits nest), or None."""
    return _ACTIVE[-1] if _ACTIVE else None
