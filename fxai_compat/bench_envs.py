"""The benchmark's slow-environment part: ``vector_env: sync`` against ``async`` on a deliberately slow env.

``fxai_compat/SlowCartPole-v1`` is CartPole with a fixed amount of CPU work per environment step (``envs.SlowStep``:
about 1 ms on a quiet core here), so a cycle of 8 environments x 32 steps spends about 0.26 s stepping them one
after the other. With ``async``
each environment steps in its own worker process (gymnasium's ``AsyncVectorEnv``): the speed-up is bounded
by the cores (two on the reference machine) and paid for with inter-process traffic per step and worker
start-up per run. Both variants train under Lightning (``fit``), interleaved cycle by cycle as every other
benchmark variant (``bench._Lockstep``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["measure_async_env", "SLOW_ENV_SETTINGS"]

#: The slow-environment run (PPO settings as the CartPole config's, no evaluation or checkpoints).
SLOW_ENV_SETTINGS = dict(n_envs=8, n_steps=32, update_epochs=4, minibatch_size=256, lr=0.001, gamma=0.98,
                         gae_lambda=0.8, ent_coef=0.0, eval_every=0, checkpoint_every=0, seed=1)


def measure_async_env(workdir: Path, cycles: int = 4, repeats: int = 5,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Seconds per run of each mode, interleaved, and the speed-up ``sync / async`` per round (whole runs, and
    the middle cycles only, without the workers' start-up)."""
    from .bench import _Lockstep, _spread
    from .config import TrainConfig
    from .envs import SLOW_CARTPOLE
    from .lightning_host import fit

    def prepare(mode: str, where: Path):
        cfg = TrainConfig(env=SLOW_CARTPOLE, vector_env=mode, cycles=cycles, checkpoint_dir=str(where / "ckpt"),
                          **SLOW_ENV_SETTINGS)

        def run() -> None:
            trainer = fit(cfg, logger=False, enable_progress_bar=False)
            trainer.lightning_module.core.env.close()  # the worker processes end with the run

        return run

    names = ["sync", "async"]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    cycle_speedup: list[float] = []
    _Lockstep(names).run({n: prepare(n, Path(workdir) / "warmup" / n) for n in names})  # warm-up
    for rep in range(repeats):
        order = names if rep % 2 == 0 else names[::-1]
        lockstep = _Lockstep(order)
        lockstep.run({n: prepare(n, Path(workdir) / f"r{rep}" / n) for n in order})
        for n in names:
            seconds[n].append(lockstep.seconds[n])
        middle = {n: sum(lockstep.segments[n][1:-1]) for n in names}
        if middle["async"] > 0:
            cycle_speedup.append(middle["sync"] / middle["async"])
        log(f"[slow env] round {rep + 1}/{repeats}: sync {seconds['sync'][-1]:.2f}s, async {seconds['async'][-1]:.2f}s")
    return {"env": SLOW_CARTPOLE, "work_per_step": "25,000 Python float iterations (~1 ms on a quiet core)", "settings": dict(SLOW_ENV_SETTINGS), "cycles": cycles,
            "repeats": repeats, "seconds": {n: _spread(t) for n, t in seconds.items()},
            "speedup_whole_run": _spread([a / b for a, b in zip(seconds["sync"], seconds["async"])]),
            "speedup_per_cycle": _spread(cycle_speedup) if cycle_speedup else None,
            "seconds_per_cycle_median": {n: statistics.median(t) / cycles for n, t in seconds.items()}}
