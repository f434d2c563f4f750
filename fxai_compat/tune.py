"""The ``fxai-compat tune`` loop: one trial at a time until the study (all workers together) has ``--n-trials``
finished or running, counting trials across workers (census), failing and retrying dead workers' trials.

Opening the study (storages, heartbeats, the stale-trial retry) is :mod:`fxai_compat.studies`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import ConfigError
from .preflight import preflight
from .runfile import RunConfig, load_run_config
from .runner import _train_lightning
from .studies import _WORKER_ATTR, HEARTBEAT_GRACE, HEARTBEAT_INTERVAL, open_study

__all__ = ["open_study", "tune", "HEARTBEAT_INTERVAL", "HEARTBEAT_GRACE"]

#: Callback options that name a directory: each tune trial gets its own (``<trial dir>/<callback>``), or the trials
#: would overwrite each other's best model and resume from each other's continuous-training versions.
_TRIAL_DIR_OPTIONS = ("save_dir", "checkpoint_dir")
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


def tune(args: argparse.Namespace) -> int:
    """The ``tune`` command's work: trials of the run file until the study has ``--n-trials`` finished or running."""
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
    # The trainer section, the environment and the trial folders too: each would otherwise fail the first trial.
    preflight(run.train, {**run.trainer, "enable_progress_bar": False}, source=run.source, directories=(str(base_dir),))
    study = open_study(args.storage, args.study, **beats)

    from .tune_space import suggest, trial_callbacks, trial_wandb_group

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, run.tune_space)  # the run file's tune section (or the default space)
        trial_dir = base_dir / f"trial-{trial.number:04d}"
        train = run.train.replace(**params, checkpoint_dir=str(trial_dir / "checkpoints"))
        callbacks = trial_callbacks(run.callbacks, trial_dir, args.study, trial.number, _TRIAL_DIR_OPTIONS)
        trial_run = RunConfig(train, {**run.trainer, "enable_progress_bar": False}, callbacks, run.source)
        with trial_wandb_group(args.study, enabled="wandb" in callbacks):
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
    from .run_summary import dashboard_command, redact

    dash = dashboard_command(args.storage)
    print(f"storage: {redact(args.storage)}" + (f"; open the study with: {dash}" if dash else
                                                 " (the study is gone when this process ends; pass --storage to keep it)"))
    print(f"trial folders: {base_dir} (each trial's checkpoints, callback folders and W&B run, grouped as "
          f"{args.study!r})")
    return 0
