"""Reading an offline W&B run back from its ``run-*.wandb`` file: the logged history, the run config and
the summary, as plain dicts. This is what a dashboard built on the run would see, without a W&B server.

The file is W&B's transaction log (LevelDB-style blocks of protobuf ``Record``s); ``wandb.finish()`` can
return before wandb-core has written the last records, so :func:`read_offline_run` rereads until two
reads a moment apart agree.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OfflineRun", "read_offline_run", "find_run_file", "INTERNAL_KEYS"]

#: Keys W&B adds to every history row / the summary itself (never logged by a callback).
INTERNAL_KEYS = ("_step", "_runtime", "_timestamp", "_wandb")


@dataclass
class OfflineRun:
    """What one offline run holds: ``history`` (one dict per ``run.log`` call, with ``_step``), ``config``
    and ``summary`` (W&B's own keys dropped)."""

    path: str
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: The file holds the run's exit record (``run.finish()`` reached the file).
    finished: bool = False

    def metric_names(self) -> list[str]:
        """Every logged name (histogram parts such as ``charts/x/bins`` count as ``charts/x``), sorted."""
        names = {_metric_of(key) for row in self.history for key in row if key not in INTERNAL_KEYS}
        return sorted(names)


def _metric_of(key: str) -> str:
    head, _, tail = key.rpartition("/")
    return head if head and tail in ("_type", "bins", "values", "packedBins", "path", "sha256", "size",
                                     "format", "width", "height", "caption") else key


def find_run_file(directory: str | os.PathLike) -> str:
    """The ``run-*.wandb`` file of the one offline run under ``directory`` (its ``wandb/offline-run-*``),
    or of the run folder itself."""
    base = Path(directory)
    found = sorted(glob.glob(str(base / "wandb" / "offline-run-*" / "run-*.wandb"))) or \
        sorted(glob.glob(str(base / "run-*.wandb"))) or sorted(glob.glob(str(base / "offline-run-*" / "run-*.wandb")))
    if len(found) != 1:
        raise FileNotFoundError(f"Expected one offline W&B run under {base}; found {len(found)}: {found}.")
    return found[0]


def read_offline_run(directory: str | os.PathLike, settle_seconds: float = 20.0) -> OfflineRun:
    """The offline run under ``directory`` (see :func:`find_run_file`), read once its file stopped changing."""
    path = find_run_file(directory)
    deadline, previous = time.monotonic() + settle_seconds, None
    while True:
        run = _parse(path)
        key = (run.history, run.config, run.summary)
        # A finished run's file ends with its exit record; without one (a run still open), two equal reads.
        if run.finished or (run.history and key == previous) or time.monotonic() > deadline:
            return run
        previous = key
        time.sleep(0.3)


def _parse(path: str) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as handle:
        data = handle.read()
    run = OfflineRun(path)
    if data[:4] != b":W&B":
        return run
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind not in (1, 4):
            continue
        record = pb.Record()
        try:
            record.ParseFromString(pending)
        except Exception:  # a record still being written
            break
        which = record.WhichOneof("record_type")
        if which == "exit":
            run.finished = True
        elif which == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif which in ("config", "run"):
            items = record.config.update if which == "config" else record.run.config.update
            for item in items:
                key = _key(item)
                if not key.startswith(INTERNAL_KEYS):
                    run.config[key] = _unwrap(json.loads(item.value_json))
        elif which == "summary":
            for item in record.summary.update:
                key = _key(item)
                if not key.startswith(INTERNAL_KEYS):
                    run.summary[key] = json.loads(item.value_json)
    return run


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _unwrap(value: Any) -> Any:
    # W&B stores each config value as {"value": ..., "desc": ...}
    return value["value"] if isinstance(value, dict) and "value" in value else value
