"""The contract's event grammar, checked on any module's trace (section 4 of the legacy contract).

A trace is the list of events one legacy callback received, in order: records ``{"event", "args",
"counters"}`` as :class:`~fxai_compat.parity.trace.TraceRecorder` writes them (or plain event names).
:func:`check_grammar` names every kind of violation it finds, with the position of its first occurrence:

``training_start_first``, ``training_end_last``
    ``on_training_start`` is the first event and ``on_training_end`` the last, each exactly once.
``episode_end_without_start``
    every ``on_episode_end`` follows an ``on_episode_start`` of the same ``env_index`` (and the same
    ``episode_index`` where both carry one) whose episode has not ended yet.
``update_during_rollout``
    updates come after the rollout they train on: no ``on_update_start``/``on_update_end`` while a rollout
    is open, and no rollout or env step begun while an update is open.
``unbalanced``
    ``rollout_start``/``rollout_end``, ``step_start``/``step_end``, ``update_start``/``update_end`` and
    ``evaluation_start``/``evaluation_end`` alternate, and none is open at ``on_training_end``; steps happen
    inside a rollout (when the trace has rollouts at all).
``cycle_structure``
    each cycle ends with ``on_metrics_computed`` then ``on_cycle_complete``, with nothing but checkpoint
    events between them, no rollout, step, update or evaluation still open at ``on_metrics_computed``, and
    ``trainer.cycle`` one more than the previous cycle's.
``counters``
    ``trainer.total_timesteps`` and ``trainer.num_episodes`` never decrease (except at ``on_checkpoint_loaded``:
    ``trainer.load_checkpoint`` restores them), and ``num_episodes`` grows by one with each ``on_episode_end``.

:func:`check_module_grammar` runs a user's LightningModule under a ``pl.Trainer`` with a recorder that
listens to all 16 events (through ``LegacyCallbackAdapter``) and checks its trace; the ``fxai_parity``
fixture (``assert_grammar``) and ``fxai-compat parity --module pkg.mod:factory`` call it.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legacy_callbacks.base import EVENTS

__all__ = ["GrammarResult", "Violation", "check_grammar", "check_module_grammar", "GrammarRecorder",
           "VIOLATION_KINDS", "load_factory"]

VIOLATION_KINDS = ("training_start_first", "training_end_last", "episode_end_without_start",
                   "update_during_rollout", "unbalanced", "cycle_structure", "counters")
_CHECKPOINT_EVENTS = ("on_checkpoint_saved", "on_checkpoint_loaded")
_PAIRS = {"on_rollout_start": ("rollout", True), "on_rollout_end": ("rollout", False),
          "on_step_start": ("step", True), "on_step_end": ("step", False),
          "on_update_start": ("update", True), "on_update_end": ("update", False),
          "on_evaluation_start": ("evaluation", True), "on_evaluation_end": ("evaluation", False)}


@dataclass
class Violation:
    """One broken rule: its kind, the position of the offending event in the trace, and a sentence."""

    kind: str
    index: int
    message: str

    def __str__(self) -> str:
        return f"{self.kind} at event #{self.index}: {self.message}"


@dataclass
class GrammarResult:
    """``ok`` when the trace follows the grammar; otherwise the first violation of each kind found."""

    name: str
    events: int
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __bool__(self) -> bool:
        return self.ok

    @property
    def kinds(self) -> list[str]:
        return [v.kind for v in self.violations]

    def summary(self) -> str:
        head = f"event grammar of {self.name}: {'ok' if self.ok else 'FAILED'}"
        return "\n".join([head, f"  {self.events} events checked"] + [f"  {v}" for v in self.violations])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "events": self.events,
                "violations": [{"kind": v.kind, "index": v.index, "message": v.message} for v in self.violations]}


def _normal(record: Any) -> tuple[str, Mapping[str, Any], Mapping[str, Any]]:
    if isinstance(record, str):
        event, args, counters = record, {}, {}
    else:
        event, args, counters = record["event"], record.get("args") or {}, record.get("counters") or {}
    if not event.startswith("on_"):
        event = f"on_{event}"
    if event not in EVENTS:
        raise ValueError(f"Unknown legacy event {event!r} in the trace; the 16 events are: {', '.join(EVENTS)}.")
    return event, args, counters


def check_grammar(trace: Iterable[Any] | str | Path, name: str = "trace", *, resumed: bool = False) -> GrammarResult:
    """Check a trace (records, event names, or a JSON-lines file of records) against the contract's grammar.

    ``resumed=True`` for the trace of a run resumed from a checkpoint: its environments continue, so the
    first episode to end on each ``env_index`` may have started before the trace did.
    """
    if isinstance(trace, (str, Path)):
        with open(trace, encoding="utf-8") as handle:
            trace = [json.loads(line) for line in handle if line.strip()]
    records = [_normal(r) for r in trace]
    found: dict[str, Violation] = {}

    def flag(kind: str, index: int, message: str) -> None:
        found.setdefault(kind, Violation(kind, index, message))

    events = [event for event, _, _ in records]
    n = len(events)
    if not n or events[0] != "on_training_start":
        flag("training_start_first", 0, f"the first event is {events[0] if n else 'missing'}, not on_training_start.")
    elif "on_training_start" in events[1:]:
        flag("training_start_first", events.index("on_training_start", 1), "on_training_start fired a second time.")
    if not n or events[-1] != "on_training_end":
        flag("training_end_last", max(n - 1, 0), f"the last event is {events[-1] if n else 'missing'}, not on_training_end.")
    elif "on_training_end" in events[:-1]:
        flag("training_end_last", events.index("on_training_end"), "on_training_end fired before the last event.")

    has_rollouts = "on_rollout_start" in events
    open_: dict[str, int | None] = {"rollout": None, "step": None, "update": None, "evaluation": None}
    running: dict[Any, Any] = {}  # env_index -> episode_index of its running episode
    seen_envs: set[Any] = set()
    cycle_closing: str | None = None  # None, "metrics" (after metrics_computed), "done" (after cycle_complete)
    last_cycle: Any = None
    last_counters: dict[str, Any] = {}
    for index, (event, args, counters) in enumerate(records):
        if event in _CHECKPOINT_EVENTS:
            if event == "on_checkpoint_loaded" and counters:  # trainer.load_checkpoint restores the counters
                last_counters.update(counters)
            continue
        # cycle structure: metrics_computed -> cycle_complete -> (checkpoint events) -> the next cycle
        if cycle_closing == "metrics" and event != "on_cycle_complete":
            flag("cycle_structure", index, f"{event} came between on_metrics_computed and on_cycle_complete.")
        if event == "on_metrics_computed":
            busy = [kind for kind, at in open_.items() if at is not None]
            if busy:
                flag("cycle_structure", index, f"on_metrics_computed while a {busy[0]} is still open "
                                               f"(started at event #{open_[busy[0]]}).")
            cycle_closing = "metrics"
        elif event == "on_cycle_complete":
            if cycle_closing != "metrics":
                flag("cycle_structure", index, "on_cycle_complete without on_metrics_computed right before it.")
            cycle = counters.get("cycle")
            if isinstance(last_cycle, int) and isinstance(cycle, int) and cycle != last_cycle + 1:
                flag("cycle_structure", index, f"trainer.cycle is {cycle} at this cycle's end; the previous cycle "
                                               f"was {last_cycle}.")
            last_cycle = cycle if isinstance(cycle, int) else last_cycle
            cycle_closing = "done"
        elif event != "on_training_end":
            cycle_closing = None
        else:
            busy = [kind for kind, at in open_.items() if at is not None]
            if busy:
                flag("unbalanced", index, f"on_training_end while the {busy[0]} started at event "
                                          f"#{open_[busy[0]]} is still open.")

        pair = _PAIRS.get(event)
        if pair is not None:
            kind, starts = pair
            if starts and open_[kind] is not None:
                flag("unbalanced", index, f"{event} while the {kind} started at event #{open_[kind]} is still open.")
            elif not starts and open_[kind] is None:
                flag("unbalanced", index, f"{event} without a matching on_{kind}_start.")
            open_[kind] = index if starts else None
            if kind == "step" and has_rollouts and open_["rollout"] is None:
                flag("unbalanced", index, f"{event} outside any rollout (between on_rollout_end and on_rollout_start).")
            if kind in ("rollout", "step") and starts and open_["update"] is not None:
                flag("update_during_rollout", index, f"{event} while the update started at event #{open_['update']} "
                                                     f"is still open: the update began before the env steps it "
                                                     f"trains on.")
            if kind == "update" and open_["rollout"] is not None:
                flag("update_during_rollout", index, f"{event} while the rollout started at event "
                                                     f"#{open_['rollout']} is still open: updates come after the "
                                                     f"rollout they train on.")
        elif event == "on_episode_start":
            info = args.get("episode_info") or {}
            running[info.get("env_index")] = info.get("episode_index")
            seen_envs.add(info.get("env_index"))
        elif event == "on_episode_end":
            info = args.get("episode_info") or {}
            env = info.get("env_index")
            if resumed and env not in seen_envs:
                running.setdefault(env, None)
            seen_envs.add(env)
            if env not in running:
                flag("episode_end_without_start", index, f"episode_end of env_index {env} without an "
                                                         f"on_episode_start for it (or after its episode ended).")
            elif None not in (running[env], info.get("episode_index")) and running[env] != info.get("episode_index"):
                flag("episode_end_without_start", index, f"episode_end of env_index {env}, episode "
                                                         f"{info.get('episode_index')}, but the episode that started "
                                                         f"there is {running[env]}.")
            running.pop(env, None)

        for key in ("total_timesteps", "num_episodes"):
            value, before = counters.get(key), last_counters.get(key)
            if _number(value) and _number(before) and value < before:
                flag("counters", index, f"trainer.{key} went down from {before} to {value} at {event}.")
        episodes, before = counters.get("num_episodes"), last_counters.get("num_episodes")
        if event == "on_episode_end" and _number(episodes) and _number(before) and episodes != before + 1:
            flag("counters", index, f"trainer.num_episodes is {episodes} at an on_episode_end; it was {before} "
                                    f"before (one more expected).")
        if counters:
            last_counters.update(counters)
    violations = sorted(found.values(), key=lambda v: (VIOLATION_KINDS.index(v.kind), v.index))
    return GrammarResult(name, n, violations)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


class GrammarRecorder:
    """A legacy callback that listens to all 16 events and records each with the trainer's counters."""

    def __init__(self) -> None:
        from .trace import TraceRecorder

        self.records: list[dict[str, Any]] = []
        self._recorder = TraceRecorder(_AllEvents(), self.records.append)
        self.proxy = self._recorder.proxy  # what the adapter wraps

    def check(self, name: str = "trace") -> GrammarResult:
        return check_grammar(self.records, name)


