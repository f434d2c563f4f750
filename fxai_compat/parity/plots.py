"""Plots of a parity report: per observable, legacy and native overlaid, and beside it the residual
(native - legacy) with the observable's tolerance band; per traced callback, the events each host delivered."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["observable_series", "residual_series", "plot_observable", "plot_trace_events", "write_plots"]


def _tolerance(callback: str, observable: str) -> float:
    """The registered observable's tolerance (the comparator's default for scenario observables)."""
    from ..toggle import REGISTRY
    from .compare import DEFAULT_TOLERANCE

    pair = REGISTRY.get(callback)
    found = next((o for o in (pair.observables if pair else ()) if o.name == observable), None)
    return found.tolerance if found is not None else DEFAULT_TOLERANCE


_LEGACY_STYLE = {"color": "#1f77b4", "linestyle": "-", "linewidth": 2.6, "marker": "o", "markersize": 4}
_NATIVE_STYLE = {"color": "#ff7f0e", "linestyle": "--", "linewidth": 1.6, "marker": "x", "markersize": 6}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else math.nan
    return math.nan if value is None else None


def _flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric scalars of a (nested) dict, one per dotted key; a scalar is ``value``."""
    if isinstance(value, Mapping):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    number = _number(value)
    return {} if number is None else {prefix or "value": number}


def _list_series(items: list[Any]) -> dict[str, list[tuple[float, float]]]:
    """The points of a list-valued observable: records with a ``cycle`` (evaluation history: each numeric
    field per cycle), ``[step, value]`` pairs (Optuna reports: value per step), or plain numbers."""
    series: dict[str, list[tuple[float, float]]] = {}
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            x = _number(item.get("cycle", item.get("step", i)))
            points = {k: v for k, v in _flatten(item).items() if k not in ("cycle", "step")}
        elif isinstance(item, (list, tuple)) and len(item) == 2 and _number(item[0]) is not None:
            x, points = _number(item[0]), _flatten(item[1])
        else:
            x, points = float(i), _flatten(item)
        for key, y in points.items():
            series.setdefault(key, []).append((x if x is not None else float(i), y))
    return series


def observable_series(history: Sequence[Mapping[str, Any]], side: str) -> tuple[dict[str, list], str]:
    """``(series, x label)`` of one side (``legacy``/``native``) of one observable's per-cycle comparisons.

    A scalar or dict observable gives one point per cycle (one series per numeric key); a list observable
    (a history the callback accumulates) is plotted from its last value, one point per record."""
    if not history:
        return {}, "cycle"
    if all(isinstance(h[side], list) for h in history):
        last = history[-1][side]
        first = next((item for item in last if isinstance(item, (Mapping, list, tuple))), None)
        label = "cycle" if isinstance(first, Mapping) and "cycle" in first else \
            "step" if isinstance(first, (list, tuple)) else "index"
        return _list_series(last), label
    series: dict[str, list[tuple[float, float]]] = {}
    for h in history:
        for key, y in _flatten(h[side]).items():
            series.setdefault(key, []).append((float(h["cycle"]), y))
    return series, "cycle"


def _ordered(keys: Sequence[str]) -> list[str]:
    return sorted(keys, key=lambda k: (0 if "reward" in k else 1 if k == "value" else 2, k))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def residual_series(legacy: Mapping[str, list], native: Mapping[str, list]) -> dict[str, list[tuple[float, float]]]:
    """Per series, ``(x, native - legacy)`` at each point both sides have (NaN on both sides: 0; on one: NaN)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for key in dict.fromkeys([*legacy, *native]):
        points = []
        for (x, a), (_, b) in zip(legacy.get(key, []), native.get(key, [])):
            if math.isnan(a) and math.isnan(b):
                points.append((x, 0.0))
            else:
                points.append((x, b - a))  # NaN when only one side is NaN
        out[key] = points
    return out


def plot_observable(path: Path, callback: str, observable: str, history: Sequence[Mapping[str, Any]],
                    tolerance: float = 1e-6) -> Path:
    """One PNG per observable, a row per numeric series: on the left legacy (solid) and native (dashed) overlaid,
    the first disagreeing cycle marked; on the right the residual native - legacy on a symmetric-log axis with
    the tolerance band shaded, points outside it in red, so a 1e-7 drift and a 1e-2 drift look different."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    legacy, xlabel = observable_series(history, "legacy")
    native, _ = observable_series(history, "native")
    residuals = residual_series(legacy, native)
    keys = _ordered(list(dict.fromkeys([*legacy, *native]))) or ["value"]
    bad = next((h["cycle"] for h in history if not h.get("ok", True)), None)
    verdict = (f"FIRST DIVERGENCE at cycle {bad}" if bad is not None
               else f"agree at all {len(history)} comparisons" if history else "never compared")
    fig = Figure(figsize=(13, 1.4 + 2.3 * len(keys)), layout="constrained")
    grid = fig.subplots(len(keys), 2, sharex=True, squeeze=False, gridspec_kw={"width_ratios": [3, 2]})
    for (ax, rax), key in zip(grid, keys):
        for side, points, style in (("legacy", legacy.get(key, []), _LEGACY_STYLE),
                                    ("native", native.get(key, []), _NATIVE_STYLE)):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, label=side, **style)
        if not any(math.isfinite(p[1]) for p in legacy.get(key, []) + native.get(key, [])):
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="gray")
        if bad is not None:
            ax.axvline(bad, color="red", linewidth=1, alpha=0.7)
        ax.set_ylabel(observable if key == "value" else key, fontsize=9)
        ax.grid(True, alpha=0.3)
        _plot_residual(rax, residuals.get(key, []), tolerance)
    grid[0, 0].legend(loc="best", fontsize=8)
    grid[0, 1].set_title(f"residual native - legacy (band: tolerance {tolerance:g})", fontsize=9)
    for ax in grid[-1]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
    fig.suptitle(f"port parity: {callback}.{observable} (legacy solid, native dashed): {verdict}", fontsize=10,
                 color="red" if bad is not None else "black")
    fig.savefig(path, dpi=90)
    return path


