"""Legacy callbacks in a user's own LightningModule under real 2-process CPU DDP (gloo), and the run's progress
display under DDP: what the docs (``fxai_compat/adapter/plain_module.py``, ``envwrap.py``, README "Your own
LightningModule") say happens.

One subprocess (``tests/scripts/ddp_own_module.py``, ~10 s) runs three fits in the same two processes: the bundled
module through ``fit`` with the progress display, then the user-style ``PPOModule`` (which imports nothing of
fxai_compat) on a ``wrap_env``'d vector env with a recording legacy callback under ``ranks="zero"``, then under
``ranks="all"``. It has its own process group and a hard timeout: a hang fails, never blocks.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_own_module.py"
TIMEOUT = 120  # the three fits take ~10 s; a hang would wait for gloo's 30-minute collective timeout
sys.path.insert(0, str(SCRIPT.parent))
from ddp_own_module import EPOCHS, MODULE_OPTIONS, N_ENVS as ENVS, PROGRESS_CONFIG  # noqa: E402

UPDATES = EPOCHS * (ENVS * MODULE_OPTIONS["steps_per_epoch"] * MODULE_OPTIONS["nb_optim_iters"]
                    // MODULE_OPTIONS["batch_size"])
FILES = [f"epoch-epoch={e}.ckpt" for e in range(EPOCHS)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp_own")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GLOBAL_RANK", "FXAI_CALLBACK_IMPL"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(out),
                            start_new_session=True)  # its own process group: rank 1 is its child
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # a rank waits in a collective the other never joins
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the DDP run hung:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-4000:]  # both ranks' fits returned (a rank's crash ends the launcher's)
    assert "Connection closed by peer" not in output and "terminate called" not in output, output[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, result in enumerate(ranks):
        assert set(result) == {"rank", "zero", "all", "progress"}, (r, sorted(result))  # every fit returned
    return {"ranks": ranks, "output": output}


def _same_episodes(seen: list, truth: list) -> None:
    """The recorder's episodes are exactly the env's own, in order: env_index, return (to 1e-9), length."""
    assert len(truth) >= 3  # the run says something
    assert [(i, n) for i, _, n, _ in seen] == [(i, n) for i, _, n in truth]
    assert all(abs(a[1] - b[1]) <= 1e-9 for a, b in zip(seen, truth)), (seen, truth)
    assert [count for *_, count in seen] == list(range(1, len(truth) + 1))  # trainer.num_episodes: this rank's


def _rank_facts(fit: dict) -> None:
    """A rank's callbacks saw that rank's episodes, steps, counters and per-cycle metrics, and no other rank's."""
    rec, truth = fit["recorder"], fit["truth"]
    _same_episodes(rec["episodes"], truth)
    assert {i for i, *_ in rec["episodes"]} <= set(range(ENVS))  # env_index is the rank's own numbering
    assert fit["module_episodes"] == truth  # the module's own bookkeeping agrees with the env
    per_cycle = ENVS * MODULE_OPTIONS["steps_per_epoch"]
    assert fit["transitions"] == EPOCHS * per_cycle
    assert rec["steps"] == [ENVS * k for k in range(1, EPOCHS * MODULE_OPTIONS["steps_per_epoch"] + 1)]
    done = 0
    for k, (cycle, rollout) in enumerate(zip(rec["cycles"], rec["rollouts"], strict=True)):
        upto = cycle["num_episodes"]
        returns = [r for _, r, _ in truth[done:upto]]
        assert (cycle["cycle"], cycle["metrics_cycle"]) == (k, k)
        assert cycle["timesteps_total"] == cycle["total_timesteps"] == (k + 1) * per_cycle
        assert cycle["episodes_total"] == upto
        assert rollout["steps"] == per_cycle and rollout["episodes"] == len(returns)
        for mean in (cycle["episode_reward_mean"], rollout["reward_mean"]):
            assert abs(mean - sum(returns) / len(returns)) <= 1e-9 if returns else math.isnan(mean)
        done = upto
    assert done == len(truth)


def _level1_facts(fit: dict, *, writes: bool) -> None:
    """Cycles, updates and evaluations as on every rank; checkpoint events only where the file is written (rank 0)."""
    events = fit["recorder"]["events"]
    for name in ("on_training_start", "on_training_end"):
        assert events[name] == 1
    for name in ("on_rollout_start", "on_rollout_end", "on_evaluation_start", "on_evaluation_end",
                 "on_metrics_computed", "on_cycle_complete"):
        assert events[name] == EPOCHS, name
    assert events["on_update_start"] == events["on_update_end"] == UPDATES == fit["global_step"]
    assert fit["recorder"]["updates"] == list(range(UPDATES))
    assert len(fit["recorder"]["evals"]) == EPOCHS and all(v >= 1.0 for v in fit["recorder"]["evals"])
    assert fit["recorder"]["saved"] == (FILES if writes else [])
    assert events.get("on_checkpoint_saved", 0) == (EPOCHS if writes else 0)


def test_ranks_zero_runs_on_rank_zero_only_with_rank_zero_episodes(ddp):
    zero, one = (r["zero"] for r in ddp["ranks"])
    assert zero["world_size"] == one["world_size"] == 2
    _rank_facts(zero)
    _level1_facts(zero, writes=True)
    assert zero["files"] == FILES
    assert one["recorder"]["events"] == {}  # rank 1 ran no legacy callback ...
    assert len(one["truth"]) >= 3 and one["truth"] != zero["truth"]  # ... though it played episodes of its own
    assert one["global_step"] == UPDATES and one["current_epoch"] == EPOCHS  # and trained in step


def test_ranks_all_each_rank_sees_its_own_episodes(ddp):
    zero, one = (r["all"] for r in ddp["ranks"])
    assert one["truth"] != zero["truth"]  # the ranks played different episodes
    for fit in (zero, one):
        _rank_facts(fit)
    _level1_facts(zero, writes=True)
    _level1_facts(one, writes=False)  # Lightning writes checkpoints on rank 0 only: no file, no event on rank 1
    assert zero["files"] == FILES


def test_progress_display_under_ddp_prints_on_rank_zero_with_all_ranks_env_steps(ddp):
    zero, one = (r["progress"] for r in ddp["ranks"])
    assert zero["bar"] == one["bar"] == "RunProgressBar"
    assert not zero["disabled"] and one["disabled"] and one["lines"] == []
    cycles = PROGRESS_CONFIG["cycles"]
    per_cycle = 2 * PROGRESS_CONFIG["n_envs"] * PROGRESS_CONFIG["n_steps"]  # both ranks' env steps
    printed = [line for line in ddp["output"].splitlines() if re.match(r"cycle \d+/\d+ \|", line)]
    assert printed == zero["lines"]  # one line per cycle, from rank 0 alone
    assert [re.match(r"cycle (\d+)/(\d+) \| env steps ([\d,]+) \|", line).groups() for line in printed] == [
        (str(k), str(cycles), f"{k * per_cycle:,}") for k in range(1, cycles + 1)]
    assert zero["cycles_completed"] == cycles and 2 * zero["rank_timesteps"] == cycles * per_cycle
