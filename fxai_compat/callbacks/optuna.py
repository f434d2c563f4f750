"""``OptunaPruningCallback``: reports a metric to an Optuna trial once per cycle and prunes the trial when Optuna says so.

The native port of ``legacy_callbacks.OptunaCallback``: at the end of every cycle
(``on_train_epoch_end``, after the updates and the cycle's evaluation, where the legacy callback's
``on_metrics_computed`` fires) it reports the monitored value (default
``train/episode_reward_mean``; legacy names such as ``episode_reward_mean`` are accepted) at
``step`` = the cycle index, skips NaN values (no episode ended), and asks ``trial.should_prune()``.
A validation metric (``val/...``) is reported on the cycles with evaluation only. A monitored
metric that is not logged raises ``MissingMetricError`` listing the metrics that are (for a
``val/`` metric: once an evaluation has run without it).
The values are the module's exact ``exact_logged`` floats, so the reports equal the legacy ones.

Pruning:

* one process: raises ``optuna.TrialPruned`` from the hook; Lightning runs ``on_exception``,
  finalizes the loggers as "failed" and re-raises it from ``fit``, to the objective / ``study.tell``;
* DDP: only global rank 0 talks to the trial (report + ``should_prune``); its decision is
  broadcast so every rank sets ``trainer.should_stop`` at the same cycle and ``fit`` returns on all
  ranks; then call :meth:`OptunaPruningCallback.check_pruned` after ``fit`` on every rank, which
  raises ``TrialPruned``. Raising inside a hook on one rank would leave the others waiting in a
  collective. The other ranks need no trial: pass ``trial=None`` there (with ``strategy="ddp"``
  Lightning re-executes the script for ranks > 0, which must not ``study.ask()`` a second trial:
  ask only where ``LOCAL_RANK`` is unset or ``"0"``). Any storage works, since one process reports;
  a study shared by several workers needs an RDB or journal storage, as usual with Optuna.

Why not optuna-integration's ``PyTorchLightningPruningCallback``: it imports the ``lightning``
package (this project uses ``pytorch_lightning``; a ``lightning.pytorch`` callback in a
``pytorch_lightning`` trainer silently fails Lightning's ``isinstance`` checks, and the package is not
installed), and it reports only in ``on_validation_end``, i.e. every ``eval_every`` cycles, with
``step = current_epoch``, before the cycle's epoch-level training metrics are final. We follow its
protocol (report, ``should_prune``, rank-0 decision broadcast in DDP, ``check_pruned()`` after fit)
without importing it, and report every cycle at the cycle index as the legacy callback does.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> trial = optuna.create_study(direction="maximize").ask()
>>> cb = OptunaPruningCallback(trial, monitor="episode_reward_mean")
>>> cb.monitor
'train/episode_reward_mean'
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from ..lightning_host import LOGGED_METRICS
from .base import MissingMetricError, legacy_metric_hint

__all__ = ["OptunaPruningCallback", "OptunaCallback"]


class OptunaPruningCallback(pl.Callback):
    """Report ``monitor`` to ``trial`` at each cycle's end (step = cycle index) and prune when Optuna says so.

    Args:
        trial: the running ``optuna.Trial``; may be ``None`` on DDP ranks other than global rank 0.
        monitor: a logged metric name, or a legacy metric key (mapped with ``LOGGED_METRICS``).
    """

    def __init__(self, trial: Any, monitor: str = "train/episode_reward_mean"):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"OptunaPruningCallback monitor must be a metric name; got {monitor!r}.")
        self.trial = trial
        self.monitor = LOGGED_METRICS.get(monitor, monitor)
        #: (step, value) pairs reported to the trial (on global rank 0).
        self.reports: list[tuple[int, float]] = []
        self.pruned = False
        self.pruned_at: int | None = None
        self._message = ""
        self._distributed = False
        self._validated = False

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if trainer.is_global_zero and self.trial is None:
            raise ValueError("OptunaPruningCallback got trial=None on global rank 0, which reports to Optuna; "
                             "pass the running optuna.Trial (None is only for the other DDP ranks).")
        self._distributed = trainer.world_size > 1
        self.pruned, self.pruned_at, self._message = False, None, ""
        self._validated = False

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        value = self._current_value(trainer, pl_module)  # every rank: a missing metric fails on all ranks alike
        core = getattr(pl_module, "core", None)
        step = int(core.cycle) if core is not None else int(trainer.current_epoch)
        prune = False
        if trainer.is_global_zero and value is not None:
            self.trial.report(value, step=step)
            self.reports.append((step, value))
            prune = bool(self.trial.should_prune())
        if self._distributed:
            prune = trainer.strategy.broadcast(prune, src=0)
        if not prune:
            return
        self.pruned, self.pruned_at = True, step
        number = getattr(self.trial, "number", "?")
        self._message = f"Trial {number} pruned at cycle {step} ({self.monitor}={value})."
        if not self._distributed:
            import optuna

            raise optuna.TrialPruned(self._message)
        trainer.should_stop = True

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the trial was pruned (call after ``fit``; needed under DDP)."""
        if self.pruned:
            import optuna

            raise optuna.TrialPruned(self._message)

    def _current_value(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> float | None:
        exact = getattr(pl_module, "exact_logged", None)
        if exact and self.monitor in exact:
            value = float(exact[self.monitor])
        elif self.monitor in trainer.callback_metrics:
            if exact:
                return None  # logged on an earlier cycle (a validation metric on a cycle without evaluation)
            value = float(trainer.callback_metrics[self.monitor])
        elif self.monitor.startswith("val/") and not self._validated:
            return None  # no evaluation yet; a validation metric missing after one is an error
        else:
            raise MissingMetricError(type(self).__name__, self.monitor, trainer.callback_metrics,
                                     legacy_metric_hint(self.monitor))
        return None if math.isnan(value) else value


#: The legacy callback's name, for users porting ``OptunaCallback(trial, monitor=...)``.
OptunaCallback = OptunaPruningCallback
