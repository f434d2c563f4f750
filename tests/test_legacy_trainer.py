"""The reference legacy loop: event order, binding, stop protocol, errors, the six callbacks, determinism, learning."""

from __future__ import annotations

import glob
import os
from collections import Counter

import numpy as np
import optuna
import pytest
import torch

from fxai_compat import LegacyTrainer, TrainConfig
from fxai_compat.envs import make_vector_env
from fxai_compat.legacy_host import checkpoint_filename
from legacy_callbacks import (BaseCallback, CallbackSignatureError, CheckpointCallback, ContinuousTrainingCallback,
                              EvaluationCallback, MetricsCallback, OptunaCallback, WandbCallback)
from legacy_callbacks.base import EVENTS

from conftest import RecordingCallback, tiny


def check_contract_order(trace, cfg: TrainConfig, *, first_cycle_in_run: int = 1):
    """Parse a trace against the contract's order (section 4); return the number of cycles it holds."""
    names = [t[0] for t in trace]
    pos = 0

    def take(expected):
        nonlocal pos
        assert pos < len(names), f"trace ended, expected {expected}"
        assert names[pos] == expected, f"event {pos}: expected {expected}, got {names[pos]} (context {names[max(0, pos-3):pos+3]})"
        pos += 1
        return trace[pos - 1]

    take("on_training_start")
    starts = []
    while pos < len(names) and names[pos] == "on_episode_start":
        starts.append(take("on_episode_start")[1]["episode_info"]["env_index"])
    assert starts in ([], [float(i) for i in range(cfg.n_envs)]), starts
    cycles = 0
    updates_per_cycle = cfg.update_epochs * cfg.minibatches_per_epoch
    while pos < len(names) and names[pos] == "on_rollout_start":
        take("on_rollout_start")
        for _ in range(cfg.n_steps):
            take("on_step_start")
            step_end = take("on_step_end")
            done_envs = [i for i, d in enumerate(step_end[1]["step_info"]["dones"]) if d]
            for env_index in done_envs:
                assert take("on_episode_end")[1]["episode_info"]["env_index"] == env_index
                assert take("on_episode_start")[1]["episode_info"]["env_index"] == env_index
        take("on_rollout_end")
        for _ in range(updates_per_cycle):
            take("on_update_start")
            take("on_update_end")
        cycles += 1
        run_cycle = first_cycle_in_run + cycles - 1
        if cfg.eval_due(run_cycle):
            take("on_evaluation_start")
            take("on_evaluation_end")
        take("on_metrics_computed")
        take("on_cycle_complete")
        if cfg.checkpoint_due(run_cycle):
            take("on_checkpoint_saved")
    take("on_training_end")
    assert pos == len(names)
    return cycles


def test_all_sixteen_events_in_contract_order(tmp_path):
    cfg = tiny(tmp_path, cycles=4)
    rec = RecordingCallback()
    trainer = LegacyTrainer(cfg, [rec]).train()
    assert check_contract_order(rec.trace, cfg) == 4
    resumed = RecordingCallback()
    LegacyTrainer(cfg.replace(cycles=6), [resumed]).train(resume_from=trainer.checkpoint_paths[-1])
    assert [e for e, *_ in resumed.trace][:2] == ["on_training_start", "on_checkpoint_loaded"]
    seen = {e for e, *_ in rec.trace + resumed.trace}
    assert seen == set(EVENTS)
    # The resumed run continues where the checkpoint left off: cycles 4 and 5, no new episode starts.
    cycles = [t[2]["cycle"] for t in resumed.trace if t[0] == "on_cycle_complete"]
    assert cycles == [4.0, 5.0]


