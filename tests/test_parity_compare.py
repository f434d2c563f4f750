"""The comparator under every parity check (``fxai_compat.parity.compare``), tested directly: the default
tolerance is pinned, keys on one side only are named, lists and NaN; and two behaviours the suite did not pin:
``--set n_envs.x=1`` is refused, and ``RLCheckpointCallback(save_top_k=-1)`` breaks ties like the legacy
callback (the first cycle to reach the best value stays the best)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from fxai_compat import LegacyTrainer, fit
from fxai_compat.callbacks import RLCheckpointCallback
from fxai_compat.cli import main
from fxai_compat.parity.compare import DEFAULT_TOLERANCE, first_mismatch, normalize
from fxai_compat.toggle import Observable
from legacy_callbacks import CheckpointCallback

from conftest import tiny


def same(a, b, **kw):
    return first_mismatch(normalize(a), normalize(b), **kw) is None


def test_default_tolerance_is_one_in_a_million():
    assert DEFAULT_TOLERANCE == 1e-6
    assert Observable("x", len, len).tolerance == DEFAULT_TOLERANCE  # observables default to it too
    assert same(1.0, 1.0 + 1e-7)
    assert not same(1.0, 1.001)
    assert not same(1.0, 1.0 + 1e-5)  # fails if the default tolerance is loosened (to 1e-1, or even 1e-5)
    assert not same({"r": [0.5, 2.0]}, {"r": [0.5, 2.01]})  # nested values get the default tolerance too
    assert same(1.0, 1.001, tolerance=1e-2)


def test_the_mismatch_says_where_and_by_how_much():
    found = first_mismatch(normalize({"episode": {"reward": 1.0}}), normalize({"episode": {"reward": 1.001}}))
    assert found.startswith("episode.reward: 1.0 != 1.001") and "> 1e-06" in found
    assert first_mismatch([1.0, 2.0], [1.0, 2.0, 3.0]) == "list: length 2 != 3"
    assert first_mismatch(normalize([1, [2, 3]]), normalize([1, [2, 4]])) == "[1][1]: 3.0 != 4.0 (|diff| 1 > 1e-06)"


def test_keys_on_either_side_only_are_reported_by_name():
    legacy, native = normalize({"a": 1, "only_legacy": 2}), normalize({"a": 1, "only_native": 3})
    found = first_mismatch(legacy, native)
    assert found == "keys: keys differ (only legacy: ['only_legacy'], only lightning: ['only_native'])"
    assert "only lightning: ['extra']" in first_mismatch({"a": 1.0}, {"a": 1.0, "extra": 0.0})
    assert "only legacy: ['extra']" in first_mismatch({"a": 1.0, "extra": 0.0}, {"a": 1.0})
    assert "m.inner: keys differ (only legacy: [], only lightning: ['x'])" == first_mismatch(
        {"m": {"inner": {}}}, {"m": {"inner": {"x": 1.0}}})


def test_normalize_nan_ints_paths_and_strings():
    assert same(float("nan"), float("nan")) and not same(float("nan"), 0.0)
    assert same(1, 1.0) and same((1, 2), [1.0, 2.0]) and not same(True, 2)
    assert normalize("/runs/a/best_model.pt") == "best_model.pt"  # each host writes to its own folder
    assert not same("episode_reward_mean", "train/episode_reward_mean")
    import torch

    assert normalize(torch.tensor([1.5, 2.0])) == [1.5, 2.0] and math.isnan(normalize(torch.tensor(float("nan"))))


def test_set_into_a_value_that_is_not_a_section_is_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"train:\n  n_envs: 2\n  cycles: 1\n  checkpoint_dir: {tmp_path / 'ckpt'}\n")
    code = main(["train", "--config", str(config), "--set", "n_envs.x=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("--set train.n_envs.x: n_envs is not a section.") and len(err.splitlines()) == 1
    # Without a config file n_envs is not set yet: the new {"x": 1} is refused as a value instead.
    assert main(["train", "--set", "n_envs.x=1", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}"]) == 2
    assert "n_envs must be an integer, got {'x': 1}" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()  # refused before anything was trained or written


REWARDS = [1.0, 2.0, 2.0, 1.0]  # a tie for the best at cycles 1 and 2


class LegacyTiedCheckpoint(CheckpointCallback):
    """The legacy callback, unchanged, seeing a monitored ``tie`` metric among the cycle's metrics."""

    def on_cycle_complete(self, trainer, metrics):
        super().on_cycle_complete(trainer, {**metrics, "tie": REWARDS[metrics["cycle"]]})


class NativeTiedReward(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        value = REWARDS[pl_module.core.cycle]
        pl_module.exact_logged["tie"] = value
        pl_module.log("tie", value, on_step=False, on_epoch=True, batch_size=1)


@pytest.mark.parametrize("save_top_k", [-1, 1, 2])
def test_tied_rewards_keep_the_first_cycle_as_best_like_legacy(tmp_path, save_top_k):
    cfg = tiny(tmp_path, cycles=4, eval_every=0, checkpoint_every=0)
    legacy = LegacyTiedCheckpoint(tmp_path / "legacy", save_freq=100, monitor="tie")
    LegacyTrainer(cfg, [legacy]).train()
    assert legacy.best_cycle == 1 and legacy.best_reward == 2.0  # strict ">": the later tie does not win

    native = RLCheckpointCallback(tmp_path / "native", monitor="tie", save_top_k=save_top_k)
    fit(cfg, [NativeTiedReward(), native], logger=False)
    assert (native.best_cycle, native.best_reward) == (legacy.best_cycle, legacy.best_reward)
    assert native.best_model_path.endswith(f"best-cycle{legacy.best_cycle:04d}.ckpt")
