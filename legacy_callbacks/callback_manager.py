"""By-name binding of legacy callback methods, and the ``CallbackManager`` that dispatches events.

Binding works like pluggy's: each event offers a fixed set of named arguments
(``EVENT_ARGS``); a callback method receives only the parameters it names. The signature is
inspected once, when the callback is registered (``bind_event``); an ``EventBinding`` then
calls the method without any further inspection. ``bind_event`` and ``EventBinding`` are public
so that other hosts (the Lightning adapter) bind exactly the same way.

>>> class Printer:
...     def on_episode_end(self, episode_info):
...         return episode_info["reward"]
>>> binding = bind_event(Printer(), "on_episode_end")
>>> binding.names
('episode_info',)
>>> binding.call({"trainer": None, "episode_info": {"reward": 1.5}})
1.5
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base import EVENT_ARGS, EVENT_PAYLOAD, EVENTS, BaseCallback

__all__ = [
    "ON_ERROR_POLICIES",
    "CallbackManager",
    "CallbackSignatureError",
    "EventBinding",
    "bind_event",
    "callback_name",
    "is_stop",
]

logger = logging.getLogger("legacy_callbacks")

#: Accepted values of ``CallbackManager(on_error=...)``.
ON_ERROR_POLICIES: tuple[str, ...] = ("raise", "warn", "disable")

_EXPECTED_ARGS = {event: frozenset(names) for event, names in EVENT_ARGS.items()}


class CallbackSignatureError(TypeError):
    """A callback method has a parameter that its event cannot fill (raised at registration)."""


def callback_name(callback: Any) -> str:
    """The name used for ``callback`` in errors and logs: its class name."""
    if isinstance(callback, CallbackManager):
        return f"CallbackManager({', '.join(callback_name(cb) for cb in callback.callbacks)})"
    return type(callback).__qualname__


def is_stop(value: Any) -> bool:
    """True if an event's return value requests a stop.

    A stop is exactly ``False``, or a falsy numpy boolean / 0-dim torch bool tensor.
    ``None``, ``0``, ``""`` and everything else mean "carry on".
    """
    if value is False:
        return True
    if value is None or value is True:
        return False
    # Look the libraries up in sys.modules: if a value is one of their types, they are
    # already imported, and importing torch here would cost seconds for nothing.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.dtype == torch.bool and value.ndim == 0 and not bool(value)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.bool_):
            return not value
        if isinstance(value, numpy.ndarray):
            return value.dtype == numpy.bool_ and value.ndim == 0 and not bool(value)
    return False


class EventBinding:
    """One callback method bound to one event: what to call and which offered names to pass.

    ``names`` are the offered arguments the method receives (all of them when ``wants_all``,
    i.e. the method takes ``**kwargs``). ``binding.call(offered)`` calls the method with
    exactly those arguments from the ``offered`` mapping; ``binding(**offered)`` does the same.
    """

    __slots__ = ("callback", "event", "func", "names", "wants_all", "call")

    def __init__(self, callback: Any, event: str, func: Callable[..., Any],
                 positional: tuple[str, ...], keyword: tuple[str, ...], wants_all: bool,
                 defaults: Mapping[str, Any] | None = None):
        self.callback = callback
        self.event = event
        self.func = func
        passed = tuple(name for name in positional + keyword if not defaults or name not in defaults)
        self.names = EVENT_ARGS[event] if wants_all else passed
        self.wants_all = wants_all
        self.call: Callable[[Mapping[str, Any]], Any] = _make_caller(func, positional, keyword, wants_all, defaults)

    def __call__(self, **offered: Any) -> Any:
        return self.call(offered)

    def __repr__(self) -> str:
        passed = "**" if self.wants_all else ", ".join(self.names)
        return f"EventBinding({callback_name(self.callback)}.{self.event}({passed}))"


def _make_caller(func: Callable[..., Any], positional: tuple[str, ...], keyword: tuple[str, ...],
                 wants_all: bool, defaults: Mapping[str, Any] | None = None) -> Callable[[Mapping[str, Any]], Any]:
    # Events offer at most two names, so the common shapes get a closure without any loop
    # or kwargs dict: passing positionally is the cheapest call CPython has.
    if defaults or (wants_all and positional):
        # Rare shapes: unoffered positional-only parameters (with defaults) before an offered one get
        # their defaults; with **kwargs, positional-only parameters are passed by position too.
        defaults = defaults or {}

        def call(offered: Mapping[str, Any]) -> Any:
            values = [defaults[n] if n in defaults else offered[n] for n in positional]
            return func(*values, **(offered if wants_all else {n: offered[n] for n in keyword}))
        return call
    if wants_all:
        return lambda offered: func(**offered)
    if not keyword:
        if not positional:
            return lambda offered: func()
        if len(positional) == 1:
            (a,) = positional
            return lambda offered: func(offered[a])
        if len(positional) == 2:
            a, b = positional
            return lambda offered: func(offered[a], offered[b])
    if not positional and len(keyword) == 1:
        (k,) = keyword
        return lambda offered: func(**{k: offered[k]})
    return lambda offered: func(*[offered[n] for n in positional], **{n: offered[n] for n in keyword})


def _defined_method(callback: Any, event: str) -> Callable[..., Any] | None:
    """The callable ``callback`` defines for ``event``, or None if it does not define one."""
    func = getattr(callback, event, None)
    if func is None:
        return None
    instance_attrs = getattr(callback, "__dict__", {})
    if event not in instance_attrs:
        # Found on the class: skip it when it is BaseCallback's no-op (inherited or re-assigned).
        for klass in type(callback).__mro__:
            if event in klass.__dict__:
                if klass.__dict__[event] is BaseCallback.__dict__[event]:
                    return None
                break
    if not callable(func):
        raise TypeError(
            f"{callback_name(callback)}.{event} is {func!r}, which is not callable; "
            f"define it as a method, or set it to None to turn the event off."
        )
    return func


def _display_signature(func: Callable[..., Any], signature: inspect.Signature) -> str:
    # Show a bound method as the user wrote it, with ``self``.
    underlying = getattr(func, "__func__", None)
    if underlying is not None:
        try:
            return str(inspect.signature(underlying))
        except (TypeError, ValueError):
            pass
    return str(signature)


def bind_event(callback: Any, event: str) -> EventBinding | None:
    """Bind ``callback``'s method for ``event`` by name; None if the callback does not define it.

    Inherited no-ops of ``BaseCallback`` and methods set to ``None`` count as not defined;
    methods assigned on the instance (including ``functools.partial`` objects) count as defined.
    Each parameter whose name the event offers receives that argument, default or not (positional-only
    ones by position, as pluggy passes them); ``**kwargs`` receives every offered argument; ``*args``
    and parameters with defaults the event does not offer are left alone. A parameter without a default that the event does not
    offer raises ``CallbackSignatureError``, naming the callback, method, signature and the
    offered names.
    """
    if event not in EVENT_ARGS:
        raise ValueError(f"Unknown legacy event {event!r}; the 16 events are: {', '.join(EVENTS)}.")
    func = _defined_method(callback, event)
    if func is None:
        return None
    offered = EVENT_ARGS[event]
    where = f"{callback_name(callback)}.{event}"
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise CallbackSignatureError(
            f"Cannot read the signature of {where} ({exc}); legacy events bind arguments by name, "
            f"so define it as a Python function taking some of: {', '.join(offered)}."
        ) from None

    positional: list[str] = []
    keyword: list[str] = []
    fill: dict[str, Any] = {}  # unoffered positional-only parameters passed their default (see below)
    wants_all = False
    positional_run = True  # still in the leading run of parameters we can pass positionally
    for param in signature.parameters.values():
        kind = param.kind
        if kind is param.VAR_POSITIONAL:
            positional_run = False
            continue
        if kind is param.VAR_KEYWORD:
            wants_all = True
            continue
        has_default = param.default is not param.empty
        if param.name in offered:
            if kind is param.POSITIONAL_ONLY or (kind is param.POSITIONAL_OR_KEYWORD and positional_run):
                # Positional-only parameters are bound positionally, as pluggy does. Unoffered
                # positional-only parameters with defaults before one get their defaults, positionally.
                positional.extend(fill)
                positional.append(param.name)
                fill = {}
            else:
                keyword.append(param.name)
            continue
        if has_default:
            if kind is param.POSITIONAL_ONLY:
                fill[param.name] = param.default
            else:
                positional_run = False
            continue
        shown = _display_signature(func, signature)
        raise CallbackSignatureError(
            f"Cannot register legacy callback {callback_name(callback)}: {where}{shown}: parameter {param.name!r} "
            f"has no default and is not offered by {event}, which offers ({', '.join(offered)}). To fix it, "
            f"rename the parameter to one of {', '.join(offered)}, or give it a default."
        )
    params = signature.parameters
    if wants_all:  # everything offered goes by name; positional-only parameters must also be passed by position
        positional = [name for name in positional if params[name].kind is params[name].POSITIONAL_ONLY]
        keyword = []
    defaults = {name: params[name].default for name in positional if name not in offered}
    return EventBinding(callback, event, func, tuple(positional), tuple(keyword), wants_all, defaults)


def _is_control_flow(exc: BaseException) -> bool:
    # Matched by name so that optuna need not be imported; its pruning must reach the study.
    if not isinstance(exc, Exception):
        return True
    return any(klass.__name__ == "TrialPruned" for klass in type(exc).__mro__)


def _fresh(payload: dict) -> dict:
    return {key: list(value) if type(value) is list else value for key, value in payload.items()}


class CallbackManager:
    """Registers legacy callbacks and fires the 16 events at them.

    ``on_error`` decides what happens when a callback raises:

    - ``"raise"`` (default): the exception propagates unchanged, with a note naming the
      callback and the event (plus ``note_context()``, if set).
    - ``"warn"``: a warning is logged once per (callback, event); training continues.
    - ``"disable"``: a warning is logged and the callback receives no further events.

    Control-flow exceptions (``optuna.TrialPruned``, ``KeyboardInterrupt``, ``SystemExit`` and
    anything else that is not an ``Exception``) always propagate, whatever the policy.
    """

    def __init__(self, callbacks: Iterable[Any] = (), on_error: str = "raise"):
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(
                f"on_error must be one of {', '.join(map(repr, ON_ERROR_POLICIES))}; got {on_error!r}."
            )
        self.on_error = on_error
        #: Optional callable returning extra context for error notes, set by the host
        #: (e.g. "Lightning hook on_train_epoch_end, epoch 3, batch 0").
        self.note_context: Callable[[], str] | None = None
        self._callbacks: list[Any] = []
        self._bindings: list[dict[str, EventBinding]] = []  # parallel to _callbacks
        self._disabled: set[int] = set()
        self._warned: set[tuple[int, str]] = set()
        self._plans: dict[str, tuple[tuple[EventBinding, tuple[str, ...]], ...]] = {}
        self._rebuild()
        for callback in callbacks:
            self.add(callback)

    @property
    def callbacks(self) -> list[Any]:
        """Every registered callback, in registration order (including disabled ones)."""
        return list(self._callbacks)

    @property
    def disabled(self) -> list[Any]:
        """Callbacks switched off by ``on_error="disable"``."""
        return [cb for cb in self._callbacks if id(cb) in self._disabled]

    def __len__(self) -> int:
        return len(self._callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def add(self, callback: Any) -> None:
        """Register ``callback``, binding all 16 events now so that a bad signature fails here."""
        if any(cb is callback for cb in self._callbacks):
            raise ValueError(f"{callback_name(callback)} is already registered with this CallbackManager.")
        bindings = {}
        for event in EVENTS:
            binding = bind_event(callback, event)
            if binding is not None:
                bindings[event] = binding
        if not bindings and not isinstance(callback, BaseCallback):
            raise TypeError(
                f"{callback_name(callback)} is not a legacy callback: it defines none of the 16 events "
                f"({', '.join(EVENTS)}). Define at least one of them, or subclass legacy_callbacks.BaseCallback."
            )
        self._callbacks.append(callback)
        self._bindings.append(bindings)
        self._rebuild()

    def remove(self, callback: Any) -> None:
        """Unregister ``callback``; it receives no further events."""
        for index, cb in enumerate(self._callbacks):
            if cb is callback:
                del self._callbacks[index]
                del self._bindings[index]
                self._disabled.discard(id(callback))
                self._warned = {key for key in self._warned if key[0] != id(callback)}
                self._rebuild()
                return
        raise ValueError(f"{callback_name(callback)} is not registered with this CallbackManager.")

    def bindings(self, event: str) -> list[EventBinding]:
        """The active bindings of ``event``, in call order."""
        return [binding for binding, _ in self._plan(event)]

    def has(self, event: str) -> bool:
        """True if any active callback listens to ``event`` (lets the host skip building payloads)."""
        return bool(self._plan(event))

    def fire(self, event: str, /, **offered: Any) -> bool:
        """Call every callback that defines ``event``, in registration order.

        ``offered`` must be exactly the event's offered arguments (``EVENT_ARGS[event]``);
        each callback receives only those it names. Returns True if any callback requested a
        stop (see ``is_stop``); every callback runs regardless.
        """
        plan = self._plan(event)
        if offered.keys() != _EXPECTED_ARGS[event]:
            raise TypeError(
                f"fire({event!r}) must be given exactly the offered arguments "
                f"({', '.join(EVENT_ARGS[event])}); got ({', '.join(offered)})."
            )
        stop = False
        disabled = self._disabled
        for binding, fresh in plan:
            if disabled and id(binding.callback) in disabled:
                continue  # disabled during this very dispatch (e.g. by a nested event)
            args = offered
            if fresh:
                args = dict(offered)
                for name in fresh:
                    value = args[name]
                    if isinstance(value, dict):
                        args[name] = _fresh(value)
            try:
                result = binding.call(args)
            except BaseException as exc:
                if self._must_raise(binding, exc):
                    raise
                continue
            if result is not None and is_stop(result):
                stop = True
        return stop

    def _plan(self, event: str) -> tuple[tuple[EventBinding, tuple[str, ...]], ...]:
        try:
            return self._plans[event]
        except KeyError:
            raise ValueError(f"Unknown legacy event {event!r}; the 16 events are: {', '.join(EVENTS)}.") from None

    def _rebuild(self) -> None:
        # Precompute, per event, who is called and which dict payloads each one must get its
        # own copy of: a payload shared by several callbacks is copied for all but the last,
        # so that a callback that mutates it affects nobody else. A lone receiver gets the
        # host's object as is (no copy on the hot path).
        plans = {}
        for event in EVENTS:
            active = [
                bindings[event]
                for callback, bindings in zip(self._callbacks, self._bindings)
                if event in bindings and id(callback) not in self._disabled
            ]
            payload = EVENT_PAYLOAD[event]
            receivers = [i for i, binding in enumerate(active) if payload in binding.names]
            copy_for = set(receivers[:-1])
            plans[event] = tuple(
                (binding, (payload,) if i in copy_for else ()) for i, binding in enumerate(active)
            )
        self._plans = plans

    def _error_detail(self, binding: EventBinding) -> str:
        detail = f"raised in legacy callback {callback_name(binding.callback)} during event {binding.event}"
        if self.note_context is not None:
            try:
                context = self.note_context()
            except Exception:  # never let the context hide the real error
                context = None
            if context:
                detail = f"{detail} ({context})"
        return detail

    def _must_raise(self, binding: EventBinding, exc: BaseException) -> bool:
        """Apply the error policy to ``exc``; True if the caller must re-raise it."""
        detail = self._error_detail(binding)
        if self.on_error == "raise" or _is_control_flow(exc):
            exc.add_note(detail[0].upper() + detail[1:])
            return True
        callback = binding.callback
        if self.on_error == "disable":
            self._disabled.add(id(callback))
            self._rebuild()
            logger.warning("%r %s; the callback is disabled for the rest of the run (on_error='disable').",
                           exc, detail, exc_info=exc)
            return False
        key = (id(callback), binding.event)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%r %s; continuing (on_error='warn'). Further errors from this callback "
                           "during this event are not logged.", exc, detail, exc_info=exc)
        return False
