"""``RLCheckpointCallback``: Lightning's ``ModelCheckpoint`` for RL runs, keeping the best cycle and RL state.

The native port of ``legacy_callbacks.CheckpointCallback`` (best model when the monitored metric
improves, plus a periodic save every ``save_freq`` cycles). What it adds to ``ModelCheckpoint``:

* the monitored value is compared **exactly** (the module's ``exact_logged`` Python float, not the
  float32 tensor ``self.log`` stores) and a NaN value (no episode ended this cycle) never becomes the
  best nor is saved as a top-k model, as in the legacy callback; ``best_cycle`` and ``best_reward``
  therefore mean what the legacy ``best_cycle`` / ``best_reward`` mean;
* a missing monitored metric raises :class:`~fxai_compat.callbacks.base.MissingMetricError` listing
  the metrics that exist (``ModelCheckpoint`` only warns before the first validation and then saves
  nothing); a ``val/`` metric may be missing until the first evaluation, and on later cycles
  without evaluation its old value is not compared again;
* file names come from templates formatted with ``cycle`` (the RL cycle index) and never contain a
  ``/`` (``auto_insert_metric_name=False``; ``{train/episode_reward_mean:.3f}`` is usable in a template);
* a periodic save every ``save_every_n_cycles`` cycles (``model-cycle0009.ckpt`` after the 10th
  cycle, as the legacy ``model_cycle_0009.pt``);
* a second checkpoint callback keeping ``last.ckpt`` in the same directory (such as the host's
  periodic ``CycleCheckpoint`` in ``config.checkpoint_dir``) is refused at set-up: the two would
  overwrite each other's ``last`` link and ``ckpt_path="last"`` would resume from either;
* RL state in every checkpoint it writes: ``best_cycle``/``best_reward`` in its callback state, and
  under ``fxai_rl_checkpoint`` the episode statistics and counters of the cycle plus the global
  Python/numpy/torch RNG states, restored on resume. (The module already saves the PPO core's
  counters, environment and generator under ``fxai_rl_state``.)

``create_checkpoint_callback`` builds one from the legacy factory's ``checkpoint`` section.

>>> import tempfile
>>> cb = create_checkpoint_callback({"save_dir": tempfile.mkdtemp(), "save_freq": 5})
>>> cb.monitor, cb.mode, cb.save_every_n_cycles, cb.best_cycle
('train/episode_reward_mean', 'max', 5, None)
>>> import os
>>> os.path.basename(cb.format_checkpoint_name({"cycle": 7, "train/episode_reward_mean": 1.25}))
'best-cycle0007.ckpt'
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ..lightning_host import LOGGED_METRICS, RLModelCheckpoint
from .base import MissingMetricError, legacy_metric_hint

__all__ = ["RLCheckpointCallback", "create_checkpoint_callback", "RL_CHECKPOINT_KEY", "refuse_shared_last_checkpoint"]

#: Top-level checkpoint key of the episode statistics, counters and global RNG states this callback adds.
RL_CHECKPOINT_KEY = "fxai_rl_checkpoint"


class RLCheckpointCallback(RLModelCheckpoint):
    """``ModelCheckpoint`` keeping the best cycle (exact comparison, NaN skipped), periodic saves and RL state.

    Args:
        dirpath: where checkpoints go.
        monitor: logged metric to maximize/minimize (default ``train/episode_reward_mean``); ``None``
            for periodic saves only.
        mode: ``"max"`` (default) or ``"min"``.
        filename: template of the best-model file, formatted with ``cycle`` and logged metrics.
        save_every_n_cycles: also save ``periodic_filename`` after every this many cycles (counted
            from 1, as the legacy ``save_freq``); ``None`` for no periodic saves.
        periodic_filename: template of the periodic files.
        **kwargs: passed to ``ModelCheckpoint`` (``save_top_k``, ``save_last`` (default ``"link"``),
            ``every_n_epochs`` (default 1: the best is checked every cycle), ``verbose`` ...).
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, monitor: str | None = "train/episode_reward_mean",
                 mode: str = "max", filename: str = "best-cycle{cycle:04d}", *,
                 save_every_n_cycles: int | None = None, periodic_filename: str = "model-cycle{cycle:04d}", **kwargs: Any):
        for name, template in (("filename", filename), ("periodic_filename", periodic_filename)):
            if not isinstance(template, str) or "/" in _outside_braces(template) or os.sep in _outside_braces(template):
                raise ValueError(f"RLCheckpointCallback {name} must be a file name template without '/' "
                                 f"(it would create a subfolder); got {template!r}.")
        if save_every_n_cycles is not None and (isinstance(save_every_n_cycles, bool)
                                                or not isinstance(save_every_n_cycles, int) or save_every_n_cycles < 1):
            raise ValueError(f"RLCheckpointCallback save_every_n_cycles must be None or a positive int (cycles); "
                             f"got {save_every_n_cycles!r}.")
        if kwargs.get("auto_insert_metric_name"):
            raise ValueError("RLCheckpointCallback always uses auto_insert_metric_name=False: metric names such as "
                             "'train/episode_reward_mean' contain '/', which would create subfolders.")
        kwargs.setdefault("save_last", "link")
        kwargs.setdefault("every_n_epochs", 1)
        kwargs.setdefault("save_on_train_epoch_end", True)
        kwargs.setdefault("save_top_k", 1 if monitor is not None else 0)
        kwargs["auto_insert_metric_name"] = False
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, **kwargs)
        self.save_every_n_cycles = save_every_n_cycles
        self.periodic_filename = periodic_filename
        #: Cycle index at which the monitored value was best (``None`` until a non-NaN value is seen).
        self.best_cycle: int | None = None
        #: Best monitored value so far (``-inf``/``inf`` before the first).
        self.best_reward: float = -math.inf if mode == "max" else math.inf
        #: Periodic checkpoint files written, in order.
        self.periodic_paths: list[str] = []
        self._stale_monitor = False
        self._validated = False

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        refuse_shared_last_checkpoint(self, trainer)
        self._validated = False

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validated = True
        super().on_validation_end(trainer, pl_module)

    # -- which value, which cycle ---------------------------------------------------------------
    def _monitor_candidates(self, trainer: "pl.Trainer") -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)  # with ``cycle``
        exact = getattr(trainer.lightning_module, "exact_logged", None)
        self._stale_monitor = False
        if self.monitor is not None and exact:
            if self.monitor in exact:
                candidates[self.monitor] = torch.tensor(float(exact[self.monitor]), dtype=torch.float64)
            elif self.monitor in candidates:
                # Logged on an earlier cycle (a validation metric on a cycle without evaluation): no new value.
                self._stale_monitor = True
        return candidates

    def _save_topk_checkpoint(self, trainer: "pl.Trainer", monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is not None:
            if self.monitor not in monitor_candidates:
                if self.monitor.startswith("val/") and not self._validated:
                    return  # no evaluation yet; a validation metric missing after one is an error
                raise MissingMetricError(type(self).__name__, self.monitor, trainer.callback_metrics,
                                         legacy_metric_hint(self.monitor))
            current = monitor_candidates[self.monitor]
            skip = self._stale_monitor or bool(torch.isnan(current))
            # Ranks log their own values: skip on all ranks together, since the top-k check below is a collective.
            if trainer.strategy.reduce_boolean_decision(skip, all=False):
                return  # as the legacy callback: no value this cycle, nothing becomes the best
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _update_best_and_save(self, current: torch.Tensor, trainer: "pl.Trainer",
                              monitor_candidates: dict[str, torch.Tensor]) -> None:
        # Called when ``current`` enters the top k; record a new best *before* the file is written, so the
        # checkpoint's own state names its cycle.
        better = torch.gt if self.mode == "max" else torch.lt
        if self.best_model_score is None or bool(better(current, self.best_model_score)):
            self.best_cycle = int(monitor_candidates["cycle"])
            self.best_reward = float(current)
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        super().on_train_epoch_end(trainer, pl_module)
        n = self.save_every_n_cycles
        if not n or trainer.sanity_checking or trainer.fast_dev_run:
            return
        candidates = self._monitor_candidates(trainer)
        if (int(candidates["cycle"]) + 1) % n == 0:
            path = self.format_checkpoint_name(candidates, filename=self.periodic_filename)
            self.periodic_paths.append(path)  # before the write: the checkpoint's own state lists it
            self._save_checkpoint(trainer, path)
            if self.save_last:
                self._save_last_checkpoint(trainer, candidates)

    def _save_last_checkpoint(self, trainer: "pl.Trainer", monitor_candidates: dict[str, torch.Tensor]) -> None:
        # ModelCheckpoint links last.ckpt only to a top-k file; with save_top_k=0 (monitor=None: periodic saves
        # only) it would write a full last.ckpt after every periodic save and on every cycle after. Link it to
        # the newest periodic file instead.
        saved = self._last_checkpoint_saved
        if self.save_last == "link" and self.save_top_k == 0 and saved:
            filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
            if os.path.abspath(saved) != os.path.abspath(filepath):
                self.last_model_path = filepath
                self._link_checkpoint(trainer, saved, filepath)
                return
        super()._save_last_checkpoint(trainer, monitor_candidates)

    # -- RL state in the checkpoint -------------------------------------------------------------
    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        core = getattr(pl_module, "core", None)
        counters = {}
        if core is not None:
            counters = {"cycle": core.cycle, "cycles_completed": core.cycles_completed,
                        "total_timesteps": core.total_timesteps, "num_episodes": core.num_episodes}
        exact = getattr(pl_module, "exact_logged", None) or {}
        checkpoint[RL_CHECKPOINT_KEY] = {
            "counters": counters,
            "episode_stats": {name: float(value) for name, value in exact.items()},
            "best": {"monitor": self.monitor, "best_cycle": self.best_cycle, "best_reward": self.best_reward},
            "rng": _rng_state(),
        }

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(RL_CHECKPOINT_KEY)
        if saved and "rng" in saved:
            _set_rng_state(saved["rng"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(best_cycle=self.best_cycle, best_reward=self.best_reward, periodic_paths=list(self.periodic_paths))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_cycle = state_dict.get("best_cycle", self.best_cycle)
        self.best_reward = state_dict.get("best_reward", self.best_reward)
        self.periodic_paths = list(state_dict.get("periodic_paths", []))


def refuse_shared_last_checkpoint(callback: ModelCheckpoint, trainer: "pl.Trainer") -> None:
    """Raise if another checkpoint callback of ``trainer`` also keeps ``last.ckpt`` in ``callback``'s directory."""
    if not callback.save_last or callback.dirpath is None:
        return
    mine = os.path.abspath(callback.dirpath)
    for other in trainer.checkpoint_callbacks:
        if (other is not callback and isinstance(other, ModelCheckpoint) and other.save_last
                and other.dirpath is not None and os.path.abspath(other.dirpath) == mine):
            raise ValueError(f"{type(callback).__name__} and {type(other).__name__} both keep last.ckpt in {mine}: "
                             f"they would overwrite each other's and ckpt_path='last' could resume from either. "
                             f"Give {type(callback).__name__} a directory of its own (the host's periodic "
                             f"checkpoints go to config.checkpoint_dir; checkpoint_every=0 turns them off).")


def _outside_braces(template: str) -> str:
    out, depth = [], 0
    for ch in template:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain Python values, so ``weights_only`` loading accepts them.

    Python's state (625 ints) is one tensor too: pickled as 625 objects it made a quarter of a checkpoint's
    pickling work."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    internal = internal.tolist() if isinstance(internal, torch.Tensor) else internal  # tuples: older checkpoints
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


#: Options of the legacy factory's ``checkpoint`` section and their defaults (``save_dir`` is required).
_SECTION_OPTIONS = {"save_dir": None, "save_freq": 10, "monitor": "episode_reward_mean", "enabled": True}


def create_checkpoint_callback(config: Mapping[str, Any]) -> RLCheckpointCallback | None:
    """An ``RLCheckpointCallback`` from the legacy factory's ``checkpoint`` section.

    ``save_dir`` -> ``dirpath``; ``save_freq`` -> ``save_every_n_cycles``; ``monitor`` (a legacy metric
    name such as ``episode_reward_mean``, or a logged name such as ``train/episode_reward_mean``) ->
    the logged name, maximized (the legacy callback keeps the highest value). ``enabled: false``
    returns ``None``.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"The checkpoint section must be a mapping of options; got {type(config).__name__}.")
    unknown = sorted(set(config) - set(_SECTION_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for the checkpoint section; "
                         f"accepted options: {', '.join(_SECTION_OPTIONS)}.")
    options = {**_SECTION_OPTIONS, **config}
    if options["enabled"] is False:
        return None
    if options["save_dir"] is None:
        raise ValueError("The checkpoint section is missing required option 'save_dir'.")
    save_freq = options["save_freq"]
    if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
        raise ValueError(f"Checkpoint option save_freq must be a positive int (cycles); got {save_freq!r}.")
    monitor = options["monitor"]
    if monitor in LOGGED_METRICS:
        monitor = LOGGED_METRICS[monitor]
    elif not (isinstance(monitor, str) and "/" in monitor):
        raise ValueError(f"Checkpoint option monitor must be a legacy metric name ({', '.join(LOGGED_METRICS)}) "
                         f"or a logged metric name such as 'train/episode_reward_mean'; got {monitor!r}.")
    return RLCheckpointCallback(dirpath=os.fspath(options["save_dir"]), monitor=monitor, mode="max",
                                save_every_n_cycles=save_freq)
