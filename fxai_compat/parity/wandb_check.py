"""Port parity of W&B: the legacy ``WandbCallback`` (on the legacy loop) and the native port (``RLWandbLogger`` +
``RLWandbCallback`` on Lightning) each write an offline run of the same config; both runs are read back from
their files and compared as a dashboard would see them.

Observables (each compared once per cycle, or once per run):

* ``metric_names``: every name the legacy run logged is logged by the native run, and the native run logs
  nothing else but the documented additions (``charts/*``, ``videos/*``); a renamed metric fails here, by name;
* ``cycle_metrics``: per cycle, the legacy row of metrics (names, ``_step``, values to 1e-6) in the native run;
* ``episodes``: per cycle, the ``episode/reward``/``episode/length`` rows with their ``_step``;
* ``config`` and ``summary``: the run config and the final summary (W&B's own keys and the additions left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .compare import DEFAULT_TOLERANCE, first_mismatch, normalize
from .trace import ParityResult
from .wandb_files import INTERNAL_KEYS, OfflineRun, read_offline_run

__all__ = ["check_wandb_port", "compare_runs", "OBSERVABLES"]

OBSERVABLES = ("metric_names", "cycle_metrics", "episodes", "config", "summary")
_VOLATILE = ("_runtime", "_timestamp")


def check_wandb_port(pair: Any, config: TrainConfig, options: Mapping[str, Any], workdir: Path,
                     trainer_kwargs: Mapping[str, Any]) -> ParityResult:
    """Run both sides offline under ``workdir`` and compare their runs (see the module docstring)."""
    from ..legacy_host import LegacyTrainer
    from ..lightning_host import fit

    workdir = Path(workdir)
    opts = {k: v for k, v in dict(options).items() if k not in ("impl", "enabled")}
    legacy_opts = {k: v for k, v in opts.items() if k != "metric_names"}
    legacy_opts.update(mode="offline", dir=str(workdir / "legacy"))
    LegacyTrainer(config.replace(checkpoint_dir=str(workdir / "legacy" / "checkpoints")),
                  [pair.legacy(**legacy_opts)]).train()

    native = pair.native_factory()(**dict(opts, mode="offline", dir=str(workdir / "native")))
    callback, logger = native if isinstance(native, tuple) else (native, None)
    kwargs = {k: v for k, v in dict(trainer_kwargs).items() if k != "logger"}
    try:
        fit(config.replace(checkpoint_dir=str(workdir / "native" / "checkpoints")), [callback],
            logger=logger if logger is not None else False, **kwargs)
    finally:
        if logger is not None:
            logger.experiment.finish()
    from ..callbacks.wandb import ADDED_METRICS

    return compare_runs(pair.name, read_offline_run(workdir / "legacy"), read_offline_run(workdir / "native"),
                        added=ADDED_METRICS)


def _segments(history: list[dict[str, Any]], added: tuple[str, ...]) -> list[tuple[list[dict], dict | None]]:
    """The rows per cycle: (episode rows, the cycle's metrics row); a row with ``cycle`` ends a cycle."""
    out, episodes = [], []
    for row in history:
        row = {k: v for k, v in row.items() if k not in _VOLATILE and not k.startswith(added)}
        if "cycle" in row:
            out.append((episodes, row))
            episodes = []
        elif row.keys() - set(INTERNAL_KEYS):
            episodes.append(row)
    if episodes:
        out.append((episodes, None))
    return out


def compare_runs(name: str, legacy: OfflineRun, native: OfflineRun, *, added: tuple[str, ...] = (),
                 tolerance: float = DEFAULT_TOLERANCE) -> ParityResult:
    """The :class:`ParityResult` of two offline runs (legacy first), one record per comparison."""
    from .port import result_from_history

    history: list[dict[str, Any]] = []
    counts = dict.fromkeys(OBSERVABLES, 0)

    def compare(cycle: int, observable: str, a: Any, b: Any) -> None:
        a, b = normalize(a), normalize(b)
        detail = first_mismatch(a, b, tolerance)
        counts[observable] += 1
        history.append({"cycle": cycle, "observable": observable, "legacy": a, "native": b, "ok": detail is None,
                        **({"detail": detail} if detail else {})})

    legacy_names = legacy.metric_names()
    native_names = [n for n in native.metric_names() if not n.startswith(added)]
    missing, extra = sorted(set(legacy_names) - set(native_names)), sorted(set(native_names) - set(legacy_names))
    history.append({"cycle": -1, "observable": "metric_names", "legacy": legacy_names, "native": native_names,
                    "ok": not missing and not extra,
                    **({"detail": f"logged by legacy only: {missing}; by native only: {extra}"}
                       if missing or extra else {})})
    counts["metric_names"] += 1
    a, b = _segments(legacy.history, added), _segments(native.history, added)
    for i in range(max(len(a), len(b))):
        (episodes_a, row_a), (episodes_b, row_b) = (a[i] if i < len(a) else ([], None)), \
            (b[i] if i < len(b) else ([], None))
        cycle = int((row_a or row_b or {}).get("cycle", i))
        compare(cycle, "episodes", episodes_a, episodes_b)
        compare(cycle, "cycle_metrics", row_a, row_b)
    summary_a = {k: v for k, v in legacy.summary.items() if not k.startswith(added)}
    summary_b = {k: v for k, v in native.summary.items() if not k.startswith(added)}
    last = int(history[-1]["cycle"]) if len(history) > 1 else 0
    compare(last, "config", legacy.config, native.config)
    compare(last, "summary", summary_a, summary_b)
    return result_from_history(name, history, counts)
