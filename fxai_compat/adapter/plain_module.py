"""Legacy events in a user's own LightningModule: what the adapter derives for a module without ``core``.

:class:`OwnModuleRun` holds one fit's Level-1 state for one adapter (made at setup); the mixin
:class:`_PlainModuleSupport` of :class:`~fxai_compat.adapter.core.LegacyCallbackAdapter` keeps the older
batch-derived step and episode events (``done``/``dones`` in a batch or its outputs).

"Bring your own module" has three levels; this file is Level 1 (no change to the module) and the
bookkeeping that Levels 2 and 3 feed (``fxai_compat.rl_events``). What each level provides:

==========================  ==============================================================================
level                       legacy events delivered (with what)
==========================  ==============================================================================
1: no change to the module  ``on_training_start`` / ``on_training_end``; ``on_rollout_start`` at the epoch's
                            start (or just before the epoch's first announced env step, if earlier);
                            ``on_rollout_end`` just before the epoch's first optimizer step (or at the
                            epoch's end if it has none); ``on_update_start`` / ``on_update_end`` around
                            every ``optimizer.step`` (automatic and manual optimization; several optimizers
                            each count); ``on_evaluation_start`` / ``on_evaluation_end`` around the
                            validation loop (never the sanity check); ``on_metrics_computed`` /
                            ``on_cycle_complete`` once per epoch; ``on_checkpoint_saved`` /
                            ``on_checkpoint_loaded`` with real paths. ``trainer.model`` is the module,
                            ``trainer.cycle`` the epoch.
2: wrap the env             adds ``on_episode_start`` / ``on_step_start`` / ``on_step_end`` / ``on_episode_end``
                            (the env's own values), the ``total_timesteps`` / ``num_episodes`` counters and
                            the legacy metric keys ``timesteps_total``, ``episodes_total``,
                            ``episode_reward_mean``, ``episode_length_mean`` (from the announced episodes).
3: announce (RLEventBus)    any of the eight RL events with the module's own payloads; a declared event
                            replaces Level 1's derivation of it (``rl_events_provided``).
==========================  ==============================================================================

Not provided at Level 1, and not faked: env steps and episodes (no ``on_step_*`` / ``on_episode_*``;
``trainer.total_timesteps`` and ``num_episodes`` stay 0; ``timesteps_total``, ``episodes_total`` and
``episode_*_mean`` are NaN unless the module logs them or ``metric_keys`` maps them); ``rollout_info``'s
``steps`` / ``episodes`` are ``None`` and ``reward_mean`` NaN unless Level 2 or 3 announces steps and
episodes; ``update_info["epoch"]`` is ``None`` (the module's passes over its data are not visible),
``minibatch`` counts optimizer steps within the cycle; ``update_end``'s ``loss`` is the batch's latest
``backward`` loss (NaN if it had none, e.g. a ``training_step`` that returned ``None``: Lightning still
steps the optimizer, which skips parameters without gradients), the other losses NaN;
``on_update_start`` comes just before the optimizer step, after the batch's forward and backward
(``on_before_optimizer_step``; the legacy loop fires it before the forward pass). ``eval_results`` holds the contract's keys from the
values the validation loop logged under those names (or mapped by ``metric_keys`` as ``eval_<key>``),
NaN otherwise, plus every value it logged under its own name. Values the module logs in its own
``on_train_epoch_end`` are not in that epoch's ``metrics`` (Lightning runs callbacks' epoch-end hooks
before the module's).

Under DDP, a user's module's events are each rank's own (nothing is gathered across ranks): with
``ranks="zero"`` the callbacks run on rank 0 and see rank 0's announced episodes, steps and counters
only; with ``ranks="all"`` each rank's callbacks see that rank's. (``PPOLightningModule`` instead
gathers every rank's episodes to rank 0 with global ``env_index``; a user's module would need its own
global numbering and a gather, which this library cannot infer.) Level-1 events (training start/end,
updates, rollouts, evaluations, cycles) come alike on every rank that runs the callbacks; checkpoint events
(``on_checkpoint_saved``) come on rank 0 only, the rank that writes the file, also with ``ranks="all"``
(``tests/test_own_module_ddp.py``).

The ``metrics`` dict (``on_metrics_computed`` / ``on_cycle_complete``) of a cycle holds: every value the
module logged during the epoch's training and validation, under its logged name, as a plain float (the
epoch-reduced value for ``on_epoch`` logging, else the latest); ``cycle`` (the epoch); the legacy keys of
``metric_keys`` (legacy key -> logged name; default :data:`FOREIGN_METRIC_KEYS`); ``loss``, if not logged,
as the mean of the epoch's optimizer steps' losses (a step's loss: the backward losses since the
previous step, summed, so with ``accumulate_grad_batches=k`` the mean of the k batches' losses); once env steps or episodes are announced
(Level 2 or 3), the exact legacy keys the announced episodes give (these win over logged values of the
same name); on cycles with validation, ``eval_episode_reward_mean`` and ``eval_win_rate`` (see
``eval_results``); and every other key of the contract's ``metrics`` as NaN, so that legacy callbacks
reading them run (the value says "not known at this level"). Why ``avg_ep_reward`` is not mapped to
``episode_reward_mean`` by default: see :data:`NOT_MAPPED`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from ..checkpoints import load_weights_only
from ..env_hub import ENV_RL_EVENTS, hub_of
from ..events import RL_SOURCE
from ..lightning_host import LOGGED_METRICS
from ..ppo import METRIC_KEYS, PPOCore
from ..rl_events import RL_HOOKS, MissingRLEventError, RLEventBus, provided_events, unprovided_message

__all__ = ["FOREIGN_METRIC_KEYS", "NOT_MAPPED", "LEVEL_EVENTS", "LEVEL1_DERIVED", "PLAIN_MODULE_HOOKS", "OwnModuleRun",
           "is_foreign", "restore_foreign_module"]

#: Legacy metric key -> the name a module logs it under, used by default for modules without ``core``.
#: Only names whose meaning is the legacy key's: this library's own logged names, and the legacy names
#: themselves (a module that logs ``loss`` means its training loss).
FOREIGN_METRIC_KEYS: dict[str, str] = {**LOGGED_METRICS, "loss": "loss"}

#: Logged names deliberately NOT mapped to a legacy key by default, and why (data, shown in the docs).
NOT_MAPPED: dict[str, str] = {
    "avg_ep_reward": "Lightning's RL templates log the mean over the last N episodes or over all episodes so "
                     "far, not over the cycle's episodes as episode_reward_mean is; map it with "
                     "metric_keys={'episode_reward_mean': 'avg_ep_reward'} if yours is the cycle's mean, or "
                     "wrap the env (Level 2), which gives the exact value.",
    "avg_ep_len": "as avg_ep_reward, for episode_length_mean.",
    "val_reward": "a validation metric of the module's own making; map it with "
                  "metric_keys={'eval_episode_reward_mean': 'val_reward'}.",
}

#: Level -> the legacy events it adds (Level 3 adds nothing new: it lets the module announce any RL event with
#: its own payloads, replacing Level 1's derivation of it). The docstring's table says the same in words.
LEVEL_EVENTS: dict[int, tuple[str, ...]] = {
    1: ("on_training_start", "on_rollout_start", "on_rollout_end", "on_update_start", "on_update_end",
        "on_evaluation_start", "on_evaluation_end", "on_metrics_computed", "on_cycle_complete", "on_checkpoint_saved",
        "on_checkpoint_loaded", "on_training_end"),
    2: ("on_episode_start", "on_step_start", "on_step_end", "on_episode_end"),
    3: (),
}

#: RL events Level 1 derives for legacy callbacks (through the adapter) when the module does not announce them.
LEVEL1_DERIVED = ("rollout_start", "rollout_end", "update_start", "update_end")

#: Lightning hooks the adapter listens to only in a user's own module (Level 1 derives events from them).
PLAIN_MODULE_HOOKS = ("on_train_epoch_start", "on_train_batch_start", "on_before_backward", "on_validation_end",
                      "on_before_optimizer_step")



_EVAL_KEYS = ("episode_reward_mean", "episode_reward_std", "episode_length_mean", "episodes", "win_rate")
_NAN = float("nan")


def is_foreign(pl_module: Any) -> bool:
    """True for a module without this library's PPO core (a user's own module, even one with a ``core`` of its own)."""
    return not isinstance(getattr(pl_module, "core", None), PPOCore)


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _logged_this_loop(results: Any, callback_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Values logged in a loop's current run (by name, as plain floats), read from ``callback_metrics``."""
    out: dict[str, Any] = {}
    try:
        items = list(results.items())
    except AttributeError:  # not the Lightning we know: everything the trainer holds
        return {name: _plain(v) for name, v in callback_metrics.items()}
    for _, metric in items:
        meta = getattr(metric, "meta", None)
        if meta is None or getattr(metric, "has_reset", False):
            continue
        for name in (meta.name, f"{meta.name}_step", f"{meta.name}_epoch"):
            if name in callback_metrics:
                out[name] = _plain(callback_metrics[name])
    return out


