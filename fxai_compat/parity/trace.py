"""Trace parity: the same legacy callback sees the same events under ``LegacyTrainer`` and under
Lightning through ``LegacyCallbackAdapter``.

The callback runs inside a recording proxy that defines exactly the events the callback defines
(so the trace is what was *delivered* to it), records each event's name, normalized arguments and
the trainer's counters, then forwards to the real method. The legacy run streams its trace to a
JSON-lines file; the Lightning run is compared against it event by event as it happens, keeping
only a few events of context in memory: long runs cost bounded memory.
"""

from __future__ import annotations

import inspect
import itertools
import json
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legacy_callbacks import bind_event
from legacy_callbacks.base import EVENTS

from ..config import TrainConfig
from .compare import DEFAULT_TOLERANCE, first_mismatch, normalize

__all__ = ["ParityResult", "Divergence", "TraceRecorder", "check_trace_parity", "record_trace"]


@dataclass
class Divergence:
    """The first place two runs disagree, with a few records of context on each side."""

    index: int
    what: str
    legacy: list[dict[str, Any]]
    lightning: list[dict[str, Any]]
    at: int  # position of the diverging record inside the context lists
    other: str = "lightning"  # what the right-hand column is: the Lightning host, or a native port

    def render(self) -> str:
        lines = [f"first divergence at event #{self.index}: {self.what}"]
        width = max(len(_short(r)) for r in self.legacy + self.lightning + [{}]) if (self.legacy or self.lightning) else 0
        width = min(max(width, 20), 70)
        lines.append(f"    {'legacy':<{width}} | {self.other}")
        for i in range(max(len(self.legacy), len(self.lightning))):
            left = _short(self.legacy[i]) if i < len(self.legacy) else "(end of trace)"
            right = _short(self.lightning[i]) if i < len(self.lightning) else "(end of trace)"
            marker = ">>" if i == self.at else "  "
            lines.append(f" {marker} {left[:width]:<{width}} | {right[:70]}")
        return "\n".join(lines)


def _short(record: Mapping[str, Any]) -> str:
    if not record:
        return ""
    args = {k: v for k, v in record.get("args", {}).items() if k != "trainer"}
    text = json.dumps(args, sort_keys=True, default=str)
    return f"{record['event']} {text[:48]}{'...' if len(text) > 48 else ''}"