def _plot_residual(ax: Any, points: Sequence[tuple[float, float]], tolerance: float) -> None:
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    ax.axhspan(-tolerance, tolerance, color="#2ca02c", alpha=0.25, linewidth=0)
    ax.axhline(0.0, color="gray", linewidth=0.8)
    finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    inside = [(x, y) for x, y in finite if abs(y) <= tolerance]
    outside = [(x, y) for x, y in finite if abs(y) > tolerance]
    if finite:
        ax.plot([x for x, _ in finite], [y for _, y in finite], color="#555555", linewidth=1)
    if inside:
        ax.plot(*zip(*inside), linestyle="none", marker="o", markersize=4, color="#2ca02c")
    if outside:
        ax.plot(*zip(*outside), linestyle="none", marker="X", markersize=7, color="red")
    worst = max((abs(y) for _, y in finite), default=0.0)
    # Linear within a tenth of the tolerance, logarithmic beyond: 1e-7 stays inside the band, 1e-2 far above it.
    ax.set_yscale("symlog", linthresh=tolerance / 10)
    limit = max(worst, tolerance) * 10
    ax.set_ylim(-limit, limit)
    one_side = len(points) - len(finite)
    note = f"max |residual| {worst:.1g}" + (" OUTSIDE the band" if worst > tolerance else " within tolerance") + \
        (f"; {one_side} point(s) NaN on one side only" if one_side else "")
    ax.text(0.01, 0.97, note, transform=ax.transAxes, ha="left", va="top", fontsize=8,
            color="red" if worst > tolerance or one_side else "#1a6e1a")
    ax.grid(True, alpha=0.3)


def plot_trace_events(path: Path, callback: str, counts: Mapping[str, Sequence[int]], ok: bool) -> Path:
    """Grouped bars: how many times each event was delivered under the legacy host and under Lightning."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    events = list(counts)
    legacy = [counts[e][0] for e in events]
    lightning = [counts[e][1] for e in events]
    fig = Figure(figsize=(max(6.0, 0.9 * len(events) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    xs = list(range(len(events)))
    bars_a = ax.bar([x - 0.2 for x in xs], legacy, width=0.4, label="legacy host", color="#1f77b4")
    bars_b = ax.bar([x + 0.2 for x in xs], lightning, width=0.4, label="Lightning + adapter", color="#ff7f0e",
                    hatch="//", edgecolor="white")
    for bars in (bars_a, bars_b):
        ax.bar_label(bars, fontsize=7, padding=1)
    if events and max(legacy + lightning) > 50:
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(xs, [e.removeprefix("on_") for e in events], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("events delivered")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    differ = [e for e in events if counts[e][0] != counts[e][1]]
    verdict = "trace parity ok" if ok else "trace parity FAILED" + (f"\ncounts differ: {', '.join(differ)}"
                                                                      if differ else " (same counts, other order "
                                                                                     "or arguments)")
    ax.set_title(f"{callback}: events per host: {verdict}", fontsize=10, color="black" if ok else "red", wrap=True)
    fig.savefig(path, dpi=90)
    return path


def write_plots(report: Any, out: str | Path) -> list[Path]:
    """``port-<callback>-<observable>.png`` for every compared observable and ``trace-<callback>-events.png``
    for every traced callback."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in report.rows:
        if row.trace is not None and row.trace.counts:
            written.append(plot_trace_events(out / f"trace-{_safe(row.name)}-events.png", row.name,
                                             row.trace.counts, row.trace.ok))
        history = list(getattr(row.port, "history", None) or []) if row.port is not None else []
        for observable in row.observables:
            records = [h for h in history if h["observable"] == observable]
            if records:
                written.append(plot_observable(out / f"port-{_safe(row.name)}-{_safe(observable)}.png", row.name,
                                               observable, records, tolerance=_tolerance(row.name, observable)))
    return written
