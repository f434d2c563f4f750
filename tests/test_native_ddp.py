"""Two-process DDP: the native Metrics, Evaluation, Optuna and DistributedRL callbacks against their legacy
counterparts in one fit (``tests/scripts/ddp_native_run.py``; ``strategy="ddp"`` re-executes a script)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import same

SCRIPT = Path(__file__).parent / "scripts" / "ddp_native_run.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan(value):
    """The script writes NaN as the string 'nan' (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return float("nan") if value == "nan" else value


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONPATH=str(Path.cwd()))
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, cwd=str(out), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [_nan(json.loads((out / f"result.rank{r}.json").read_text())) for r in (0, 1)]


def test_two_ranks_trained_and_pruned_together(ranks):
    zero, one = ranks
    assert (zero["world_size"], zero["rank"], one["rank"]) == (2, 0, 1)
    # ThresholdPruner(lower=1e9, n_warmup_steps=3): rank 0 decides at the report of cycle 3, both ranks stop there.
    assert zero["pruned"] is one["pruned"] is True
    assert zero["cycles_run"] == one["cycles_run"] == 4
    assert zero["stored_state"] == "PRUNED"
    assert {int(k): v for k, v in zero["stored_intermediate"].items()} == dict(map(tuple, zero["native_reports"]))
    assert one["native_reports"] == []  # only rank 0 talks to the trial


def test_optuna_reports_equal_legacy(ranks):
    zero, _ = ranks
    assert zero["native_reports"] == zero["legacy_reports"]
    assert [step for step, _ in zero["native_reports"]] == [0, 1, 2, 3]


def test_metric_windows_are_global_and_equal_legacy(ranks):
    zero, one = ranks
    assert same(zero["native_window"], zero["legacy_window"])
    assert same(zero["native_metrics_history"], zero["legacy_metrics_history"])
    assert same(one["native_window"], zero["native_window"])  # every rank holds the same, global windows
    # The MeanMetric epoch aggregate (synced) is the mean over every rank's episodes of the last cycle.
    last = zero["legacy_cycle_rewards"]["3"]
    assert zero["native_epoch_reward"] == pytest.approx(np.mean(last), rel=1e-9)


def test_evaluation_history_equals_legacy(ranks):
    zero, one = ranks
    assert [r["cycle"] for r in zero["native_eval_history"]] == [1, 3]
    assert same(zero["native_eval_history"], zero["legacy_eval_history"])
    assert same(one["native_eval_history"], zero["native_eval_history"])


def test_distributed_reward_statistics_cover_all_ranks(ranks):
    zero, one = ranks
    for record in zero["distributed_history"]:
        rewards = zero["legacy_cycle_rewards"][str(record["cycle"])]  # every rank's episodes, seen by the legacy side
        assert record["episodes"] == len(rewards) == sum(record["episodes_per_rank"])
        assert record["global_reward_mean"] == pytest.approx(np.mean(rewards), rel=1e-9)
        assert record["global_reward_std"] == pytest.approx(np.std(rewards), rel=1e-9)
        assert len(record["episodes_per_rank"]) == 2
    assert same(one["distributed_history"], zero["distributed_history"])
    assert zero["callback_metrics"]["distributed/global_reward_mean"] == pytest.approx(
        zero["distributed_history"][-1]["global_reward_mean"], rel=1e-6)
