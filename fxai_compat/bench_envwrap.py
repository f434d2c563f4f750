"""``python -m fxai_compat.bench_envwrap``: what ``wrap_env`` costs, as wrapped / unwrapped env steps per second.

Two CartPole ``SyncVectorEnv`` are stepped inside a real ``Trainer.fit`` (the wrapper is bound to the run, as
in a user's module), one wrapped and one not, with the same actions, interleaved in chunks of 25 steps (A B,
then B A, ...) within one process, timed in thread CPU time; each round's ratio is the median over its
adjacent chunk pairs (same actions, same work) of wrapped / unwrapped time. This
machine's speed swings within seconds, so the report is the median ratio over the rounds with its
min-max range. Three settings of the trainer's callbacks:

* ``quiet``: no legacy callback at all (the wrapper only forwards);
* ``counting``: one adapted legacy callback that listens to no env event (``CheckpointCallback``): the
  wrapper keeps the counters and the cycle's episode returns for the ``metrics`` dict;
* ``six_adapted``: the six legacy callbacks, each in a ``LegacyCallbackAdapter`` (W&B offline); the
  metrics and W&B callbacks receive every ``on_episode_end``. This ratio includes the callbacks' own work
  on each episode (the W&B callback logs every episode); ``six_adapted_no_wandb_episodes`` runs the same
  six with ``WandbCallback(log_episodes=False)`` to separate the wrapper's delivery from W&B's logging.

    make bench                                   # also writes bench/envwrap.json
    python -m fxai_compat.bench_envwrap --quick  # a smoke run (seconds), for the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main", "run_benchmark", "SETTINGS", "TARGET"]

#: Target for the wrapper's own cost (no listener): wrapped / unwrapped time per env step.
TARGET = 1.03
SETTINGS = ("quiet", "counting", "six_adapted", "six_adapted_no_wandb_episodes")


def _callbacks(setting: str, workdir: Path) -> list:
    from legacy_callbacks import CheckpointCallback, create_callbacks

    from .adapter import LegacyCallbackAdapter

    if setting == "quiet":
        return []
    if setting == "counting":
        return [LegacyCallbackAdapter(CheckpointCallback(save_dir=str(workdir / "best"), save_freq=1000))]

    class _Trial:  # the Optuna callback's trial: reports go nowhere, never prunes
        number = 0

        def report(self, value, step):
            pass

        def should_prune(self):
            return False

    sections = {"metrics": {"window_size": 100},
                "checkpoint": {"save_dir": str(workdir / "best"), "save_freq": 1000},
                "wandb": {"mode": "offline", "dir": str(workdir), "project": "fxai-bench-envwrap",
                          "log_episodes": setting == "six_adapted"},
                "evaluation": {}, "continuous_training": {"checkpoint_dir": str(workdir / "versions")},
                "optuna": {"trial": _Trial()}}
    return [LegacyCallbackAdapter(cb) for cb in create_callbacks(sections)]


def _measure(setting: str, n_envs: int, steps: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """One fit whose single training step times ``rounds`` rounds of ``steps`` vector steps per env."""
    import gymnasium as gym
    import numpy as np
    import pytorch_lightning as pl
    import torch

    from .envwrap import wrap_env

    def make():
        return gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")

    raw, wrapped = make(), wrap_env(make())
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(steps, n_envs))
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"wrapped": [], "unwrapped": []}

    chunk = 20  # vector steps per timed chunk

    def one_round(envs) -> tuple[float, dict[str, float]]:
        """Chunks of the same actions, stepped by each env in turn (A B, then B A, ...): the round's ratio is
        the median of the adjacent chunk pairs' ratios, in thread CPU time, so that another process taking
        the CPU mid-chunk (this machine is shared) does not count as either env's cost."""
        spent = {name: 0.0 for name in envs}
        pairs = []
        names = list(envs)
        clock = time.thread_time
        for c, start in enumerate(range(0, steps, chunk)):
            block = actions[start:start + chunk]
            took = {}
            for name in (names if c % 2 == 0 else names[::-1]):
                step = envs[name].step
                t0 = clock()
                for a in block:
                    step(a)
                took[name] = clock() - t0
                spent[name] += took[name]
            if took["unwrapped"] > 0:
                pairs.append(took["wrapped"] / took["unwrapped"])
        rates = {name: steps * n_envs / seconds for name, seconds in spent.items()}  # env steps per CPU second
        return statistics.median(pairs), rates

    class Bench(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.env, self.raw = wrapped, raw
            self.layer = torch.nn.Linear(1, 1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader([0], batch_size=None)

        def training_step(self, batch, batch_idx):
            self.env.reset(seed=1)
            self.raw.reset(seed=1)
            envs = {"wrapped": self.env, "unwrapped": self.raw}
            one_round(envs)  # warm-up
            for _ in range(rounds):
                ratio, got = one_round(envs)
                rates["wrapped"].append(got["wrapped"])
                rates["unwrapped"].append(got["unwrapped"])
                ratios.append(ratio)  # CPU time per step, wrapped / unwrapped
            return None

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = pl.Trainer(max_epochs=1, callbacks=_callbacks(setting, workdir), logger=False, accelerator="cpu",
                         devices=1, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(workdir))
    trainer.fit(Bench())
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios,
            "wrapped_steps_per_s_median": statistics.median(rates["wrapped"]),
            "unwrapped_steps_per_s_median": statistics.median(rates["unwrapped"])}


def run_benchmark(n_envs: int = 8, steps: int = 2000, rounds: int = 15,
                  settings: tuple[str, ...] = SETTINGS) -> dict[str, Any]:
    """Measure each setting; returns the results dict (written as JSON by ``main``)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    results: dict[str, Any] = {
        "what": "wrapped / unwrapped CPU time per CartPole-v1 vector-env step inside Trainer.fit (= unwrapped / "
                "wrapped env steps per second), median over rounds (each the median of its interleaved chunk "
                "pairs) with min-max",
        "target": TARGET, "n_envs": n_envs, "steps_per_round": steps, "steps_per_chunk": 20, "rounds": rounds,
        "python": platform.python_version(), "machine": platform.machine(), "settings": {}}
    with tempfile.TemporaryDirectory(prefix="fxai-bench-envwrap-") as tmp:
        for setting in settings:
            results["settings"][setting] = _measure(setting, n_envs, steps, rounds, Path(tmp) / setting)
    quiet = results["settings"].get("quiet")
    if quiet is not None:
        results["meets_target"] = quiet["ratio_median"] <= TARGET
    return results


def main(argv: list[str] | None = None) -> int:
    from .run_summary import quiet_noise

    quiet_noise()  # Lightning's litlogger tip, once per Trainer
    parser = argparse.ArgumentParser(prog="python -m fxai_compat.bench_envwrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 200 steps")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per env per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default="bench/envwrap.json")
    args = parser.parse_args(argv)
    for name in ("n_envs", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}.")
    steps, rounds = (200, 2) if args.quick else (args.steps, args.rounds)
    results = run_benchmark(args.n_envs, steps, rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for setting, found in results["settings"].items():
        print(f"{setting:32s} wrapped/unwrapped {found['ratio_median']:.3f} "
              f"(min {found['ratio_min']:.3f}, max {found['ratio_max']:.3f}); "
              f"unwrapped {found['unwrapped_steps_per_s_median']:.0f} env steps/s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
