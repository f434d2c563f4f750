"""Reporting for ``fxai-compat audit``: the report objects (per event, class, file, and the whole audit), their
text and JSON renderings, and the event-mapping tables that ``migration_guide.md`` holds (generated, kept in sync).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..events import CHECKPOINT_IO_SOURCE, EVENT_MAP, LIGHTNING_SOURCE, RL_SOURCE, EventRoute

SCHEMA_VERSION = 1
READY, NEEDS_ATTENTION, CANNOT_ADAPT = "ready", "needs attention", "cannot adapt"


# -- the event map, for people ---------------------------------------------------------------------

def describe_source(route: EventRoute, *, markdown: bool = False) -> str:
    """Where an event comes from: ``RL event episode_end``, ``Lightning on_train_epoch_end``, ..."""
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)
    if route.kind == RL_SOURCE:
        return f"RL event {code(route.source)}"
    if route.kind == LIGHTNING_SOURCE:
        return f"Lightning {code(route.source)}"
    if route.kind == CHECKPOINT_IO_SOURCE:
        return f"{code('NotifyingCheckpointIO')}, after the file is written"
    return f"{route.kind} {code(route.source)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_event_map_markdown() -> str:
    """The guide's event-mapping table, generated from ``EVENT_MAP`` and ``legacy_callbacks.EVENT_ARGS``."""
    from legacy_callbacks.base import EVENT_ARGS

    lines = ["| legacy event | offered arguments | delivered by | when | original guide (3.1) |",
             "|---|---|---|---|---|"]
    for route in EVENT_MAP:
        offered = ", ".join(f"`{name}`" for name in EVENT_ARGS[route.event])
        departs = " (departs)" if route.departure else ""
        lines.append(f"| `{route.event}` | {offered} | {describe_source(route, markdown=True)} | "
                     f"{_cell(route.condition)} | `{route.seed_hook}`{departs} |")
    return "\n".join(lines)


def render_departures_markdown() -> str:
    """One item per row of ``EVENT_MAP`` that differs from the original guide, with its reason."""
    lines = []
    kept = []
    for route in EVENT_MAP:
        if not route.departure:
            kept.append(route)
            continue
        where = describe_source(route, markdown=True)
        why = _cell(route.departure)
        why = why[0].upper() + why[1:]
        if route.source == route.seed_hook:
            lines.append(f"- **`{route.event}`**: the same hook as the guide ({where}). Difference: {why}.")
        else:
            lines.append(f"- **`{route.event}`**: the guide says `{route.seed_hook}`; fxai-compat uses {where}. "
                         f"Why: {why}.")
    if kept:
        lines.append("- As in the guide: " + ", ".join(
            f"`{route.event}` ({describe_source(route, markdown=True)})" for route in kept) + ".")
    return "\n".join(lines)


_GENERATED = {"event-map": render_event_map_markdown, "departures": render_departures_markdown}


def generated_block(text: str, name: str) -> str | None:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (stripped), or None."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def sync_guide(path: str | os.PathLike = "migration_guide.md") -> bool:
    """Rewrite the generated blocks of the guide from ``EVENT_MAP``; True if the file changed."""
    path = Path(path)
    text = original = path.read_text(encoding="utf-8")
    for name, render in _GENERATED.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            after = rest.split(end, 1)[1]
            text = f"{before}{start}\n{render()}\n{end}{after}"
    if text != original:
        path.write_text(text, encoding="utf-8")
    return text != original


# -- reports ---------------------------------------------------------------------------------------

@dataclass
class EventReport:
    event: str
    defined_in: str
    line: int | None
    source_kind: str
    source: str
    maps_to: str
    signature: str | None = None
    receives: list[str] = field(default_factory=list)
    wants_all: bool = False
    error: str | None = None


@dataclass
class ClassReport:
    name: str
    qualname: str
    module: str | None
    file: str
    line: int | None
    kind: str
    analysis: str
    bases: list[str]
    events: list[EventReport] = field(default_factory=list)
    signature_problems: list[str] = field(default_factory=list)
    trainer_uses: list[dict[str, Any]] = field(default_factory=list)
    outside_surface: list[str] = field(default_factory=list)
    port: dict[str, Any] | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)
    selected_by: list[dict[str, Any]] = field(default_factory=list)
    legacy_selected: bool | None = None
    verdict: str = READY
    reasons: list[str] = field(default_factory=list)
    verdict_text: str = READY
    notes: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.module}.{self.qualname}" if self.module else self.qualname


