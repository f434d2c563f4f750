"""``python -m fxai_compat.bench``: what moving to Lightning costs, as ratios measured side by side.

Every variant runs the demo config's PPO work (``examples/demo.yaml``: FX env, its evaluation and
checkpoint cadences, its six callbacks' options) for a fixed number of cycles. Runs are interleaved
(A B A B ..., reversed every other round) after a warm-up, because this machine is noisy: each ratio
is computed from runs measured next to each other, and reported as a median with its min-max range. Peak
memory is measured in fresh subprocesses (peak RSS only grows within a process).

    make bench                       # the full table, written to bench/results.json
    python -m fxai_compat.bench --quick   # a smoke run (seconds), for the test suite
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "run_benchmark", "RATIOS", "TARGETS"]

#: ratio name -> (numerator variant, denominator variant)
RATIOS = {
    "host": ("fit_none", "legacy_none"),
    "adapter": ("fit_six_adapted", "legacy_six"),
    "dispatch": ("fit_sixteen_empty", "fit_none"),
    "native": ("fit_six_native", "legacy_six"),
}
TARGETS = {"host": 1.10, "adapter": 1.10, "dispatch": 1.05, "native": 1.00, "memory": 1.10}


_DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


def _demo():
    """The demo run config, ``examples/demo.yaml`` of the source tree (the benchmark measures its work)."""
    from .cli import load_run_config

    if not _DEMO.exists():
        raise FileNotFoundError(f"The benchmark runs the demo config {_DEMO}, which is not there: run it from a "
                                f"checkout of the project (pip install -e .), not from an installed wheel.")
    return load_run_config(str(_DEMO))


def _config(cycles: int, workdir: Path):
    """The demo's training config (its evaluation and checkpoint cadences too), for ``cycles`` cycles."""
    return _demo().train.replace(cycles=cycles, checkpoint_dir=str(workdir / "checkpoints"))


