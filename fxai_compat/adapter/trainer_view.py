"""The legacy trainer surface handed to a legacy callback under Lightning (``LightningTrainerView``), and the
checkpoint restore behind its ``load_checkpoint`` (model, optimizer, this rank's RL state).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytorch_lightning as pl

from .. import lightning_host
from ..checkpoints import TrainingCheckpoint, load_weights_only, read_training_checkpoint
from ..lightning_host import NotifyingCheckpointIO
from ..resume_point import announce_resume
from ..resume_cycles import continue_interrupted_run
from .plain_module import is_foreign, restore_foreign_module
from .shared import _adapters_of, _shared_state

#: Checkpoint key of every rank's RL state in a DDP checkpoint (None with a host that writes none).
RL_RANK_STATES_KEY = getattr(lightning_host, "RL_RANK_STATES_KEY", None)


class LightningTrainerView:
    """The legacy trainer surface (contract section 2) over a Lightning trainer and module."""

    def __init__(self, adapter: "LegacyCallbackAdapter", trainer: "pl.Trainer", pl_module: "pl.LightningModule"):
        self._adapter, self._trainer, self._module = adapter, trainer, pl_module
        config = getattr(pl_module, "config", None)
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(getattr(pl_module, "hparams", {}) or {})
        self._config = MappingProxyType(as_dict)
        # One context and one stop flag per trainer, shared by every adapter, as the legacy loop has one
        # trainer for all callbacks: a stop set by one callback is visible to (and cancellable by) the others.
        self._shared = adapter._shared_for(trainer)
        self.context = self._shared.context

    @property
    def lightning_trainer(self) -> "pl.Trainer":
        return self._trainer

    @property
    def model(self):
        # The bundled module's policy network; a user's own module is itself the model (contract section 2).
        return self._module if is_foreign(self._module) else getattr(self._module, "policy", self._module)

    @property
    def config(self) -> Mapping[str, Any]:
        return self._config

    def _counter(self, index: int, name: str, fallback: str) -> int:
        counters = self._adapter._ddp_counters  # all ranks together, under DDP (see _deliver_gathered)
        if counters is not None:
            return counters[index]
        own = self._adapter._own
        if own is None:
            core = getattr(self._module, "core", None)
            return getattr(core, name) if core is not None else getattr(self._adapter, fallback)
        counters = own.counters()  # a user's module: the counters kept from announced events (Level 2/3)
        if counters is not None and (counters.seen_step_end or counters.seen_episode_end):
            return getattr(counters, name)
        return getattr(self._adapter, fallback)

    @property
    def total_timesteps(self) -> int:
        return self._counter(0, "total_timesteps", "_fallback_steps")

    @property
    def num_episodes(self) -> int:
        return self._counter(1, "num_episodes", "_fallback_episodes")

    @property
    def cycle(self) -> int:
        own = self._adapter._own
        if own is not None:
            return own.cycle
        core = getattr(self._module, "core", None)
        return core.cycle if core is not None else self._trainer.current_epoch

    @property
    def stop_training(self) -> bool:
        return self._shared.stop

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._shared.stop = bool(value)

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write a full Lightning checkpoint to ``path`` (fires ``on_checkpoint_saved`` once it is on disk).

        Written directly by this process (no barrier), so it is safe from a rank-0-only callback.
        """
        trainer = self._trainer
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        shared = _shared_state(trainer)
        shared.nested += 1
        try:
            NotifyingCheckpointIO.of(trainer).save_checkpoint(checkpoint, str(path))
        finally:
            shared.nested -= 1
        return str(path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, counters and RNG/environment state, then fire ``on_checkpoint_loaded``.

        Accepts checkpoints of either host. Training then continues from the loaded state. Under several
        processes, a callback running on rank 0 only may load only in ``on_training_start``: every rank
        then loads the same file (a load on one rank alone would leave the ranks' models different).
        """
        trainer = self._trainer
        if trainer.world_size > 1 and not self._adapter._active_on_every_rank():
            if not self._shared.starting:
                raise RuntimeError(
                    f"trainer.load_checkpoint({str(path)!r}) was called during {self._adapter._hook} by a legacy "
                    f"callback that runs on rank 0 only (ranks='zero') of {trainer.world_size} processes; the other "
                    f"ranks would keep their models. Under DDP, load checkpoints in on_training_start (every rank "
                    f"then loads the same file), or resume with fit(..., ckpt_path=...).")
            self._shared.loaded_at_start.append(str(path))
        if is_foreign(self._module):
            restore_foreign_module(trainer, self._module, str(path))
        else:
            ckpt = _restore_training_state(trainer, self._module, str(path))
            continue_interrupted_run(trainer, ckpt)  # TrainConfig.cycles: an interrupted run is finished, not restarted
        # Every legacy callback of the trainer hears about it (the legacy trainer fires to all of them),
        # not only those wrapped by the adapter whose callback called load_checkpoint.
        shared = _shared_state(trainer)
        shared.nested += 1
        try:
            for adapter in _adapters_of(self._trainer):
                if adapter._trainer is self._trainer:
                    adapter._fire("on_checkpoint_loaded", "load_checkpoint", checkpoint_path=str(path))
        finally:
            shared.nested -= 1

    def __repr__(self) -> str:
        return f"<LightningTrainerView cycle={self.cycle} total_timesteps={self.total_timesteps}>"


def _restore_training_state(trainer: "pl.Trainer", module: "pl.LightningModule", path: str) -> TrainingCheckpoint:
    """Model, optimizer and RL state (this rank's, when a DDP checkpoint holds one per rank) from ``path``."""
    ckpt = read_training_checkpoint(path)
    getattr(module, "policy", module).load_state_dict(ckpt.model)
    if ckpt.optimizer is not None:
        if trainer.optimizers:
            trainer.optimizers[0].load_state_dict(ckpt.optimizer)
        else:
            # Called from on_training_start, which fires at setup, before Lightning creates the
            # optimizers: the adapter applies this state at on_fit_start (before a resume's restore).
            _shared_state(trainer).pending_optimizer_state = ckpt.optimizer
    core = getattr(module, "core", None)
    if core is not None:
        state = ckpt.rl_state
        if trainer.world_size > 1 and trainer.global_rank > 0:
            by_rank = load_weights_only(path).get(RL_RANK_STATES_KEY) if RL_RANK_STATES_KEY else None
            if by_rank is not None and len(by_rank) == trainer.world_size:
                state = by_rank[trainer.global_rank]
        core.load_state_dict(state)
    if trainer.is_global_zero:
        announce_resume(path, ckpt.rl_state)  # a legacy callback's load (continuous training) says where, too
    return ckpt