@dataclass
class FileReport:
    path: str
    module: str | None
    imported: bool
    error: str | None = None
    error_line: int | None = None
    classes: int = 0


@dataclass
class AuditReport:
    target: str
    kind: str
    configs: list[str]
    files: list[FileReport]
    classes: list[ClassReport]
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.verdict == CANNOT_ADAPT for c in self.classes) else 0

    def summary(self) -> dict[str, int]:
        return {"files": len(self.files), "import_errors": sum(1 for f in self.files if f.error),
                "classes": len(self.classes),
                "ready": sum(1 for c in self.classes if c.verdict == READY),
                "needs_attention": sum(1 for c in self.classes if c.verdict == NEEDS_ATTENTION),
                "cannot_adapt": sum(1 for c in self.classes if c.verdict == CANNOT_ADAPT)}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "target": self.target, "kind": self.kind, "configs": list(self.configs),
                "files": [asdict(f) for f in self.files], "classes": [asdict(c) for c in self.classes],
                "warnings": list(self.warnings), "summary": self.summary(), "exit_code": self.exit_code}


# -- output --------------------------------------------------------------------------------------------

def _impl_lines(report: ClassReport, configs: list[str]) -> list[str]:
    if not configs:
        return ["(no --config given)"]
    lines = []
    for entry in report.selected_by:
        state = "" if entry["enabled"] else ", enabled: false"
        lines.append(f"{entry['impl']} ({entry['source']}{state}) in {entry['config']} [callbacks.{entry['entry']}]")
    if not lines:
        why = "" if report.ports else " (no registered port: a run file cannot name it)"
        lines.append(f"not selected by {', '.join(configs)}{why}")
    return lines


def render_text(report: AuditReport) -> str:
    out = [f"fxai-compat audit of {report.target} ({report.kind}, {len(report.files)} file(s))"]
    errors = [f for f in report.files if f.error]
    if errors:
        out.append("")
        out.append("files that did not import (their classes were checked statically):")
        for f in errors:
            where = f", line {f.error_line}" if f.error_line else ""
            out.append(f"  {f.path}{where}: {f.error}")
    for c in report.classes:
        out.append("")
        kind = "subclass of BaseCallback" if c.kind == "subclass" else "duck-typed"
        analysis = "" if c.analysis == "imported" else ", static analysis only"
        out.append(f"{c.full_name}  ({c.file}:{c.line or '?'}, {kind}{analysis})")
        label = "events"
        if not c.events:
            out.append(f"  {label:<10}none")
        for e in c.events:
            inherited = "" if e.defined_in == c.full_name else f"  [from {e.defined_in}]"
            bad = "  [cannot be bound]" if e.error else ""
            out.append(f"  {label:<10}{e.event}{e.signature or ''} -> {e.maps_to}{inherited}{bad}")
            label = ""
        for problem in c.signature_problems:
            out.append(f"  {'signature':<10}{problem}")
        uses = sorted({u["attr"] for u in c.trainer_uses})
        if uses:
            shown = ", ".join(a if a not in c.outside_surface else f"{a} (OUTSIDE THE SURFACE)" for a in uses)
            out.append(f"  {'trainer':<10}{shown}")
        else:
            out.append(f"  {'trainer':<10}not used")
        if c.ports:
            for p in c.ports:
                native = p["native"] or "no native port yet (impl: legacy only)"
                out.append(f"  {'port':<10}{p['name']} -> {native}")
        else:
            out.append(f"  {'port':<10}none registered")
        for i, line in enumerate(_impl_lines(c, report.configs)):
            out.append(f"  {'impl' if i == 0 else '':<10}{line}")
        for note in c.notes:
            out.append(f"  {'note':<10}{note}")
        out.append(f"  {'verdict':<10}{c.verdict_text}")
    for warning in report.warnings:
        out.append("")
        out.append(f"warning: {warning}")
    s = report.summary()
    out.append("")
    out.append(f"{s['classes']} legacy callback class(es) in {s['files']} file(s): {s['ready']} ready, "
               f"{s['needs_attention']} need(s) attention, {s['cannot_adapt']} cannot be adapted"
               + (f"; {s['import_errors']} file(s) did not import" if s["import_errors"] else "") + ".")
    return "\n".join(out)


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)
