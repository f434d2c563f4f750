"""Shared fixtures: tiny configs and a recording legacy callback for trace comparisons."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from legacy_callbacks.base import EVENTS  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One torch thread for the suite: the tiny models gain nothing from intra-op threads, and on a
    2-core machine shared with DDP subprocesses the threads of concurrent processes fight (fits were
    measured ~10x slower). Both hosts run with the same setting, so parity is unaffected."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(tmp_path, **changes):
    """A config small enough for a real run in about a second: 2 envs, 32 steps, 4 cycles,
    evaluation and checkpoints due twice, a minibatch that does not divide the rollout."""
    from fxai_compat import TrainConfig

    base = dict(n_envs=2, n_steps=32, episode_length=24, cycles=4, update_epochs=2, minibatch_size=24,
                eval_every=2, eval_episodes=2, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ckpt"),
                hidden_sizes=(16, 16), data_length=2000, seed=3)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture
def tiny_config(tmp_path):
    return tiny(tmp_path)


def normalize(value):
    """Plain comparable values: numbers as floats, checkpoint paths as file names, containers recursively."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str) and (value.endswith(".ckpt") or os.sep in value):
        return os.path.basename(value)
    return value


def same(a, b, tol=1e-6):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol
    return a == b


class RecordingCallback:
    """A legacy callback that records every event with its arguments and the trainer's counters."""

    def __init__(self):
        self.trace = []


def _recorder(event):
    def method(self, trainer, **offered):
        self.trace.append((event, normalize(offered),
                           normalize({"cycle": trainer.cycle, "timesteps": trainer.total_timesteps,
                                      "episodes": trainer.num_episodes})))
    method.__name__ = event
    return method


for _event in EVENTS:
    setattr(RecordingCallback, _event, _recorder(_event))


def first_difference(trace_a, trace_b, tol=1e-6):
    """Index and items of the first differing record, or None when the traces agree."""
    for i, (a, b) in enumerate(zip(trace_a, trace_b)):
        if a[0] != b[0] or not same(a[1], b[1], tol) or not same(a[2], b[2], tol):
            return i, a, b
    if len(trace_a) != len(trace_b):
        i = min(len(trace_a), len(trace_b))
        return i, trace_a[i:i + 1], trace_b[i:i + 1]
    return None


@pytest.fixture
def broken_pair():
    """A registered pair whose native port is deliberately broken (an off-by-one window): a seeded fault."""
    from fxai_compat.callbacks.metrics import MetricsCallback as NativeMetrics
    from fxai_compat.toggle import REGISTRY, register_port
    from legacy_callbacks import MetricsCallback

    class WrongWindowMetrics(NativeMetrics):
        def __init__(self, window_size: int = 100):
            super().__init__(window_size=window_size + 1)

    register_port("metrics_broken", MetricsCallback, WrongWindowMetrics,
                  observables={"window_stats": (lambda cb: cb.window_stats(), lambda cb: cb.window_stats())})
    yield REGISTRY["metrics_broken"]
    REGISTRY.pop("metrics_broken")


def stop_processes(procs):
    """Kill and reap every subprocess of ``procs`` still running (a test's ``finally``: none is left behind)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
