"""Port parity of Optuna: the per-cycle ``reports`` in shadow mode, plus a run that is pruned.

A single trial of a fresh study is never pruned (the pruner needs finished trials to compare with), so the
shadow check alone never reaches the pruning path. Here each side also runs against its own in-memory study
that already holds two finished trials far better than any run (a ``MedianPruner``, as ``fxai-compat tune``
uses, with one warm-up step): the legacy ``OptunaCallback`` on the legacy loop, the native
``OptunaPruningCallback`` on Lightning. Both must be pruned, at the same step, after the same reports
(observables ``pruned_at`` and ``prune_reports``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .compare import first_mismatch, normalize
from .trace import ParityResult

__all__ = ["check_optuna_port", "pruned_run"]

_STUDY_KEYS = ("study_name", "storage", "direction", "trial")


def _seeded_trial(direction: str, steps: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    best = 1e9 if direction == "maximize" else -1e9
    for _ in range(2):
        trial = study.ask()
        for step in range(steps):
            trial.report(best, step)
        study.tell(trial, best)
    return study.ask()


def pruned_run(side: str, pair: Any, config: TrainConfig, options: Mapping[str, Any], workdir: Path,
               trainer_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One side's run against a study that prunes it: ``{"pruned_at": step or None, "reports": [[step, value]]}``."""
    import optuna

    from ..legacy_host import LegacyTrainer
    from ..lightning_host import fit

    trial = _seeded_trial(options.get("direction") or "maximize", config.cycles)
    opts = {k: v for k, v in options.items() if k not in _STUDY_KEYS and k not in ("impl", "enabled")}
    cfg = config.replace(checkpoint_dir=str(Path(workdir) / side / "checkpoints"))
    pruned_at = None
    if side == "legacy":
        callback = pair.legacy(trial=trial, **opts)
        try:
            LegacyTrainer(cfg, [callback]).train()
        except optuna.TrialPruned:
            pruned_at = callback.reports[-1][0]
    else:
        native_opts = {k: v for k, v in opts.items() if k in (pair.native_options or ("monitor",))}
        callback = pair.native_factory()(trial=trial, **native_opts)
        try:
            fit(cfg, [callback], **{"logger": False, **dict(trainer_kwargs)})
        except optuna.TrialPruned:
            pruned_at = callback.reports[-1][0]
    return {"pruned_at": pruned_at, "reports": [list(r) for r in callback.reports]}


def check_optuna_port(pair: Any, config: TrainConfig, options: Mapping[str, Any], workdir: Path,
                      trainer_kwargs: Mapping[str, Any]) -> ParityResult:
    """Shadow-mode ``reports`` per cycle, then the pruned runs compared (see the module docstring)."""
    from .port import result_from_history, shadow_port_check

    shadow = shadow_port_check(pair, config, options, Path(workdir) / "shadow", trainer_kwargs)
    legacy, native = (pruned_run(side, pair, config, options, workdir, trainer_kwargs) for side in ("legacy", "native"))
    history = list(getattr(shadow, "history", []))
    counts = {name: n for name, (n, _) in shadow.counts.items()}
    at = legacy["pruned_at"] if legacy["pruned_at"] is not None else -1
    for name, key in (("pruned_at", "pruned_at"), ("prune_reports", "reports")):
        a, b = normalize(legacy[key]), normalize(native[key])
        detail = first_mismatch(a, b)
        if name == "pruned_at" and detail is None and a is None:
            detail = "neither run was pruned: the pruning path was not reached"
        history.append({"cycle": at, "observable": name, "legacy": a, "native": b, "ok": detail is None,
                        **({"detail": detail} if detail else {})})
        counts[name] = 1
    return result_from_history(pair.name, history, counts)
