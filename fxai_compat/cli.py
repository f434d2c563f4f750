"""The ``fxai-compat`` command line: ``train`` a config under Lightning (default) or the legacy loop.

User errors (bad flags, files, values) exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointError
from .config import ConfigError, TrainConfig, load_yaml

__all__ = ["main", "load_run_config", "RunConfig"]

_SECTIONS = ("train", "trainer", "callbacks")


class RunConfig:
    """A run file: ``train`` (TrainConfig fields), ``trainer`` (pl.Trainer options), ``callbacks`` (one section each)."""

    def __init__(self, train: TrainConfig, trainer: dict[str, Any], callbacks: dict[str, Any], source: str):
        self.train, self.trainer, self.callbacks, self.source = train, trainer, callbacks, source


def _parse_set(items: list[str]) -> list[tuple[list[str], Any]]:
    import yaml

    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. --set n_envs=4 or --set callbacks.metrics.window_size=50), got {item!r}.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        path = key.strip().split(".")
        if path[0] not in _SECTIONS:
            path = ["train", *path]
        out.append((path, value))
    return out


def load_run_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    data: Any = load_yaml(path) if path else {}
    source = path or "defaults"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must hold a mapping with sections {', '.join(_SECTIONS)}; got {type(data).__name__}.")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"Unknown section(s) in {source}: {', '.join(map(str, unknown))}. "
                          f"Valid sections are: {', '.join(_SECTIONS)}.")
    sections = {name: dict(data.get(name) or {}) for name in _SECTIONS}
    for name in _SECTIONS:
        if not isinstance(data.get(name) or {}, Mapping):
            raise ConfigError(f"Section {name!r} of {source} must be a mapping.")
    for path_keys, value in _parse_set(list(overrides)):
        target = sections[path_keys[0]]
        for key in path_keys[1:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {'.'.join(path_keys)}: {key} is not a section.")
        if len(path_keys) < 2:
            raise ConfigError(f"--set {path_keys[0]}=... must name a key inside the section.")
        target[path_keys[-1]] = value
    train = TrainConfig.from_mapping(sections["train"], source=f"{source} [train]")
    return RunConfig(train, sections["trainer"], sections["callbacks"], source)


def _legacy_callbacks(run: RunConfig, run_dir: Path):
    """``--host legacy``: every entry as its legacy callback (``impl`` is ignored: this host has only legacy ones)."""
    from legacy_callbacks import create_callbacks

    from .toggle import REGISTRY, BuildContext

    ctx = BuildContext(run_dir, run_dir / "shadow")
    sections = {}
    for name, opts in run.callbacks.items():
        opts = {k: v for k, v in dict(opts or {}).items() if k != "impl"}
        pair = REGISTRY.get(name)
        if pair is not None and pair.prepare is not None and opts.get("enabled", True):
            enabled = opts.pop("enabled", True)
            opts = dict(pair.prepare(opts, ctx), enabled=enabled)
        sections[name] = opts
    try:
        return create_callbacks(sections), ctx.extras
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{run.source} [callbacks]: {exc}") from None


def _finish_trial(extras: dict[str, Any], state: str, value: float) -> None:
    study, trial = extras.get("optuna_study"), extras.get("optuna_trial")
    if study is None:
        return
    import optuna

    states = {"PRUNED": optuna.trial.TrialState.PRUNED, "FAIL": optuna.trial.TrialState.FAIL}
    if state in states:
        study.tell(trial, state=states[state])
    else:
        study.tell(trial, value)
    print(f"optuna: trial {trial.number} of study {study.study_name!r} {state.lower()}")


def _train_lightning(run: RunConfig, impl: list[str], shadow_strict: bool, run_dir: Path, extras: dict[str, Any],
                     *, trial=None):
    """Build the callbacks the config selects and run the Lightning host; returns (trainer, built).
    Objects made on the way (an Optuna study and trial) land in ``extras`` even if training fails."""
    from pytorch_lightning.loggers import CSVLogger

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
    loggers = options.pop("logger", None)
    if loggers is None or loggers is True:
        loggers = [CSVLogger(save_dir=str(run_dir), name="lightning_logs")]
    elif loggers is False:
        loggers = []
    loggers = list(loggers) + built.loggers
    for logger in loggers:
        logger.log_hyperparams({"train": run.train.to_dict(), "callback_impl": dict(built.impls)})
    if built.impls.get("continuous_training") == "native":
        from .callbacks.continuous_training import continue_training

        trainer = continue_training(run.train, built.callbacks, logger=loggers or False, **options)
    else:
        trainer = fit(run.train, built.callbacks, logger=loggers or False, **options)
    for callback in built.native.values():
        if callable(getattr(callback, "check_pruned", None)):
            callback.check_pruned()
    return trainer, built


def _cmd_train(args: argparse.Namespace) -> int:
    run = load_run_config(args.config, args.set)
    run_dir = Path(run.train.checkpoint_dir).parent
    extras: dict[str, Any] = {}
    callbacks: list[Any] = []
    try:
        if args.host == "legacy":
            from .legacy_host import LegacyTrainer

            callbacks, extras = _legacy_callbacks(run, run_dir)
            trainer = LegacyTrainer(run.train, callbacks)
            trainer.train()
            core, metrics = trainer.core, trainer.core.cycle_metrics(None)
            checkpoints = trainer.checkpoint_paths
        else:
            pl_trainer, built = _train_lightning(run, args.impl, args.shadow_strict, run_dir, extras)
            callbacks = list(built.legacy.values()) + list(built.native.values())
            module = pl_trainer.lightning_module
            core, metrics = module.core, module.cycle_metrics()
            checkpoints = sorted(str(p) for p in Path(run.train.checkpoint_dir).glob("cycle-*.ckpt"))
            if pl_trainer.logger is not None and getattr(pl_trainer.logger, "log_dir", None):
                print(f"lightning logs: {pl_trainer.logger.log_dir}")
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
    print(f"checkpoints: {run.train.checkpoint_dir} ({len(checkpoints)} periodic)")
    for cb in callbacks:
        where = (getattr(cb, "save_dir", None) or getattr(cb, "checkpoint_dir", None) or getattr(cb, "dirpath", None)
                 or getattr(getattr(cb, "run", None), "dir", None))
        if where:
            print(f"{type(cb).__name__}: {where}")
    return 0


_TUNED = {"lr": (1e-4, 3e-3, True), "ent_coef": (1e-4, 0.05, True), "clip": (0.1, 0.3, False),
          "gae_lambda": (0.9, 0.99, False)}


def open_study(storage: str | None, study: str, *, direction: str = "maximize"):
    """Create or load a study. ``storage``: ``sqlite:///file.db`` or another RDB URL (PostgreSQL/MySQL across
    machines), ``journal:///path/file.log`` (several processes on one machine), or None (in memory).
    RDB storages get heartbeats, and a trial whose worker died is retried (Optuna's RetryFailedTrialCallback)."""
    import optuna

    try:
        if storage is None:
            backend = None
        elif storage.startswith("journal://"):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            path = storage[len("journal://"):]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            backend = JournalStorage(JournalFileBackend(path))
        else:
            if storage.startswith("sqlite:///"):
                Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.RDBStorage(
                storage, heartbeat_interval=10, grace_period=30,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
                engine_kwargs={"connect_args": {"timeout": 10}} if storage.startswith("sqlite") else
                {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
        return optuna.create_study(study_name=study, storage=backend, direction=direction, load_if_exists=True,
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    except (ImportError, ValueError, OSError) as exc:
        raise ConfigError(f"Cannot open Optuna storage {_redact(storage)}: {_redact(str(exc)).splitlines()[0]}.") from None
    except Exception as exc:  # sqlalchemy's OperationalError and friends: unreachable or refused
        if type(exc).__module__.startswith(("sqlalchemy", "optuna")):
            raise ConfigError(f"Cannot open Optuna storage {_redact(storage)}: "
                              f"{_redact(str(exc)).splitlines()[0][:200]}.") from None
        raise


def _redact(text: str | None) -> str:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    import re

    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", text or "none")


def _cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    if args.n_trials <= 0:
        raise ConfigError(f"--n-trials must be a positive number of trials, got {args.n_trials}.")
    run = load_run_config(args.config, args.set)
    study = open_study(args.storage, args.study)
    base_dir = Path(run.train.checkpoint_dir).parent / "tune" / args.study

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_float(name, low, high, log=log) for name, (low, high, log) in _TUNED.items()}
        trial_dir = base_dir / f"trial-{trial.number:04d}"
        train = run.train.replace(**params, checkpoint_dir=str(trial_dir / "checkpoints"))
        trial_run = RunConfig(train, {**run.trainer, "enable_progress_bar": False}, run.callbacks, run.source)
        pl_trainer, _ = _train_lightning(trial_run, args.impl, False, trial_dir, {}, trial=trial)
        value = pl_trainer.lightning_module.cycle_metrics()["episode_reward_mean"]
        print(f"trial {trial.number}: episode_reward_mean {value:.3f} with {params}")
        return value

    # Stop when the study (all workers together) has n_trials finished trials: no worker overshoots.
    done = optuna.study.MaxTrialsCallback(args.n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED))
    finished = [t for t in study.trials if t.state.is_finished()]
    if len(finished) < args.n_trials:
        study.optimize(objective, n_trials=args.n_trials, callbacks=[done], catch=())
    finished = [t for t in study.trials if t.state.is_finished()]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    print(f"study {args.study!r}: {len(finished)} finished trials ({len(complete)} complete, {len(pruned)} pruned)")
    if complete:
        print(f"best: trial {study.best_trial.number}, episode_reward_mean {study.best_value:.3f}, {study.best_params}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxai-compat", description="FxAI legacy callbacks on PyTorch Lightning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train PPO from a run config",
                           description="Train PPO from a run config (sections: train, trainer, callbacks).")
    tune = sub.add_parser("tune", help="an Optuna study over PPO hyperparameters, with pruning",
                          description="Run Optuna trials (lr, ent_coef, clip, gae_lambda) of a run config; several "
                                      "processes may share one storage. Resumable: finished trials count.")
    for cmd in (train, tune):
        cmd.add_argument("--config", help="YAML run config (default: built-in defaults)")
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a value: n_envs=4 (train section) or callbacks.metrics.window_size=50")
        cmd.add_argument("--impl", action="append", default=[], metavar="NAME=IMPL",
                         help="choose legacy|native|shadow per callback (checkpoint=native, all=legacy); "
                              "beats the FXAI_CALLBACK_IMPL environment variable and the config")
    train.add_argument("--host", choices=("lightning", "legacy"), default="lightning",
                       help="run under Lightning (default) or the legacy FxAI loop (legacy callbacks only)")
    train.add_argument("--shadow-strict", action="store_true",
                       help="a shadow-mode mismatch between a legacy callback and its native port fails the run")
    train.set_defaults(func=_cmd_train)
    tune.add_argument("--storage", help="sqlite:///study.db, journal:///study.log or an RDB URL (default: in memory)")
    tune.add_argument("--study", required=True, help="study name (an existing study is continued)")
    tune.add_argument("--n-trials", type=int, required=True, help="finished trials the study should have in all")
    tune.set_defaults(func=_cmd_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as exc:
        print(f"fxai-compat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fxai-compat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