def _callback_options(workdir: Path) -> dict[str, dict[str, Any]]:
    """The demo's six callback sections with the benchmark's places: files under ``workdir``, W&B disabled
    (no service process competing for the two cores), an in-memory Optuna trial that never prunes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    demo = {name: {k: v for k, v in (options or {}).items() if k != "impl"} for name, options in _demo().callbacks.items()}
    trial = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner()).ask()
    return {"metrics": {**demo.get("metrics", {})},
            "checkpoint": {**demo.get("checkpoint", {}), "save_dir": str(workdir / "best")},
            "wandb": {"project": "fxai-bench", "mode": "disabled"},
            "evaluation": {**demo.get("evaluation", {})},
            "continuous_training": {**demo.get("continuous_training", {}), "checkpoint_dir": str(workdir / "versions")},
            "optuna": {"trial": trial}}


def _six_legacy(workdir: Path) -> list[Any]:
    from legacy_callbacks import create_callbacks

    return create_callbacks(_callback_options(workdir))


def _sixteen_empty() -> list[Any]:
    """Six callbacks that define all 16 events with empty bodies: the pure cost of dispatch."""
    from legacy_callbacks.base import EVENTS, EVENT_ARGS

    def make(event):
        names = EVENT_ARGS[event]
        namespace: dict[str, Any] = {}
        exec(f"def {event}(self, {', '.join(names)}):\n    pass", namespace)
        return namespace[event]

    cls = type("Empty16", (), {event: make(event) for event in EVENTS})
    return [cls() for _ in range(6)]


def _six_native(workdir: Path):
    """The same six sections as native ports (a ``BuiltCallbacks``: callbacks and the W&B port's logger)."""
    from .toggle import build_callbacks

    return build_callbacks({"callbacks": _callback_options(workdir)}, {"all": "native"}, env={}, run_dir=workdir)


def _run_variant(name: str, cycles: int, workdir: Path) -> float | None:
    """Wall seconds of one run of ``name`` (construction included), or None if it cannot run here."""
    from .adapter import wrap
    from .legacy_host import LegacyTrainer
    from .lightning_host import fit

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = _config(cycles, workdir)
    quiet = {"logger": False, "enable_progress_bar": False}
    if name == "legacy_none":
        start = time.perf_counter()
        LegacyTrainer(cfg).train()
    elif name == "legacy_six":
        callbacks = _six_legacy(workdir)
        start = time.perf_counter()
        LegacyTrainer(cfg, callbacks).train()
    elif name == "fit_none":
        start = time.perf_counter()
        fit(cfg, **quiet)
    elif name == "fit_six_adapted":
        callbacks = wrap(_six_legacy(workdir))
        start = time.perf_counter()
        fit(cfg, callbacks, **quiet)
    elif name == "fit_sixteen_empty":
        callbacks = wrap(_sixteen_empty())
        start = time.perf_counter()
        fit(cfg, callbacks, **quiet)
    elif name == "fit_six_native":
        built = _six_native(workdir)
        start = time.perf_counter()
        fit(cfg, built.callbacks, **{**quiet, "logger": built.loggers or False})
    else:
        raise ValueError(f"unknown variant {name!r}")
    return time.perf_counter() - start


def _dispatch_cost_ns(repeats: int = 20000) -> dict[str, float]:
    """ns per event: the adapter's RL-event path vs a direct method call with the same arguments."""
    from legacy_callbacks import CallbackManager

    from .adapter import LegacyCallbackAdapter

    class OnlyEpisodes:
        def on_episode_end(self, trainer, episode_info):
            pass

    from .adapter import _SharedRunState

    cb = OnlyEpisodes()
    adapter = LegacyCallbackAdapter(cb)
    # The state setup() gives an adapter inside a run (the view is not touched by this callback).
    adapter._view, adapter._shared, adapter._position = object(), _SharedRunState(), 0
    payload = {"env_index": 0, "episode_index": 1, "reward": 1.0, "length": 10, "pnl": 0.0, "trades": 1, "win_rate": 1.0}
    handler = adapter.on_rl_episode_end
    direct = timeit.timeit(lambda: cb.on_episode_end(None, payload), number=repeats) / repeats * 1e9
    manager = CallbackManager([cb])
    via_manager = timeit.timeit(lambda: manager.fire("on_episode_end", trainer=None, episode_info=payload),
                                number=repeats) / repeats * 1e9
    via_adapter = timeit.timeit(lambda: handler(None, None, payload), number=repeats) / repeats * 1e9
    loop = timeit.timeit(lambda: None, number=repeats) / repeats * 1e9
    return {"direct_call_ns": direct - loop, "legacy_manager_ns": via_manager - loop,
            "adapter_ns": via_adapter - loop}


def _peak_rss_mb(variant: str, cycles: int) -> float:
    """Peak RSS of one run of ``variant`` in a fresh process."""
    code = ("import resource, sys, pathlib, tempfile, logging, torch; logging.disable(logging.WARNING);"
            "torch.set_num_threads(1);"
            "from fxai_compat.bench import _run_variant;"
            f"d = pathlib.Path(tempfile.mkdtemp()); _run_variant({variant!r}, {cycles}, d);"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, WANDB_SILENT="true", WANDB_MODE="disabled"))
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {variant} failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def run_benchmark(cycles: int = 20, repeats: int = 7, memory_cycles: int | None = None, *,
                  variants: list[str] | None = None, workdir: Path | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every variant interleaved; returns the results dict written to ``bench/results.json``."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    # One intra-op thread for every variant: the tiny networks gain nothing from more, and on a shared
    # 2-core machine competing thread pools make timings swing by 10x. Both hosts do identical compute.
    torch.set_num_threads(1)
    names = variants or ["legacy_none", "fit_none", "legacy_six", "fit_six_adapted", "fit_sixteen_empty",
                         "fit_six_native"]
    root = Path(workdir or tempfile.mkdtemp(prefix="fxai-bench-"))
    times: dict[str, list[float]] = {n: [] for n in names}
    log(f"warm-up ({cycles} cycles per run)...")
    for name in names:
        _run_variant(name, cycles, root / "warmup" / name)
    for rep in range(repeats):
        # Every variant once per round, in reverse order every other round: a machine that drifts (slows
        # down or speeds up over minutes) then favours no variant.
        for name in (names if rep % 2 == 0 else names[::-1]):
            times[name].append(_run_variant(name, cycles, root / f"r{rep}" / name))
        log(f"round {rep + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names))
    cfg = _config(cycles, root)
    steps = cycles * cfg.rollout_size
    variants_out = {n: {"seconds_median": statistics.median(t), "seconds_min": min(t), "seconds_max": max(t),
                        "env_steps_per_second": steps / statistics.median(t), "runs": t}
                    for n, t in times.items() if t}
    ratios: dict[str, Any] = {}
    for ratio, (num, den) in RATIOS.items():
        if times.get(num) and times.get(den):
            per_round = [a / b for a, b in zip(times[num], times[den])]
            ratios[ratio] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
                             "target": TARGETS[ratio], "meets_target": statistics.median(per_round) <= TARGETS[ratio],
                             "numerator": num, "denominator": den}
        else:
            ratios[ratio] = {"median": None, "target": TARGETS[ratio], "meets_target": None,
                             "note": f"variant {num if not times.get(num) else den} not available"}
    memory: dict[str, Any] = {}
    if memory_cycles:
        for name in ("legacy_six", "fit_six_adapted", "fit_six_native"):
            base = _peak_rss_mb(name, memory_cycles)
            long = _peak_rss_mb(name, memory_cycles * 10)
            memory[name] = {"base_mb": base, "long_mb": long, "ratio": long / base, "target": TARGETS["memory"],
                            "meets_target": long / base <= TARGETS["memory"]}
            log(f"memory {name}: {base:.0f} MB -> {long:.0f} MB over 10x the cycles ({long / base:.3f})")
    return {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "cycles": cycles, "repeats": repeats, "env_steps_per_run": steps, "variants": variants_out,
            "ratios": ratios, "memory": memory, "dispatch_cost": _dispatch_cost_ns()}


def format_table(results: dict[str, Any]) -> str:
    lines = ["| ratio | meaning | median | min-max | target | met |", "|---|---|---|---|---|---|"]
    for ratio, info in results["ratios"].items():
        num, den = RATIOS[ratio]
        if info.get("median") is None:
            lines.append(f"| {ratio} | {num} / {den} | n/a | | <= {info['target']:.2f} | {info.get('note', '')} |")
            continue
        lines.append(f"| {ratio} | {num} / {den} | {info['median']:.3f} | {info['min']:.3f}-{info['max']:.3f} | "
                     f"<= {info['target']:.2f} | {'yes' if info['meets_target'] else 'NO'} |")
    for name, info in results.get("memory", {}).items():
        lines.append(f"| memory | peak RSS {name}, 10x cycles / base | {info['ratio']:.3f} | "
                     f"{info['base_mb']:.0f}-{info['long_mb']:.0f} MB | <= {info['target']:.2f} | "
                     f"{'yes' if info['meets_target'] else 'NO'} |")
    lines.append("")
    lines.append("| variant | median s | env steps/s |")
    lines.append("|---|---|---|")
    for name, info in results["variants"].items():
        lines.append(f"| {name} | {info['seconds_median']:.2f} | {info['env_steps_per_second']:.0f} |")
    d = results["dispatch_cost"]
    lines.append("")
    lines.append(f"dispatch per event: direct call {d['direct_call_ns']:.0f} ns, legacy CallbackManager "
                 f"{d['legacy_manager_ns']:.0f} ns, adapter (RL event -> legacy method) {d['adapter_ns']:.0f} ns")
    return "\n".join(lines)


def learning_check(config_path: str = "examples/cartpole.yaml", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the CartPole config under both hosts and report evaluation return vs environment steps.

    Reference points from outside: Stable-Baselines3's zoo reports 500 at 100k steps with tuned settings,
    CleanRL's default PPO about 490 at 500k steps. The target here: >= 475 within 100k steps on both hosts.
    """
    from legacy_callbacks import BaseCallback

    from .adapter import LegacyCallbackAdapter
    from .cli import load_run_config
    from .legacy_host import LegacyTrainer
    from .lightning_host import fit

    cfg = load_run_config(config_path).train
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fxai_compat.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 cycles, 1 round, no memory runs")
    parser.add_argument("--cycles", type=int, default=20,
                        help="cycles per run (default 20: the demo's evaluations and checkpoints fall due twice)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--memory-cycles", type=int, default=None,
                        help="cycles of the base memory run, the long one does 10x (default: --cycles; 0: skip)")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--learning", action="store_true",
                        help="instead: the CartPole learning check (examples/cartpole.yaml) under both hosts")
    args = parser.parse_args(argv)
    if args.learning:
        result = learning_check()
        ok = all(r["first_475"] is not None and r["first_475"] <= 100_000 for r in result.values())
        print("learning check:", "passed (>= 475 within 100k steps on both hosts)" if ok else "FAILED")
        return 0 if ok else 1
    if args.quick:
        args.cycles, args.repeats, args.memory_cycles = 2, 1, 0
    if args.memory_cycles is None:
        args.memory_cycles = args.cycles
    if args.cycles <= 0 or args.repeats <= 0 or args.memory_cycles < 0:
        parser.error("--cycles and --repeats must be positive, --memory-cycles >= 0")
    results = run_benchmark(args.cycles, args.repeats, args.memory_cycles)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
