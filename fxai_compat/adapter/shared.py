"""What every adapter of one trainer shares: the run state (context, stop flag, held exceptions), finding the
trainer's adapters, and the per-receiver payload copy of the dispatch hot path.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from legacy_callbacks import TrainingContext


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


class _AdapterBase:
    """A base of ``LegacyCallbackAdapter`` (and nothing else): lets the modules it builds on find a trainer's
    adapters without importing it."""


def _adapters_of(trainer: "pl.Trainer") -> list["LegacyCallbackAdapter"]:
    return [cb for cb in trainer.callbacks if isinstance(cb, _AdapterBase)]


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
