"""The ``train`` command's work: checks up front (:mod:`fxai_compat.preflight`), the resume point
(:mod:`fxai_compat.resume_point`), the run lock, building callbacks, running either host, finishing W&B runs
and Optuna trials. Called by :mod:`fxai_compat.cli` (argument parsing) and :mod:`fxai_compat.tune` (one run per trial).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError
from .runfile import RunConfig, load_run_config

__all__ = ["train"]


def _legacy_callbacks(run: RunConfig, run_dir: Path):
    """``--host legacy``: every entry as its legacy callback (``impl`` is ignored: this host has only legacy ones)."""
    from legacy_callbacks import CALLBACK_CLASSES, create_callbacks

    from .port_discovery import resolve_section_ports
    from .toggle import REGISTRY, BuildContext

    ctx = BuildContext(run_dir, run_dir / "shadow")
    sections, own = {}, []
    for name, opts in resolve_section_ports(run.callbacks).items():
        opts = {k: v for k, v in dict(opts or {}).items() if k != "impl"}
        pair = REGISTRY.get(name)
        if pair is not None and pair.prepare is not None and opts.get("enabled", True):
            enabled = opts.pop("enabled", True)
            opts = dict(pair.prepare(opts, ctx), enabled=enabled)
        sections[name] = opts
        if name not in CALLBACK_CLASSES and pair is not None and opts.get("enabled", True) is not False:
            own.append(name)  # a port of one's own (entry point or module:attr): its legacy side
    try:
        built = []
        for name, opts in sections.items():  # in the section's order
            built += ([REGISTRY[name].legacy(**{k: v for k, v in opts.items() if k != "enabled"})] if name in own
                      else create_callbacks({name: opts}))
        return built, ctx.extras
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{run.source} [callbacks]: {exc}") from None


def _finish_trial(extras: dict[str, Any], state: str, value: float) -> None:
    study, trial = extras.get("optuna_study"), extras.get("optuna_trial")
    if study is None:
        return
    import optuna

    states = {"PRUNED": optuna.trial.TrialState.PRUNED, "FAIL": optuna.trial.TrialState.FAIL}
    if state in states:
        frozen = study.tell(trial, state=states[state])
    else:
        frozen = study.tell(trial, value, skip_if_finished=True)
    # The state Optuna recorded, not the one asked for: a NaN value (no episode ended in the last cycle) is
    # stored as FAIL, and printing "complete" for it was wrong.
    note = " (the last cycle's episode_reward_mean is NaN)" if value != value and state == "COMPLETE" else ""
    print(f"optuna: trial {trial.number} of study {study.study_name!r} {frozen.state.name.lower()}{note}")


def _train_lightning(run: RunConfig, impl: list[str], shadow_strict: bool, run_dir: Path, extras: dict[str, Any],
                     *, trial=None, ckpt_path: str | None = None, resume_explicit: bool = False):
    """Build the callbacks the config selects and run the Lightning host; returns (trainer, built).
    Objects made on the way (an Optuna study and trial) land in ``extras`` even if training fails."""
    from .lightning_host import fit
    from .toggle import build_callbacks

    callbacks_section = dict(run.callbacks)
    if trial is not None:
        if "optuna" not in callbacks_section:
            raise ConfigError(f"{run.source}: tuning needs an optuna entry in the callbacks section (it prunes trials).")
        callbacks_section["optuna"] = {**dict(callbacks_section["optuna"] or {}), "trial": trial}
        for key in ("study_name", "storage", "direction"):
            callbacks_section["optuna"].pop(key, None)
    built = build_callbacks({"callbacks": callbacks_section}, impl, run_dir=run_dir, shadow_strict=shadow_strict,
                            extras=extras)
    print(f"callback implementations: {built.describe() or 'none'}")
    options = {"enable_progress_bar": True, **run.trainer}
    from .loggers import build_loggers

    loggers = build_loggers(options.pop("logger", None), run_dir, f"{run.source} [trainer] logger") + built.loggers
    for logger in loggers:
        logger.log_hyperparams({"train": run.train.to_dict(), "callback_impl": dict(built.impls)})
    try:
        if built.impls.get("continuous_training") == "native":
            from .callbacks.continuous_training import continue_training

            planned = [name for name in ("max_epochs", "ckpt_path") if name in options]
            if resume_explicit:
                planned.append("ckpt_path (--resume-from)")
            if planned:  # continue_training's ValueError would be a traceback
                raise ConfigError(f"{run.source} [trainer]: {', '.join(planned)} cannot be set with a native "
                                  f"continuous_training entry: it plans them from the newest version (set train.cycles).")
            trainer = continue_training(run.train, built.callbacks, logger=loggers or False, **options)
        else:
            if ckpt_path:  # the point chosen up front (it may stand for the trainer section's ckpt_path: last)
                options["ckpt_path"] = ckpt_path
            trainer = fit(run.train, built.callbacks, logger=loggers or False, **options)
        for callback in built.native.values():
            if callable(getattr(callback, "check_pruned", None)):
                callback.check_pruned()
    finally:
        _finish_wandb_runs(built, loggers)
    return trainer, built


def _finish_wandb_runs(built, loggers=()) -> None:
    """Finish the W&B runs this run opened. A WandbLogger never finishes its run and the next WandbLogger of the
    process reuses a run in progress: without this, every tune trial after the first logged into the first
    trial's run. A legacy WandbCallback finishes its own run in on_training_end, which a pruned or failed
    fit never reaches. ``loggers``: the run's loggers (a ``trainer.logger: wandb`` too), ``built.loggers`` among them."""
    for logger in {id(lg): lg for lg in [*built.loggers, *loggers]}.values():
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and callable(getattr(experiment, "finish", None)):
            experiment.finish()
    for callback in built.legacy.values():
        run = getattr(callback, "run", None)
        if run is not None and callable(getattr(run, "finish", None)) and not getattr(run, "_is_finished", False):
            run.finish()


