"""One 2-process DDP fit with the native Metrics, Evaluation, Optuna and DistributedRL callbacks next to their
legacy counterparts (wrapped, running on rank 0 with every rank's episodes); each rank writes a JSON result.

Run as ``python ddp_native_run.py <out_dir>``. ``strategy="ddp"`` re-executes this script for rank 1
(``LOCAL_RANK=1``), so everything here runs on both ranks; only ``LOCAL_RANK`` 0 asks Optuna for trials.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("WANDB_MODE", "disabled")

import optuna  # noqa: E402

from fxai_compat import LegacyCallbackAdapter, TrainConfig, fit  # noqa: E402
from fxai_compat.callbacks import (DistributedRLCallback, EvaluationCallback, MetricsCallback,  # noqa: E402
                                   OptunaPruningCallback)
from legacy_callbacks import EvaluationCallback as LegacyEvaluation  # noqa: E402
from legacy_callbacks import MetricsCallback as LegacyMetrics  # noqa: E402
from legacy_callbacks import OptunaCallback as LegacyOptuna  # noqa: E402

PRUNE_AT = 3  # ThresholdPruner(lower=1e9) prunes at the first step >= n_warmup_steps


class EpisodeRecorder:
    """Legacy callback: the rewards of the episodes that ended in each cycle (all ranks' episodes, on rank 0)."""

    def __init__(self):
        self.rewards = defaultdict(list)

    def on_episode_end(self, trainer, episode_info):
        self.rewards[trainer.cycle].append(episode_info["reward"])


def clean(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def main(out_dir: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0"
    cfg = TrainConfig(n_envs=2, n_steps=32, episode_length=20, cycles=6, update_epochs=2, minibatch_size=24,
                      eval_every=2, eval_episodes=2, checkpoint_every=0, checkpoint_dir=str(out_dir / "ckpt"),
                      hidden_sizes=(16, 16), data_length=2000, seed=5)
    storage = f"sqlite:///{out_dir / 'optuna.db'}"
    trial = legacy_trial = None
    if rank0:  # the re-executed rank-1 script must not ask for trials of its own
        pruner = optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=PRUNE_AT)
        trial = optuna.create_study(storage=storage, study_name="native", direction="maximize",
                                    pruner=pruner).ask()
        legacy_trial = optuna.create_study(storage=storage, study_name="legacy", direction="maximize",
                                           pruner=optuna.pruners.NopPruner()).ask()
    native = {"metrics": MetricsCallback(window_size=7), "evaluation": EvaluationCallback(),
              "optuna": OptunaPruningCallback(trial), "distributed": DistributedRLCallback()}
    legacy = {"metrics": LegacyMetrics(window_size=7), "evaluation": LegacyEvaluation(),
              "optuna": LegacyOptuna(legacy_trial), "episodes": EpisodeRecorder()}
    callbacks = list(native.values()) + [LegacyCallbackAdapter(cb) for cb in legacy.values()]
    trainer = fit(cfg, callbacks, strategy="ddp", devices=2, accelerator="cpu",
                  default_root_dir=str(out_dir), logger=False)
    try:
        native["optuna"].check_pruned()
        pruned = False
    except optuna.TrialPruned:
        pruned = True
    result = {
        "rank": trainer.global_rank, "world_size": trainer.world_size, "pruned": pruned,
        "cycles_run": trainer.lightning_module.core.cycles_completed,
        "native_window": native["metrics"].window_stats(), "native_metrics_history": native["metrics"].history,
        "native_epoch_reward": native["metrics"].last_logged.get("metrics/episode_reward_epoch"),
        "native_eval_history": native["evaluation"].history, "native_reports": native["optuna"].reports,
        "distributed_history": native["distributed"].history,
        "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    if trainer.global_rank == 0:
        study = optuna.load_study(storage=storage, study_name="native")
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        stored = optuna.load_study(storage=storage, study_name="native").trials[0]
        result.update({
            "legacy_window": legacy["metrics"].window_stats(), "legacy_metrics_history": legacy["metrics"].history,
            "legacy_eval_history": legacy["evaluation"].history, "legacy_reports": legacy["optuna"].reports,
            "legacy_cycle_rewards": {str(k): v for k, v in legacy["episodes"].rewards.items()},
            "stored_intermediate": {str(k): v for k, v in stored.intermediate_values.items()},
            "stored_state": stored.state.name,
        })
    (out_dir / f"result.rank{trainer.global_rank}.json").write_text(json.dumps(clean(result)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
