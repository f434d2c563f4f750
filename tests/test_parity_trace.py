"""Trace parity toolkit: every built-in legacy callback passes; seeded faults are caught with a readable diff;
the pytest plugin works from a user's own project."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fxai_compat.parity import check_trace_parity, first_mismatch, normalize, parity_config
from legacy_callbacks import (CheckpointCallback, ContinuousTrainingCallback, EvaluationCallback, MetricsCallback,
                              WandbCallback)

from conftest import RecordingCallback

BUILTIN = {
    "metrics": lambda: MetricsCallback(window_size=5),
    "checkpoint": lambda workdir: CheckpointCallback(save_dir=str(workdir / "best"), save_freq=2),
    "wandb": lambda workdir: WandbCallback(project="parity", mode="offline", dir=str(workdir)),
    "evaluation": lambda: EvaluationCallback(reward_threshold=1e9),
    "continuous_training": lambda workdir: ContinuousTrainingCallback(checkpoint_dir=str(workdir / "versions")),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_callbacks_pass_trace_parity(name, tmp_path):
    result = check_trace_parity(BUILTIN[name], parity_config(), workdir=tmp_path)
    assert result.ok, result.summary()
    assert result.compared > 0 and all(a == b for a, b in result.counts.values())


def test_optuna_callback_passes_trace_parity(tmp_path):
    import optuna

    from legacy_callbacks import OptunaCallback

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    result = check_trace_parity(lambda: OptunaCallback(study.ask()), parity_config(), workdir=tmp_path)
    assert result.ok, result.summary()
    assert [len(t.intermediate_values) for t in study.trials] == [4, 4]
    assert study.trials[0].intermediate_values == study.trials[1].intermediate_values


def test_recorder_passes_on_cartpole(tmp_path):
    result = check_trace_parity(RecordingCallback, parity_config(env="CartPole-v1", cycles=3), workdir=tmp_path)
    assert result.ok, result.summary()
    assert result.counts["on_episode_end"][0] > 0


def test_a_dropped_event_is_caught_with_a_readable_diff(tmp_path):
    result = check_trace_parity(RecordingCallback, parity_config(cycles=2), workdir=tmp_path,
                                adapter_options={"mapping": {"on_rollout_end": None}})
    assert not result.ok
    assert result.counts["on_rollout_end"] == (2, 0)
    assert "on_rollout_end (legacy) != on_update_start (lightning)" in result.diff
    assert ">>" in result.diff and "on_step_end" in result.diff  # context before the divergence


def test_a_reordered_event_is_caught(tmp_path):
    result = check_trace_parity(RecordingCallback, parity_config(cycles=2), workdir=tmp_path,
                                adapter_options={"mapping": {"on_rollout_end": "on_train_epoch_end"}})
    assert not result.ok and result.divergence.what.startswith("event on_rollout_end (legacy)")
    assert result.counts["on_rollout_end"] == (2, 2)


def test_a_renamed_metric_key_is_caught(tmp_path):
    from fxai_compat.lightning_host import LOGGED_METRICS

    keys = dict(LOGGED_METRICS)
    keys["reward_mean"] = keys.pop("episode_reward_mean")
    result = check_trace_parity(RecordingCallback, parity_config(cycles=2), workdir=tmp_path,
                                adapter_options={"metric_keys": keys})
    assert not result.ok and "keys differ" in result.diff and "reward_mean" in result.diff


def test_compare_rules():
    assert first_mismatch(normalize({"a": 1, "b": float("nan")}), normalize({"b": float("nan"), "a": 1.0000001})) is None
    assert "a: 1.0 != 1.1" in first_mismatch(normalize({"a": 1}), normalize({"a": 1.1}))
    import numpy as np
    import torch

    assert normalize({"x": torch.tensor(2.5), "y": np.float32(1.5), "z": np.int64(3)}) == {"x": 2.5, "y": 1.5, "z": 3.0}
    assert first_mismatch(1.0, 1.05, tolerance=0.1) is None


def test_pytest_plugin_from_a_users_project(tmp_path):
    project = tmp_path / "user_project"
    project.mkdir()
    (project / "test_mine.py").write_text(textwrap.dedent('''
        class GoodCallback:
            def __init__(self):
                self.rewards = []
            def on_episode_end(self, episode_info):
                self.rewards.append(episode_info["reward"])

        def test_good(fxai_parity):
            result = fxai_parity.assert_trace(GoodCallback)
            assert result.counts["on_episode_end"][0] > 0

        def test_broken_mapping(fxai_parity):
            fxai_parity.assert_trace(GoodCallback, adapter_options={"mapping": {"on_episode_end": None}})
    '''))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
                         cwd=project, capture_output=True, text=True, timeout=300, env=env)
    assert "1 failed, 1 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    assert "first divergence" in run.stdout and "on_episode_end" in run.stdout
