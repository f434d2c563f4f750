"""The ``fxai-compat`` command line: ``train`` a config under Lightning (default) or the legacy loop.

User errors (bad flags, files, values) exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
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
        except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
            raise ConfigError(f"--set {key.strip()}: {str(exc).split(';')[0]}; no setting takes a value that "
                              f"large.") from None
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
    for name in _SECTIONS:  # checked before copying: dict() of a list would fail with a traceback
        if not isinstance(data.get(name) or {}, Mapping):
            raise ConfigError(f"Section {name!r} of {source} must be a mapping, got {type(data.get(name)).__name__}.")
    sections = {name: dict(data.get(name) or {}) for name in _SECTIONS}
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
        _finish_wandb_runs(built)
    return trainer, built


def _finish_wandb_runs(built) -> None:
    """Finish the W&B runs this run opened. A WandbLogger never finishes its run and the next WandbLogger of the
    process reuses a run in progress: without this, every tune trial after the first logged into the first
    trial's run. A legacy WandbCallback finishes its own run in on_training_end, which a pruned or failed
    fit never reaches."""
    for logger in built.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and callable(getattr(experiment, "finish", None)):
            experiment.finish()
    for callback in built.legacy.values():
        run = getattr(callback, "run", None)
        if run is not None and callable(getattr(run, "finish", None)) and not getattr(run, "_is_finished", False):
            run.finish()


def _cmd_train(args: argparse.Namespace) -> int:
    from .preflight import preflight
    from .resume import choose_resume_point
    from .run_lock import RunLock

    run = load_run_config(args.config, args.set)
    # Everything that can be refused is refused here, before a log, a checkpoint or the lock file exists.
    preflight(run.train, run.trainer, host=args.host, source=run.source)
    resume_from = choose_resume_point(args.host, run.train, run.trainer, run.callbacks,
                                      resume_from=getattr(args, "resume_from", None), fresh=getattr(args, "fresh", False))
    with RunLock(run.train.checkpoint_dir) as lock:
        if lock.message:
            print(lock.message)
        return _run_train(args, run, resume_from)


def _run_train(args: argparse.Namespace, run: RunConfig, resume_from: str | None) -> int:
    run_dir = Path(run.train.checkpoint_dir).parent
    extras: dict[str, Any] = {}
    callbacks: list[Any] = []
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
            trainer = LegacyTrainer(run.train, callbacks)
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


#: Seconds between two heartbeats of a running trial on an RDB storage, and without one before the trial is stale
#: (failed, then retried once). ``tune --heartbeat-interval/--heartbeat-grace`` change them.
HEARTBEAT_INTERVAL, HEARTBEAT_GRACE = 10, 30


def open_study(storage: str | None, study: str, *, direction: str = "maximize", heartbeat: bool = True,
               heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = HEARTBEAT_GRACE):
    """Create or load a study. ``storage``: ``sqlite:///file.db`` or another RDB URL (PostgreSQL/MySQL across
    machines), ``journal:///path/file.log`` (several processes on one machine), or None (in memory).
    RDB storages get heartbeats, and a trial whose worker died is retried (Optuna's stale-trial retry);
    ``heartbeat=False`` for a trial driven by ask/tell (``train``), which Optuna warns heartbeats are not for."""
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
            backend = _rdb_storage(storage, heartbeat=heartbeat, heartbeat_interval=heartbeat_interval,
                                   grace_period=grace_period)
        return optuna.create_study(study_name=study, storage=backend, direction=direction, load_if_exists=True,
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    except (ImportError, ValueError, OSError) as exc:
        raise ConfigError(f"Cannot open Optuna storage {_redact(storage)}: {_first_line(exc)}.") from None
    except Exception as exc:  # sqlalchemy's OperationalError and friends: unreachable or refused
        if type(exc).__module__.startswith(("sqlalchemy", "optuna")):
            raise ConfigError(f"Cannot open Optuna storage {_redact(storage)}: {_first_line(exc)[:200]}.") from None
        raise


def _rdb_storage(url: str, attempts: int = 5, heartbeat: bool = True, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = HEARTBEAT_GRACE):
    """An RDBStorage with heartbeats: a RUNNING trial without one for ``grace_period`` seconds is failed by the
    next worker that counts the trials, and retried once (a WAITING copy with the same parameters, which the next
    ask runs). Workers started together on a new SQLite file race to create its tables (one of two got
    "(sqlite3.OperationalError) table studies already exists" and exited): such a race, or a locked database, is
    retried after a short pause."""
    import time
    import warnings

    import optuna

    # Optuna 4.9 renamed the stale-trial retry (the old names warn FutureWarning on every start); heartbeats are
    # "experimental" (ExperimentalWarning): neither is news to the user of a command line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            retry = {"heartbeat_stale_trial_callback": _RetryUnlabelled(
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))}
        else:  # pragma: no cover - optuna < 4.9
            retry = {"failed_trial_callback": _RetryUnlabelled(optuna.storages.RetryFailedTrialCallback(max_retry=1))}
    beats = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period, **retry} if heartbeat else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, **beats,
                    engine_kwargs={"connect_args": {"timeout": 10}} if url.startswith("sqlite") else
                    {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
        except Exception as exc:
            message = str(exc)
            racing = url.startswith("sqlite") and any(
                text in message for text in ("already exists", "database is locked", "UNIQUE constraint failed"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class _RetryUnlabelled:
    """Optuna's stale-trial retry, minus the dead worker's label: the WAITING copy inherits the failed trial's
    user attrs, and another worker counting the trials between the ask that picks the copy up and its relabelling
    would take it for the dead worker's trial and fail it again."""

    def __init__(self, retry):
        self.retry = retry

    def __call__(self, study, trial) -> None:
        import copy

        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != _WORKER_ATTR}
        self.retry(study, trial)


