"""The adapter under DDP: holding a legacy callback's control-flow exception until every rank stops, carrying it
between ranks (``_portable``/``_restore``), and gathering every rank's RL events so rank 0 delivers them merged.

:class:`_DDPSupport` is a mixin of :class:`~fxai_compat.adapter.core.LegacyCallbackAdapter`.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
import weakref
from typing import Any

import pytorch_lightning as pl

from legacy_callbacks.callback_manager import _is_control_flow

from .shared import _adapters_of, _fresh, _shared_state, _SharedRunState

log = logging.getLogger("fxai_compat.adapter")

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


def _wait_until_released(released: "weakref.ref[Any]", timeout: float = 5.0) -> None:
    """Return once the process group's worker thread has let go of a collective's tensor (``released`` refers to
    it weakly; the caller keeps no other reference).

    A gloo worker drops its references to a collective's tensors just after the collective completes, and
    dropping a tensor made in Python takes the GIL. If the process exits in that moment (a rank whose ``fit``
    ended with this collective, and whose script then ends), the worker meets an interpreter that is shutting
    down and the process aborts ("terminate called without an active exception", exit -6), which Lightning's
    process observer turns into killing every rank. So the last collective of fit waits, sleeping (the GIL
    free), until the tensor is gone: normally at once; ``timeout`` bounds it in any case.
    """
    deadline = time.monotonic() + timeout
    while released() is not None and time.monotonic() < deadline:
        time.sleep(0.0005)


class _DDPSupport:
    """The DDP half of the adapter: deferral, the end-of-cycle decision, gathering and delivering events."""

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

    def _sync_end(self, trainer: "pl.Trainer", stop: bool, last: bool = False) -> bool:
        """DDP: every rank's stop request and held exception, in one collective; True if any rank asks to stop.

        Called from the last steering adapter at every epoch end and at the teardown of fit (``last``): the
        same points on every rank. When an exception is held somewhere, the ranks exchange them (once).
        """
        import torch
        import torch.distributed as dist

        state = _shared_state(trainer)
        flags = torch.tensor([int(stop), int(state.deferred is not None)], device=trainer.strategy.root_device)
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        requested, held = (int(v) for v in flags.tolist())
        released = weakref.ref(flags)
        del flags
        if last:  # fit's last collective: the process may exit right after it
            _wait_until_released(released)
        if held and not state.ended:
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
        return bool(requested) or bool(held)

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
