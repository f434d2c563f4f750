"""``ContinuousTrainingCallback`` and ``continue_training``: run the same command again and training continues, one version further.

The native port of ``legacy_callbacks.ContinuousTrainingCallback``. The legacy callback loads the
newest ``version_N.ckpt`` itself in ``on_training_start`` and copies every saved checkpoint to
``version_{N+1}.ckpt``. The refactoring guide's port assigns ``trainer.ckpt_path`` in ``setup``
and patches ``trainer.logger._version``; both are private and too late in Lightning 2.x (the path
is resolved before ``setup`` runs). Here Lightning does the resuming and the versioning:

* ``ContinuousTrainingCallback`` is a ``ModelCheckpoint`` that writes the run's state after every
  ``every_n_cycles`` cycles (and at the end of training) to ``version_NNNN.ckpt``, NNNN being
  the *session* (one invocation of the command), with ``last.ckpt`` linked to it (Lightning's
  ``save_last="link"``: no second write). By default it saves when the run's periodic checkpoints
  are due (``config.checkpoint_every``), which is when the legacy callback copies them: an
  interruption loses the same cycles under both, and a full checkpoint is not written every cycle
  (about 12 ms each on the benchmark machine). With ``checkpoint_every: 0`` it saves at the end
  only. Each checkpoint carries ``fxai_version_info`` (written in ``on_save_checkpoint``): version,
  cycles done, the session's target cycles, whether the session ended as planned, counters, time,
  and the checkpoint the session resumed from.
* Resuming is Lightning's own: ``fit(..., ckpt_path=<last.ckpt>)`` restores the model, optimizer,
  loop counters, callback states and the module's RL state (counters continue, environments and
  random generators carry on exactly).
* ``continue_training(config, callbacks)`` is the command. Its callback keeps its files in
  ``<config.checkpoint_dir>/versions`` (the host's periodic ``CycleCheckpoint`` keeps its own
  ``cycle-*.ckpt`` and ``last.ckpt`` in ``checkpoint_dir``). It finds ``last.ckpt`` the way
  ``ckpt_path="last"`` does (the newest ``last*.ckpt``), restricted to this callback's directory
  (another ``ModelCheckpoint``'s ``last`` link may point at an older cycle), reads its version
  info, and plans the session:

  - no checkpoint: version 0, ``max_epochs = config.cycles``;
  - the last session ended as planned (all its cycles, or a callback stopped it): version + 1,
    ``max_epochs = cycles_done + config.cycles``. Lightning's ``max_epochs`` counts epochs from
    the start of the *whole* run, and ``fit(ckpt_path=...)`` only continues an interrupted run up
    to ``max_epochs``; "train N more cycles" is therefore ``max_epochs = completed + N``;
  - the last session was interrupted (crash, kill): same version, ``max_epochs`` = that session's
    target, i.e. the session is finished rather than extended.

  The logger is Lightning's ``CSVLogger`` with the session as its version, so
  ``lightning_logs/version_<session>/metrics.csv`` holds that session's metrics; finishing an
  interrupted session logs to ``version_<session>-part2`` (CSVLogger would delete the metrics of a
  directory it reopens). Pass ``logger=`` to use another logger. ``training/version`` and
  ``training/resumed`` are logged every cycle.

Numbering differs from the legacy callback on purpose: legacy versions count saved checkpoints
(two saves in one run make two versions), native versions count sessions, as the logger does.
``keep_versions`` keeps only the newest N session files, as the legacy option does.

>>> plan_session(None, cycles=10)
(0, 10)
>>> plan_session({"version": 0, "cycles_done": 10, "target_cycles": 10, "session_finished": True}, cycles=10)
(1, 20)
>>> plan_session({"version": 1, "cycles_done": 13, "target_cycles": 20, "session_finished": False}, cycles=10)
(1, 20)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from ..checkpoints import RL_STATE_KEY, is_url, join_location, load_weights_only, parent_location
from ..config import TrainConfig
from ..fast_paths import log_value
from ..lightning_host import RLModelCheckpoint
from .checkpoint import refuse_shared_last_checkpoint

__all__ = ["ContinuousTrainingCallback", "continue_training", "plan_session", "read_version_info", "VERSION_INFO_KEY",
           "default_versions_dir"]

#: Top-level checkpoint key of the session/version information.
VERSION_INFO_KEY = "fxai_version_info"
_VERSION_FILE = re.compile(r"version_(\d+)\.ckpt")


def plan_session(info: Mapping[str, Any] | None, cycles: int) -> tuple[int, int]:
    """``(version, max_epochs)`` of the next session, given the newest checkpoint's version info."""
    if info is None:
        return 0, cycles
    if not info.get("session_finished", True) and info["cycles_done"] < info["target_cycles"]:
        return int(info["version"]), int(info["target_cycles"])
    return int(info["version"]) + 1, int(info["cycles_done"]) + cycles


