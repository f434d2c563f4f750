"""``LegacyCallbackAdapter``: runs an unchanged legacy FxAI callback inside a Lightning ``Trainer`` (routing and
dispatch; the trainer view, the DDP machinery and plain-module support live in the sibling modules).

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

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from legacy_callbacks import ON_ERROR_POLICIES, CallbackManager
from legacy_callbacks.base import EVENTS

from .. import envwrap
from ..events import CHECKPOINT_IO_SOURCE, EVENT_MAP, LIGHTNING_SOURCE, RL_SOURCE, EventRoute, route_for
from ..legacy_host import callback_state_keys
from ..lightning_host import LOGGED_METRICS, RL_HOOKS, NotifyingCheckpointIO
from ..ppo import RL_EVENTS
from ..rl_events import enter_fit, leave_fit
from .ddp import _BATCHED_UNDER_DDP, _DDPSupport, _reset_end
from .plain_module import PLAIN_MODULE_HOOKS, OwnModuleRun, _PlainModuleSupport, is_foreign
from .shared import _AdapterBase, _adapters_of, _fresh, _shared_state, _SharedRunState
from .trainer_view import LightningTrainerView, _restore_training_state

__all__ = ["LegacyCallbackAdapter", "wrap", "SUPPORTED_HOOKS", "AdapterConfigError"]

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


_MISSING = object()
#: Hooks that run inside a training batch (error notes name the batch index there).
_BATCH_HOOKS = ("training_step", "on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step")


class LegacyCallbackAdapter(_AdapterBase, _DDPSupport, _PlainModuleSupport, Callback):
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
        metric_keys: legacy metric key -> logged name, for the ``metrics`` dict (default ``LOGGED_METRICS``; in a
            user's own module, ``FOREIGN_METRIC_KEYS`` plus these, e.g. ``{"episode_reward_mean": "avg_ep_reward"}``).
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
        self._metric_keys_arg = None if metric_keys is None else dict(metric_keys)
        self._own: OwnModuleRun | None = None  # a user's own module's Level-1 state, made at setup
        self._batch_fallback = False  # episode/step events derived from batches (plain modules; see setup)
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
        self._by_hook, self._by_rl, self._captured, self._needed = by_hook, by_rl, captured, needed
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
        module, own = self._trainer.lightning_module, self._own
        if own is not None and name in ("metrics", "eval_results"):  # a user's own module (Level 1)
            # A role="eval" wrapped env's episodes of this validation win (Level 2).
            if name == "metrics":
                return envwrap.with_eval_episodes(self._trainer, own.metrics())
            return envwrap.with_eval_episodes(self._trainer, own.eval_results(), results=True)
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

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._trainer = trainer
        self._shared = self._shared_for(trainer)
        self._view = self.view_class(self, trainer, pl_module)
        self._active = self.ranks == "all" or trainer.global_rank == 0
        # A user's own module (no core): Level-1 derivation; under DDP each rank's events stay on that rank.
        own = self._own = (OwnModuleRun(self, trainer, pl_module, self._metric_keys_arg) if is_foreign(pl_module)
                           else None)
        self._ddp_buffer = [] if (self.ranks == "zero" and trainer.world_size > 1 and own is None) else None
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
        if own is not None:
            enter_fit(trainer)
            own.check_unprovided(error=not self.steers_training)
        if stage == "fit":
            envwrap.attach(trainer, pl_module)  # binds the module's wrap_env'd environments to this run (Level 2)
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
        # Batch-derived events are only for plain modules; a module with the RL protocol announces them, and
        # so does a user's module that declares announced events (Level 2 or 3): no double events.
        self._batch_fallback = bool(self._by_rl and not hasattr(pl_module, "rl_events")
                                    and not (self._own is not None and self._own.provided))
        if "on_train_batch_end" in self._by_hook or self._batch_fallback:
            self.__dict__.pop("on_train_batch_end", None)  # the class's hook
        else:
            self.on_train_batch_end = None
        # Under DDP, rank 0 delivers the batched rollout/step/episode events of all ranks at rollout end,
        # and learns the global counters there (trainer.total_timesteps counts all environments).
        if "rollout_end" not in self._by_rl and "rollout_end" not in self._captured:
            gather = self._ddp_buffer is not None and bool(self.routes)
            self.on_rl_rollout_end = self._make_rl_handler("rollout_end", []) if gather else None
        # A user's own module: the hooks Level 1 derives events from; the bundled module never pays for them.
        for hook in PLAIN_MODULE_HOOKS:
            if self._own is not None:
                self.__dict__.pop(hook, None)
            elif hook not in self._by_hook and hook not in self._needed:
                setattr(self, hook, None)
        if self._own is not None:
            self._own.configure_rl_listeners()

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._stop_listening()
        if stage != "fit" or trainer.world_size == 1:
            return
        # The end of fit under DDP: a last decision (an exception held after the last epoch end, e.g. in
        # on_training_end), then the held exception leaves fit, after every rank's collectives are done.
        steering = [a for a in _adapters_of(trainer) if a.steers_training]
        if steering and steering[-1] is self:
            self._sync_end(trainer, False, last=True)
        if _adapters_of(trainer)[-1] is self:
            state = _shared_state(trainer)
            exc = state.to_raise
            _reset_end(state)
            if exc is not None:
                raise exc

    def _stop_listening(self) -> None:
        if self._own is not None:  # the end of a user's module's fit (teardown, or an exception)
            self._own.detach()
            leave_fit(self._trainer)
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
        if self._own is not None:
            self._own.train_start()
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
        if self._own is not None:
            self._own.open_rollout("on_train_epoch_start")
        self._dispatch_hook("on_train_epoch_start")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        own = self._own
        if own is not None:
            own.close_rollout("on_train_epoch_end")  # a rollout still open ends before the cycle's metrics
        self._dispatch_hook("on_train_epoch_end")
        if own is not None:
            own.val_logged = None
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
            if self._own is not None:
                self._own.validation_done()
            self._dispatch_hook("on_validation_end")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_fit_end")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._own is not None:
            self._own.before_step()
        self._dispatch_hook("on_before_optimizer_step")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._dispatch_hook("on_train_batch_start")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._own.record_backward(loss)  # switched on for users' own modules only (see _configure_for_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._batch_fallback and envwrap.hub_of(trainer) is None:
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


def wrap(callbacks: Iterable[Any] | Any, **adapter_options: Any) -> list[Callback]:
    """Normalize a mixed list: legacy callbacks (and ``CallbackManager`` objects) become adapters,
    Lightning callbacks pass through unchanged. Options go to every adapter created."""
    if isinstance(callbacks, (Callback, CallbackManager)) or not isinstance(callbacks, Iterable):
        callbacks = [callbacks]
    out: list[Callback] = []
    for cb in callbacks:
        out.append(cb if isinstance(cb, Callback) else LegacyCallbackAdapter(cb, **adapter_options))
    return out
