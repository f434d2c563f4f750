"""``python -m fxai_compat.bench``: what moving to Lightning costs, as ratios measured side by side.

Every variant runs the demo config's PPO work (``examples/demo.yaml``: FX env, its evaluation and
checkpoint cadences, its six callbacks' options) for a fixed number of cycles. This machine is noisy
(its speed swings by tens of percent within seconds), so after a warm-up each round runs one run of
every variant interleaved cycle by cycle (A B A B ..., see ``_Lockstep``; reversed every other round):
each ratio is computed from runs measured side by side, per round, and reported as the median of the
rounds with its min-max range. Peak memory is measured in fresh subprocesses (peak RSS only grows
within a process).

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
import threading
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
    from .runfile import load_run_config

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


def _prepare_variant(name: str, cycles: int, workdir: Path) -> Callable[[], Any]:
    """Build ``name``'s callbacks (not timed) and return the call that trains (timed: ``fit`` includes the
    Trainer's construction, as a user's run does)."""
    from .adapter import wrap
    from .legacy_host import LegacyTrainer
    from .lightning_host import fit

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = _config(cycles, workdir)
    quiet = {"logger": False, "enable_progress_bar": False}
    if name == "legacy_none":
        return lambda: LegacyTrainer(cfg).train()
    if name == "legacy_six":
        callbacks = _six_legacy(workdir)
        return lambda: LegacyTrainer(cfg, callbacks).train()
    if name == "fit_none":
        return lambda: fit(cfg, **quiet)
    if name == "fit_six_adapted":
        callbacks = wrap(_six_legacy(workdir))
        return lambda: fit(cfg, callbacks, **quiet)
    if name == "fit_sixteen_empty":
        callbacks = wrap(_sixteen_empty())
        return lambda: fit(cfg, callbacks, **quiet)
    if name == "fit_six_native":
        built = _six_native(workdir)
        return lambda: fit(cfg, built.callbacks, **{**quiet, "logger": built.loggers or False})
    raise ValueError(f"unknown variant {name!r}")


def _run_variant(name: str, cycles: int, workdir: Path) -> float:
    """Wall seconds of one run of ``name`` on its own."""
    run = _prepare_variant(name, cycles, workdir)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class _Lockstep:
    """Runs one run of each variant at the same time, in threads that take turns one segment at a time: the
    set-up up to the first cycle, then each cycle (a segment ends where the next cycle begins, so checkpoint
    writes and epoch-end work count in the cycle before), round robin in the given order. Only one thread
    works at any moment (the others wait on a condition, using no CPU); each variant's time is the sum of its
    segments. So the runs compared are interleaved cycle by cycle, a fraction of a second apart: on a machine
    whose speed swings by tens of percent from one second to the next, whole runs measured one after the other
    differ by more than what is being measured, cycles measured next to each other do not.
    """

    def __init__(self, names: list[str]):
        self._cond = threading.Condition()
        self._order = list(names)
        self._turn = 0
        self._local = threading.local()
        self.seconds = {name: 0.0 for name in names}

    def _wait(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._order[self._turn] == name)
        self._local.start = time.perf_counter()

    def _pass(self, name: str, leaving: bool = False) -> None:
        elapsed = time.perf_counter() - self._local.start
        with self._cond:
            self.seconds[name] += elapsed
            index = self._order.index(name)
            if leaving:
                self._order.pop(index)
                self._turn = index % len(self._order) if self._order else 0
            else:
                self._turn = (index + 1) % len(self._order)
            self._cond.notify_all()

    def boundary(self) -> None:
        """A cycle begins (called from ``PPOCore.begin_cycle``, in the variant's thread): hand over the turn."""
        name = getattr(self._local, "name", None)
        if name is not None:
            self._pass(name)
            self._wait(name)

    def run(self, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
        from .ppo import PPOCore

        errors: dict[str, BaseException] = {}

        def worker(name: str, run: Callable[[], Any]) -> None:
            self._local.name = name
            self._wait(name)
            try:
                run()
            except BaseException as exc:  # re-raised in the caller; the others must not wait for this thread
                errors[name] = exc
            finally:
                self._local.name = None
                self._pass(name, leaving=True)

        original = PPOCore.begin_cycle

        def begin_cycle(core, *args, **kwargs):
            self.boundary()
            return original(core, *args, **kwargs)

        PPOCore.begin_cycle = begin_cycle
        try:
            threads = [threading.Thread(target=worker, args=item, name=f"bench-{item[0]}") for item in runs.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            PPOCore.begin_cycle = original
        if errors:
            name, exc = next(iter(errors.items()))
            raise RuntimeError(f"benchmark variant {name} failed: {type(exc).__name__}: {exc}") from exc
        return self.seconds


def _lockstep_round(names: list[str], cycles: int, workdir: Path) -> dict[str, float]:
    runs = {name: _prepare_variant(name, cycles, workdir / name) for name in names}
    return _Lockstep(names).run(runs)


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


def _memory_mb(reset_peak: bool = False) -> tuple[float, float]:
    """(resident, peak resident) MB of this process, from ``/proc/self/status``. ``reset_peak``: start the peak
    afresh (``/proc/self/clear_refs``), so it covers what runs next and not the imports before."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _peak_rss_mb(variant: str, cycles: int) -> tuple[float, float]:
    """(resident MB before, peak resident MB during) one run of ``variant`` in a fresh process (Linux). A one-cycle
    run of the same variant goes first (it imports what callbacks import lazily, such as wandb, and warms up
    torch's allocators); the peak is reset after it, so it covers the measured run alone."""
    code = ("import logging, pathlib, tempfile, torch; logging.disable(logging.WARNING); torch.set_num_threads(1)\n"
            "from fxai_compat.bench import _memory_mb, _prepare_variant\n"
            "work = pathlib.Path(tempfile.mkdtemp())\n"
            f"_prepare_variant({variant!r}, 1, work / 'warm-up')()\n"
            f"run = _prepare_variant({variant!r}, {cycles}, work / 'run')\n"
            "before, _ = _memory_mb(reset_peak=True)\n"
            "run()\n"
            "print(before, _memory_mb()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, WANDB_SILENT="true", WANDB_MODE="disabled"))
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {variant} failed: {out.stderr[-2000:]}")
    before, peak = out.stdout.strip().splitlines()[-1].split()
    return float(before), float(peak)


def run_benchmark(cycles: int = 10, repeats: int = 15, memory_cycles: int | None = None, *,
                  variants: list[str] | None = None, workdir: Path | None = None,
                  log: Callable[[str], None] = print,
                  save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every variant interleaved; returns the results dict written to ``bench/results.json``.

    ``save`` is called with the timing results before the (long) memory runs, and again at the end: a
    failed memory run loses nothing measured before it (it is reported under ``memory.error``)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fxai-bench-") as tmp:
            return run_benchmark(cycles, repeats, memory_cycles, variants=variants, workdir=Path(tmp), log=log,
                                 save=save)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    # One intra-op thread for every variant: the tiny networks gain nothing from more, and on a shared
    # 2-core machine competing thread pools make timings swing by 10x. Both hosts do identical compute.
    torch.set_num_threads(1)
    # In this order the two variants of each ratio take turns next to each other (host: 1-2, dispatch: 2-3,
    # adapter: 4-5, native: 5-6): each of their cycles is measured right after the other's.
    names = list(variants or ["legacy_none", "fit_none", "fit_sixteen_empty", "fit_six_adapted", "legacy_six",
                              "fit_six_native"])
    if len(set(names)) != len(names):
        raise ValueError(f"run_benchmark variants must be distinct; got {names}.")
    root = Path(workdir)
    times: dict[str, list[float]] = {n: [] for n in names}
    log(f"warm-up ({cycles} cycles per run)...")
    _lockstep_round(names, cycles, root / "warmup")
    for rep in range(repeats):
        # One run of every variant per round, interleaved cycle by cycle (see _Lockstep), in reverse order every
        # other round so that no variant always goes first.
        seconds = _lockstep_round(names if rep % 2 == 0 else names[::-1], cycles, root / f"r{rep}")
        for name in names:
            times[name].append(seconds[name])
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
                             "numerator": num, "denominator": den, "per_round": per_round}
        else:
            ratios[ratio] = {"median": None, "target": TARGETS[ratio], "meets_target": None,
                             "note": f"variant {num if not times.get(num) else den} not available"}
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()},
               "cycles": cycles, "repeats": repeats, "env_steps_per_run": steps, "variants": variants_out,
               "ratios": ratios, "memory": {}, "dispatch_cost": _dispatch_cost_ns()}
    if save is not None:
        save(results)
    if memory_cycles:
        try:
            for name in ("legacy_six", "fit_six_adapted", "fit_six_native"):
                before, base = _peak_rss_mb(name, memory_cycles)
                before_long, long = _peak_rss_mb(name, memory_cycles * 10)
                results["memory"][name] = {
                    "base_mb": base, "long_mb": long, "ratio": long / base, "target": TARGETS["memory"],
                    "meets_target": long / base <= TARGETS["memory"],
                    "growth_mb": {"base": base - before, "long": long - before_long}}
                log(f"memory {name}: peak {base:.0f} MB -> {long:.0f} MB over 10x the cycles ({long / base:.3f}); "
                    f"above the resident size at the start: {base - before:.1f} MB -> {long - before_long:.1f} MB")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            results["memory"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            log(f"memory runs failed, timings kept: {results['memory']['error']}")
        if save is not None:
            save(results)
    return results


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
        if name == "error":
            lines.append(f"| memory | not measured | | {info} | <= {TARGETS['memory']:.2f} | |")
            continue
        growth = info["growth_mb"]
        lines.append(f"| memory | peak RSS {name}, 10x cycles / base | {info['ratio']:.3f} | "
                     f"{info['base_mb']:.0f} -> {info['long_mb']:.0f} MB (+{growth['base']:.1f} -> "
                     f"+{growth['long']:.1f} MB over the start) | <= {info['target']:.2f} | "
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
    from .runfile import load_run_config
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
    parser.add_argument("--cycles", type=int, default=10,
                        help="cycles per run (default 10: the demo's evaluation and checkpoint fall due once)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="interleaved rounds (default 15: short runs, many rounds, on a noisy machine)")
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = run_benchmark(args.cycles, args.repeats, args.memory_cycles,
                            save=lambda found: out.write_text(json.dumps(found, indent=2)))
    print(format_table(results))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