class _AllEvents:
    """Defines every legacy event, doing nothing: the recorder then receives them all."""


for _event in EVENTS:
    setattr(_AllEvents, _event, lambda self, **offered: None)


def load_factory(spec: str) -> Callable[..., Any]:
    """``"pkg.mod:factory"`` -> the callable (a LightningModule class or a function returning a module); modules
    of the current folder are importable, as with ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--module takes 'package.module:factory' (a callable returning a LightningModule); "
                         f"got {spec!r}.")
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` would: the current folder imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--module {spec!r}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"--module {spec!r}: {module_name!r} has no attribute {attr!r}.")
    if not callable(factory):
        raise ValueError(f"--module {spec!r}: {attr!r} is not callable; give a function or class returning a "
                         f"LightningModule.")
    return factory


def check_module_grammar(module_factory: Callable[[], Any], *, max_epochs: int = 3, name: str | None = None,
                         callbacks: Iterable[Any] = (), **trainer_kwargs: Any) -> GrammarResult:
    """Fit ``module_factory()`` for ``max_epochs`` epochs with a recorder of all 16 legacy events (and any
    other ``callbacks``), then check the recorded trace against the contract's grammar. The factory returns a
    LightningModule, or a ``(module, datamodule)`` pair for a module fed by a LightningDataModule."""
    import pytorch_lightning as pl

    from ..adapter import LegacyCallbackAdapter

    module, datamodule = module_factory(), None
    if isinstance(module, tuple) and len(module) == 2:
        module, datamodule = module
    if not isinstance(module, pl.LightningModule):
        raise TypeError(f"The module factory returned {type(module).__name__}, not a pytorch_lightning.LightningModule.")
    recorder = GrammarRecorder()
    options: dict[str, Any] = dict(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                                   enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                                   devices=1, num_sanity_val_steps=0)
    options.update(trainer_kwargs)
    trainer = pl.Trainer(callbacks=[LegacyCallbackAdapter(recorder.proxy), *callbacks], **options)
    trainer.fit(module, datamodule=datamodule)
    return recorder.check(name or getattr(module_factory, "__qualname__", type(module).__name__))


def cmd_module_grammar(spec: str, max_epochs: int) -> int:
    """``fxai-compat parity --module pkg.mod:factory``: exit 0 if the grammar holds, 1 if not, 2 on bad input."""
    import sys

    try:
        if max_epochs < 1:
            raise ValueError(f"--epochs must be a positive number of epochs; got {max_epochs}.")
        factory = load_factory(spec)
    except ValueError as exc:
        print(f"fxai-compat parity: {exc}", file=sys.stderr)
        return 2
    result = check_module_grammar(factory, max_epochs=max_epochs, name=spec)
    print(result.summary())
    return 0 if result.ok else 1
