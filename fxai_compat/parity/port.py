"""Port parity: a native port and its legacy counterpart, run side by side on one Lightning run, agree
on their registered observables cycle by cycle. It is shadow mode with every comparison kept."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .trace import Divergence, ParityResult

__all__ = ["check_port_parity", "shadow_port_check", "default_port_options", "result_from_history", "NO_OBSERVABLES"]

NO_OBSERVABLES = "no observables registered"


def default_port_options(name: str, workdir: Path) -> dict[str, Any]:
    """Options for a built-in pair that keep every file under ``workdir``."""
    defaults = {
        "metrics": {"window_size": 5},
        "checkpoint": {"save_dir": str(workdir / "best"), "save_freq": 2},
        "wandb": {"project": "parity", "mode": "offline", "dir": str(workdir / "wandb")},
        "evaluation": {},
        "continuous_training": {"checkpoint_dir": str(workdir / "versions")},
        "optuna": {"study_name": "parity", "storage": None},
    }
    return dict(defaults.get(name, {}))


def check_port_parity(name_or_pair: Any, config: TrainConfig | Mapping[str, Any], *,
                      options: Mapping[str, Any] | None = None, workdir: str | Path | None = None,
                      trainer_kwargs: Mapping[str, Any] | None = None) -> ParityResult:
    """Run the pair's native port with its legacy callback as a shadow control on one ``fit`` of ``config``
    and compare the registered observables after every cycle (per-observable tolerances).

    ``name_or_pair``: a registered name, or a ``PortPair``. ``options``: the callback's options (the
    legacy factory's); built-in pairs get defaults that write under ``workdir``.
    """
    from ..toggle import REGISTRY, PortPair

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    if isinstance(name_or_pair, PortPair):
        pair = name_or_pair
        registered = REGISTRY.get(pair.name)
        REGISTRY[pair.name] = pair
    else:
        if name_or_pair not in REGISTRY:
            raise KeyError(f"No port named {name_or_pair!r} is registered; known: {', '.join(REGISTRY)}.")
        pair, registered = REGISTRY[name_or_pair], REGISTRY[name_or_pair]
    scenario = pair.scenario_check() or shadow_port_check
    try:
        with tempfile.TemporaryDirectory(prefix="fxai-port-parity-") as tmp:
            root = Path(workdir) if workdir is not None else Path(tmp)
            opts = dict(options) if options is not None else default_port_options(pair.name, root / "callback")
            return scenario(pair, cfg, opts, root, dict(trainer_kwargs or {}))
    finally:
        if isinstance(name_or_pair, PortPair):  # a one-off pair must not stay registered
            if registered is None:
                REGISTRY.pop(pair.name, None)
            else:
                REGISTRY[pair.name] = registered


def shadow_port_check(pair: Any, cfg: TrainConfig, options: Mapping[str, Any], root: Path,
                      trainer_kwargs: Mapping[str, Any]) -> ParityResult:
    """The per-cycle check: one ``fit`` with the native port and its legacy control in shadow mode, every
    registered observable compared after every cycle."""
    from ..lightning_host import fit
    from ..toggle import build_callbacks

    built = build_callbacks({"callbacks": {pair.name: dict(options, impl="shadow")}}, run_dir=root, env={},
                            keep_history=True)
    run_cfg = cfg.replace(checkpoint_dir=str(root / "checkpoints"))
    fit(run_cfg, built.callbacks, **{"logger": built.loggers or False, **(trainer_kwargs or {})})
    for logger in built.loggers:  # a WandbLogger keeps its run open for the next one in this process
        getattr(getattr(logger, "experiment", None), "finish", lambda: None)()
    monitor = built.monitor
    counts = {obs.name: monitor.compared.get(f"{pair.name}.{obs.name}", 0) for obs in pair.observables}
    details = {}
    if monitor.first_divergence is not None:
        details[next(i for i, h in enumerate(monitor.history) if not h["ok"])] = monitor.first_divergence["detail"]
    return result_from_history(pair.name, monitor.history, counts, details)


def result_from_history(name: str, history: list[dict[str, Any]], counts: Mapping[str, int],
                        details: Mapping[int, str] | None = None) -> ParityResult:
    """A port's :class:`ParityResult` from its comparison records (``cycle``, ``observable``, ``legacy``,
    ``native``, ``ok``, optional ``detail``) and how many times each observable was compared: the first
    record that disagrees is the divergence, an observable compared zero times makes it unchecked."""
    divergence = None
    bad = next((i for i, h in enumerate(history) if not h["ok"]), None)
    if bad is not None:
        d = history[bad]
        detail = (details or {}).get(bad) or d.get("detail") or "values differ"
        context = history[max(0, bad - 3):bad + 1]
        divergence = Divergence(bad, f"cycle {d['cycle']}, {d['observable']}: {detail}",
                                [_row(h, "legacy") for h in context], [_row(h, "native") for h in context],
                                len(context) - 1, other="native")
    unchecked = [f"{obs} (compared 0 times)" for obs, n in counts.items() if n == 0] if counts else [NO_OBSERVABLES]
    result = ParityResult(name, divergence is None, {obs: (n, n) for obs, n in counts.items()},
                          sum(counts.values()), divergence, kind="port", unchecked=unchecked)
    result.history = list(history)
    return result


def _row(record: Mapping[str, Any], side: str) -> dict[str, Any]:
    return {"event": f"cycle {record['cycle']} {record['observable']}", "args": {"value": record[side]}}
