"""A 2-process CPU DDP fit in which the unchanged legacy ``OptunaCallback`` (through ``LegacyCallbackAdapter``)
prunes a real Optuna trial, for ``tests/test_adapter_pruning.py``.

Usage: ``python ddp_adapter_prune.py OUT_DIR MODE [LINGER]`` (MASTER_ADDR/MASTER_PORT from the environment).
Lightning re-executes this script for rank 1 (``LOCAL_RANK=1``). The study lives in a journal file under
OUT_DIR, and its ``ThresholdPruner(lower=1e9, n_warmup_steps=PRUNE_AT)`` prunes at the report of cycle
``PRUNE_AT``. MODE:

* ``zero``: the documented pattern. Rank 0 runs ``study.optimize`` (which records ``TrialPruned`` as PRUNED);
  the adapters run the callbacks on rank 0 only (``ranks="zero"``); rank 1 calls ``fit`` with ``trial=None``
  (it runs no legacy callback, so its ``fit`` returns normally).
* ``all``: every rank reports: ``ranks="all"``, rank 1 reports to the same trial (loaded from the storage by id)
  and, not owning ``study.optimize``, catches ``TrialPruned`` itself.
* ``rank1``: only rank 1 raises (``ranks="all"``, a legacy callback that raises ``TrialPruned`` on rank 1 at
  cycle ``PRUNE_AT``); rank 0 has a ``ranks="zero"`` OptunaCallback with a pruner that never prunes.

Every rank writes ``OUT_DIR/rank<r>.json``: what ``fit`` raised (type, message, notes), cycles run, when ``fit``
ended (``time.time()``), what its recorder saw; rank 0 adds the stored trials (state, intermediate values) and
when its linger ended.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("WANDB_MODE", "disabled")

import optuna  # noqa: E402
from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402

from fxai_compat import LegacyCallbackAdapter, TrainConfig, fit  # noqa: E402
from legacy_callbacks import OptunaCallback  # noqa: E402

PRUNE_AT = 1
CYCLES = 4
#: Seconds rank 0 stays alive after ``study.optimize`` returned (argv[3], default 0), as a tuning loop would.
LINGER = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


class Recorder:
    """Records the cycles it completed and the checkpoint / end events it saw (on each rank with ranks="all")."""

    def __init__(self):
        self.cycles, self.events = [], []

    def on_cycle_complete(self, trainer):
        self.cycles.append(trainer.cycle)

    def on_checkpoint_saved(self, checkpoint_path):
        self.events.append(("on_checkpoint_saved", os.path.basename(checkpoint_path)))

    def on_training_end(self, trainer):
        self.events.append(("on_training_end", trainer.cycle))


class PruneOnRankOne:
    """Raises TrialPruned on rank 1 only, at cycle PRUNE_AT (a decision the other rank does not share)."""

    def on_metrics_computed(self, trainer, metrics):
        if int(os.environ.get("LOCAL_RANK", "0")) == 1 and metrics["cycle"] == PRUNE_AT:
            raise optuna.TrialPruned(f"rank 1 prunes at cycle {PRUNE_AT}")


def config(out: Path) -> TrainConfig:
    return TrainConfig(n_envs=2, n_steps=32, episode_length=12, cycles=CYCLES, update_epochs=1, minibatch_size=32,
                       eval_every=0, checkpoint_every=1, checkpoint_dir=str(out / "ckpt"), hidden_sizes=(8,),
                       data_length=1000, seed=3)


def storage(out: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(out / "journal.log")))


def run(out: Path, mode: str, rank: int, trial) -> dict:
    recorder = Recorder()
    if mode == "rank1":
        callbacks = [LegacyCallbackAdapter(OptunaCallback(trial)),
                     LegacyCallbackAdapter(PruneOnRankOne(), ranks="all")]
    else:
        callbacks = [LegacyCallbackAdapter(OptunaCallback(trial), ranks="zero" if mode == "zero" else "all")]
    callbacks.append(LegacyCallbackAdapter(recorder, ranks="zero" if mode == "zero" else "all"))
    result = {"rank": rank, "raised": None}
    start = time.monotonic()
    try:
        trainer = fit(config(out), callbacks, strategy="ddp", devices=2, accelerator="cpu",
                      default_root_dir=str(out / "logs"), logger=False)
        result["cycles_run"] = trainer.lightning_module.core.cycles_completed
    except BaseException as exc:  # recorded, then re-raised: the caller (study.optimize) must see it
        result["raised"] = {"type": type(exc).__name__, "message": str(exc), "notes": getattr(exc, "__notes__", [])}
        raise
    finally:
        result["fit_seconds"], result["fit_end"] = time.monotonic() - start, time.time()
        result["recorder_cycles"], result["recorder_events"] = recorder.cycles, recorder.events
        (out / f"rank{rank}.json").write_text(json.dumps(result))
    return result


def main(out: Path, mode: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    never = mode == "rank1"
    pruner = optuna.pruners.NopPruner() if never else optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=PRUNE_AT)
    if rank == 0:  # the re-executed rank-1 script must not ask for a trial of its own
        study = optuna.create_study(storage=storage(out), study_name="prune", direction="maximize", pruner=pruner)

        def objective(trial):
            (out / "trial_id").write_text(str(trial._trial_id))
            run(out, mode, rank, trial)
            return 0.0

        study.optimize(objective, n_trials=1)  # records TrialPruned as PRUNED; anything else propagates
        stored = optuna.load_study(storage=storage(out), study_name="prune").trials
        extra = {"trials": [{"state": t.state.name,
                             "intermediate": {str(k): v for k, v in t.intermediate_values.items()}} for t in stored]}
        time.sleep(LINGER)  # a tuning loop goes on with its next trial, in this process
        result = json.loads((out / "rank0.json").read_text())
        (out / "rank0.json").write_text(json.dumps({**result, **extra, "linger_end": time.time()}))
        return
    trial = None
    if mode == "all":
        study = optuna.load_study(storage=storage(out), study_name="prune", pruner=pruner)
        trial = optuna.trial.Trial(study, int((out / "trial_id").read_text()))
    try:
        run(out, mode, rank, trial)
    except optuna.TrialPruned:
        pass  # this rank does not own study.optimize: rank 0 records the trial's state


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