def read_version_info(path: str | os.PathLike) -> dict[str, Any]:
    """The version info of a checkpoint (``weights_only`` load); a checkpoint written without this
    callback counts as a finished session 0 with the cycles its loops completed."""
    data = load_weights_only(path)
    info = data.get(VERSION_INFO_KEY)
    if info is not None:
        return dict(info)
    progress = data.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    done = int(progress.get("processed", data.get(RL_STATE_KEY, {}).get("cycles_completed", 0)))
    return {"version": 0, "cycles_done": done, "target_cycles": done, "session_finished": True}


class ContinuousTrainingCallback(RLModelCheckpoint):
    """Session-versioned checkpoints (``version_NNNN.ckpt`` + ``last.ckpt``) for runs continued with Lightning's resume.

    Args:
        checkpoint_dir: where ``version_*.ckpt`` and ``last.ckpt`` go (keep it for this callback alone).
        keep_versions: keep only the newest this many session files (``None``: keep all).
        every_n_cycles: save after every this many cycles; ``None`` (default): when the run's periodic
            checkpoints are due (the module's ``config.checkpoint_every``; at the end only when that is 0;
            every cycle for a module without an RL config). ``1`` loses at most one cycle to a crash.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, keep_versions: int | None = None,
                 every_n_cycles: int | None = None):
        if keep_versions is not None and (isinstance(keep_versions, bool) or not isinstance(keep_versions, int)
                                          or keep_versions < 1):
            raise ValueError(f"ContinuousTrainingCallback keep_versions must be None (keep all) or a positive int; "
                             f"got {keep_versions!r}.")
        if every_n_cycles is not None and (isinstance(every_n_cycles, bool) or not isinstance(every_n_cycles, int)
                                           or every_n_cycles < 1):
            raise ValueError(f"ContinuousTrainingCallback every_n_cycles must be None (the run's checkpoint_every) "
                             f"or a positive int; got {every_n_cycles!r}.")
        super().__init__(dirpath=os.fspath(checkpoint_dir), filename="version_{version:04d}", monitor=None,
                         save_top_k=-1, save_last="link", every_n_epochs=every_n_cycles or 1,
                         save_on_train_epoch_end=True, auto_insert_metric_name=False, enable_version_counter=False)
        self.checkpoint_dir = os.fspath(checkpoint_dir)
        self.keep_versions = keep_versions
        self.every_n_cycles = every_n_cycles
        #: This session's version (0 for the first run; set from the checkpoint on resume).
        self.version = 0
        #: The checkpoint this session resumed from (``None`` for a fresh run).
        self.resumed_from: str | None = None
        #: Version info of earlier sessions, oldest first.
        self.previous_sessions: list[dict[str, Any]] = []

    # -- where things are -----------------------------------------------------------------------
    def find_last_checkpoint(self) -> str | None:
        """The newest ``last*.ckpt`` of ``checkpoint_dir`` (the rule of ``ckpt_path="last"``), or ``None``.
        A local or remote (fsspec URL) folder; a dangling local link does not count."""
        pattern = re.compile(rf"{self.CHECKPOINT_NAME_LAST}(-(\d+))?{re.escape(self.FILE_EXTENSION)}")
        found = [(mtime, path) for name, path, mtime in _listing(self.checkpoint_dir) if pattern.fullmatch(name)]
        return max(found)[1] if found else None

    def version_files(self) -> list[str]:
        """The session files ``version_NNNN.ckpt`` in ``checkpoint_dir``, oldest version first."""
        found = sorted((int(m.group(1)), path) for name, path, _ in _listing(self.checkpoint_dir)
                       if (m := _VERSION_FILE.fullmatch(name)))
        return [path for _, path in found]

    # -- Lightning hooks ------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key includes its cadence, which is only resolved in setup here and may change between
        # sessions (checkpoint_every, every_n_cycles): one key per class, so the state is always restored.
        return self._generate_state_key()

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        refuse_shared_last_checkpoint(self, trainer)
        self.version, self.resumed_from, self.previous_sessions = 0, None, []
        if self.every_n_cycles is None:
            config = getattr(pl_module, "config", None)
            # ModelCheckpoint's epoch trigger (0: no saves at epoch end; on_train_end still saves the final state).
            self._every_n_epochs = int(getattr(config, "checkpoint_every", 1))

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get(VERSION_INFO_KEY)
        if info is None:  # resuming a run written without this callback: it was session 0
            info = {"version": 0, "cycles_done": 0, "target_cycles": 0, "session_finished": True}
        self.version, _ = plan_session(info, cycles=0)
        self.previous_sessions = [dict(s) for s in info.get("previous_sessions", [])]
        if self.version != info["version"]:
            self.previous_sessions.append({k: v for k, v in info.items() if k != "previous_sessions"})
        self.resumed_from = str(trainer.ckpt_path) if trainer.ckpt_path else None

    def _monitor_candidates(self, trainer: "pl.Trainer") -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["version"] = torch.tensor(self.version)
        return candidates

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        log_value(pl_module, "training/version", self.version, on_step=False, on_epoch=True)
        log_value(pl_module, "training/resumed", self.resumed_from is not None, on_step=False, on_epoch=True)
        super().on_train_epoch_end(trainer, pl_module)
        self._prune(trainer)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # The last cycles when every_n_cycles does not divide them, or a stop mid-schedule: save the final state.
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            candidates = self._monitor_candidates(trainer)
            self._save_none_monitor_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._prune(trainer)

    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        done = int(trainer.fit_loop.epoch_progress.current.processed)
        target = int(trainer.max_epochs) if trainer.max_epochs is not None and trainer.max_epochs >= 0 else done
        core = getattr(pl_module, "core", None)
        checkpoint[VERSION_INFO_KEY] = {
            "version": self.version, "cycles_done": done, "target_cycles": target,
            # Ended as planned: all its cycles, or a callback asked to stop (early stopping, pruning, threshold).
            "session_finished": done >= target or bool(trainer.should_stop),
            "timestamp": time.time(), "resumed_from": self.resumed_from,
            "total_timesteps": getattr(core, "total_timesteps", None), "num_episodes": getattr(core, "num_episodes", None),
            "previous_sessions": [dict(s) for s in self.previous_sessions],
        }

    def _prune(self, trainer: "pl.Trainer") -> None:
        if self.keep_versions is None or not trainer.is_global_zero:
            return
        def where(path: str) -> str:
            return path if is_url(path) else os.path.abspath(path)

        current = where(self.format_checkpoint_name({"version": self.version}))
        for path in self.version_files()[:-self.keep_versions]:
            if where(path) != current:
                trainer.strategy.remove_checkpoint(path)


def _listing(folder: str) -> list[tuple[str, str, float]]:
    """``(name, path, modification time)`` of the files of a local folder or an fsspec URL (empty if none)."""
    if not is_url(folder):
        if not os.path.isdir(folder):
            return []
        out = []
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            try:
                out.append((name, path, os.stat(path).st_mtime))  # follows links: a dangling one raises
            except OSError:
                continue
        return out
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder)
    if not fs.isdir(root):
        return []
    out = []
    for info in fs.ls(root, detail=True):
        if info.get("type") != "file":
            continue
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        when = info.get("mtime") or info.get("created") or info.get("LastModified") or 0
        out.append((name, join_location(folder, name), when.timestamp() if hasattr(when, "timestamp") else float(when)))
    return out


def default_versions_dir(config: TrainConfig) -> str:
    """``<checkpoint_dir>/versions``: next to, not inside, the periodic ``cycle-*.ckpt``/``last.ckpt`` of the run,
    whose own ``last.ckpt`` link must not be confused with this callback's."""
    return join_location(config.checkpoint_dir, "versions")


