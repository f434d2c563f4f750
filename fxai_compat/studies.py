"""Opening Optuna studies: in memory, on a journal file or an RDB storage (SQLite, PostgreSQL, MySQL), with
heartbeats and the stale-trial retry on RDB storages; a storage that cannot be opened is a one-line ``ConfigError``.

Used by ``fxai-compat tune`` (:mod:`fxai_compat.tune`) and by an ``optuna`` callbacks entry naming a study
(:mod:`fxai_compat.toggle`).
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

__all__ = ["open_study", "HEARTBEAT_INTERVAL", "HEARTBEAT_GRACE"]

#: Seconds between two heartbeats of a running trial on an RDB storage, and without one before the trial is stale
#: (failed, then retried once). ``tune --heartbeat-interval/--heartbeat-grace`` change them.
HEARTBEAT_INTERVAL, HEARTBEAT_GRACE = 10, 30
#: User attr of a trial: ``host:pid`` of the worker running it (the retry's copy drops it).
_WORKER_ATTR = "fxai_worker"


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
