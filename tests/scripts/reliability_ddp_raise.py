"""A 2-process CPU DDP fit in which a legacy callback (``ranks="all"``) raises on rank 1 only, for
``tests/test_reliability.py``: the job must end (non-zero exit, the exception reported), not hang.

Usage: ``python reliability_ddp_raise.py OUT_DIR`` (MASTER_ADDR/MASTER_PORT from the environment).
Lightning re-executes this script for rank 1. Each rank writes ``OUT_DIR/rank<r>.started`` once training runs.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from fxai_compat import LegacyCallbackAdapter, TrainConfig, fit  # noqa: E402


class RaiseOnRankOne:
    def on_training_start(self, trainer):
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        (Path(sys.argv[1]) / f"rank{rank}.started").write_text("")

    def on_rollout_end(self, trainer, rollout_info):
        if int(os.environ.get("LOCAL_RANK", "0")) == 1 and trainer.cycle == 1:
            raise ValueError("rank 1 fails in on_rollout_end")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = TrainConfig(n_envs=2, n_steps=32, episode_length=24, cycles=4, update_epochs=1, minibatch_size=32,
                      eval_every=0, checkpoint_every=1, checkpoint_dir=str(out / "ckpt"), hidden_sizes=(8,),
                      data_length=1000, seed=3)
    fit(cfg, [LegacyCallbackAdapter(RaiseOnRankOne(), ranks="all")], strategy="ddp", devices=2, logger=False)
    print("unreachable: fit returned")