def _first_line(exc: BaseException) -> str:
    # str(exc) may be empty (splitlines()[0] was an IndexError traceback) or hold a password.
    lines = _redact(str(exc)).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _redact(text: str | None) -> str:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    import re

    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", text or "none")


#: Callback options that name a directory: each tune trial gets its own (``<trial dir>/<callback>``), or the trials
#: would overwrite each other's best model and resume from each other's continuous-training versions.
_TRIAL_DIR_OPTIONS = ("save_dir", "checkpoint_dir")
_WORKER_ATTR = "fxai_worker"
_SURPLUS_ATTR = "fxai_surplus"


def _worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_alive(trial) -> bool:
    """False only for a RUNNING trial whose worker was on this host and is gone (killed: it can never finish)."""
    host, _, pid = str(trial.user_attrs.get(_WORKER_ATTR, "")).rpartition(":")
    if not pid.isdigit() or host != _worker_id().rpartition(":")[0]:
        return True  # not known to be dead (another machine, or not yet labelled)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def _census(study, before: int | None = None) -> tuple[int, int]:
    """(finished, in progress) trials of the study, all workers together; ``before``: only trials numbered lower.
    Finished = COMPLETE or PRUNED (a FAIL does not count towards --n-trials); in progress = RUNNING in a live
    worker, and (``before`` only) WAITING. A WAITING trial (a retry, or an enqueued one) is work the next ask picks
    up, so the loop's own count leaves it out: counted there, a lone worker stopped with a retry nobody ran.
    A RUNNING trial of a dead worker on this host is marked FAIL at once; on an RDB storage also one whose
    heartbeat is stale (any host), and either is retried by the storage's stale-trial callback."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    states = optuna.trial.TrialState
    if before is None and is_heartbeat_enabled(study._storage):
        import warnings

        with warnings.catch_warnings():  # fail_stale_trials is experimental; optimize() silences it the same way
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
    finished = running = 0
    for t in study.get_trials(deepcopy=False):
        if before is not None and t.number >= before:
            continue
        if t.state in (states.COMPLETE, states.PRUNED):
            finished += 1
        elif t.state == states.WAITING:
            if before is not None:
                running += 1
        elif t.state == states.RUNNING:
            if _worker_alive(t):
                running += 1
            else:
                _fail_dead_workers_trial(study, t)
    return finished, running


def _fail_dead_workers_trial(study, trial) -> None:
    """Mark FAIL the trial of a worker known dead, then, as Optuna's ``fail_stale_trials`` does for a stale
    heartbeat, run the storage's stale-trial callback (the retry): the outcome of a crash does not depend on
    whether the next worker starts before or after the grace period."""
    import copy
    import warnings

    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            return
    except Exception:  # another worker got there first
        return
    if is_heartbeat_enabled(storage) and storage.get_heartbeat_stale_trial_callback() is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage.get_heartbeat_stale_trial_callback()(study, copy.deepcopy(storage.get_trial(trial._trial_id)))


def _run_trial(study, objective, n_trials: int) -> None:
    """Ask one trial, run it unless it is surplus, tell the outcome. On an RDB storage its heartbeats start right
    after the ask: a worker killed at any later moment leaves a trial that goes stale (Optuna's optimize() has
    the same window between its ask and its first heartbeat)."""
    import contextlib
    import warnings

    import optuna

    states = optuna.trial.TrialState
    with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with Study.optimize": we beat here
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

        beating = (get_heartbeat_thread(trial._trial_id, study._storage) if is_heartbeat_enabled(study._storage)
                   else contextlib.nullcontext())
    except ImportError:  # pragma: no cover - a future optuna: no heartbeats, dead workers' trials stay RUNNING
        beating = contextlib.nullcontext()
    with beating:
        trial.set_user_attr(_WORKER_ATTR, _worker_id())
        finished, running = _census(study, before=trial.number)
        if finished + running >= n_trials:
            trial.set_user_attr(_SURPLUS_ATTR, True)
            study.tell(trial, state=states.FAIL)
            print(f"trial {trial.number}: not run: another worker asked for the study's last trial at the same moment")
            return
        try:
            value = objective(trial)
        except optuna.TrialPruned as exc:
            study.tell(trial, state=states.PRUNED)
            print(f"trial {trial.number}: pruned ({exc})")
            return
        except BaseException:
            study.tell(trial, state=states.FAIL)
            raise
        study.tell(trial, value)


def _heartbeat_options(args: argparse.Namespace) -> dict[str, int]:
    """``--heartbeat-interval``/``--heartbeat-grace``, checked: they exist for RDB storages only."""
    interval, grace = args.heartbeat_interval, args.heartbeat_grace
    given = [flag for flag, value in (("--heartbeat-interval", interval), ("--heartbeat-grace", grace))
             if value is not None]
    if given and (args.storage is None or args.storage.startswith("journal://")):
        where = "an in-memory study" if args.storage is None else "the journal storage"
        raise ConfigError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to an RDB storage "
                          f"(sqlite:///file.db, postgresql://...); {where} has no heartbeats.")
    interval = HEARTBEAT_INTERVAL if interval is None else interval
    grace = HEARTBEAT_GRACE if grace is None else grace
    if interval <= 0:
        raise ConfigError(f"--heartbeat-interval must be a positive number of seconds, got {interval}.")
    if grace <= interval:
        raise ConfigError(f"--heartbeat-grace ({grace} s) must be longer than --heartbeat-interval ({interval} s): "
                          f"a live worker's trial would be failed between two of its heartbeats.")
    return {"heartbeat_interval": interval, "grace_period": grace}


def _cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    from .toggle import validate_callbacks

    if args.n_trials <= 0:
        raise ConfigError(f"--n-trials must be a positive number of trials, got {args.n_trials}.")
    beats = _heartbeat_options(args)
    run = load_run_config(args.config, args.set)
    # Checked before the study is opened: a config error must not leave a FAIL trial in a shared study.
    if "optuna" not in run.callbacks:
        raise ConfigError(f"{run.source}: tuning needs an optuna entry in the callbacks section (it prunes trials).")
    validate_callbacks(run.callbacks, args.impl)
    base_dir = Path(run.train.checkpoint_dir).parent / "tune" / args.study
    from .preflight import preflight

    preflight(run.train, {**run.trainer, "enable_progress_bar": False}, source=run.source, directories=(str(base_dir),))
    study = open_study(args.storage, args.study, **beats)

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_float(name, low, high, log=log) for name, (low, high, log) in _TUNED.items()}
        trial_dir = base_dir / f"trial-{trial.number:04d}"
        train = run.train.replace(**params, checkpoint_dir=str(trial_dir / "checkpoints"))
        callbacks = {name: ({**opts, **{key: str(trial_dir / name) for key in _TRIAL_DIR_OPTIONS if opts.get(key)}}
                            if isinstance(opts, dict) else opts) for name, opts in run.callbacks.items()}
        trial_run = RunConfig(train, {**run.trainer, "enable_progress_bar": False}, callbacks, run.source)
        pl_trainer, _ = _train_lightning(trial_run, args.impl, False, trial_dir, {}, trial=trial)
        value = pl_trainer.lightning_module.cycle_metrics()["episode_reward_mean"]
        if value != value:  # optuna would record a NaN objective as a silent FAIL, and the workers would loop on
            raise ConfigError(f"trial {trial.number}: episode_reward_mean of the last cycle is NaN (no episode ended "
                              f"in it); collect more steps per cycle (n_steps) or shorten episode_length.")
        print(f"trial {trial.number}: episode_reward_mean {value:.3f} with {params}")
        return value

    # One trial at a time until the study (all workers together) has n_trials finished or in progress. The old
    # loop (optimize + MaxTrialsCallback) counted finished trials only, after each trial: a worker whose trial
    # ended while another worker's last trial was still running started one more, and the study overshot
    # --n-trials. Here: a census before each ask, and one by trial number after it (two workers asking at the
    # same moment: the later-numbered trial is recorded as FAIL with user attr fxai_surplus and not run).
    # ask/tell rather than optimize, so that a surplus trial is one line, not a logged traceback.
    while True:
        finished, running = _census(study)
        if finished + running >= args.n_trials:
            break
        _run_trial(study, objective, args.n_trials)
    trials = study.trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    print(f"study {args.study!r}: {len(complete) + len(pruned)} finished trials ({len(complete)} complete, "
          f"{len(pruned)} pruned)" + (f"; {running} running in other workers" if running else ""))
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
                                      "processes may share one storage. Resumable: finished trials count. The trial "
                                      "of a killed worker is marked FAIL rather than left RUNNING and, on an RDB "
                                      "storage, retried once with the same parameters.")
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
    train.add_argument("--resume-from", metavar="PATH",
                       help="continue from this training checkpoint (loaded weights-only; refused if unsafe or damaged)")
    train.add_argument("--fresh", action="store_true",
                       help="start over: ignore the interrupted run in checkpoint_dir (by default train resumes from "
                            "its last.ckpt under Lightning, from its newest cycle-NNNN.ckpt under --host legacy)")
    train.set_defaults(func=_cmd_train)
    tune.add_argument("--storage", help="sqlite:///study.db, journal:///study.log or an RDB URL (default: in memory)")
    tune.add_argument("--study", required=True, help="study name (an existing study is continued)")
    tune.add_argument("--n-trials", type=int, required=True, help="finished trials the study should have in all")
    tune.add_argument("--heartbeat-interval", type=int, metavar="SECONDS",
                      help=f"RDB storages: a running trial records a heartbeat every SECONDS (default "
                           f"{HEARTBEAT_INTERVAL})")
    tune.add_argument("--heartbeat-grace", type=int, metavar="SECONDS",
                      help=f"RDB storages: a running trial without a heartbeat for SECONDS (default {HEARTBEAT_GRACE}; "
                           f"longer than the interval) is failed and retried once; a dead worker's trial on the same "
                           f"host is failed and retried at once")
    tune.set_defaults(func=_cmd_tune)
    from .parity.report import add_parity_parser

    add_parity_parser(sub)  # fxai-compat parity: trace and port parity table, JSON and plots
    from .audit import add_parser as add_audit_parser

    add_audit_parser(sub)  # fxai-compat audit: find legacy callbacks, say what migrating each one takes
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as exc:
        # One line, as promised: a wrapped library message may span several.
        print(f"fxai-compat: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fxai-compat: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
