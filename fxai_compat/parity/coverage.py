"""Which rare paths a port check reached, read from its comparison records: how often the best model improved,
how many evaluations ran, whether a run was pruned, how many sessions resumed. A parity run that never reaches
a path proves nothing about it; the report prints these beside the comparison counts.

>>> reached([{"observable": "best_cycle", "legacy": c} for c in (None, 1.0, 1.0, 3.0)])
{'best improvements': 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["reached", "describe"]


def reached(history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of the rare paths a check's records show (only those it has observables for)."""
    by: dict[str, list[Any]] = {}
    for record in history:
        by.setdefault(record["observable"], []).append(record.get("legacy"))
    out: dict[str, int] = {}
    if "best_cycle" in by and "history" not in by:  # the checkpoint pair (evaluation's best is its own)
        values, changes, previous = by["best_cycle"], 0, None
        for value in values:
            if value is not None and value != previous:
                changes += 1
            previous = value
        out["best improvements"] = changes
    if "history" in by and isinstance(by["history"][-1], list):
        out["evaluations"] = len(by["history"][-1])
    if "pruned_at" in by:
        out["prunes"] = sum(value is not None for value in by["pruned_at"])
    if "resumed_from" in by:
        out["resumes"] = sum(value is not None for value in by["resumed_from"])
        killed = {str((r.get("info") or {}).get("interrupted") or "") for r in history}
        out["sessions killed by SIGKILL"] = sum(k.startswith("SIGKILL") for k in killed)
    if "cycle_metrics" in by:
        out["W&B rows read back"] = sum(value is not None for value in by["cycle_metrics"]) + sum(
            len(v or []) for v in by.get("episodes", []))
    return out


def describe(counts: Mapping[str, int]) -> str:
    """``best improvements 3, evaluations 3`` (``-`` when nothing rare applies)."""
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "-"