def train(args: argparse.Namespace) -> int:
    """The ``train`` command's work: load the run file, find the checkpoint to resume, run the chosen host, report."""
    from .preflight import preflight
    from .resume_point import choose_resume_point
    from .run_lock import RunLock

    run = load_run_config(args.config, args.set)
    # Everything that can be refused is refused here, before a log, a checkpoint or the lock file exists.
    preflight(run.train, run.trainer, host=args.host, source=run.source)
    resume_from = choose_resume_point(args.host, run.train, run.trainer, run.callbacks,
                                      resume_from=getattr(args, "resume_from", None), fresh=getattr(args, "fresh", False))
    with RunLock(run.train.checkpoint_dir) as lock:  # a second train on this checkpoint_dir is refused
        if lock.message:
            print(lock.message)
        return _run(args, run, resume_from)


def _run(args: argparse.Namespace, run: RunConfig, resume_from: str | None) -> int:
    run_dir = Path(run.train.checkpoint_dir).parent
    extras: dict[str, Any] = {}
    callbacks: list[Any] = []
    loggers: list[Any] = []
    try:
        if args.host == "legacy":
            from .legacy_host import LegacyTrainer
            from .toggle import parse_impl_overrides

            # An explicit request for a native port cannot be honoured by the legacy loop: say so, not ignore it.
            asked = {k: v for k, v in parse_impl_overrides(args.impl, source="--impl").items() if v != "legacy"}
            if asked:
                raise ConfigError(f"--host legacy runs legacy callbacks only; drop --impl "
                                  f"{', '.join(f'{k}={v}' for k, v in asked.items())} or use --host lightning.")
            callbacks, extras = _legacy_callbacks(run, run_dir)
            print(f"callback implementations: {', '.join(f'{n}=legacy (--host legacy)' for n in run.callbacks) or 'none'}")
            from .progress import RunProgress

            trainer = LegacyTrainer(run.train, callbacks,
                                    progress=RunProgress() if run.trainer.get("enable_progress_bar", True) else None)
            trainer.train(resume_from=resume_from)
            core, metrics = trainer.core, trainer.core.cycle_metrics(None)
            checkpoints = trainer.checkpoint_paths
        else:
            pl_trainer, built = _train_lightning(run, args.impl, args.shadow_strict, run_dir, extras,
                                                 ckpt_path=resume_from, resume_explicit=bool(args.resume_from))
            callbacks = list(built.legacy.values()) + list(built.native.values())
            module = pl_trainer.lightning_module
            core, metrics = module.core, module.cycle_metrics()
            checkpoints = sorted(str(p) for p in Path(run.train.checkpoint_dir).glob("cycle-*.ckpt"))
            loggers = list(pl_trainer.loggers)
            if built.monitor is not None:
                print(built.monitor.summary())
    except BaseException as exc:
        _finish_trial(extras, "PRUNED" if type(exc).__name__ == "TrialPruned" else "FAIL", float("nan"))
        if type(exc).__name__ == "TrialPruned":
            print(f"trial pruned: {exc}")
            return 0
        raise
    _finish_trial(extras, "COMPLETE", metrics.get("episode_reward_mean", float("nan")))
    print(f"host: {args.host}; trained {core.cycles_completed} cycles in all, {core.total_timesteps} env steps, "
          f"{core.num_episodes} episodes; last episode_reward_mean {metrics.get('episode_reward_mean', float('nan')):.3f}")
    from .run_summary import output_lines

    optuna_options = run.callbacks.get("optuna")
    storage = optuna_options.get("storage") if isinstance(optuna_options, Mapping) else None
    for line in output_lines(loggers=loggers, callbacks=callbacks, study=extras.get("optuna_study"), storage=storage,
                             checkpoint_dir=run.train.checkpoint_dir, periodic=len(checkpoints)):
        print(line)
    return 0
