"""What running FxAI's six legacy callbacks through LegacyCallbackAdapter costs under Lightning.

Times ``fit`` on a demo-sized config (n_envs=4, n_steps=128, cycles=10, the rest from
examples/demo.yaml) with the six legacy callbacks wrapped (A) and with no callbacks (B),
interleaved A B A B ... after one untimed warm-up of each, and prints the ratio A/B per pair
(median and range), of wall time and of this process's CPU time (less disturbed by other load on
a shared machine), with one torch thread. For context it also times the same six callbacks and no
callbacks under ``LegacyTrainer`` (C D, in the same rounds): C/D is what the callbacks' own work
costs, so A/B minus C/D is roughly the adapter's share. A report, not a test: this machine is noisy.

    .venv/bin/python tests/scripts/adapter_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]


def demo_config(workdir: Path):
    from fxai_compat import TrainConfig
    from fxai_compat.config import load_yaml

    train = dict(load_yaml(ROOT / "examples" / "demo.yaml")["train"])
    train.update(n_envs=4, n_steps=128, cycles=10, checkpoint_dir=str(workdir / "checkpoints"))
    return TrainConfig.from_mapping(train)


def six_legacy_callbacks(workdir: Path) -> list:
    import optuna

    from legacy_callbacks import (CheckpointCallback, ContinuousTrainingCallback, EvaluationCallback,
                                  MetricsCallback, OptunaCallback, WandbCallback)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner()).ask()
    return [MetricsCallback(window_size=50), CheckpointCallback(workdir / "best", save_freq=5),
            WandbCallback(project="fxai-cost", mode="offline", dir=str(workdir)), EvaluationCallback(),
            ContinuousTrainingCallback(workdir / "versions", keep_versions=3), OptunaCallback(trial)]


def timed_fit(kind: str, base: Path, index: int, host: str = "lightning") -> tuple[float, float]:
    from fxai_compat import LegacyCallbackAdapter, LegacyTrainer, fit

    workdir = base / f"{host}-{kind}-{index}"
    workdir.mkdir(parents=True)
    cfg = demo_config(workdir)
    callbacks = six_legacy_callbacks(workdir) if kind == "six" else []
    start, cpu = time.perf_counter(), time.process_time()
    if host == "lightning":
        fit(cfg, [LegacyCallbackAdapter(cb) for cb in callbacks], logger=False)
    else:
        LegacyTrainer(cfg, callbacks).train()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import pytorch_lightning  # noqa: F401  (imported first: it sets its logger's level on import)
    import torch

    # One intra-op thread: on a shared 2-core machine, idle-spinning worker threads make both wall and
    # CPU time depend on other processes' load far more than on what is measured.
    torch.set_num_threads(1)

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="adapter-cost-") as tmp:
        base = Path(tmp)
        timed_fit("six", base, -1)  # warm-up: imports, wandb, first-call caches
        timed_fit("none", base, -1)
        timed_fit("six", base, -1, host="legacy")
        pairs, legacy_pairs = [], []
        for i in range(args.repeats):
            six = timed_fit("six", base, i)
            none = timed_fit("none", base, i)
            pairs.append((six, none))
            print(f"pair {i + 1}: six wrapped {six[0]:.2f} s wall / {six[1]:.2f} s CPU, no callbacks "
                  f"{none[0]:.2f} s / {none[1]:.2f} s, ratio {six[0] / none[0]:.3f} wall, {six[1] / none[1]:.3f} CPU")
            legacy_pairs.append((timed_fit("six", base, i, host="legacy"), timed_fit("none", base, i, host="legacy")))
    for label, runs in (("fit with the six legacy callbacks wrapped / fit with none", pairs),
                        ("context: LegacyTrainer with the six / LegacyTrainer with none", legacy_pairs)):
        for what, k in (("wall", 0), ("CPU", 1)):
            ratios = [six[k] / none[k] for six, none in runs]
            print(f"{label} ({what} time): median {statistics.median(ratios):.3f} "
                  f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} interleaved pairs)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, 1 torch thread")


if __name__ == "__main__":
    main()
