"""Reports a monitored metric to an Optuna trial every cycle and prunes the trial when Optuna says so."""

import math

from .base import BaseCallback


class OptunaCallback(BaseCallback):
    def __init__(self, trial, monitor="episode_reward_mean", report_step="cycle"):
        self.trial = trial
        self.monitor = monitor
        self.report_step = report_step
        self.reports = []  # (step, value) pairs sent to the trial

    def on_metrics_computed(self, metrics):
        for key in (self.monitor, self.report_step):
            if key not in metrics:
                raise KeyError(
                    f"OptunaCallback needs metric {key!r}, which is not in the metrics; "
                    f"available metrics: {', '.join(sorted(metrics))}."
                )
        value = float(metrics[self.monitor])
        if math.isnan(value):
            return  # nothing to report yet (e.g. no episode ended this cycle)
        step = int(metrics[self.report_step])
        self.trial.report(value, step=step)
        self.reports.append((step, value))
        if self.trial.should_prune():
            # Imported here: whoever passed us a trial has already imported optuna.
            import optuna

            raise optuna.TrialPruned(
                f"Trial {self.trial.number} pruned at step {step} ({self.monitor}={value})"
            )