def test_payloads_and_counters_follow_the_contract(tmp_path):
    cfg = tiny(tmp_path, cycles=2)
    rec = RecordingCallback()
    LegacyTrainer(cfg, [rec]).train()
    by_event = {}
    for event, args, counters in rec.trace:
        by_event.setdefault(event, []).append((args, counters))
    step_start, counters = by_event["on_step_start"][3]
    assert step_start["step"] == 3.0 and counters["timesteps"] == 3.0 * cfg.n_envs  # read before the step
    step_end, counters = by_event["on_step_end"][3]
    assert step_end["step_info"]["total_timesteps"] == counters["timesteps"] == 4.0 * cfg.n_envs  # after it
    assert set(step_end["step_info"]) == {"step", "total_timesteps", "rewards", "dones", "actions"}
    episode, counters = by_event["on_episode_end"][0]
    assert set(episode["episode_info"]) == {"env_index", "episode_index", "reward", "length", "pnl", "trades", "win_rate"}
    assert episode["episode_info"]["length"] == cfg.episode_length
    assert set(by_event["on_update_end"][0][0]["update_info"]) == {
        "update_index", "epoch", "minibatch", "loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    metrics = by_event["on_metrics_computed"][1][0]["metrics"]
    assert {"timesteps_total", "episodes_total", "cycle", "episode_reward_mean", "episode_length_mean", "loss",
            "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "eval_episode_reward_mean",
            "eval_win_rate"} <= set(metrics)
    assert "eval_episode_reward_mean" not in by_event["on_metrics_computed"][0][0]["metrics"]  # cycle 1: no eval
    assert set(by_event["on_evaluation_end"][0][0]["eval_results"]) == {
        "episode_reward_mean", "episode_reward_std", "episode_length_mean", "episodes", "win_rate"}


def test_metrics_are_plain_python_numbers_and_fresh_objects(tmp_path):
    got = []

    class Mutator(BaseCallback):
        def on_metrics_computed(self, metrics):
            got.append(dict(metrics))
            metrics["loss"] = "mutated"

    class Reader(BaseCallback):
        def on_cycle_complete(self, trainer, metrics):
            assert metrics["loss"] != "mutated"
            for key, value in metrics.items():
                assert type(value) in (int, float), (key, type(value))

    LegacyTrainer(tiny(tmp_path, cycles=2), [Mutator(), Reader()]).train()
    assert type(got[0]["timesteps_total"]) is int and type(got[0]["loss"]) is float


def test_every_signature_shape_of_the_contract_runs(tmp_path):
    import functools

    calls = Counter()

    class Shapes(BaseCallback):
        def on_episode_end(self, episode_info):
            calls["episode_info"] += "reward" in episode_info

        def on_cycle_complete(self, trainer, metrics):
            calls["trainer_metrics"] += trainer.cycle == metrics["cycle"]

        def on_training_start(self):
            calls["no_args"] += 1

        def on_checkpoint_saved(self, trainer, checkpoint_path):
            calls["checkpoint"] += os.path.isfile(checkpoint_path)

        def on_step_end(self, **kwargs):
            calls["kwargs"] += set(kwargs) == {"trainer", "step_info"}

    cb = Shapes()
    cb.on_rollout_end = lambda rollout_info: calls.update(instance=1)
    cb.on_update_end = functools.partial(lambda tag, update_info: calls.update(partial=1), "tag")
    cfg = tiny(tmp_path, cycles=2)
    LegacyTrainer(cfg, [cb]).train()
    assert calls["no_args"] == 1 and calls["trainer_metrics"] == 2 and calls["checkpoint"] == 1
    assert calls["kwargs"] == 2 * cfg.n_steps and calls["instance"] == 2 and calls["episode_info"] > 0
    assert calls["partial"] == 2 * cfg.update_epochs * cfg.minibatches_per_epoch


def test_unbindable_signature_fails_at_registration(tmp_path):
    class Bad(BaseCallback):
        def on_episode_end(self, episode_info, reward_scale):
            pass

    with pytest.raises(CallbackSignatureError) as info:
        LegacyTrainer(tiny(tmp_path), [Bad()])
    message = str(info.value)
    for part in ("Bad", "on_episode_end", "reward_scale", "episode_info", "trainer"):
        assert part in message


@pytest.mark.parametrize("how", ["return_false", "stop_training", "numpy_false"])
def test_stop_request_ends_training_after_the_current_cycle(tmp_path, how):
    class Stopper(BaseCallback):
        def __init__(self):
            self.steps_after_stop = 0
            self.stopped = False

        def on_step_end(self, trainer, step_info):
            if trainer.cycle == 1 and step_info["step"] == 40 and how == "stop_training":
                trainer.stop_training = True
                self.stopped = True
            elif self.stopped:
                self.steps_after_stop += 1

        def on_cycle_complete(self, trainer, metrics):
            if trainer.cycle == 1 and how != "stop_training":
                return False if how == "return_false" else np.bool_(False)

    stopper = Stopper()
    trainer = LegacyTrainer(tiny(tmp_path, cycles=5), [stopper]).train()
    assert trainer.core.cycles_completed == 2
    if how == "stop_training":  # the cycle in progress still completes
        assert stopper.steps_after_stop == 32 * 2 - 41


def test_error_policies(tmp_path, caplog):
    class Boom(BaseCallback):
        def __init__(self):
            self.calls = 0

        def on_rollout_end(self):
            self.calls += 1
            raise RuntimeError("boom")

    class Counter_(BaseCallback):
        def __init__(self):
            self.cycles = 0

        def on_cycle_complete(self):
            self.cycles += 1

    with pytest.raises(RuntimeError) as info:
        LegacyTrainer(tiny(tmp_path), [Boom()]).train()
    assert any("Boom" in note and "on_rollout_end" in note for note in info.value.__notes__)

    boom, counter = Boom(), Counter_()
    LegacyTrainer(tiny(tmp_path), [boom, counter], on_error="warn").train()
    assert boom.calls == 4 and counter.cycles == 4
    assert sum("boom" in r.getMessage() for r in caplog.records) == 1

    boom, counter = Boom(), Counter_()
    LegacyTrainer(tiny(tmp_path), [boom, counter], on_error="disable").train()
    assert boom.calls == 1 and counter.cycles == 4


def test_checkpoints_restore_model_optimizer_counters_and_rng(tmp_path):
    cfg = tiny(tmp_path, cycles=4)
    full = LegacyTrainer(cfg).train()
    assert [os.path.basename(p) for p in full.checkpoint_paths] == [checkpoint_filename(1), checkpoint_filename(3)]
    resumed = LegacyTrainer(cfg.replace(checkpoint_dir=str(tmp_path / "other")))
    resumed.train(resume_from=full.checkpoint_paths[0])
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert (resumed.total_timesteps, resumed.num_episodes, resumed.cycle) == (full.total_timesteps, full.num_episodes, full.cycle)


def test_determinism_same_seed_same_parameters(tmp_path):
    a = LegacyTrainer(tiny(tmp_path / "a")).train()
    b = LegacyTrainer(tiny(tmp_path / "b")).train()
    c = LegacyTrainer(tiny(tmp_path / "c", seed=4)).train()
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.model.parameters(), c.model.parameters()))


