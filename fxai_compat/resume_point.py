"""Where a run continues from, found on disk whatever ``last.ckpt`` says, and the one line that says so.

``last.ckpt`` is a convenience, not the truth: Lightning's link step deletes the link and then
re-creates it, so a process killed in between leaves it missing (or, after a crash elsewhere, dangling)
next to a full set of good ``cycle-NNNN.ckpt`` files. :func:`find_resume_checkpoint` therefore looks at
every periodic checkpoint of the directory (and at the link's target), newest written first, and
returns the first one that reads back as a training checkpoint of the asking host. By time, not by
cycle number: after a ``--fresh`` start the files of the older run (higher cycle numbers) are still
there, and the run to continue is the one written last.

:func:`announce_resume` prints the line every continuing run prints: the file, the cycle and the env
steps, and a warning when a newer checkpoint of the directory holds more cycles (resuming from an
older point trains those cycles again and writes over their files).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointError, TrainingCheckpoint, is_url, read_training_checkpoint

__all__ = ["check_resume_compatible", "ResumePoint", "find_resume_checkpoint", "periodic_checkpoints", "announce_resume", "resume_line",
           "newer_checkpoint_than"]

_PERIODIC = re.compile(r"(cycle-\d+|last)\.ckpt")


@dataclass
class ResumePoint:
    """The checkpoint a run continues from, read and checked."""

    path: str
    checkpoint: TrainingCheckpoint
    #: Checkpoints of the directory that did not read back (path -> reason), newest first.
    skipped: dict[str, str]


def periodic_checkpoints(ckpt_dir: str | os.PathLike) -> list[Any]:
    """``cycle-NNNN.ckpt`` files and the target of a live ``last.ckpt`` link, newest written first (temp files of an
    interrupted write carry other names and are never listed). A URL folder is listed through fsspec (its
    ``last.ckpt`` is a copy, listed as a file of its own)."""
    if is_url(ckpt_dir):
        return _remote_checkpoints(os.fspath(ckpt_dir))
    directory = Path(ckpt_dir)
    if not directory.is_dir():
        return []
    found: dict[Path, float] = {}
    for entry in directory.iterdir():
        if not _PERIODIC.fullmatch(entry.name):
            continue
        try:
            real = entry.resolve(strict=True)
            if real.is_file():
                found[real] = max(found.get(real, 0), real.stat().st_mtime_ns)
        except (OSError, RuntimeError):  # a dangling link, a loop, a file removed meanwhile
            continue
    return sorted(found, key=lambda p: (found[p], p.name), reverse=True)


def _remote_checkpoints(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    try:
        listing = fs.ls(root, detail=True) if fs.isdir(root) else []
    except (OSError, ValueError):
        return []
    found = []
    for info in listing:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "file" and _PERIODIC.fullmatch(name):
            when = info.get("mtime") or info.get("created") or info.get("LastModified") or 0
            found.append((when.timestamp() if hasattr(when, "timestamp") else float(when), name))
    return [f"{url.rstrip('/')}/{name}" for _, name in sorted(found, reverse=True)]


def find_resume_checkpoint(ckpt_dir: str | os.PathLike, kind: str) -> ResumePoint | None:
    """The newest checkpoint of ``ckpt_dir`` that reads back as a ``kind`` (``"lightning"``/``"legacy"``) training
    checkpoint, or None when the directory holds none at all. Raises ``CheckpointError`` when it holds checkpoints
    but none this host can resume (all damaged, or the other host's run): training would write over them."""
    skipped: dict[str, str] = {}
    for path in periodic_checkpoints(ckpt_dir):
        try:
            ckpt = read_training_checkpoint(path)
        except CheckpointError as exc:
            skipped[str(path)] = str(exc)
            continue
        if ckpt.kind != kind:  # the newest run there is the other host's: neither resumed across hosts nor trained over
            raise CheckpointError(_other_host(path, ckpt.kind, fresh=True))
        return ResumePoint(str(path), ckpt, skipped)
    if skipped:
        first, reason = next(iter(skipped.items()))
        raise CheckpointError(f"{ckpt_dir} holds {len(skipped)} checkpoint(s) of an earlier run and none reads back "
                              f"(newest: {reason}); pass --fresh to start the run over, or --resume-from a good file.")
    return None


def _other_host(path: Any, kind: str, *, fresh: bool = False) -> str:
    """The one-line refusal of a checkpoint the other host wrote."""
    fresh_too = ", or pass --fresh to start over" if fresh else ""
    if kind == "lightning":
        return (f"{path} was written by Lightning; --host legacy resumes by itself only from the legacy loop's "
                f"checkpoints (resume this run with --host lightning or --resume-from {path}{fresh_too}).")
    return (f"{path} was written by the legacy loop; --host lightning resumes from a Lightning .ckpt (resume this "
            f"run with --host legacy{fresh_too}).")


def resume_line(path: Any, rl_state: dict[str, Any] | None) -> str:
    """``resumed from FILE at cycle C, N env steps`` (C: cycles completed, i.e. the next cycle's index)."""
    state = rl_state or {}
    cycle = state.get("cycles_completed", "?")
    steps = state.get("total_timesteps", "?")
    return f"resumed from {path} at cycle {cycle}, {steps} env steps"


def newer_checkpoint_than(path: Any, cycles_done: int | None) -> tuple[str, int] | None:
    """A checkpoint in ``path``'s folder written after it and holding more completed cycles: ``(file, cycles)``."""
    if is_url(path) or cycles_done is None:
        return None
    try:
        resumed = Path(path).resolve(strict=True)
        when = resumed.stat().st_mtime_ns
    except (OSError, RuntimeError):
        return None
    folder = resumed.parent
    candidates = []
    for entry in folder.iterdir() if folder.is_dir() else []:
        if not entry.name.endswith(".ckpt") or entry.name.startswith("."):
            continue
        try:
            real = entry.resolve(strict=True)
            if real != resumed and real.stat().st_mtime_ns > when:
                candidates.append((real.stat().st_mtime_ns, real))
        except (OSError, RuntimeError):
            continue
    for _, candidate in sorted(candidates, reverse=True):
        try:
            state = read_training_checkpoint(candidate).rl_state
        except CheckpointError:
            continue
        done = int(state.get("cycles_completed", -1))
        return (str(candidate), done) if done > cycles_done else None
    return None


def announce_resume(path: Any, rl_state: dict[str, Any] | None) -> None:
    """Print the resume line (stdout), and a warning (stderr) when a newer checkpoint of the folder is further along."""
    import sys

    print(resume_line(path, rl_state), flush=True)
    cycles = (rl_state or {}).get("cycles_completed")
    newer = newer_checkpoint_than(path, int(cycles) if cycles is not None else None)
    if newer is not None:
        print(f"warning: {path} is behind the newest checkpoint on disk, {newer[0]} (cycle {newer[1]}); cycles "
             f"{cycles} to {newer[1] - 1} are trained again and their checkpoint files written over", file=sys.stderr, flush=True)


def check_resume_compatible(ckpt: TrainingCheckpoint, config: Any) -> None:
    """Refuse, before anything is built, a checkpoint this config cannot continue: another environment or number
    of environments (their state is per environment), or a policy of another shape. Each would fail deep inside
    the restore, after logs exist."""
    from .ppo import PPOCore

    expected = {k: tuple(v.shape) for k, v in PPOCore(config).policy.state_dict().items()}
    held = {k: tuple(v.shape) for k, v in ckpt.model.items()}
    if held != expected:
        diff = sorted(set(held) ^ set(expected)) or [k for k in sorted(held) if held[k] != expected[k]]
        key = diff[0]
        raise CheckpointError(f"{ckpt.path} holds a policy of another shape than this config's ({key}: checkpoint "
                              f"{list(held.get(key, ())) or 'none'}, config {list(expected.get(key, ())) or 'none'}); "
                              f"resume with the config that wrote it (env, obs_window, hidden_sizes).")
    state = ckpt.rl_state or {}
    held_env, held_n = state.get("env_id"), state.get("n_envs")
    if (held_env is not None and held_env != config.env) or (held_n is not None and held_n != config.n_envs):
        raise CheckpointError(f"{ckpt.path} was written with env={held_env!r} and n_envs={held_n}, this config has "
                              f"env={config.env!r} and n_envs={config.n_envs}; resume with the config that wrote it.")


def choose_resume_point(host: str, train: Any, trainer_options: dict[str, Any], callbacks: dict[str, Any], *,
                        resume_from: str | None = None, fresh: bool = False) -> str | None:
    """The checkpoint ``train`` continues from, checked before anything is built or written (``None``: start).

    ``resume_from``: that file. Otherwise, unless ``fresh``: the newest valid checkpoint of ``checkpoint_dir``
    (:func:`find_resume_checkpoint`), whatever ``last.ckpt`` says. With a continuous-training entry that callback
    resumes by itself; its newest version is still checked here. Every checkpoint that would be resumed must suit
    the config (:func:`check_resume_compatible`): a mismatch is a one-line refusal, not a failure inside ``fit``."""
    from collections.abc import Mapping

    from .config import ConfigError

    kind = "lightning" if host == "lightning" else "legacy"
    if resume_from:
        if fresh:
            raise ConfigError("--fresh and --resume-from exclude each other: give one.")
        ckpt = read_training_checkpoint(resume_from)
        if host == "lightning" and ckpt.kind != "lightning":
            raise CheckpointError(_other_host(resume_from, ckpt.kind))
        check_resume_compatible(ckpt, train)
        return str(resume_from)
    if fresh:
        return None
    explicit = trainer_options.get("ckpt_path") if host == "lightning" else None
    if explicit is not None and explicit != "last":
        if isinstance(explicit, str) and os.path.isfile(explicit):
            check_resume_compatible(read_training_checkpoint(explicit), train)
        return None  # the trainer section names it; fit resumes from it
    # ckpt_path: last is Lightning's "newest last*.ckpt, else start from scratch with a warning": with the link
    # missing that is the silent restart this function exists to prevent, so it means the point found here.
    continuous = callbacks.get("continuous_training")
    if "continuous_training" in callbacks and (not isinstance(continuous, Mapping)
                                               or continuous.get("enabled", True) is not False):
        newest = _newest_version(continuous if isinstance(continuous, Mapping) else {}, train)
        if newest is not None:
            check_resume_compatible(read_training_checkpoint(newest), train)
        return None  # it resumes from its newest complete version by itself (under either host)
    point = find_resume_checkpoint(train.checkpoint_dir, kind)
    if point is None:
        return None
    import sys

    for path, reason in point.skipped.items():
        print(f"warning: skipped {path}, which does not read back ({reason})", file=sys.stderr)
    ckpt = point.checkpoint
    planned = trainer_options.get("max_epochs", train.cycles) if host == "lightning" else train.cycles
    if planned is not None and ckpt.run_cycles_done >= planned:
        print(f"{point.path}: the run already did {ckpt.run_cycles_done} of {planned} cycles; nothing to train "
              f"(--fresh starts over)")
    check_resume_compatible(ckpt, train)
    return point.path


def _newest_version(options: Any, train: Any) -> str | None:
    """The newest continuous-training version (``last.ckpt`` or ``version_N.ckpt``) of its folder, local only."""
    folder = options.get("checkpoint_dir") or os.path.join(os.fspath(train.checkpoint_dir), "versions")
    if is_url(folder) or not os.path.isdir(folder):
        return None
    found = []
    for name in os.listdir(folder):
        if re.fullmatch(r"(version_\d+|last)\.ckpt", name):
            try:
                found.append((os.stat(os.path.join(folder, name)).st_mtime_ns, os.path.join(folder, name)))
            except OSError:
                continue
    return max(found)[1] if found else None
