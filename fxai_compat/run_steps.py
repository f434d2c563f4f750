"""Logged steps that continue across a resume made outside Lightning's ``ckpt_path``.

Lightning restores its epoch and step counters from a ``ckpt_path``, so a run resumed that way logs ``epoch``/``step``
on from where it stopped. A legacy continuous-training callback restores the model and the RL state itself (in
``on_training_start``), and Lightning's counters start at 0 while the run is at cycle 80: the loggers' ``epoch`` and
``step`` columns restarted at 0. :class:`ContinuedRunLogging` offsets what reaches the loggers by the cycles the run
had done before Lightning's count began (one Lightning step is one cycle); Lightning's own counters, and with them
the evaluation and checkpoint cadences, are left alone.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

__all__ = ["ContinuedRunLogging"]


class ContinuedRunLogging(pl.Callback):
    """Added by ``build_trainer``; does nothing unless the module's RL core is ahead of Lightning's epoch count."""

    def __init__(self) -> None:
        self.offset = 0
        self._wrapped: list[Any] = []

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        done = getattr(getattr(pl_module, "core", None), "cycles_completed", None)
        self.offset = int(done) - trainer.current_epoch if isinstance(done, int) else 0
        if self.offset <= 0:
            self.offset = 0
            return
        for logger in trainer.loggers:
            if "log_metrics" in vars(logger):
                continue
            original = logger.log_metrics

            def log_metrics(metrics, step=None, _original=original, _offset=self.offset):
                metrics = dict(metrics)
                if "epoch" in metrics:
                    metrics["epoch"] = metrics["epoch"] + _offset
                return _original(metrics, None if step is None else step + _offset)

            logger.log_metrics = log_metrics
            self._wrapped.append(logger)

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        for logger in self._wrapped:
            vars(logger).pop("log_metrics", None)
        self._wrapped = []
