"""Everything a run can be refused for, checked before anything is trained or written.

``train`` and ``tune`` call :func:`preflight` once the run file is loaded and before a logger, a
checkpoint, a study trial or a lock file exists: the ``trainer:`` section (against ``pl.Trainer``
itself), the environment (an unknown gymnasium id, an unreadable price CSV) and the checkpoint
directory (a file in its place, or a folder this process cannot write). Each failure is one
``ConfigError`` sentence, which the command line prints as one line with exit code 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from .checkpoints import is_url
from .config import ConfigError, TrainConfig

__all__ = ["preflight", "check_checkpoint_dir"]


def preflight(train: TrainConfig, trainer: Mapping[str, Any] | None, *, host: str = "lightning",
              source: str = "", directories: tuple[str, ...] = ()) -> None:
    """Refuse a run that would fail later: ``trainer`` options (Lightning host), the environment, and the
    checkpoint directory plus any other ``directories`` the run writes to."""
    from .envs import check_environment

    if host == "lightning":
        from .trainer_options import check_trainer_options

        check_trainer_options(dict(trainer or {}), train, source=source)
    check_environment(train)
    for directory in (train.checkpoint_dir, *directories):
        check_checkpoint_dir(directory)


def check_checkpoint_dir(directory: str | os.PathLike) -> None:
    """``directory`` must be a folder this process can create files in, or be creatable as one. Probed for real
    (a temporary file made and removed in the nearest existing folder): permission bits say nothing for root, and
    nothing about read-only mounts. Remote folders (``s3://``) are left to the filesystem."""
    directory = os.fspath(directory)
    if is_url(directory):
        return
    path = os.path.abspath(directory)
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        what = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ConfigError(f"checkpoint_dir {directory} {what}, not a folder; set checkpoint_dir to a folder "
                          f"(it is created if missing).")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fxai-write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if existing == path else f" (its nearest existing folder, {existing}, refuses new files)"
        raise ConfigError(f"checkpoint_dir {directory} is not writable{where}: {exc.strerror or exc}; choose a "
                          f"folder this user can write to.") from None
