"""Port parity: a native port and its legacy counterpart, run side by side on one Lightning run, agree
on their registered observables cycle by cycle. It is shadow mode with every comparison kept."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .trace import Divergence, ParityResult

__all__ = ["check_port_parity", "default_port_options", "NO_OBSERVABLES"]

NO_OBSERVABLES = "no observables registered"


def default_port_options(name: str, workdir: Path) -> dict[str, Any]:
    """Options for a built-in pair that keep every file under ``workdir``."""
    defaults = {
        "metrics": {"window_size": 5},
        "checkpoint": {"save_dir": str(workdir / "best"), "save_freq": 2},
        "wandb": {"project": "parity", "mode": "disabled"},
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
    from ..lightning_host import fit
    from ..toggle import REGISTRY, PortPair, build_callbacks

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    if isinstance(name_or_pair, PortPair):
        pair = name_or_pair
        registered = REGISTRY.get(pair.name)
        REGISTRY[pair.name] = pair
    else:
        if name_or_pair not in REGISTRY:
            raise KeyError(f"No port named {name_or_pair!r} is registered; known: {', '.join(REGISTRY)}.")
        pair, registered = REGISTRY[name_or_pair], REGISTRY[name_or_pair]
    try:
        with tempfile.TemporaryDirectory(prefix="fxai-port-parity-") as tmp:
            root = Path(workdir) if workdir is not None else Path(tmp)
            opts = dict(options) if options is not None else default_port_options(pair.name, root / "callback")
            built = build_callbacks({"callbacks": {pair.name: dict(opts, impl="shadow")}}, run_dir=root, env={},
                                    keep_history=True)
            run_cfg = cfg.replace(checkpoint_dir=str(root / "checkpoints"))
            fit(run_cfg, built.callbacks, **{"logger": built.loggers or False, **(trainer_kwargs or {})})
            for logger in built.loggers:  # a WandbLogger keeps its run open for the next one in this process
                getattr(getattr(logger, "experiment", None), "finish", lambda: None)()
            monitor = built.monitor
    finally:
        if isinstance(name_or_pair, PortPair):  # a one-off pair must not stay registered
            if registered is None:
                REGISTRY.pop(pair.name, None)
            else:
                REGISTRY[pair.name] = registered
    counts = {obs.name: (monitor.compared.get(f"{pair.name}.{obs.name}", 0),) * 2 for obs in pair.observables}
    divergence = None
    if monitor.first_divergence is not None:
        d = monitor.first_divergence
        index = next(i for i, h in enumerate(monitor.history) if not h["ok"])
        context = monitor.history[max(0, index - 3):index + 1]
        divergence = Divergence(index, f"cycle {d['cycle']}, {d['observable']}: {d['detail']}",
                                [_row(h, "legacy") for h in context], [_row(h, "native") for h in context],
                                len(context) - 1, other="native")
    unchecked = [f"{name} (compared 0 times)" for name, (n, _) in counts.items() if n == 0]
    if not pair.observables:
        unchecked = [NO_OBSERVABLES]
    result = ParityResult(pair.name, divergence is None, counts, sum(monitor.compared.values()), divergence,
                          kind="port", unchecked=unchecked)
    result.history = monitor.history
    return result


def _row(record: Mapping[str, Any], side: str) -> dict[str, Any]:
    return {"event": f"cycle {record['cycle']} {record['observable']}", "args": {"value": record[side]}}