#: The update_end payload keys whose cycle means are the contract's ``metrics`` of the same names.
_LOSS_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


class OwnModuleRun:
    """Level-1 derivation and Level-2/3 bookkeeping for one adapter in a module without ``core``."""

    def __init__(self, adapter: Any, trainer: Any, pl_module: Any, metric_keys: Mapping[str, str] | None):
        self.adapter, self.trainer, self.module = adapter, trainer, pl_module
        self.metric_keys = dict(FOREIGN_METRIC_KEYS if metric_keys is None else {**FOREIGN_METRIC_KEYS, **metric_keys})
        self.provided = provided_events(pl_module)
        routes = adapter.routes
        rl_routed = {route.source for route in routes.values() if route.kind == RL_SOURCE}
        #: The RL events this adapter derives (Level 1) because the module does not announce them.
        self.derived = {event for event in LEVEL1_DERIVED if event in rl_routed and event not in self.provided}
        self.rollout_open = False
        self.rollout_epoch = -1
        #: ``trainer.cycle``: the epoch that started last (Lightning's current_epoch moves on after the last one).
        self.cycle = 0
        self._rollout_base = (0, 0)
        self.updates = 0           # optimizer steps so far (update_index)
        self.cycle_updates = 0     # optimizer steps this epoch (minibatch)
        self.cycle_epoch = -1
        self.batch_loss = _NAN
        self._loss_taken = False  # an optimizer step has reported batch_loss (the next backward starts anew)
        self.cycle_loss_sum, self.cycle_loss_count = 0.0, 0
        self.val_logged: dict[str, Any] | None = None
        self._handles: list[Any] = []
        self._update_info: dict[str, Any] | None = None
        self._warn_pending = False  # check_unprovided's warning, due at on_train_start
        self._announced_epoch, self._announced_losses = -1, {}  # announced update_end losses: key -> (sum, n)

    # -- set-up --------------------------------------------------------------------------------
    def check_unprovided(self, error: bool, deferred: bool = False) -> None:
        """A legacy callback listening to an env-level event the module does not announce: say so at setup
        (an error for a shadow-mode control, whose comparison would be meaningless), or as a warning at
        ``on_train_start``, once an env wrapped in the module's own ``setup()`` is bound too."""
        if not error and not deferred:
            self._warn_pending = True
            return
        if deferred:
            self._warn_pending = False
            self.provided = self.provided | provided_events(self.module)
            if self._env_rollouts():
                self.provided = self.provided | frozenset(ENV_RL_EVENTS)
        for event, route in self.adapter.routes.items():
            if route.kind != RL_SOURCE or route.source in self.provided or route.source in LEVEL1_DERIVED:
                continue
            names = [type(binding.callback).__name__ for binding in self.adapter.manager.bindings(event)]
            who = f"legacy callback {', '.join(names)}"
            kind = "the legacy side of a shadow-mode pair" if error else "wrapped by LegacyCallbackAdapter"
            message = unprovided_message(who, kind, event, self.module, route.source)
            if error:
                raise MissingRLEventError(message)
            warnings.warn(message, stacklevel=2)

    def _intercept(self, event: str, before: Any) -> None:
        """Call ``before(payload)`` ahead of this adapter's delivery of the announced RL ``event``."""
        hook = RL_HOOKS[event]
        inner = getattr(self.adapter, hook, None)

        def intercepted(trainer: Any, pl_module: Any, payload: Any) -> None:
            before(payload)
            if inner is not None:
                inner(trainer, pl_module, payload)

        setattr(self.adapter, hook, intercepted)

    def configure_rl_listeners(self) -> None:
        """Close a derived rollout before an announced update starts; average announced updates' losses for
        ``metrics``; open the epoch's rollout at the first announced env step if that comes before the epoch
        starts (Lightning fetches the first batch of an ``IterableDataset`` before ``on_train_epoch_start``)."""
        if "update_start" in self.provided and "rollout_end" in self.derived:
            self._intercept("update_start", lambda payload: self.close_rollout("training (RL event update_start)"))
        if "update_end" in self.provided:
            self._intercept("update_end", self._announced_update_end)
        if "rollout_start" not in self.derived and "rollout_end" not in self.derived:
            return
        event = next((e for e in ("step_start", "step_end") if e in self.provided), None)
        if event is None:
            return
        hook = RL_HOOKS[event]
        inner = getattr(self.adapter, hook, None)
        where = f"training (RL event {event})"

        def open_then_deliver(trainer: Any, pl_module: Any, payload: Any) -> None:
            if not self.rollout_open:
                self.open_rollout(where)
            if inner is not None:
                inner(trainer, pl_module, payload)

        setattr(self.adapter, hook, open_then_deliver)

    def _announced_update_end(self, payload: Any) -> None:
        epoch = self.trainer.current_epoch
        if epoch != self._announced_epoch:
            self._announced_epoch, self._announced_losses = epoch, {}
        for key in _LOSS_KEYS:
            value = payload.get(key) if isinstance(payload, Mapping) else None
            if isinstance(value, (int, float)):
                total, n = self._announced_losses.get(key, (0.0, 0))
                self._announced_losses[key] = (total + float(value), n + 1)

    # -- counters ------------------------------------------------------------------------------
    def counters(self):
        bus = RLEventBus.existing(self.trainer)
        if bus is not None and bus.counters is not None:
            return bus.counters
        own = getattr(self.module, "rl_events", None)
        return getattr(own, "counters", None)

    # -- rollouts --------------------------------------------------------------------------------
    def _env_rollouts(self) -> bool:
        """A training env wrapped with ``wrap_env`` is bound to this run (perhaps only after setup, e.g. made in
        the module's ``setup``): its rollout events replace Level 1's."""
        hub = hub_of(self.trainer)
        return hub is not None and hub.n_train_envs > 0

    def open_rollout(self, hook: str) -> None:
        epoch = self.trainer.current_epoch
        self.cycle = epoch
        if self.rollout_open or self.rollout_epoch == epoch or self._env_rollouts():
            return
        self.rollout_open, self.rollout_epoch = True, epoch
        if "rollout_start" not in self.derived and "rollout_end" not in self.derived:
            return
        counters = self.counters()
        self._rollout_base = (counters.total_timesteps, counters.num_episodes) if counters is not None else (0, 0)
        if "rollout_start" in self.derived:
            self.adapter._fire("on_rollout_start", hook)

    def close_rollout(self, hook: str) -> None:
        if not self.rollout_open:
            return
        self.rollout_open = False
        if "rollout_end" not in self.derived:
            return
        counters = self.counters()
        info: dict[str, Any] = {"steps": None, "episodes": None, "reward_mean": _NAN}
        if counters is not None and (counters.seen_step_end or counters.seen_episode_end):
            steps, episodes = (counters.total_timesteps - self._rollout_base[0],
                               counters.num_episodes - self._rollout_base[1])
            returns, _ = counters.cycle_episodes(self.trainer.current_epoch)
            recent = returns[len(returns) - episodes:] if 0 < episodes <= len(returns) else []
            info = {"steps": steps if counters.seen_step_end else None, "episodes": episodes,
                    "reward_mean": math.fsum(recent) / len(recent) if recent else _NAN}
        self.adapter._fire("on_rollout_end", hook, rollout_info=info)

    # -- updates (optimizer step hooks) ------------------------------------------------------------
    def train_start(self) -> None:
        """At ``on_train_start``: on a resume, ``trainer.cycle`` is the checkpoint's cycle (as in the legacy
        loop), i.e. the epoch before the one Lightning continues with; then listen to the optimizers."""
        trainer = self.trainer
        self.cycle = max(trainer.current_epoch - 1, 0) if trainer.ckpt_path else trainer.current_epoch
        if self._warn_pending:
            self.check_unprovided(error=False, deferred=True)
        self.attach_optimizers(trainer.optimizers)

    def attach_optimizers(self, optimizers: list[Any]) -> None:
        self.detach()
        for opt in optimizers:
            opt = getattr(opt, "optimizer", opt)  # a LightningOptimizer wraps the torch one
            self._handles.append(opt.register_step_post_hook(self._after_step))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def before_step(self, hook: str = "on_before_optimizer_step") -> None:
        """An optimizer step is about to happen (after the batch's forward and backward): the rollout ends,
        the update starts. Lightning's ``on_before_optimizer_step``, not torch's step pre-hook: in automatic
        optimization Lightning runs ``training_step`` inside ``optimizer.step``, so a step-based module's env
        steps would otherwise fall inside the update."""
        if self._update_info is not None:
            return
        self.close_rollout(hook)
        hub = hub_of(self.trainer)
        if hub is not None:  # a wrapped env's rollout (Level 2) ends before the update it feeds, too
            hub.close_rollout()
        epoch = self.trainer.current_epoch
        if epoch != self.cycle_epoch:
            self.cycle_epoch, self.cycle_updates = epoch, 0
            self.cycle_loss_sum, self.cycle_loss_count = 0.0, 0
        info = {"update_index": self.updates, "epoch": None, "minibatch": self.cycle_updates}
        self._update_info = info
        if "update_start" in self.derived:
            self.adapter._fire("on_update_start", hook, update_info=dict(info))

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._update_info is None:  # a torch optimizer stepped directly, not through Lightning
            self.before_step("optimizer.step")
        info, self._update_info = self._update_info, None
        self.updates += 1
        self.cycle_updates += 1
        loss, self._loss_taken = self.batch_loss, True
        if not math.isnan(loss):
            self.cycle_loss_sum += loss
            self.cycle_loss_count += 1
        if "update_end" in self.derived:
            self.adapter._fire("on_update_end", "optimizer.step (after)", update_info={
                **info, "loss": loss, "policy_loss": _NAN, "value_loss": _NAN, "entropy": _NAN,
                "approx_kl": _NAN, "clip_fraction": _NAN})

    def record_backward(self, loss: Any) -> None:
        """The loss the next optimizer steps apply: the sum of the backward losses since a step last took it
        (with ``accumulate_grad_batches=k`` Lightning backpropagates loss/k per batch, so the sum is the
        batches' mean; two optimizers stepped after one backward both report it)."""
        try:
            value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        except (TypeError, ValueError, RuntimeError):  # a non-scalar loss: no single number to report
            value = _NAN
        fresh = self._loss_taken or math.isnan(self.batch_loss)
        self.batch_loss, self._loss_taken = (value if fresh else self.batch_loss + value), False

    # -- validation and metrics ----------------------------------------------------------------------
    def validation_done(self) -> None:
        loop = getattr(getattr(self.trainer.fit_loop, "epoch_loop", None), "val_loop", None)
        self.val_logged = _logged_this_loop(getattr(loop, "_results", None), self.trainer.callback_metrics)

    def eval_results(self) -> dict[str, Any]:
        logged = self.val_logged or {}
        results: dict[str, Any] = dict(logged)
        for key in _EVAL_KEYS:
            name = self.metric_keys.get(f"eval_{key}")
            for candidate in (name, f"val/{key}", key):
                if candidate is not None and candidate in logged:
                    results[key] = logged[candidate]
                    break
            else:
                results[key] = _NAN
        return results

    def metrics(self) -> dict[str, Any]:
        trainer = self.trainer
        callback_metrics = trainer.callback_metrics
        epoch_loop = trainer.fit_loop.epoch_loop
        out = _logged_this_loop(getattr(epoch_loop, "_results", None), callback_metrics)
        evaluated = self.val_logged is not None
        if evaluated:
            out.update(self.val_logged)
        for key, name in self.metric_keys.items():
            if name in out and key not in out:
                out[key] = out[name]
        if evaluated:
            results = self.eval_results()
            out["eval_episode_reward_mean"] = results["episode_reward_mean"]
            out["eval_win_rate"] = results["win_rate"]
        if self._announced_epoch == trainer.current_epoch:  # Level 3: the means of the announced updates' losses
            for key, (total, n) in self._announced_losses.items():
                out.setdefault(key, total / n)
        if "loss" not in out and self.cycle_loss_count and self.cycle_epoch == trainer.current_epoch:
            out["loss"] = self.cycle_loss_sum / self.cycle_loss_count  # the mean over the cycle's updates
        counters = self.counters()
        if counters is not None:
            out.update(counters.legacy_metrics(trainer.current_epoch))
        out["cycle"] = trainer.current_epoch
        for key in METRIC_KEYS:  # the contract's keys are always there: NaN where this level cannot know
            out.setdefault(key, _NAN)
        for key in ("timesteps_total", "episodes_total"):
            if key in out and isinstance(out[key], float) and not math.isnan(out[key]):
                out[key] = int(out[key])
        return out


