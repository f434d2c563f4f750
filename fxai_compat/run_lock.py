"""One training run per checkpoint directory: a lock file holding the holder's pid.

Two ``train`` processes on one ``checkpoint_dir`` would both write ``cycle-*.ckpt`` and ``last.ckpt``
and resume from each other's files. The first takes ``<checkpoint_dir>/.fxai-run.lock``: an
exclusive ``fcntl.flock`` on the open file (released by the kernel when the process ends, however it
ends) with the holder's pid, host and start time written in it; a run that ends removes it. A second
process finds the lock held and is refused, naming the holder. A lock file left by a killed process is no
longer held (the kernel dropped it with the process): the next run takes it over and says whose it was.

Under DDP the processes Lightning starts for ranks > 0 run the same command again; they belong to the
run that holds the lock (``LOCAL_RANK``/``RANK`` set and non-zero) and do not take it. A checkpoint
directory on a remote filesystem (``s3://``, ``memory://``) is not locked (no shared kernel to hold it).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .config import ConfigError

__all__ = ["RunLock", "RunDirectoryLocked", "LOCK_NAME"]

LOCK_NAME = ".fxai-run.lock"


class RunDirectoryLocked(ConfigError):
    """Another live process holds the run directory."""


def _is_secondary_rank() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "RANK", "NODE_RANK"))


class RunLock:
    """``with RunLock(checkpoint_dir): ...`` holds the directory for the block; ``message`` says whether a stale
    lock was taken over. Re-entering the same process's lock object is not supported (one run, one lock)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_NAME)
        self.message: str | None = None
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def applies(self) -> bool:
        return "://" not in self.directory and not _is_secondary_rank()

    def acquire(self) -> "RunLock":
        import fcntl

        if not self.applies or self._fd is not None:
            return self
        missing, folder = [], Path(self.directory).absolute()
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self._created = missing  # removed again at release if still empty: a run refused later leaves nothing
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RunDirectoryLocked(
                    f"checkpoint_dir {self.directory} is in use by another training run ({_describe(holder)}); "
                    f"wait for it to finish, stop it, or give this run another checkpoint_dir.") from None
            except OSError:
                os.close(fd)  # a filesystem without flock (some network mounts): run unlocked rather than not at all
                return self
            # The holder removes the file as it ends: a lock taken on the removed file is no lock; open it again.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = _read(fd)
        if previous.get("pid") and previous.get("pid") != str(os.getpid()):
            self.message = (f"{self.directory}: took over the lock of {_describe(previous)}, which is no longer "
                            f"running (killed or crashed)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # removed while still held: a normal end leaves nothing behind
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict[str, str]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _describe(holder: dict[str, str]) -> str:
    if not holder.get("pid"):
        return "a process that has not written its pid yet"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    since = f", started {holder['started']}" if holder.get("started") else ""
    return f"pid {holder['pid']}{where}{since}"
