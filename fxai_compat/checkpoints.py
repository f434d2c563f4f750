"""Training checkpoints both hosts can read: atomic writes, safe loads, clear refusals.

A *training checkpoint* holds the policy, the optimizer, and the core's RL state (counters,
environment and RNG state). ``LegacyTrainer`` writes its own layout; Lightning writes its ``.ckpt``
layout with the RL state under ``fxai_rl_state``. :func:`read_training_checkpoint` reads either,
always with ``torch.load(weights_only=True)``: arbitrary pickles are refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "TrainingCheckpoint", "read_training_checkpoint", "write_atomic", "is_url",
           "join_location", "parent_location", "LEGACY_FORMAT", "RL_STATE_KEY", "RUN_INFO_KEY", "POLICY_PREFIX"]

LEGACY_FORMAT = "fxai-legacy-checkpoint"
RL_STATE_KEY = "fxai_rl_state"
#: Lightning checkpoints: the run's target (``max_epochs``) and whether a callback stopped it.
RUN_INFO_KEY = "fxai_run"
#: The policy is the ``policy`` attribute of the Lightning module, so its keys carry this prefix there.
POLICY_PREFIX = "policy."


class CheckpointError(ValueError):
    """A file given as a training checkpoint is missing, damaged or something else."""


@dataclass
class TrainingCheckpoint:
    path: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    rl_state: dict[str, Any]
    callbacks: dict[str, Any] = field(default_factory=dict)
    run_cycles_done: int = 0
    #: ``"legacy"`` (written by ``LegacyTrainer``) or ``"lightning"`` (a Lightning ``.ckpt``).
    kind: str = "lightning"
    #: The cycles the writing run was to train in all (``None``: not recorded, e.g. an older checkpoint).
    target_cycles: int | None = None
    #: A callback stopped the writing run (early stopping, pruning): it ended as planned.
    stopped: bool = False
    #: The writing run's periodic checkpoint cadence (``checkpoint_every``), if known.
    checkpoint_every: int | None = None
    #: Said by the checkpoint itself (continuous training's version info): the run had ended as planned.
    finished: bool | None = None

    @property
    def interrupted(self) -> bool:
        """The writing run had not finished when this file was its newest: fewer cycles than its target, no
        callback stopped it, and a later periodic checkpoint was due before its end (a file written after the
        last due checkpoint cannot tell a finished run from a killed one, and counts as finished). Loading it
        continues that run to its target (``TrainConfig.cycles``); a finished run's file starts a new run."""
        if self.finished is not None:
            return not self.finished
        if self.target_cycles is None or self.stopped or self.run_cycles_done >= self.target_cycles:
            return False
        every = self.checkpoint_every
        return not every or (self.run_cycles_done // every + 1) * every <= self.target_cycles


def is_url(path: str | os.PathLike) -> bool:
    """A path with a protocol other than ``file://`` (``s3://``, ``memory://`` ...): read and written through fsspec."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def join_location(folder: str | os.PathLike, name: str) -> str:
    """``folder/name`` for a local folder or a URL (``pathlib`` would turn ``memory://x`` into ``memory:/x``)."""
    folder = os.fspath(folder)
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else os.path.join(folder, name)


def parent_location(path: str | os.PathLike) -> str:
    """The folder holding ``path``, for a local path or a URL."""
    path = os.fspath(path)
    if is_url(path):
        protocol, _, rest = path.partition("://")
        head = rest.rstrip("/").rpartition("/")[0]
        return f"{protocol}://{head}"
    return str(Path(path).parent)


def write_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader (or a resumed run) therefore sees either the old file or the complete new one. A URL
    (``s3://``, ``memory://``) is written through fsspec as Lightning's ``TorchCheckpointIO`` writes it:
    serialized in memory first, then put inside a filesystem transaction (atomic where the filesystem
    allows: object stores publish an upload whole; a failed write leaves nothing).
    """
    if is_url(path):
        _write_url(obj, os.fspath(path))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a checkpoint gets the mode torch.save would give
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_url(obj: Any, url: str) -> None:
    import io

    import fsspec

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fs, target = fsspec.core.url_to_fs(url)
    parent = target.rsplit("/", 1)[0] if "/" in target else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.transaction:
        with fs.open(target, "wb") as handle:
            handle.write(buffer.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, damaged and unsafe files."""
    path = str(path)
    if is_url(path):
        return _load_url(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says it better
            warnings.filterwarnings("ignore", message=".*Detected pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports garbage (a CSV, a text file) as an unpickling error too: only a zip (torch.save) or
        # a pickle stream (protocol >= 2 starts with 0x80) holds refused Python objects.
        with open(path, "rb") as handle:
            head = handle.read(4)
        if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
            raise CheckpointError(f"Checkpoint {path} is truncated or not a PyTorch checkpoint "
                                  f"(it is neither a torch.save zip archive nor a pickle).") from None
        # The detail, without torch's advice to load with weights_only=False and its terminal escape codes.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        found = re.search(r"(Unsupported [^\n]*?)(?:\.\s|\n|$)", text)
        first = found.group(1) if found else (text.strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"Refused to load {path}: it holds Python objects that weights_only loading does not "
                              f"allow ({first[:160]}); only trusted tensor checkpoints are loaded.") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        raise CheckpointError(f"Checkpoint {path} is truncated or not a PyTorch checkpoint "
                              f"({type(exc).__name__}: {str(exc)[:160]}).") from None


def _load_url(url: str) -> Any:
    import io

    import fsspec

    try:
        fs, target = fsspec.core.url_to_fs(url)
        if not fs.isfile(target):
            raise CheckpointError(f"Checkpoint {url} does not exist.")
        data = fs.cat_file(target)
    except CheckpointError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise CheckpointError(f"Cannot read checkpoint {url}: {str(exc)[:160] or type(exc).__name__}.") from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Detected pickle protocol.*")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"Refused to load {url}: it is not a PyTorch checkpoint of tensors (weights_only "
                              f"loading refused it); only trusted tensor checkpoints are loaded.") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, IndexError, KeyError) as exc:
        raise CheckpointError(f"Checkpoint {url} is truncated or not a PyTorch checkpoint "
                              f"({type(exc).__name__}: {str(exc)[:160]}).") from None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def read_training_checkpoint(path: str | os.PathLike) -> TrainingCheckpoint:
    """Read a full training checkpoint written by either host."""
    data = load_weights_only(path)
    path = str(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a training checkpoint.")
    if data.get("format") == LEGACY_FORMAT:
        config = data.get("config") or {}
        return TrainingCheckpoint(path, data["model"], data.get("optimizer"), data["rl_state"],
                                  data.get("callbacks", {}), int(data.get("run_cycles_done", 0)), kind="legacy",
                                  target_cycles=_int_or_none(data.get("target_cycles", config.get("cycles"))),
                                  stopped=bool(data.get("stopped", False)),
                                  checkpoint_every=_int_or_none(config.get("checkpoint_every")))
    if "state_dict" in data and RL_STATE_KEY in data:
        model = {k[len(POLICY_PREFIX):]: v for k, v in data["state_dict"].items() if k.startswith(POLICY_PREFIX)}
        optimizers = data.get("optimizer_states") or [None]
        loops = data.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        # Written in on_train_epoch_end, a checkpoint counts its epoch as processed but not yet completed.
        # Legacy callbacks' state lives in each adapter's entry ({ClassName: state}); merged in trainer order.
        callbacks: dict[str, Any] = {}
        for key, state in (data.get("callbacks") or {}).items():
            if str(key).startswith("LegacyCallbackAdapter[") and isinstance(state, dict):
                callbacks.update(state)
        run = data.get(RUN_INFO_KEY) or {}
        version = data.get("fxai_version_info") or {}
        return TrainingCheckpoint(path, model, optimizers[0], data[RL_STATE_KEY], callbacks,
                                  int(loops.get("processed", loops.get("completed", 0))),
                                  target_cycles=_int_or_none(run.get("target_cycles", version.get("target_cycles"))),
                                  stopped=bool(run.get("stopped", False)),
                                  checkpoint_every=_int_or_none(run.get("checkpoint_every")),
                                  finished=version.get("session_finished"))
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is a bare model state dict (as written by torch.save(model.state_dict())), "
                              f"not a full training checkpoint; load it with model.load_state_dict(torch.load(...)) "
                              f"or pass a checkpoint written by trainer.save_checkpoint.")
    raise CheckpointError(f"{path} is not an fxai training checkpoint (top-level keys: "
                          f"{', '.join(sorted(map(str, data))[:12]) or 'none'}).")