def restore_foreign_module(trainer: Any, pl_module: Any, path: str) -> None:
    """``trainer.load_checkpoint`` in a user's own module: its weights, its optimizers' states and its own
    ``on_load_checkpoint``, from a Lightning checkpoint (``CheckpointError`` if the file is not one)."""
    from ..checkpoints import CheckpointError

    data = load_weights_only(path)
    if not isinstance(data, dict) or "state_dict" not in data:
        keys = ", ".join(sorted(map(str, data))[:12]) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a Lightning checkpoint of {type(pl_module).__name__} (top-level keys: "
                              f"{keys or 'none'}); load one written by trainer.save_checkpoint or ModelCheckpoint.")
    pl_module.on_load_checkpoint(data)
    pl_module.load_state_dict(data["state_dict"])
    states = data.get("optimizer_states") or []
    for optimizer, state in zip(trainer.optimizers, states):
        optimizer.load_state_dict(state)
    hub = hub_of(trainer)  # wrapped envs (Level 2): the counters continue from the checkpoint's
    env_state = (data.get("callbacks") or {}).get(hub.state_key) if hub is not None else None
    if env_state is not None:
        hub.load_state_dict(env_state)


class _PlainModuleSupport:
    """Batch-derived events for modules without ``rl_events``; counters in ``_fallback_steps``/``_fallback_episodes``."""

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