def continue_training(config: TrainConfig | Mapping[str, Any], callbacks: Iterable[pl.Callback] = (), *,
                      cycles: int | None = None, keep_versions: int | None = None, logger: Any = None,
                      **trainer_kwargs: Any) -> pl.Trainer:
    """Train ``cycles`` (default ``config.cycles``) more cycles, continuing the newest session kept in
    ``<config.checkpoint_dir>/versions`` (or by the ``ContinuousTrainingCallback`` in ``callbacks``);
    finish an interrupted session first. Returns the trainer. Running it again continues again.

    ``trainer_kwargs`` pass through to ``fit``; ``max_epochs`` and ``ckpt_path`` are planned here.
    """
    from ..lightning_host import fit

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    for name in ("max_epochs", "ckpt_path"):
        if name in trainer_kwargs:
            raise ValueError(f"continue_training plans {name} itself (from the newest checkpoint); do not pass "
                             f"{name}={trainer_kwargs[name]!r}. Use cycles= for the number of cycles to add.")
    callbacks = list(callbacks)
    keeper = next((cb for cb in callbacks if isinstance(cb, ContinuousTrainingCallback)), None)
    if keeper is None:
        keeper = ContinuousTrainingCallback(default_versions_dir(cfg), keep_versions=keep_versions)
        callbacks.append(keeper)
    last = keeper.find_last_checkpoint()
    version, max_epochs = plan_session(read_version_info(last) if last else None, cycles or cfg.cycles)
    if logger is None:
        root = trainer_kwargs.get("default_root_dir") or parent_location(cfg.checkpoint_dir)
        logger = CSVLogger(save_dir=str(root), name="lightning_logs",
                           version=_log_version(join_location(root, "lightning_logs"), version))
    trainer_kwargs.setdefault("enable_checkpointing", True)
    return fit(cfg, callbacks, ckpt_path=last, max_epochs=max_epochs, logger=logger, **trainer_kwargs)


def _log_version(logs: str, version: int) -> str:
    """``version_<v>``, or ``version_<v>-part<k>`` when an interrupted session is finished: CSVLogger deletes the
    metrics file of a log directory it reopens, and the interrupted part's metrics must stay."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(logs)
    name = f"version_{version}"
    part = 1
    while fs.isdir(f"{root}/{name}") and fs.ls(f"{root}/{name}"):
        part += 1
        name = f"version_{version}-part{part}"
    return name
