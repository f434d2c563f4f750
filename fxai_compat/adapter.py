"""``LegacyCallbackAdapter``: runs an unchanged legacy FxAI callback inside a Lightning ``Trainer``.

The adapter is a ``pytorch_lightning.Callback``. It translates Lightning's hooks and the RL event
protocol into the 16 legacy events according to :data:`~fxai_compat.events.EVENT_MAP`, hands the
legacy callback a trainer *view* with the legacy trainer surface, and dispatches through a
``legacy_callbacks.CallbackManager`` (the legacy by-name binding, stop protocol and error policy,
not a second copy of them).

Cost model: binding is computed once at construction; Lightning hooks and RL events that no
wrapped callback listens to are switched off on the instance (Lightning skips hooks set to
``None``; the RL bus skips ``None`` listeners), so a callback that defines 2 events costs nothing
on the other 14.

Several adapters on one trainer behave like the callbacks of one legacy trainer: they share the
``TrainingContext`` and the stop flag, and ``trainer.load_checkpoint`` / ``save_checkpoint`` notify
all of them.

Under DDP, a control-flow exception from a legacy callback (``optuna.TrialPruned``; see
``LegacyCallbackAdapter._defers``) is held until the cycle's end, where every rank stops together; it then
leaves ``fit`` on the rank that raised it and on every rank that runs legacy callbacks (rank 0, and all ranks
with ``ranks="all"``), while a rank without legacy callbacks returns normally. No rank is left in a collective.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from legacy_callbacks import ON_ERROR_POLICIES, CallbackManager, TrainingContext
from legacy_callbacks.base import EVENTS
from legacy_callbacks.callback_manager import _is_control_flow

from . import lightning_host
from .checkpoints import load_weights_only, read_training_checkpoint
from .events import (CHECKPOINT_IO_SOURCE, EVENT_MAP, LIGHTNING_SOURCE, RL_SOURCE, EventRoute, route_for)
from .legacy_host import callback_state_keys
from .lightning_host import LOGGED_METRICS, RL_HOOKS, NotifyingCheckpointIO
from .ppo import RL_EVENTS
from .resume import announce_resume

__all__ = ["LegacyCallbackAdapter", "LightningTrainerView", "wrap", "SUPPORTED_HOOKS", "AdapterConfigError"]

log = logging.getLogger("fxai_compat.adapter")

#: Checkpoint key of every rank's RL state in a DDP checkpoint (None with a host that writes none).
RL_RANK_STATES_KEY = getattr(lightning_host, "RL_RANK_STATES_KEY", None)

#: Lightning hooks an event may be routed to with ``mapping=`` (plus the RL events and the checkpoint IO).
SUPPORTED_HOOKS = ("on_train_start", "on_train_end", "on_train_epoch_start", "on_train_epoch_end",
                   "on_validation_start", "on_validation_end", "on_train_batch_start", "on_train_batch_end",
                   "on_before_optimizer_step", "on_fit_start", "on_fit_end")
_ALL_LIGHTNING_HOOKS = SUPPORTED_HOOKS + (
    "setup", "teardown", "on_sanity_check_start", "on_sanity_check_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end", "on_before_backward",
    "on_after_backward", "on_before_zero_grad", "on_exception",
    "on_test_start", "on_test_end", "on_predict_start", "on_predict_end")


class AdapterConfigError(ValueError):
    """A bad ``mapping=``, ``on_error=``, ``ranks=`` or wrapped object, found at construction."""


def _parse_source(event: str, spec: Any) -> EventRoute | None:
    """Turn a ``mapping=`` value into a route: ``None`` drops the event; a hook name or ``rl:<event>``."""
    base = route_for(event)
    if spec is None:
        return None
    if isinstance(spec, EventRoute):
        return spec
    if not isinstance(spec, str):
        raise AdapterConfigError(f"mapping[{event!r}] must be a hook name, 'rl:<event>' or None; got {spec!r}.")
    if spec.startswith("rl:"):
        name = spec[3:]
        if name not in RL_EVENTS:
            raise AdapterConfigError(f"mapping[{event!r}] names unknown RL event {name!r}; RL events are: "
                                     f"{', '.join(RL_EVENTS)}.")
        return EventRoute(event, RL_SOURCE, name, base.payload, "overridden", base.seed_hook, "mapping= override")
    if spec == "checkpoint_io":
        return EventRoute(event, CHECKPOINT_IO_SOURCE, "save", base.payload, "overridden", base.seed_hook,
                          "mapping= override")
    if spec not in SUPPORTED_HOOKS:
        raise AdapterConfigError(
            f"mapping[{event!r}] names unknown Lightning hook {spec!r}; supported hooks are: "
            f"{', '.join(SUPPORTED_HOOKS)}; or 'rl:<event>' with one of {', '.join(RL_EVENTS)}; or None to drop it.")
    return EventRoute(event, LIGHTNING_SOURCE, spec, base.payload, "overridden", base.seed_hook, "mapping= override")


def _nan_if_missing(metrics: Mapping[str, Any], name: str) -> Any:
    value = metrics.get(name)
    if value is None:
        return None
    return value.item() if hasattr(value, "item") else value


class _SharedRunState:
    """What the legacy loop has once per trainer and every callback sees: the context and the stop flag."""

    def __init__(self) -> None:
        self.context = TrainingContext()
        self.stop = False
        #: (event, adapter position) of a stop returned (``False``) during the event now being dispatched.
        #: The legacy manager sets stop_training only after every callback has had the event, so it
        #: becomes ``stop`` when that event's dispatch over all adapters is over (see ``_fire``).
        self.returned_stop: tuple[str, int] | None = None
        #: Optimizer state loaded by ``load_checkpoint`` before Lightning created the optimizers (at setup).
        self.pending_optimizer_state: dict[str, Any] | None = None
        #: Under DDP: True while on_training_start runs, and the files rank 0 loaded then (every rank loads them).
        self.starting = False
        self.loaded_at_start: list[str] = []
        #: Under DDP: the control-flow exception (``optuna.TrialPruned`` ...) a legacy callback raised on this
        #: rank, held until every rank has agreed to stop (see ``LegacyCallbackAdapter._defer``).
        self.deferred: BaseException | None = None
        #: Under DDP: True once the ranks have agreed that a deferred exception ends the run; then what this
        #: rank raises at the end of fit (its own exception, a copy of another rank's, or None).
        self.ended = False
        self.to_raise: BaseException | None = None
        #: > 0 while a legacy callback's trainer.load_checkpoint / save_checkpoint notifies the adapters
        #: (an exception there belongs to the calling callback's event, which defers it).
        self.nested = 0

    def stop_requested(self) -> bool:
        return self.stop or self.returned_stop is not None


def _shared_state(trainer: "pl.Trainer") -> _SharedRunState:
    state = getattr(trainer, "_fxai_shared", None)
    if state is None:
        state = trainer._fxai_shared = _SharedRunState()
    return state


def _adapters_of(trainer: "pl.Trainer") -> list["LegacyCallbackAdapter"]:
    return [cb for cb in trainer.callbacks if isinstance(cb, LegacyCallbackAdapter)]


class LightningTrainerView:
    """The legacy trainer surface (contract section 2) over a Lightning trainer and module."""

    def __init__(self, adapter: "LegacyCallbackAdapter", trainer: "pl.Trainer", pl_module: "pl.LightningModule"):
        self._adapter, self._trainer, self._module = adapter, trainer, pl_module
        config = getattr(pl_module, "config", None)
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(getattr(pl_module, "hparams", {}) or {})
        self._config = MappingProxyType(as_dict)
        # One context and one stop flag per trainer, shared by every adapter, as the legacy loop has one
        # trainer for all callbacks: a stop set by one callback is visible to (and cancellable by) the others.
        self._shared = adapter._shared_for(trainer)
        self.context = self._shared.context

    @property
    def lightning_trainer(self) -> "pl.Trainer":
        return self._trainer

    @property
    def model(self):
        return getattr(self._module, "policy", self._module)

    @property
    def config(self) -> Mapping[str, Any]:
        return self._config

    def _counter(self, index: int, name: str, fallback: str) -> int:
        counters = self._adapter._ddp_counters  # all ranks together, under DDP (see _deliver_gathered)
        if counters is not None:
            return counters[index]
        core = getattr(self._module, "core", None)
        return getattr(core, name) if core is not None else getattr(self._adapter, fallback)

    @property
    def total_timesteps(self) -> int:
        return self._counter(0, "total_timesteps", "_fallback_steps")

    @property
    def num_episodes(self) -> int:
        return self._counter(1, "num_episodes", "_fallback_episodes")

    @property
    def cycle(self) -> int:
        core = getattr(self._module, "core", None)
        return core.cycle if core is not None else self._trainer.current_epoch

    @property
    def stop_training(self) -> bool:
        return self._shared.stop

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._shared.stop = bool(value)

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write a full Lightning checkpoint to ``path`` (fires ``on_checkpoint_saved`` once it is on disk).

        Written directly by this process (no barrier), so it is safe from a rank-0-only callback.
        """
        trainer = self._trainer
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        shared = _shared_state(trainer)
        shared.nested += 1
        try:
            NotifyingCheckpointIO.of(trainer).save_checkpoint(checkpoint, str(path))
        finally:
            shared.nested -= 1
        return str(path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, counters and RNG/environment state, then fire ``on_checkpoint_loaded``.

        Accepts checkpoints of either host. Training then continues from the loaded state. Under several
        processes, a callback running on rank 0 only may load only in ``on_training_start``: every rank
        then loads the same file (a load on one rank alone would leave the ranks' models different).
        """
        trainer = self._trainer
        if trainer.world_size > 1 and not self._adapter._active_on_every_rank():
            if not self._shared.starting:
                raise RuntimeError(
                    f"trainer.load_checkpoint({str(path)!r}) was called during {self._adapter._hook} by a legacy "
                    f"callback that runs on rank 0 only (ranks='zero') of {trainer.world_size} processes; the other "
                    f"ranks would keep their models. Under DDP, load checkpoints in on_training_start (every rank "
                    f"then loads the same file), or resume with fit(..., ckpt_path=...).")
            self._shared.loaded_at_start.append(str(path))
        _restore_training_state(trainer, self._module, str(path))
        # Every legacy callback of the trainer hears about it (the legacy trainer fires to all of them),
        # not only those wrapped by the adapter whose callback called load_checkpoint.
        shared = _shared_state(trainer)
        shared.nested += 1
        try:
            for adapter in _adapters_of(self._trainer):
                if adapter._trainer is self._trainer:
                    adapter._fire("on_checkpoint_loaded", "load_checkpoint", checkpoint_path=str(path))
        finally:
            shared.nested -= 1

    def __repr__(self) -> str:
        return f"<LightningTrainerView cycle={self.cycle} total_timesteps={self.total_timesteps}>"


def _restore_training_state(trainer: "pl.Trainer", module: "pl.LightningModule", path: str) -> None:
    """Model, optimizer and RL state (this rank's, when a DDP checkpoint holds one per rank) from ``path``."""
    ckpt = read_training_checkpoint(path)
    getattr(module, "policy", module).load_state_dict(ckpt.model)
    if ckpt.optimizer is not None:
        if trainer.optimizers:
            trainer.optimizers[0].load_state_dict(ckpt.optimizer)
        else:
            # Called from on_training_start, which fires at setup, before Lightning creates the
            # optimizers: the adapter applies this state at on_fit_start (before a resume's restore).
            _shared_state(trainer).pending_optimizer_state = ckpt.optimizer
    core = getattr(module, "core", None)
    if core is not None:
        state = ckpt.rl_state
        if trainer.world_size > 1 and trainer.global_rank > 0:
            by_rank = load_weights_only(path).get(RL_RANK_STATES_KEY) if RL_RANK_STATES_KEY else None
            if by_rank is not None and len(by_rank) == trainer.world_size:
                state = by_rank[trainer.global_rank]
        core.load_state_dict(state)
    if trainer.is_global_zero:
        announce_resume(path, ckpt.rl_state)  # a legacy callback's load (continuous training) says where, too


class LegacyCallbackAdapter(Callback):
    """Wrap a legacy callback (or a whole ``CallbackManager``) so it runs unchanged under Lightning.

    Args:
        callback: any object with some of the 16 legacy ``on_*`` methods, or a ``CallbackManager``
            (its order and error policy are kept; one adapter is cheaper than N).
        mapping: per-event overrides of ``EVENT_MAP``: ``{"on_rollout_end": "on_train_epoch_end"}``
            (a Lightning hook), ``"rl:<event>"`` (an RL-protocol event), or ``None`` (drop the event).
        on_error: ``"raise"`` (default), ``"warn"`` or ``"disable"``, as in the legacy manager. A wrapped
            ``CallbackManager`` keeps its own policy; passing a different one is an error.
        ranks: ``"zero"`` (default: run on global rank 0, seeing every rank's episodes, batched
            at rollout end) or ``"all"`` (run on every rank with that rank's events).
        metric_keys: legacy metric key -> logged name, for the ``metrics`` dict (default ``LOGGED_METRICS``).
        state_key: key of the wrapped callback's state in Lightning checkpoints (default: derived
            from the class, numbered when several adapters wrap the same class).
    """

    def __init__(self, callback: Any, *, mapping: Mapping[str, Any] | None = None, on_error: str | None = None,
                 ranks: str = "zero", metric_keys: Mapping[str, str] | None = None, state_key: str | None = None):
        if isinstance(callback, Callback):
            raise AdapterConfigError(f"{type(callback).__name__} is already a Lightning callback; pass it to the "
                                     f"Trainer directly (fxai_compat.wrap does this for you).")
        if ranks not in ("zero", "all"):
            raise AdapterConfigError(f"ranks must be 'zero' or 'all'; got {ranks!r}.")
        if on_error is not None and on_error not in ON_ERROR_POLICIES:
            raise AdapterConfigError(f"on_error must be one of {', '.join(map(repr, ON_ERROR_POLICIES))}; "
                                     f"got {on_error!r}.")
        if isinstance(callback, CallbackManager):
            # Silently ignoring on_error= would leave the user believing a policy is in force that is not.
            if on_error is not None and on_error != callback.on_error:
                raise AdapterConfigError(f"on_error={on_error!r} conflicts with the wrapped CallbackManager's own "
                                         f"on_error={callback.on_error!r}, which the adapter keeps; set it on "
                                         f"the manager, or leave on_error unset.")
            self.manager = callback
        else:
            self.manager = CallbackManager([callback], on_error=on_error or "raise")
        self.callback = callback
        self.ranks = ranks
        self.metric_keys = dict(LOGGED_METRICS if metric_keys is None else metric_keys)
        self.routes = self._build_routes(mapping or {})
        self._hook = "construction"
        self._view: LightningTrainerView | None = None
        self._trainer: pl.Trainer | None = None
        self._io: NotifyingCheckpointIO | None = None
        self._active = True
        self._shared: _SharedRunState | None = None
        self._last_rl: dict[str, Any] = {}
        self._ddp_buffer: list[tuple[float, str, Any]] | None = None
        self._ddp_counters: tuple[int, int] | None = None
        self._setup_deferred = False
        self._position = 0
        self._fallback_steps = 0
        self._fallback_episodes = 0
        self._base_state_key = state_key or f"{type(self).__name__}[{type(callback).__qualname__}]"
        self._state_key = self._base_state_key if state_key else f"{self._base_state_key}@{id(self):x}"
        self.manager.note_context = self._note_context
        self._install_dispatch()
        if self._stateful():
            self.state_dict = self._state_dict  # instance-level: only stateful adapters are "stateful" to Lightning
            self.load_state_dict = self._load_state_dict

    # -- the routing table -----------------------------------------------------------------------
    def _build_routes(self, mapping: Mapping[str, Any]) -> dict[str, EventRoute]:
        unknown = sorted(set(mapping) - set(EVENTS))
        if unknown:
            raise AdapterConfigError(f"mapping names unknown legacy event(s) {', '.join(map(repr, unknown))}; "
                                     f"the 16 events are: {', '.join(EVENTS)}.")
        routes = {}
        for route in EVENT_MAP:
            if route.event in mapping:
                route = _parse_source(route.event, mapping[route.event])
                if route is None:
                    continue
            if self.manager.has(route.event):
                routes[route.event] = route
        return routes

    def _install_dispatch(self) -> None:
        """Turn off every hook and RL listener that no routed event needs; bind the ones that are needed."""
        by_hook: dict[str, list[str]] = {}
        by_rl: dict[str, list[str]] = {}
        captured: set[str] = set()
        for event in EVENTS:  # keep the contract's order among events sharing one source
            route = self.routes.get(event)
            if route is None:
                continue
            if route.kind == LIGHTNING_SOURCE:
                by_hook.setdefault(route.source, []).append(event)
                base = route_for(event)
                if route.payload is not None and base.kind == RL_SOURCE:
                    captured.add(base.source)  # an RL event moved to a hook by mapping=: keep its latest payload
            elif route.kind == RL_SOURCE:
                by_rl.setdefault(route.source, []).append(event)
        # The view's bookkeeping (state key, stop requests, checkpoint listener) needs these always.
        needed = {"setup", "teardown", "on_train_start", "on_train_epoch_end", "on_exception"}
        if "setup" in by_hook:
            needed.add("on_fit_start")  # optimizer state loaded during on_training_start is applied there
        if by_rl:
            # Episode/step events derived from the batches of plain modules; switched off at setup for
            # modules that speak the RL protocol.
            needed.add("on_train_batch_end")
        self._by_hook, self._by_rl, self._captured = by_hook, by_rl, captured
        for hook in _ALL_LIGHTNING_HOOKS:
            if hook not in needed and hook not in by_hook:
                setattr(self, hook, None)
        # An RL listener only for events someone wants: the core skips building payloads nobody reads.
        # (Under DDP, setup adds the rollout-end listener that delivers rank 0's batched events.)
        for rl_event in RL_EVENTS:
            wanted = rl_event in by_rl or rl_event in captured
            handler = self._make_rl_handler(rl_event, by_rl.get(rl_event, [])) if wanted else None
            setattr(self, RL_HOOKS[rl_event], handler)

    #: The trainer surface handed to the legacy callback (shadow mode swaps in a sandboxed one).
    view_class = LightningTrainerView
    #: Whether this adapter's stop requests steer the run (a shadow-mode control only records them).
    steers_training = True

    def _shared_for(self, trainer: "pl.Trainer") -> _SharedRunState:
        """The context and stop flag this adapter's callback shares: the trainer's, like every legacy callback."""
        return _shared_state(trainer)

    def _active_on_every_rank(self) -> bool:
        return self.ranks == "all"

    def _stateful(self) -> bool:
        return bool(callback_state_keys(self.manager.callbacks)) or any(
            callable(getattr(cb, "get_state", None)) and callable(getattr(cb, "set_state", None))
            for cb in self.manager.callbacks)

    # -- Lightning callback identity and state ---------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._state_key

    def _state_dict(self) -> dict[str, Any]:
        state = {key: cb.state_dict() for key, cb in callback_state_keys(self.manager.callbacks).items()}
        for cb in self.manager.callbacks:
            if callable(getattr(cb, "get_state", None)) and callable(getattr(cb, "set_state", None)):
                state.setdefault(f"{type(cb).__name__}.get_state", cb.get_state())
        return state

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, cb in callback_state_keys(self.manager.callbacks).items():
            if key in state_dict:
                cb.load_state_dict(state_dict[key])
        for cb in self.manager.callbacks:
            key = f"{type(cb).__name__}.get_state"
            if key in state_dict and callable(getattr(cb, "set_state", None)):
                cb.set_state(state_dict[key])

    # -- dispatch ---------------------------------------------------------------------------------
    def _note_context(self) -> str:
        trainer = self._trainer
        where = f"Lightning hook {self._hook}"
        if trainer is not None:
            where += f", epoch {trainer.current_epoch}"
            # Read from the loop (hooks that would track it are switched off); only inside a batch.
            if self._hook.startswith(_BATCH_HOOKS):
                where += f", batch {trainer.fit_loop.epoch_loop.batch_idx}"
        return where

    def _fire(self, event: str, hook: str, **payload: Any) -> None:
        if not self._active or event not in self.routes:
            return
        shared = self._shared
        returned = shared.returned_stop
        # One occurrence of an event visits the adapters in callback order; another event, or an adapter
        # at or before the one that returned False, means that occurrence is over: the stop is now visible.
        if returned is not None and (returned[0] != event or self._position <= returned[1]):
            shared.stop, shared.returned_stop = True, None
        previous, self._hook = self._hook, hook
        try:
            if self.manager.fire(event, trainer=self._view, **payload):
                shared.returned_stop = (event, self._position)
        except BaseException as exc:
            if not self._defers(exc):
                raise
            self._defer(exc)
        finally:
            self._hook = previous

    def _fire_route(self, event: str, hook: str) -> None:
        """Fire an event routed to a Lightning hook, building its payload for that moment."""
        route = self.routes[event]
        if route.payload is None:
            self._fire(event, hook)
            return
        payload = self._payload_for(event, route.payload)
        if payload is not _MISSING:
            self._fire(event, hook, **{route.payload: payload})

    def _payload_for(self, event: str, name: str) -> Any:
        module = self._trainer.lightning_module
        if name == "metrics":
            return self._metrics(module)
        if name == "eval_results":
            results = getattr(module, "last_eval_results", None)
            if results is None:
                metrics = self._trainer.callback_metrics
                results = {key: _nan_if_missing(metrics, f"val/{key}") for key in
                           ("episode_reward_mean", "episode_reward_std", "episode_length_mean", "win_rate")}
                results["episodes"] = getattr(getattr(module, "config", None), "eval_episodes", None)
            return dict(results)
        if name == "checkpoint_path":
            path = self._trainer.ckpt_path
            return str(path) if path else _MISSING
        # An RL payload routed to a Lightning hook by mapping=: the latest one announced.
        source = route_for(event).source
        payload = self._last_rl.get(source, _MISSING)
        return dict(payload) if isinstance(payload, dict) else payload

    def _metrics(self, module: "pl.LightningModule") -> dict[str, Any]:
        """The contract's ``metrics`` dict, built from what the module logged (exact values when it keeps them)."""
        exact = getattr(module, "exact_logged", None)
        source = exact if exact is not None else self._trainer.callback_metrics
        metrics: dict[str, Any] = {}
        for key, logged in self.metric_keys.items():
            if logged in source:
                value = source[logged]
                value = value.item() if hasattr(value, "item") else value
                if key in ("timesteps_total", "episodes_total", "cycle") and not (isinstance(value, float) and math.isnan(value)):
                    value = int(value)
                metrics[key] = value
        return metrics

    def _make_rl_handler(self, rl_event: str, events: list[str]):
        hook = f"training_step (RL event {rl_event})"
        fire = self._fire
        targets = [(event, self.routes[event].payload) for event in events]
        capture = rl_event in self._captured
        batched = rl_event in _BATCHED_UNDER_DDP

        def handler(trainer, pl_module, payload):
            if capture:
                self._last_rl[rl_event] = _fresh(payload)
            if batched and self._ddp_buffer is not None:
                self._buffer_rl(rl_event, payload, events)
                return
            for event, name in targets:
                if name is None:
                    fire(event, hook)
                else:
                    fire(event, hook, **{name: _fresh(payload)})

        if len(targets) != 1 or capture or targets[0][1] is None:
            return handler
        # The hot path (per step / per episode / per update): one legacy event with one payload argument.
        # Same semantics as _fire, minus its generality: no kwargs re-packing, no try/finally (the error
        # note is computed inside the manager, while _hook is still this hook).
        (event, name), manager_fire = targets[0], self.manager.fire

        def fast_handler(trainer, pl_module, payload):
            if batched and self._ddp_buffer is not None:
                self._buffer_rl(rl_event, payload, events)
                return
            shared = self._shared
            if not self._active or shared.returned_stop is not None:
                fire(event, hook, **{name: _fresh(payload)})  # the general path settles a pending stop
                return
            previous, self._hook = self._hook, hook
            try:
                stop = manager_fire(event, trainer=self._view, **{name: _fresh(payload)})
            except BaseException as exc:  # free in CPython 3.11+ while nothing is raised
                self._hook = previous
                if not self._defers(exc):
                    raise
                self._defer(exc)
                return
            if stop:
                shared.returned_stop = (event, self._position)
            self._hook = previous

        return fast_handler

    # -- control-flow exceptions under DDP ---------------------------------------------------------
    # A legacy callback that raises optuna.TrialPruned (or another exception the legacy manager always lets
    # through, see legacy_callbacks.callback_manager._is_control_flow) ends the run. In one process the
    # adapter lets it propagate at once, as the legacy loop does. Under DDP that would leave the other ranks
    # waiting in the next collective (gradient all-reduce, gather, the epoch-end stop decision) until the
    # collective timeout: they cannot know. So there the exception is held: the rank's legacy callbacks get
    # no further events, training goes on in step with the other ranks to the end of the cycle, where the
    # epoch-end decision (one collective, as before) carries "an exception is pending" too; every rank then
    # stops (should_stop), and each finishes fit normally up to its last teardown hook, where the exception is
    # raised out of fit: on the rank(s) that raised it, and on every other rank that runs legacy callbacks (rank 0,
    # and all ranks with ranks="all") as a copy; a rank without legacy callbacks returns normally. A
    # KeyboardInterrupt is never held (a Ctrl+C reaches every rank by itself); other exceptions are not
    # control flow and propagate at once (Lightning's process observer ends the other ranks).
    def _defers(self, exc: BaseException) -> bool:
        trainer = self._trainer
        return (self.steers_training and trainer is not None and trainer.world_size > 1
                and _is_control_flow(exc) and not isinstance(exc, KeyboardInterrupt)
                and not _shared_state(trainer).nested)

    def _defer(self, exc: BaseException) -> None:
        trainer = self._trainer
        state = _shared_state(trainer)
        if state.deferred is None:
            core = getattr(trainer.lightning_module, "core", None)
            cycle = core.cycle if core is not None else trainer.current_epoch
            exc.add_note(f"Under DDP ({trainer.world_size} processes) it was held on rank {trainer.global_rank} from "
                         f"cycle {cycle} until every rank had stopped with it, then raised at the end of fit.")
            state.deferred = exc
        for adapter in _adapters_of(trainer):  # like the legacy loop after a raise: no further events
            if adapter.steers_training:
                adapter._active = False

    def _sync_end(self, trainer: "pl.Trainer", stop: bool) -> bool:
        """DDP: every rank's stop request and held exception, in one collective; True if any rank asks to stop.

        Called from the last steering adapter at every epoch end and at the teardown of fit: the same
        points on every rank. When an exception is held somewhere, the ranks exchange them (once).
        """
        import torch
        import torch.distributed as dist

        state = _shared_state(trainer)
        flags = torch.tensor([int(stop), int(state.deferred is not None)], device=trainer.strategy.root_device)
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        if int(flags[1]) and not state.ended:
            state.ended = True
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, _portable(state.deferred))
            rank = trainer.global_rank
            hosts = any(a.steers_training and (a.ranks == "all" or rank == 0) for a in _adapters_of(trainer))
            for adapter in _adapters_of(trainer):
                if adapter.steers_training:
                    adapter._active = False
            source = next(r for r, item in enumerate(gathered) if item is not None)
            if state.deferred is not None:
                state.to_raise = state.deferred
            elif hosts:
                state.to_raise = _restore(gathered[source], source, trainer.world_size)
            else:
                log.info("[rank %d] %s held on rank %d ends the run on every rank; this rank runs no legacy "
                         "callbacks, so its fit returns normally.", rank, gathered[source][1], source)
        return bool(flags[0]) or bool(flags[1])

    # -- distributed delivery --------------------------------------------------------------------
    def _buffer_rl(self, rl_event: str, payload: Any, events: list[str]) -> None:
        if rl_event == "rollout_end":
            self._deliver_gathered(payload, events)
            return
        # Key each event by the vector step it belongs to (the core counts a step after its step_end),
        # so that rank 0 can merge the ranks' events step by step; -1 = before the first step. A
        # rollout start sits between the previous step's episode events and the cycle's first step.
        steps = getattr(getattr(self._trainer.lightning_module, "core", None), "vector_steps", 0)
        if rl_event in ("step_start", "step_end"):
            key = steps
        elif rl_event == "rollout_start":
            key = steps - 0.5
        else:
            key = steps - 1
        self._ddp_buffer.append((key, rl_event, _fresh(payload)))

    def _deliver_gathered(self, rollout_info: dict[str, Any], events: list[str]) -> None:
        """Gather every rank's buffered rollout/step/episode events (one collective per rollout) and, on
        rank 0, deliver them merged in the contract's order: by vector step, then by global ``env_index``.

        While they are replayed, ``trainer.total_timesteps`` / ``num_episodes`` count all ranks' environments
        as of each event (contract: "all environments together"), and keep the global totals afterwards.
        """
        import torch.distributed as dist

        trainer = self._trainer
        world = trainer.world_size
        core = getattr(trainer.lightning_module, "core", None)
        totals = (core.total_timesteps, core.num_episodes) if core is not None else (0, 0)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (self._ddp_buffer, rollout_info, totals))
        self._ddp_buffer = []
        if trainer.global_rank != 0:
            return
        hook = "training_step (RL events gathered at rollout end)"
        steps: dict[float, list[tuple[str, Any]]] = {}
        for buf, _, _ in gathered:  # rank order, so env_index (rank * n_envs + i) ascends within a step
            for key, rl_event, payload in buf:
                steps.setdefault(key, []).append((rl_event, payload))
        end_steps = sum(t[0] for _, _, t in gathered)
        end_episodes = sum(t[1] for _, _, t in gathered)
        # Every rank steps config.n_envs environments once per vector step, so the global count at
        # vector step k is known exactly; episodes are counted as their ends are replayed.
        per_step = world * core.config.n_envs if core is not None else 0
        episodes = end_episodes - sum(1 for items in steps.values() for e, _ in items if e == "episode_end")
        for step in sorted(steps):
            items = steps[step]
            before = math.ceil(step) * per_step  # rollout start (k - 0.5) and step start (k): before step k
            self._ddp_counters = (before, episodes)
            if any(e == "rollout_start" for e, _ in items):
                self._fire_rl("rollout_start", None, hook)
            starts = [p for e, p in items if e == "step_start"]
            if starts:
                self._fire_rl("step_start", starts[0], hook)
            ends = [p for e, p in items if e == "step_end"]
            if ends:
                self._ddp_counters = (before + per_step, episodes)
                merged = {"step": ends[0]["step"], "total_timesteps": sum(p["total_timesteps"] for p in ends),
                          "rewards": [x for p in ends for x in p["rewards"]],
                          "dones": [x for p in ends for x in p["dones"]],
                          "actions": [x for p in ends for x in p["actions"]]}
                self._fire_rl("step_end", merged, hook)
            ordered = sorted(((p["env_index"], e == "episode_start", e, p) for e, p in items
                              if e in ("episode_end", "episode_start")), key=lambda item: item[:2])
            for _, _, e, p in ordered:  # keyed by the step they followed (k), or -1 before the first
                if e == "episode_end":
                    episodes += 1
                self._ddp_counters = ((step + 1) * per_step, episodes)
                self._fire_rl(e, p, hook)
        self._ddp_counters = (end_steps, end_episodes) if core is not None else None
        infos = [g[1] for g in gathered]
        total_eps = sum(i["episodes"] for i in infos)
        means = [(i["reward_mean"], i["episodes"]) for i in infos if i["episodes"]]
        merged_info = {"steps": sum(i["steps"] for i in infos), "episodes": total_eps,
                       "reward_mean": (sum(m * n for m, n in means) / total_eps) if total_eps else float("nan")}
        if "rollout_end" in self._captured:
            self._last_rl["rollout_end"] = dict(merged_info)
        for event in events:
            self._fire(event, "training_step (RL event rollout_end)", rollout_info=dict(merged_info))

    def _fire_rl(self, rl_event: str, payload: Any, hook: str) -> None:
        for event in self._by_rl.get(rl_event, ()):
            name = self.routes[event].payload
            if name is None:
                self._fire(event, hook)
            else:
                self._fire(event, hook, **{name: _fresh(payload)})

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._trainer = trainer
        self._shared = self._shared_for(trainer)
        self._view = self.view_class(self, trainer, pl_module)
        self._active = self.ranks == "all" or trainer.global_rank == 0
        self._ddp_buffer = [] if (self.ranks == "zero" and trainer.world_size > 1) else None
        self._ddp_counters = None
        self._fallback_steps = self._fallback_episodes = 0  # counters of a plain module's run
        self._position = next(i for i, cb in enumerate(_adapters_of(trainer)) if cb is self)
        # A stable state key: the class-derived name, numbered among adapters wrapping the same class.
        same = [cb for cb in trainer.callbacks if isinstance(cb, LegacyCallbackAdapter)
                and cb._base_state_key == self._base_state_key]
        if len(same) > 1 and self._state_key != self._base_state_key:
            index = next(i for i, cb in enumerate(same) if cb is self)
            self._state_key = self._base_state_key if index == 0 else f"{self._base_state_key}#{index + 1}"
        else:
            self._state_key = self._base_state_key
        saved = self.routes.get("on_checkpoint_saved")
        if saved is not None and saved.kind == CHECKPOINT_IO_SOURCE and self._active:
            self._io = NotifyingCheckpointIO.of(trainer)
            if self._on_file_saved not in self._io.listeners:  # setup runs per stage: never listen twice
                self._io.listeners.append(self._on_file_saved)
        self._configure_for_module(pl_module)
        # on_training_start fires here, before Lightning restores a ckpt_path (module, callback state),
        # as the legacy loop fires it before restoring resume_from: a resumed run shows the same counters
        # and model at on_training_start, callback state loaded afterwards is not reset by it, and the
        # resume wins over a trainer.load_checkpoint done in on_training_start. It fires once every
        # adapter is set up (from the last one), so that nested events reach all of them. Under several
        # processes the module replaces its core in its own setup (after the callbacks'), so there it
        # fires at on_train_start instead.
        fitting = stage == "fit"
        self._setup_deferred = fitting and trainer.world_size > 1 and "setup" in self._by_hook
        if fitting and trainer.world_size == 1 and _adapters_of(trainer)[-1] is self:
            for adapter in _adapters_of(trainer):
                adapter._dispatch_hook("setup")

    def _configure_for_module(self, pl_module: "pl.LightningModule") -> None:
        # Batch-derived events are only for plain modules; a module with the RL protocol announces them.
        if "on_train_batch_end" in self._by_hook or (self._by_rl and not hasattr(pl_module, "rl_events")):
            self.__dict__.pop("on_train_batch_end", None)  # the class's hook
        else:
            self.on_train_batch_end = None
        # Under DDP, rank 0 delivers the batched rollout/step/episode events of all ranks at rollout end,
        # and learns the global counters there (trainer.total_timesteps counts all environments).
        if "rollout_end" not in self._by_rl and "rollout_end" not in self._captured:
            gather = self._ddp_buffer is not None and bool(self.routes)
            self.on_rl_rollout_end = self._make_rl_handler("rollout_end", []) if gather else None

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._stop_listening()
        if stage != "fit" or trainer.world_size == 1:
            return
        # The end of fit under DDP: a last decision (an exception held after the last epoch end, e.g. in
        # on_training_end), then the held exception leaves fit, after every rank's collectives are done.
        steering = [a for a in _adapters_of(trainer) if a.steers_training]
        if steering and steering[-1] is self:
            self._sync_end(trainer, False)
        if _adapters_of(trainer)[-1] is self:
            state = _shared_state(trainer)
            exc = state.to_raise
            _reset_end(state)
            if exc is not None:
                raise exc

    def _stop_listening(self) -> None:
        if self._io is not None and self._on_file_saved in self._io.listeners:
            self._io.listeners.remove(self._on_file_saved)
        self._io = None

    def _on_file_saved(self, path: str) -> None:
        self._fire("on_checkpoint_saved", "CheckpointIO.save_checkpoint (after the write)", checkpoint_path=path)
        # A stop asked for here (after on_train_epoch_end's callbacks) must still end training after this
        # cycle. Only rank 0 writes files, so under DDP it waits for the next epoch end's synchronized
        # decision: setting should_stop on one rank alone would leave the others waiting forever.
        if self._shared.stop_requested() and self._trainer is not None and self._trainer.world_size == 1:
            self._trainer.should_stop = True

    def on_fit_start(self, trainer, pl_module) -> None:
        pending = self._shared.pending_optimizer_state
        if pending is not None and trainer.optimizers:
            trainer.optimizers[0].load_state_dict(pending)
            self._shared.pending_optimizer_state = None
        self._dispatch_hook("on_fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        adapters = _adapters_of(trainer)
        if adapters[0] is self and any(adapter._setup_deferred for adapter in adapters):
            # DDP: on_training_start of every adapter first (see setup). What rank 0's callbacks loaded
            # with trainer.load_checkpoint meanwhile, every other rank loads too, so the models stay equal.
            shared = self._shared
            shared.starting = True
            try:
                for adapter in adapters:
                    if adapter._setup_deferred:
                        adapter._setup_deferred = False
                        adapter._dispatch_hook("setup")
            finally:
                shared.starting = False
            loaded = trainer.strategy.broadcast(shared.loaded_at_start, src=0)
            if trainer.global_rank != 0:
                for path in loaded:
                    _restore_training_state(trainer, pl_module, path)
        for event in self._by_hook.get("on_train_start", ()):
            if event == "on_checkpoint_loaded":
                continue  # after on_training_start, below
            self._fire_route(event, "on_train_start")
        if "on_checkpoint_loaded" in self._by_hook.get("on_train_start", ()) and trainer.ckpt_path:
            self._fire("on_checkpoint_loaded", "on_train_start (resumed from ckpt_path)",
                       checkpoint_path=str(trainer.ckpt_path))

    def on_train_end(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_train_end")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_train_epoch_start")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_train_epoch_end")
        stop = self._shared.stop_requested()
        if trainer.world_size > 1:
            # should_stop is not synchronized by Lightning: every rank must take the same decision, once
            # per epoch (from the last adapter, after all have dispatched). Any rank's request stops all.
            # A legacy callback's held exception (see _defers) stops every rank here too.
            if [a for a in _adapters_of(trainer) if a.steers_training][-1] is not self:
                return
            stop = self._sync_end(trainer, stop)
        if stop:
            trainer.should_stop = True

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._dispatch_hook("on_validation_start")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._dispatch_hook("on_validation_end")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_fit_end")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._dispatch_hook("on_before_optimizer_step")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._dispatch_hook("on_train_batch_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if getattr(pl_module, "rl_events", None) is None:
            self._fallback_from_batch(outputs, batch)
        self._dispatch_hook("on_train_batch_end")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop_listening()
        _reset_end(_shared_state(trainer))  # a later fit of this trainer starts with nothing held

    def _dispatch_hook(self, hook: str) -> None:
        events = self._by_hook.get(hook)
        if events:
            for event in events:
                self._fire_route(event, hook)

    # -- plain LightningModules (no RL event protocol) ---------------------------------------------
    def _fallback_from_batch(self, outputs: Any, batch: Any) -> None:
        """Derive step and episode events from ``done``/``dones``, ``episode_rewards``, ``episode_lengths``
        found in the step's outputs or batch (the seed guide's approach). Lost in fidelity: per-step
        timing (one step per batch), ``pnl``/``trades``/``win_rate`` (0, 0, NaN), env indices
        (positions in the batch), and rollout/update events (not derivable)."""
        source = outputs if isinstance(outputs, Mapping) and any(k in outputs for k in ("done", "dones")) else batch
        if not isinstance(source, Mapping):
            return
        dones = source.get("dones", source.get("done"))
        if dones is None:
            return
        dones = [bool(d) for d in (dones.tolist() if hasattr(dones, "tolist") else dones)]
        rewards = source.get("episode_rewards")
        lengths = source.get("episode_lengths")
        rewards = rewards.tolist() if hasattr(rewards, "tolist") else rewards
        lengths = lengths.tolist() if hasattr(lengths, "tolist") else lengths
        self._fallback_steps += len(dones)
        hook = "on_train_batch_end (derived from batch)"
        if "on_step_end" in self.routes and self.routes["on_step_end"].kind == RL_SOURCE:
            self._fire("on_step_end", hook, step_info={"step": self._fallback_steps // max(len(dones), 1) - 1,
                                                       "total_timesteps": self._fallback_steps, "rewards": [],
                                                       "dones": dones, "actions": []})
        for i, done in enumerate(dones):
            if not done:
                continue
            self._fallback_episodes += 1
            info = {"env_index": i, "episode_index": self._fallback_episodes - 1,
                    "reward": float(rewards[i]) if rewards is not None else float("nan"),
                    "length": int(lengths[i]) if lengths is not None else 0,
                    "pnl": 0.0, "trades": 0, "win_rate": float("nan")}
            if "on_episode_end" in self.routes and self.routes["on_episode_end"].kind == RL_SOURCE:
                self._fire("on_episode_end", hook, episode_info=info)


_MISSING = object()
#: Hooks that run inside a training batch (error notes name the batch index there).
_BATCH_HOOKS = ("training_step", "on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step")
#: RL events that, under DDP with ranks="zero", are gathered from every rank and delivered by rank 0 at
#: rollout end; updates are synchronized across ranks, so rank 0 delivers its own live.
_BATCHED_UNDER_DDP = ("episode_start", "rollout_start", "step_start", "step_end", "episode_end", "rollout_end")


def _reset_end(state: _SharedRunState) -> None:
    state.deferred, state.ended, state.to_raise = None, False, None


def _portable(exc: BaseException | None) -> tuple[bytes | None, str] | None:
    """What a rank sends of its held exception: the pickled exception (notes included) and a description."""
    if exc is None:
        return None
    try:
        data = pickle.dumps(exc)
    except Exception:  # pickled here, not inside the collective: a failure must not leave the others waiting
        data = None
    return data, f"{type(exc).__name__}({exc})"


def _restore(item: tuple[bytes | None, str], rank: int, world_size: int) -> BaseException:
    """Another rank's held exception, to raise on this one (a RuntimeError naming it if it cannot be rebuilt)."""
    data, description = item
    try:
        exc = pickle.loads(data) if data is not None else None
    except Exception:
        exc = None
    if not isinstance(exc, BaseException):
        return RuntimeError(f"A legacy callback on rank {rank} of {world_size} raised {description}, which "
                            f"cannot be sent to this rank; every rank stopped.")
    exc.add_note(f"Raised by a legacy callback on rank {rank} of {world_size}; re-raised on this rank, which runs "
                 f"legacy callbacks too, so that every process hosting them sees the run end the same way.")
    return exc


def _fresh(payload: Any) -> Any:
    """A copy for one receiver, so a callback that mutates its payload affects nobody else.

    Per-event hot path: ``dict.copy`` plus copies of ``step_info``'s lists (the only payload with lists).
    """
    if type(payload) is not dict:
        return payload
    out = payload.copy()
    if "dones" in out:  # step_info: its per-environment lists
        for key in _LIST_KEYS:
            value = out.get(key)
            if type(value) is list:
                out[key] = value.copy()
    return out


#: The keys of RL payloads that hold lists (``step_info``'s per-environment values).
_LIST_KEYS = ("rewards", "dones", "actions")


def wrap(callbacks: Iterable[Any] | Any, **adapter_options: Any) -> list[Callback]:
    """Normalize a mixed list: legacy callbacks (and ``CallbackManager`` objects) become adapters,
    Lightning callbacks pass through unchanged. Options go to every adapter created."""
    if isinstance(callbacks, (Callback, CallbackManager)) or not isinstance(callbacks, Iterable):
        callbacks = [callbacks]
    out: list[Callback] = []
    for cb in callbacks:
        out.append(cb if isinstance(cb, Callback) else LegacyCallbackAdapter(cb, **adapter_options))
    return out