@dataclass
class ParityResult:
    """Outcome of a parity check: ``ok``, what was compared, and the first divergence if any."""

    name: str
    ok: bool
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per event (or observable): (legacy count, lightning/native count)."""
    compared: int = 0
    divergence: Divergence | None = None
    kind: str = "trace"
    unchecked: list[str] = field(default_factory=list)
    """What was never compared (an observable compared zero times, or "no observables registered"):
    a check with anything unchecked is not ``ok``, whatever else agreed."""

    def __post_init__(self) -> None:
        if self.unchecked:
            self.ok = False

    def __bool__(self) -> bool:
        return self.ok

    @property
    def status(self) -> str:
        """``ok`` (everything compared, and agreed), ``FAILED`` (a divergence) or ``unchecked``."""
        if self.divergence is not None:
            return "FAILED"
        return "unchecked" if self.unchecked else ("ok" if self.ok else "FAILED")

    @property
    def diff(self) -> str:
        return self.divergence.render() if self.divergence else ""

    def summary(self) -> str:
        status = self.status
        head = f"{self.kind} parity of {self.name}: {status} ({self.compared} compared)"
        if status == "unchecked":
            return f"{head}; never compared: {', '.join(self.unchecked)}"
        return head if self.ok else f"{head}\n{self.diff}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ok": self.ok, "status": self.status,
                "compared": self.compared, "unchecked": list(self.unchecked),
                "counts": {k: list(v) for k, v in self.counts.items()},
                "first_divergence": None if self.divergence is None else {
                    "index": self.divergence.index, "what": self.divergence.what,
                    "legacy": self.divergence.legacy, "lightning": self.divergence.lightning}}


class TraceRecorder:
    """Wraps a legacy callback in a proxy that records every event delivered to it, then forwards it.

    ``sink(record)`` receives each record: ``{"event", "args", "counters"}`` with normalized values.
    """

    def __init__(self, callback: Any, sink: Callable[[dict[str, Any]], None]):
        self.callback = callback
        self.sink = sink
        bindings = {event: bind_event(callback, event) for event in EVENTS}
        self.events = [event for event, binding in bindings.items() if binding is not None]
        namespace = {event: _forwarder(event, bindings[event]) for event in self.events}
        for name in ("state_dict", "load_state_dict", "get_state", "set_state"):
            if callable(getattr(callback, name, None)):
                namespace[name] = _delegate(name)
        proxy_cls = type(f"Recording{type(callback).__name__}", (), namespace)
        self.proxy = proxy_cls()
        self.proxy._recorder = self


def _forwarder(event: str, binding):
    def method(self, **offered):
        recorder = self._recorder
        trainer = offered.get("trainer")
        recorder.sink({"event": event,
                       "args": normalize({k: v for k, v in offered.items() if k != "trainer"}),
                       "counters": normalize({"cycle": trainer.cycle, "total_timesteps": trainer.total_timesteps,
                                              "num_episodes": trainer.num_episodes}) if trainer is not None else {}})
        return binding.call(offered)

    method.__name__ = event
    return method


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return getattr(self._recorder.callback, name)(*args, **kwargs)

    method.__name__ = name
    return method


def _make_callback(factory: Callable[..., Any], workdir: Path) -> Any:
    """Call the factory, handing it a per-host working folder if it takes an argument."""
    try:
        params = [p for p in inspect.signature(factory).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    workdir.mkdir(parents=True, exist_ok=True)
    return factory(workdir) if params else factory()


def record_trace(factory: Callable[..., Any], config: TrainConfig, host: str, workdir: Path,
                 sink: Callable[[dict[str, Any]], None], *, resume_from: str | None = None,
                 trainer_kwargs: Mapping[str, Any] | None = None,
                 adapter_options: Mapping[str, Any] | None = None) -> Any:
    """Run one host with the recorded callback; returns the callback instance."""
    callback = _make_callback(factory, workdir / "callback")
    recorder = TraceRecorder(callback, sink)
    cfg = config.replace(checkpoint_dir=str(workdir / "checkpoints"))
    if host == "legacy":
        from ..legacy_host import LegacyTrainer

        LegacyTrainer(cfg, [recorder.proxy]).train(resume_from=resume_from)
    elif host == "lightning":
        from ..adapter import LegacyCallbackAdapter
        from ..lightning_host import fit

        options = {"logger": False, **(trainer_kwargs or {})}
        fit(cfg, [LegacyCallbackAdapter(recorder.proxy, **(adapter_options or {}))], ckpt_path=resume_from, **options)
    else:
        raise ValueError(f"host must be 'legacy' or 'lightning'; got {host!r}.")
    return callback


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _name_of(factory: Callable[..., Any]) -> str:
    return getattr(factory, "__name__", None) or type(factory).__name__


def check_trace_parity(callback_factory: Callable[..., Any], config: TrainConfig | Mapping[str, Any], *,
                       tolerance: float = DEFAULT_TOLERANCE, context: int = 3, workdir: str | Path | None = None,
                       name: str | None = None, trainer_kwargs: Mapping[str, Any] | None = None,
                       adapter_options: Mapping[str, Any] | None = None) -> ParityResult:
    """Run ``callback_factory()`` under ``LegacyTrainer`` and under Lightning (through the adapter) on
    ``config``, and compare the events delivered to it, in order, numbers within ``tolerance``.

    ``callback_factory`` may take one argument: a fresh folder per host for the callback's files.
    ``adapter_options`` go to ``LegacyCallbackAdapter`` (e.g. ``mapping=``), ``trainer_kwargs`` to ``fit``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    name = name or _name_of(callback_factory)
    with tempfile.TemporaryDirectory(prefix="fxai-parity-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        legacy_file = root / "legacy-trace.jsonl"
        legacy_counts: Counter[str] = Counter()
        root.mkdir(parents=True, exist_ok=True)
        with open(legacy_file, "w", encoding="utf-8") as out:
            def write(record):
                legacy_counts[record["event"]] += 1
                out.write(json.dumps(record, allow_nan=True) + "\n")

            record_trace(callback_factory, cfg, "legacy", root / "legacy", write)
        comparer = _StreamComparer(_read_jsonl(legacy_file), tolerance, context)
        record_trace(callback_factory, cfg, "lightning", root / "lightning", comparer.feed,
                     trainer_kwargs=trainer_kwargs, adapter_options=adapter_options)
        comparer.finish()
        counts = {event: (legacy_counts.get(event, 0), comparer.counts.get(event, 0))
                  for event in EVENTS if legacy_counts.get(event) or comparer.counts.get(event)}
        return ParityResult(name, comparer.divergence is None, counts, comparer.compared, comparer.divergence,
                            unchecked=[] if comparer.compared else ["no events delivered to the callback"])


class _StreamComparer:
    """Compares Lightning records with the legacy stream as they arrive, with bounded memory."""

    def __init__(self, legacy: Iterator[dict[str, Any]], tolerance: float, context: int):
        self.legacy = legacy
        self.tolerance = tolerance
        self.context = context
        self.counts: Counter[str] = Counter()
        self.compared = 0
        self.divergence: Divergence | None = None
        self._recent_legacy: deque = deque(maxlen=context)
        self._recent_lightning: deque = deque(maxlen=context)
        self._after_lightning: list = []
        self._pending_legacy: dict[str, Any] | None = None

    def feed(self, record: dict[str, Any]) -> None:
        self.counts[record["event"]] += 1
        if self.divergence is not None:
            if len(self._after_lightning) < self.context:
                self._after_lightning.append(record)
            return
        expected = next(self.legacy, None)
        what = self._differ(expected, record)
        if what is None:
            self.compared += 1
            self._recent_legacy.append(expected)
            self._recent_lightning.append(record)
            return
        self._diverge(what, expected, record)

    def _differ(self, expected: dict[str, Any] | None, record: dict[str, Any] | None) -> str | None:
        if expected is None:
            return f"lightning delivered {record['event']} after the legacy trace ended"
        if record is None:
            return f"legacy delivered {expected['event']} after the lightning trace ended"
        if expected["event"] != record["event"]:
            return f"event {expected['event']} (legacy) != {record['event']} (lightning)"
        found = first_mismatch(expected["args"], record["args"], self.tolerance)
        if found:
            return f"{record['event']}: {found}"
        found = first_mismatch(expected["counters"], record["counters"], self.tolerance, "trainer")
        return f"{record['event']}: {found}" if found else None

    def _diverge(self, what: str, expected, record) -> None:
        at = len(self._recent_legacy)
        legacy_ctx = list(self._recent_legacy) + ([expected] if expected is not None else [])
        legacy_ctx += list(itertools.islice(self.legacy, self.context))
        lightning_ctx = list(self._recent_lightning) + ([record] if record is not None else [])
        self.divergence = Divergence(self.compared, what, legacy_ctx, lightning_ctx, at)

    def finish(self) -> None:
        if self.divergence is not None:
            self.divergence.lightning.extend(self._after_lightning)
            return
        leftover = next(self.legacy, None)
        if leftover is not None:
            self._diverge(self._differ(leftover, None), leftover, None)