def _random_policy_return(cfg: TrainConfig, episodes: int, seed: int) -> float:
    env = make_vector_env(cfg, episodes, seed=seed)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    total = np.zeros(episodes)
    for _ in range(cfg.episode_length):
        _, rewards, _, _, _ = env.step(rng.integers(0, 3, size=episodes))
        total += rewards
    return float(total.mean())


def test_ppo_learns_the_fx_environment(tmp_path):
    cfg = TrainConfig(n_envs=4, n_steps=128, cycles=25, episode_length=128, minibatch_size=128, eval_every=25,
                      eval_episodes=16, checkpoint_every=0, checkpoint_dir=str(tmp_path / "ckpt"), seed=1)
    evaluations = []

    class Keep(BaseCallback):
        def on_evaluation_end(self, eval_results):
            evaluations.append(eval_results)

    LegacyTrainer(cfg, [Keep()]).train()
    trained = evaluations[-1]["episode_reward_mean"]
    random_return = _random_policy_return(cfg, 16, seed=12345)
    # Rewards are P&L in 0.1 % units: a random trader loses its costs, a trend follower earns the drift.
    assert trained > random_return + 15.0, (trained, random_return)


def test_the_six_legacy_callbacks_do_their_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = tiny(tmp_path, cycles=4)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s", direction="maximize")
    trial = study.ask()
    versions = tmp_path / "versions"
    callbacks = [MetricsCallback(window_size=3), CheckpointCallback(save_dir=str(tmp_path / "best"), save_freq=2),
                 WandbCallback(project="fxai-test", mode="offline", dir=str(tmp_path)), EvaluationCallback(),
                 ContinuousTrainingCallback(checkpoint_dir=str(versions)), OptunaCallback(trial)]
    trainer = LegacyTrainer(cfg, callbacks).train()
    metrics_cb, ckpt_cb, wandb_cb, eval_cb, cont_cb, optuna_cb = callbacks
    assert len(metrics_cb.history) == 4 and not np.isnan(metrics_cb.window_stats()["reward_window_mean"])
    assert os.path.isfile(tmp_path / "best" / "best_model.pt") and ckpt_cb.best_cycle in range(4)
    assert sorted(os.listdir(tmp_path / "best")) == ["best_model.pt", "model_cycle_0001.pt", "model_cycle_0003.pt"]
    assert glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert [h["cycle"] for h in eval_cb.history] == [1, 3]
    assert sorted(os.listdir(versions)) == ["version_0001.ckpt", "version_0002.ckpt"]
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1, 2, 3]

    # Continuous training: a new run resumes from the newest version and keeps versioning.
    cont = ContinuousTrainingCallback(checkpoint_dir=str(versions))
    again = LegacyTrainer(cfg.replace(checkpoint_dir=str(tmp_path / "ckpt2")), [cont]).train()
    assert os.path.basename(cont.resumed_from) == "version_0002.ckpt"
    assert again.core.cycles_completed == 8 and again.total_timesteps == 2 * trainer.total_timesteps
    assert sorted(os.listdir(versions))[-1] == "version_0004.ckpt"


def test_optuna_callback_prunes_a_real_trial(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned) as info:
        LegacyTrainer(tiny(tmp_path), [OptunaCallback(trial)]).train()
    assert any("OptunaCallback" in note for note in info.value.__notes__)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and 0 in study.trials[0].intermediate_values
