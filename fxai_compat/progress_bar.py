"""The Lightning side of the run's progress display: ``RunProgressBar``, one bar (or one line per cycle) for the
whole run in place of Lightning's per-epoch bar; what it shows is :mod:`fxai_compat.progress`'s."""

from __future__ import annotations

from typing import Any, TextIO

from pytorch_lightning.callbacks import TQDMProgressBar

from .progress import RunProgress

__all__ = ["RunProgressBar"]


class RunProgressBar(TQDMProgressBar):
    """Lightning's progress bar replaced by one for the whole run (see the module doc). Validation and sanity
    checks get no bar of their own (an evaluation is part of its cycle)."""

    def __init__(self, stream: TextIO | None = None, plain: bool | None = None):
        super().__init__()
        self.progress = RunProgress(stream, plain)

    def _ensure_started(self, trainer, pl_module) -> None:
        # At the first epoch start, not on_train_start: a legacy continuous-training callback restores the run in
        # on_training_start and Lightning's resume fires on_checkpoint_loaded in on_train_start, both of which may
        # run after this callback's on_train_start.
        if self.progress.started or self.is_disabled:
            return
        core = getattr(pl_module, "core", None)
        done = int(getattr(core, "cycles_completed", trainer.current_epoch))
        max_epochs = trainer.max_epochs
        total = done + max(0, max_epochs - trainer.current_epoch) if max_epochs not in (None, -1) else None
        steps = getattr(core, "total_timesteps", None)  # under DDP each rank steps as many envs: all ranks' count
        self.progress.start(done, total, steps * trainer.world_size if steps is not None else None)

    def on_sanity_check_start(self, *_: Any) -> None:
        pass

    def on_sanity_check_end(self, *_: Any) -> None:
        pass

    def on_train_start(self, *_: Any) -> None:
        pass

    def on_train_epoch_start(self, trainer, pl_module, *_: Any) -> None:
        self._ensure_started(trainer, pl_module)

    def on_train_batch_end(self, *_: Any) -> None:
        pass

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.is_disabled or not self.progress.started:
            return
        core = getattr(pl_module, "core", None)
        cycle = int(getattr(core, "cycles_completed", trainer.current_epoch + 1))
        steps = getattr(core, "total_timesteps", None)
        reward = None
        if callable(getattr(pl_module, "cycle_metrics", None)):  # the cycle's metrics over all ranks (DDP)
            metrics = pl_module.cycle_metrics()
            reward, steps = metrics.get("episode_reward_mean"), metrics.get("timesteps_total", steps)
        elif "train/episode_reward_mean" in trainer.callback_metrics:
            reward = float(trainer.callback_metrics["train/episode_reward_mean"])
        self.progress.cycle_done(cycle, int(steps) if steps is not None else None, reward)

    def on_train_end(self, *_: Any) -> None:
        self.progress.close()

    def on_exception(self, *_: Any) -> None:
        self.progress.close()

    def on_validation_start(self, *_: Any) -> None:
        pass

    def on_validation_batch_start(self, *_: Any, **__: Any) -> None:
        pass

    def on_validation_batch_end(self, *_: Any, **__: Any) -> None:
        pass

    def on_validation_end(self, *_: Any) -> None:
        pass

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        self.progress.write(sep.join(map(str, args)))
