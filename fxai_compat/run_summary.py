"""What a run leaves behind, said at its end; and the library messages a user cannot act on, silenced.

:func:`output_lines` names every output of a finished ``train``: each Lightning logger's folder, the W&B run
folders (native ``WandbLogger`` and legacy ``WandbCallback``: the run folder itself, which ``wandb sync`` uploads,
not its ``files/`` folder, which holds no metrics), the Optuna storage and study, and the callbacks' own folders.
:func:`quiet_noise` drops Lightning's litlogger tips and Optuna's "A new study created" line (the summary names
the study and its storage instead).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["quiet_noise", "output_lines", "wandb_run_folder", "dashboard_command", "redact"]

_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_OPTUNA_LOGGERS = ("optuna.storages._rdb.storage", "optuna.storages._in_memory", "optuna.storages.journal._storage",
                   "optuna.study.study")


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(start in message for start in self.starts)


def quiet_noise() -> None:
    """Silence Lightning's "Tip: ... litlogger" lines and Optuna's "A new study created" / "Using an existing study"
    (the end of the run names the study and its storage anyway; idempotent)."""
    for names, drop in ((_LIGHTNING_LOGGERS, _DropMessages("litlogger", "litmodels")),
                        (_OPTUNA_LOGGERS, _DropMessages("A new study created", "Using an existing study"))):
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _DropMessages) for f in logger.filters):
                logger.addFilter(drop)


def redact(url: str | None) -> str:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    import re

    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", url or "in memory")


def dashboard_command(storage: str | None) -> str | None:
    """The optuna-dashboard command that opens a storage (None for an in-memory study, which is gone at exit)."""
    if not storage:
        return None
    target = storage[len("journal://"):] if storage.startswith("journal://") else storage
    return f"optuna-dashboard {redact(target)}  (pip install optuna-dashboard)"


def wandb_run_folder(run: Any) -> Path | None:
    """The folder of a wandb run (``.../wandb/offline-run-<time>-<id>``), which ``wandb sync`` uploads."""
    files = getattr(run, "dir", None)
    if not files:
        return None
    folder = Path(files)
    return folder.parent if folder.name == "files" else folder


def _wandb_lines(label: str, run: Any) -> list[str]:
    folder = wandb_run_folder(run)
    if folder is None:
        return []
    offline = "offline" in folder.name or getattr(getattr(run, "settings", None), "mode", "") == "offline"
    sync = f"; upload it with: wandb sync {folder}" if offline else ""
    return [f"{label}: {folder}{sync}"]


def output_lines(*, loggers: list[Any] = (), callbacks: list[Any] = (), study: Any = None,
                 storage: str | None = None, checkpoint_dir: str | None = None, periodic: int | None = None) -> list[str]:
    """One line per output of a finished run."""
    lines = []
    if checkpoint_dir is not None:
        lines.append(f"checkpoints: {checkpoint_dir}" + (f" ({periodic} periodic)" if periodic is not None else ""))
    for logger in loggers:
        bases = {cls.__name__ for cls in type(logger).__mro__}  # subclasses too (create_wandb_logger's RLWandbLogger)
        kind = next((k for k in ("WandbLogger", "CSVLogger", "TensorBoardLogger") if k in bases), type(logger).__name__)
        if kind == "WandbLogger":
            lines += _wandb_lines("W&B run (native WandbLogger)", getattr(logger, "_experiment", None))
        elif kind == "CSVLogger":
            lines.append(f"CSV logs: {logger.log_dir}/metrics.csv")
        elif kind == "TensorBoardLogger":
            lines.append(f"TensorBoard logs: {logger.log_dir}; view them with: tensorboard --logdir {logger.log_dir}")
        elif getattr(logger, "log_dir", None):
            lines.append(f"{kind} logs: {logger.log_dir}")
    for cb in callbacks:
        run = getattr(cb, "run", None)
        if run is not None and getattr(run, "dir", None):
            lines += _wandb_lines(f"W&B run ({type(cb).__name__})", run)
            continue
        where = getattr(cb, "save_dir", None) or getattr(cb, "checkpoint_dir", None) or getattr(cb, "dirpath", None)
        if where:
            lines.append(f"{type(cb).__name__}: {where}")
    if study is not None:
        dash = dashboard_command(storage)
        lines.append(f"Optuna study {study.study_name!r} in {redact(storage)}" + (f"; open it with: {dash}" if dash else
                                                                                    " (not kept: give a storage)"))
    return lines
