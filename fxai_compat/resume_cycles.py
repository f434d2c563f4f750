"""How many cycles a resumed run trains: one rule for both hosts and both implementations.

``TrainConfig.cycles`` is the number of cycles a run trains. A run started from a checkpoint follows this rule,
whichever way it was started (``LegacyTrainer.train(resume_from=...)``, ``fit(..., ckpt_path=...)``, a legacy
callback calling ``trainer.load_checkpoint`` in ``on_training_start`` under either host, or the native
``continue_training``):

* the checkpoint's run was **interrupted** (killed or crashed before its cycles were done, and not stopped by a
  callback; see :attr:`~fxai_compat.checkpoints.TrainingCheckpoint.interrupted`): the new run *finishes* it. It
  trains the cycles that run still had to do, so a 12-cycle run killed after cycle 9 and started again ends at
  12 cycles in all, on every path;
* the checkpoint's run had **finished** (all its cycles, or a callback stopped it): the new run is a new run on
  the loaded state and trains ``cycles`` cycles (continuous training: each run of the same command adds
  ``cycles``). ``resume_from`` / ``ckpt_path`` of a finished run have nothing left to do.

The legacy loop applies it in ``LegacyTrainer._restore``; Lightning's ``ckpt_path`` restores the loop counters
itself; :func:`continue_interrupted_run` applies it for a ``trainer.load_checkpoint`` under Lightning.
"""

from __future__ import annotations

from typing import Any

from .checkpoints import TrainingCheckpoint

__all__ = ["continue_interrupted_run"]


def continue_interrupted_run(trainer: Any, ckpt: TrainingCheckpoint) -> bool:
    """Under Lightning, before the fit loop starts: if ``ckpt``'s run was interrupted, make this fit finish it
    (its epoch counter at the cycles done, ``max_epochs`` at that run's target) and return True. Once the loop
    has begun (a load in the middle of a run) or a ``ckpt_path`` set its counters, nothing changes."""
    loop = trainer.fit_loop
    if not ckpt.interrupted or loop.epoch_progress.current.ready:
        return False
    done, target = int(ckpt.run_cycles_done), int(ckpt.target_cycles)
    for counter in (loop.epoch_progress.total, loop.epoch_progress.current):
        counter.ready = counter.started = counter.processed = counter.completed = done
    loop.max_epochs = target
    return True
