"""``make bench-learning``: does PPO learn CartPole under both hosts? Evaluation return vs environment steps."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["learning_check"]


def learning_check(config_path: str = "examples/cartpole.yaml", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the CartPole config under both hosts and report evaluation return vs environment steps.

    Reference points from outside: Stable-Baselines3's zoo reports 500 at 100k steps with tuned settings,
    CleanRL's default PPO about 490 at 500k steps. The target here: >= 475 within 100k steps on both hosts.
    """
    from legacy_callbacks import BaseCallback

    from .adapter import LegacyCallbackAdapter
    from .bench import _load
    from .legacy_host import LegacyTrainer
    from .lightning_host import fit

    cfg = _load(Path(config_path)).train
    curves: dict[str, list[tuple[int, float]]] = {}
    for host in ("legacy", "lightning"):
        curve: list[tuple[int, float]] = []

        class Curve(BaseCallback):
            def on_evaluation_end(self, trainer, eval_results):
                curve.append((trainer.total_timesteps, eval_results["episode_reward_mean"]))

        run_cfg = cfg.replace(checkpoint_dir=str(Path(tempfile.mkdtemp()) / host))
        start = time.perf_counter()
        if host == "legacy":
            LegacyTrainer(run_cfg, [Curve()]).train()
        else:
            fit(run_cfg, [LegacyCallbackAdapter(Curve())], logger=False)
        seconds = time.perf_counter() - start
        curves[host] = curve
        reached = next((steps for steps, ret in curve if ret >= 475), None)
        log(f"{host}: " + ", ".join(f"{steps // 1000}k:{ret:.0f}" for steps, ret in curve)
            + f"  -> first >= 475 at {reached if reached is not None else 'never'} steps ({seconds:.0f} s)")
    return {host: {"curve": curve, "first_475": next((s for s, r in curve if r >= 475), None),
                   "final": curve[-1][1] if curve else None} for host, curve in curves.items()}
