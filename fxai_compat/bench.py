"""``python -m fxai_compat.bench``: what moving to Lightning costs, at three scales, measured side by side.

Three scales, each a run config of ``examples/``: ``cartpole`` (short cycles: 8 envs x 32 steps, 20 epochs,
~55 ms of PPO work per cycle), ``demo`` (the demo: FX env, 4 envs x 256 steps, 0.1-0.25 s) and ``production``
(16 envs x 256 steps, 256x256 MLP, 10 epochs of 512-transition minibatches, ~1 s). Every variant of a scale
runs that config's PPO work with its evaluation and checkpoint cadences (the six callbacks take the demo's
options) for a fixed number of cycles. This machine is noisy (its speed swings by tens of percent within
seconds), so after a warm-up each round runs one run of every variant interleaved cycle by cycle (A B A B
..., see ``_Lockstep``; reversed every other round): each ratio is computed from runs measured side by
side, per round, and reported as the median of the rounds with its min-max range. The same segments give
the absolute fixed overhead (Lightning minus the legacy loop) per cycle and per run in milliseconds, and
the dispatch variant the cost per adapted event in microseconds. Peak memory is measured in fresh
subprocesses (peak RSS only grows within a process).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main", "run_benchmark", "RATIOS", "TARGETS", "SCALES", "FIXED_OVERHEAD_TARGET_MS"]

#: ratio name -> (numerator variant, denominator variant)
RATIOS = {
    "host": ("fit_none", "legacy_none"),
    "adapter": ("fit_six_adapted", "legacy_six"),
    "dispatch": ("fit_sixteen_empty", "fit_none"),
    "native": ("fit_six_native", "legacy_six"),
}
_ALL = ["legacy_none", "fit_none", "fit_sixteen_empty", "fit_six_adapted", "legacy_six", "fit_six_native"]


@dataclass(frozen=True)
class Scale:
    """One benchmark scale: its run config, cycles per run and rounds, variants (in lockstep order: the two
    variants of each ratio next to each other) and the targets of its ratios (a ratio without one is reported)."""

    config: str
    cycles: int
    repeats: int
    variants: tuple[str, ...]
    targets: dict[str, float] = field(default_factory=dict)


SCALES = {
    "cartpole": Scale("cartpole.yaml", cycles=20, repeats=10,
                      variants=("legacy_none", "fit_none", "legacy_six", "fit_six_native"), targets={"host": 1.05}),
    "demo": Scale("demo.yaml", cycles=10, repeats=8, variants=tuple(_ALL),
                  targets={"host": 1.05, "adapter": 1.10, "dispatch": 1.05, "native": 1.08}),
    "production": Scale("production.yaml", cycles=5, repeats=4,
                        variants=("legacy_none", "fit_none", "fit_six_adapted", "legacy_six", "fit_six_native"),
                        targets={"host": 1.02, "adapter": 1.03, "native": 1.03}),
}
#: Ratio targets by scale (None: measured, no target), and the peak-memory target.
TARGETS = {**{name: dict(scale.targets) for name, scale in SCALES.items()}, "memory": 1.10}
#: The bare host's fixed overhead per cycle (Lightning minus the legacy loop, middle cycles), at every scale.
FIXED_OVERHEAD_TARGET_MS = 2.0
#: Absolute overheads reported: name -> (Lightning variant, legacy variant).
OVERHEADS = {"host": ("fit_none", "legacy_none"), "adapter": ("fit_six_adapted", "legacy_six"),
             "native": ("fit_six_native", "legacy_six")}

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_DEMO = _EXAMPLES / "demo.yaml"


def _load(path: Path):
    from .runfile import load_run_config

    if not path.exists():
        raise FileNotFoundError(f"The benchmark runs the config {path}, which is not there: run it from a "
                                f"checkout of the project (pip install -e .), not from an installed wheel.")
    return load_run_config(str(path))


def _demo():
    """The demo run config, ``examples/demo.yaml`` of the source tree (its callback options are the benchmark's)."""
    return _load(_DEMO)


def _config(cycles: int, workdir: Path, scale: str = "demo"):
    """The scale's training config (its evaluation and checkpoint cadences too), for ``cycles`` cycles."""
    return _load(_EXAMPLES / SCALES[scale].config).train.replace(cycles=cycles,
                                                                 checkpoint_dir=str(workdir / "checkpoints"))


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


#: Events delivered to the sixteen-empty callbacks in the last run of that variant (set by ``_sixteen_empty``).
_EVENTS_DELIVERED = [0]


def _sixteen_empty() -> list[Any]:
    """Six callbacks that define all 16 events with bodies that only count them: the cost of dispatch."""
    from legacy_callbacks.base import EVENTS, EVENT_ARGS

    _EVENTS_DELIVERED[0] = 0

    def make(event):
        names = EVENT_ARGS[event]
        namespace: dict[str, Any] = {"counter": _EVENTS_DELIVERED}
        exec(f"def {event}(self, {', '.join(names)}):\n    counter[0] += 1", namespace)
        return namespace[event]

    cls = type("Empty16", (), {event: make(event) for event in EVENTS})
    return [cls() for _ in range(6)]


def _six_native(workdir: Path):
    """The same six sections as native ports (a ``BuiltCallbacks``: callbacks and the W&B port's logger)."""
    from .toggle import build_callbacks

    return build_callbacks({"callbacks": _callback_options(workdir)}, {"all": "native"}, env={}, run_dir=workdir)


def _prepare_variant(name: str, cycles: int, workdir: Path, scale: str = "demo") -> Callable[[], Any]:
    """Build ``name``'s callbacks (not timed) and return the call that trains (timed: ``fit`` includes the
    Trainer's construction, as a user's run does)."""
    from .adapter import wrap
    from .legacy_host import LegacyTrainer
    from .lightning_host import fit

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = _config(cycles, workdir, scale)
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
        #: Each variant's segments in order: set-up, then one per cycle (the last one with the teardown).
        self.segments: dict[str, list[float]] = {name: [] for name in names}
        #: Of each segment, the seconds spent inside the core's rollout, update and evaluation (the PPO work).
        self.core_seconds: dict[str, list[float]] = {name: [] for name in names}

    def _wait(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._order[self._turn] == name)
        self._local.core = 0.0
        self._local.start = time.perf_counter()

    def _pass(self, name: str, leaving: bool = False) -> None:
        elapsed = time.perf_counter() - self._local.start
        with self._cond:
            self.seconds[name] += elapsed
            self.segments[name].append(elapsed)
            self.core_seconds[name].append(self._local.core)
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
        local = self._local

        def begin_cycle(core, *args, **kwargs):
            self.boundary()
            return original(core, *args, **kwargs)

        def timed(method):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return method(*args, **kwargs)
                finally:
                    local.core = getattr(local, "core", 0.0) + time.perf_counter() - start
            return wrapper

        work = {name: getattr(PPOCore, name) for name in ("collect_rollout", "update", "evaluate")}
        PPOCore.begin_cycle = begin_cycle
        for name, method in work.items():
            setattr(PPOCore, name, timed(method))
        try:
            threads = [threading.Thread(target=worker, args=item, name=f"bench-{item[0]}") for item in runs.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            PPOCore.begin_cycle = original
            for name, method in work.items():
                setattr(PPOCore, name, method)
        if errors:
            name, exc = next(iter(errors.items()))
            raise RuntimeError(f"benchmark variant {name} failed: {type(exc).__name__}: {exc}") from exc
        return self.seconds


def _lockstep_round(names: list[str], cycles: int, workdir: Path, scale: str = "demo") -> _Lockstep:
    runs = {name: _prepare_variant(name, cycles, workdir / name, scale) for name in names}
    lockstep = _Lockstep(names)
    lockstep.run(runs)
    return lockstep


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


def _ratio(times: dict[str, list[float]], num: str, den: str, target: float | None) -> dict[str, Any]:
    if not (times.get(num) and times.get(den)):
        return {"median": None, "target": target, "meets_target": None,
                "note": f"variant {num if not times.get(num) else den} not measured at this scale"}
    per_round = [a / b for a, b in zip(times[num], times[den])]
    median = statistics.median(per_round)
    return {"median": median, "min": min(per_round), "max": max(per_round), "target": target,
            "meets_target": None if target is None else median <= target, "numerator": num, "denominator": den,
            "per_round": per_round}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values}


def _overheads(segments: dict[str, list[list[float]]], core: dict[str, list[list[float]]], cycles: int,
               scale: str) -> dict[str, Any]:
    """Lightning minus the legacy loop, in ms, per round: per cycle (the middle cycles, where no evaluation or
    checkpoint falls due at the benchmark's cadences), the rest per run (set-up, the first cycle's first-use
    costs, teardown, the due evaluation and checkpoint), the whole difference spread over the run's cycles, and per middle cycle outside the
    core's PPO work (rollout, update, evaluation timed inside each run: the compute both hosts share is
    subtracted before comparing, so the machine's speed swings mostly drop out; RL events dispatched inside the
    rollout and the updates count as PPO work there)."""
    out: dict[str, Any] = {}
    for name, (num, den) in OVERHEADS.items():
        if not (segments.get(num) and segments.get(den)):
            continue
        per_cycle, per_run, amortized, outside = [], [], [], []
        for a, b, ca, cb in zip(segments[num], segments[den], core[num], core[den]):
            # Segments: set-up, cycle 0 (first-use costs: registering the logged names ...), ..., last cycle +
            # teardown. The middle cycles are the ones in between (cycle 0 too in runs of fewer than 3 cycles).
            mid = slice(2, -1) if len(a) >= 4 else slice(1, -1)
            n_mid = max(len(a[mid]), 1)
            middle = (sum(a[mid]) - sum(b[mid])) / n_mid * 1000
            total = (sum(a) - sum(b)) * 1000
            per_cycle.append(middle)
            per_run.append(total - middle * cycles)
            amortized.append(total / cycles)
            outside.append(((sum(a[mid]) - sum(ca[mid])) - (sum(b[mid]) - sum(cb[mid]))) / n_mid * 1000)
        out[name] = {"per_cycle_ms": _spread(per_cycle), "per_run_rest_ms": _spread(per_run),
                     "amortized_per_cycle_ms": _spread(amortized), "outside_ppo_work_per_cycle_ms": _spread(outside),
                     "lightning": num, "legacy": den}
        if name == "host":
            out[name]["target_per_cycle_ms"] = FIXED_OVERHEAD_TARGET_MS
            out[name]["meets_target"] = statistics.median(per_cycle) <= FIXED_OVERHEAD_TARGET_MS
    return out


def run_scale(scale: str, cycles: int | None = None, repeats: int | None = None, *, variants: list[str] | None = None,
              workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure one scale's variants interleaved (see ``_Lockstep``); its part of ``bench/results.json``."""
    spec = SCALES[scale]
    cycles = cycles or spec.cycles
    repeats = repeats or spec.repeats
    names = list(variants or spec.variants)
    if len(set(names)) != len(names):
        raise ValueError(f"run_benchmark variants must be distinct; got {names}.")
    unknown = [n for n in names if n not in _ALL]
    if unknown:
        raise ValueError(f"unknown benchmark variant(s) {unknown}; known: {_ALL}.")
    root = Path(workdir) / scale
    times: dict[str, list[float]] = {n: [] for n in names}
    segments: dict[str, list[list[float]]] = {n: [] for n in names}
    core: dict[str, list[list[float]]] = {n: [] for n in names}
    events: list[int] = []
    log(f"[{scale}] warm-up ({min(cycles, 2)} cycles per run)...")
    _lockstep_round(names, min(cycles, 2), root / "warmup", scale)
    for rep in range(repeats):
        # One run of every variant per round, interleaved cycle by cycle (see _Lockstep), in reverse order every
        # other round so that no variant always goes first.
        lockstep = _lockstep_round(names if rep % 2 == 0 else names[::-1], cycles, root / f"r{rep}", scale)
        for name in names:
            times[name].append(lockstep.seconds[name])
            segments[name].append(lockstep.segments[name])
            core[name].append(lockstep.core_seconds[name])
        if "fit_sixteen_empty" in names:
            events.append(_EVENTS_DELIVERED[0])
        log(f"[{scale}] round {rep + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names))
    cfg = _config(cycles, root, scale)
    steps = cycles * cfg.rollout_size
    out: dict[str, Any] = {
        "config": f"examples/{spec.config}", "cycles": cycles, "repeats": repeats, "env_steps_per_run": steps,
        "work_per_cycle": {"n_envs": cfg.n_envs, "n_steps": cfg.n_steps, "update_epochs": cfg.update_epochs,
                           "minibatch_size": cfg.minibatch_size, "hidden_sizes": list(cfg.hidden_sizes),
                           "optimizer_steps": cfg.update_epochs * cfg.minibatches_per_epoch},
        "variants": {n: {"seconds_median": statistics.median(t), "seconds_min": min(t), "seconds_max": max(t),
                         "seconds_per_cycle_median": statistics.median(t) / cycles,
                         "env_steps_per_second": steps / statistics.median(t), "runs": t}
                     for n, t in times.items() if t},
        "ratios": {ratio: _ratio(times, num, den, spec.targets.get(ratio)) for ratio, (num, den) in RATIOS.items()
                   if num in names and den in names},
        "fixed_overhead": _overheads(segments, core, cycles, scale)}
    if events and times.get("fit_none"):
        per_event = [(a - b) / n * 1e6 for a, b, n in zip(times["fit_sixteen_empty"], times["fit_none"], events) if n]
        out["adapted_event_us"] = {**_spread(per_event), "events_per_run": events[-1]}
    return out


def run_benchmark(scales: list[str] | None = None, memory_cycles: int | None = 10, *, cycles: int | None = None,
                  repeats: int | None = None, workdir: Path | None = None, log: Callable[[str], None] = print,
                  save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every scale (``SCALES``); returns the results dict written to ``bench/results.json``.

    ``cycles`` / ``repeats`` override every scale's own. ``save`` is called after each scale and again at the
    end: a failed memory run loses nothing measured before it (it is reported under ``memory.error``)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fxai-bench-") as tmp:
            return run_benchmark(scales, memory_cycles, cycles=cycles, repeats=repeats, workdir=Path(tmp), log=log,
                                 save=save)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    # One intra-op thread for every variant: on a shared 2-core machine competing thread pools make timings
    # swing by 10x, and the legacy loop and Lightning do identical compute.
    torch.set_num_threads(1)
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                           "platform": platform.platform(), "torch_threads": 1},
                               "scales": {}, "memory": {}, "dispatch_cost": _dispatch_cost_ns()}
    for scale in scales or list(SCALES):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}.")
        results["scales"][scale] = run_scale(scale, cycles, repeats, workdir=Path(workdir), log=log)
        if save is not None:
            save(results)
    from .bench_envs import measure_async_env

    quick = cycles is not None and cycles <= 2 and repeats == 1
    results["slow_env"] = measure_async_env(Path(workdir) / "slow_env", cycles=2 if quick else 4,
                                            repeats=1 if quick else 5, log=log)
    if save is not None:
        save(results)
    if memory_cycles:
        try:
            for name in ("legacy_six", "fit_six_adapted", "fit_six_native"):
                before, base = _peak_rss_mb(name, memory_cycles)
                before_long, long = _peak_rss_mb(name, memory_cycles * 10)
                results["memory"][name] = {
                    "scale": "demo", "base_mb": base, "long_mb": long, "ratio": long / base,
                    "target": TARGETS["memory"], "meets_target": long / base <= TARGETS["memory"],
                    "growth_mb": {"base": base - before, "long": long - before_long}}
                log(f"memory {name}: peak {base:.0f} MB -> {long:.0f} MB over 10x the cycles ({long / base:.3f}); "
                    f"above the resident size at the start: {base - before:.1f} MB -> {long - before_long:.1f} MB")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            results["memory"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            log(f"memory runs failed, timings kept: {results['memory']['error']}")
        if save is not None:
            save(results)
    return results


def _met(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "NO")


def format_table(results: dict[str, Any]) -> str:
    lines = ["| scale | ratio | meaning | median | min-max | target | met |", "|---|---|---|---|---|---|---|"]
    for scale, res in results["scales"].items():
        for ratio, info in res["ratios"].items():
            num, den = RATIOS[ratio]
            target = "" if info["target"] is None else f"<= {info['target']:.2f}"
            if info.get("median") is None:
                lines.append(f"| {scale} | {ratio} | {num} / {den} | n/a | | {target} | {info.get('note', '')} |")
                continue
            lines.append(f"| {scale} | {ratio} | {num} / {den} | {info['median']:.3f} | {info['min']:.3f}-"
                         f"{info['max']:.3f} | {target} | {_met(info['meets_target'])} |")
    for name, info in results.get("memory", {}).items():
        if name == "error":
            lines.append(f"| demo | memory | not measured | | {info} | <= {TARGETS['memory']:.2f} | |")
            continue
        growth = info["growth_mb"]
        lines.append(f"| demo | memory | peak RSS {name}, 10x cycles / base | {info['ratio']:.3f} | "
                     f"{info['base_mb']:.0f} -> {info['long_mb']:.0f} MB (+{growth['base']:.1f} -> "
                     f"+{growth['long']:.1f} MB over the start) | <= {info['target']:.2f} | "
                     f"{_met(info['meets_target'])} |")
    lines += ["", "Fixed overhead, Lightning minus the legacy loop, ms (median, min-max of the rounds):", "",
              "| scale | what | per cycle | per cycle outside the PPO work | per run (set-up, teardown, due eval/checkpoint)"
              " | whole run / cycles |", "|---|---|---|---|---|---|"]
    for scale, res in results["scales"].items():
        for name, info in res["fixed_overhead"].items():
            cells = [f"{info[k]['median']:.1f} ({info[k]['min']:.1f} to {info[k]['max']:.1f})"
                     for k in ("per_cycle_ms", "outside_ppo_work_per_cycle_ms", "per_run_rest_ms",
                               "amortized_per_cycle_ms")]
            target = (f" (target <= {info['target_per_cycle_ms']:.0f}: {_met(info['meets_target'])})"
                      if "target_per_cycle_ms" in info else "")
            lines.append(f"| {scale} | {name}: {info['lightning']} - {info['legacy']} | {cells[0]}{target} | "
                         f"{cells[1]} | {cells[2]} | {cells[3]} |")
    lines += ["", "| scale | variant | median s per run | s per cycle | env steps/s |", "|---|---|---|---|---|"]
    for scale, res in results["scales"].items():
        for name, info in res["variants"].items():
            lines.append(f"| {scale} | {name} | {info['seconds_median']:.2f} | {info['seconds_per_cycle_median']:.3f} "
                         f"| {info['env_steps_per_second']:.0f} |")
    lines.append("")
    for scale, res in results["scales"].items():
        if "adapted_event_us" in res:
            e = res["adapted_event_us"]
            lines.append(f"[{scale}] per adapted legacy event, in the runs ((sixteen-empty - none) / events delivered, "
                         f"{e['events_per_run']} per run): {e['median']:.1f} us ({e['min']:.1f} to {e['max']:.1f})")
    slow = results.get("slow_env")
    if slow:
        whole, cycle = slow["speedup_whole_run"], slow["speedup_per_cycle"]
        lines.append(f"slow env ({slow['env']}, {slow['work_per_step']} per step, "
                     f"{slow['settings']['n_envs']} envs, {os.cpu_count()} cores): vector_env async / sync speed-up "
                     f"{whole['median']:.2f}x per run ({whole['min']:.2f}-{whole['max']:.2f})"
                     + (f", {cycle['median']:.2f}x per cycle without the workers' start-up "
                        f"({cycle['min']:.2f}-{cycle['max']:.2f})" if cycle else ""))
    d = results["dispatch_cost"]
    lines.append(f"dispatch per event, microbenchmark: direct call {d['direct_call_ns']:.0f} ns, legacy CallbackManager "
                 f"{d['legacy_manager_ns']:.0f} ns, adapter (RL event -> legacy method) {d['adapter_ns']:.0f} ns")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fxai_compat.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: every scale, 2 cycles, 1 round, no memory runs")
    parser.add_argument("--scale", action="append", choices=list(SCALES),
                        help="measure only this scale (repeatable; default: all three)")
    parser.add_argument("--cycles", type=int, default=None,
                        help="cycles per run at every scale (default: each scale's own: cartpole 20, demo 10, "
                             "production 5, so that evaluation falls due once)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved rounds at every scale (default: each scale's own: 10, 8, 4)")
    parser.add_argument("--memory-cycles", type=int, default=10,
                        help="cycles of the base memory run at the demo scale, the long one does 10x (0: skip)")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--learning", action="store_true",
                        help="instead: the CartPole learning check (examples/cartpole.yaml) under both hosts")
    args = parser.parse_args(argv)
    if args.learning:
        from .bench_learning import learning_check

        result = learning_check()
        ok = all(r["first_475"] is not None and r["first_475"] <= 100_000 for r in result.values())
        print("learning check:", "passed (>= 475 within 100k steps on both hosts)" if ok else "FAILED")
        return 0 if ok else 1
    if args.quick:
        args.cycles, args.repeats, args.memory_cycles = 2, 1, 0
    if (args.cycles is not None and args.cycles < 2) or (args.repeats is not None and args.repeats <= 0) \
            or args.memory_cycles < 0:
        parser.error("--cycles must be at least 2, --repeats positive, --memory-cycles >= 0")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = run_benchmark(args.scale, args.memory_cycles, cycles=args.cycles, repeats=args.repeats,
                            save=lambda found: out.write_text(json.dumps(found, indent=2)))
    print(format_table(results))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
