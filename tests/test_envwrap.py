"""Level 2 of bringing your own module: ``wrap_env`` on the env of a user-style LightningModule (real fits).

The env's own rewards and dones are recorded independently, underneath the wrapper, and every episode
the legacy callbacks hear of is compared with what the env really did (returns to 1e-9), for the three
module styles, single and vector envs, and every gymnasium autoreset mode.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from user_modules import MODULE_CLASSES, PPOModule, make_cartpole

from fxai_compat import LegacyCallbackAdapter
from fxai_compat.envwrap import EnvEventHub, OutsideFitWarning, RLEnvWrapper, RLVectorEnvWrapper, hub_of, wrap_env
from fxai_compat.parity.grammar import GrammarRecorder


class VectorTruth(gym.vector.VectorWrapper):
    """Records what a vector env really did, call by call, below the wrapper under test."""

    def __init__(self, env):
        super().__init__(env)
        self.calls: list[tuple[str, np.ndarray, np.ndarray]] = []

    def reset(self, *, seed=None, options=None):
        mask = (options or {}).get("reset_mask")
        self.calls.append(("reset", np.ones(self.num_envs, bool) if mask is None else np.array(mask), None))
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        out = self.env.step(actions)
        self.calls.append(("step", np.array(out[1], dtype=np.float64), np.logical_or(out[2], out[3])))
        return out

    def episodes(self) -> tuple[list[tuple[int, float, int]], int]:
        """(env_index, return, length) of each finished episode in order, and the number of transitions."""
        n, next_step = self.num_envs, self.env.metadata["autoreset_mode"] is gym.vector.AutoresetMode.NEXT_STEP
        ret, length, resetting = [0.0] * n, [0] * n, [False] * n
        out, transitions = [], 0
        for kind, a, dones in self.calls:
            if kind == "reset":
                for i in np.flatnonzero(a):
                    ret[i], length[i], resetting[i] = 0.0, 0, False
                continue
            for i in range(n):
                if resetting[i]:  # NEXT_STEP: this call reset env i; not a transition
                    resetting[i] = False
                    continue
                ret[i] += float(a[i])
                length[i] += 1
                transitions += 1
                if dones[i]:
                    out.append((i, ret[i], length[i]))
                    ret[i], length[i], resetting[i] = 0.0, 0, next_step
        return out, transitions


class SingleTruth(gym.Wrapper):
    """Records what a single env really did, below the wrapper under test."""

    def __init__(self, env):
        super().__init__(env)
        self.finished: list[tuple[int, float, int]] = []
        self.transitions = 0
        self._ret, self._len = 0.0, 0

    def reset(self, **kwargs):
        self._ret, self._len = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        out = self.env.step(action)
        self._ret += float(out[1])
        self._len += 1
        self.transitions += 1
        if out[2] or out[3]:
            self.finished.append((0, self._ret, self._len))
        return out

    def episodes(self):
        return self.finished, self.transitions


def _truth_env(n_envs, mode="next_step"):
    env = make_cartpole(n_envs, mode)
    return VectorTruth(env) if n_envs else SingleTruth(env)


def _fit(module, *legacy, epochs=3, **kwargs):
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[LegacyCallbackAdapter(cb) for cb in legacy], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, accelerator="cpu", **kwargs)
    trainer.fit(module)
    return trainer


def _events(records, event):
    return [r for r in records if r["event"] == event]


CASES = [("iterable_ppo", None, "next_step"), ("iterable_ppo", 3, "next_step"), ("iterable_ppo", 3, "same_step"),
         ("iterable_ppo", 3, "disabled"), ("dqn", None, "next_step"), ("dqn", 3, "next_step"),
         ("dqn", 2, "same_step"), ("manual_ppo", None, "next_step"), ("manual_ppo", 3, "disabled")]


@pytest.mark.parametrize("style,n_envs,mode", CASES, ids=[f"{s}-{n or 'single'}-{m}" for s, n, m in CASES])
def test_episodes_steps_and_counters_are_what_the_env_did(style, n_envs, mode):
    truth = _truth_env(n_envs, mode)
    module = MODULE_CLASSES[style](wrap_env(truth))
    recorder = GrammarRecorder()
    _fit(module, recorder.proxy)
    records = recorder.records
    episodes, transitions = truth.episodes()
    assert len(episodes) >= 3  # the run is long enough to say something
    ends = [r["args"]["episode_info"] for r in _events(records, "on_episode_end")]
    assert [(e["env_index"], e["length"]) for e in ends] == [(i, n) for i, _, n in episodes]
    assert all(abs(e["reward"] - ret) <= 1e-9 for e, (_, ret, _) in zip(ends, episodes))
    assert all((e["pnl"], e["trades"]) == (0.0, 0) and math.isnan(e["win_rate"]) for e in ends)  # not an FX env
    # counters at the moment of each event: one more episode at each end; all transitions at the end
    assert [r["counters"]["num_episodes"] for r in _events(records, "on_episode_end")] == list(range(1, len(ends) + 1))
    assert records[-1]["counters"]["total_timesteps"] == transitions
    steps = _events(records, "on_step_end")
    assert steps[-1]["args"]["step_info"]["total_timesteps"] == transitions
    assert [s["args"]["step_info"]["step"] for s in steps] == list(range(len(steps)))
    # every episode start precedes its end, with the same episode index, per env; the whole trace obeys the grammar
    assert recorder.check(style).ok, recorder.check(style).summary()
    starts = [r["args"]["episode_info"] for r in _events(records, "on_episode_start")]
    assert len(starts) == len(ends) + (n_envs or 1)
    # the cycle's metrics: exactly the episodes that ended in that cycle
    computed = _events(records, "on_metrics_computed")
    assert len(computed) == 3
    done_before = 0
    for record in computed:
        metrics = record["args"]["metrics"]
        upto = int(record["counters"]["num_episodes"])
        cycle = [ret for _, ret, _ in episodes[done_before:upto]]
        assert metrics["episodes_total"] == upto and metrics["timesteps_total"] == record["counters"]["total_timesteps"]
        if cycle:
            assert abs(metrics["episode_reward_mean"] - sum(cycle) / len(cycle)) <= 1e-9
        else:
            assert math.isnan(metrics["episode_reward_mean"])
        done_before = upto


def test_six_legacy_callbacks_run_unchanged_with_the_true_values(tmp_path):
    """The guide's "before" callbacks (the legacy_callbacks factory's six), unchanged, in a user's on-policy module."""
    import optuna
    from legacy_callbacks import create_callbacks

    truth, val_truth = _truth_env(3), _truth_env(2)
    trial = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s",
                                pruner=optuna.pruners.NopPruner()).ask()
    callbacks = create_callbacks({
        "metrics": {"window_size": 5}, "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 1},
        "wandb": {"mode": "offline", "dir": str(tmp_path)}, "evaluation": {},
        "continuous_training": {"checkpoint_dir": str(tmp_path / "versions")}, "optuna": {"trial": trial}})
    metrics_cb, checkpoint_cb, _, evaluation_cb, continuous_cb, optuna_cb = callbacks
    module = PPOModule(wrap_env(truth), wrap_env(val_truth, role="eval"))
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                         callbacks=[LegacyCallbackAdapter(cb) for cb in callbacks]
                         + [pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1)])
    trainer.fit(module)
    episodes, transitions = truth.episodes()
    history = metrics_cb.history
    assert [h["cycle"] for h in history] == [0, 1, 2]
    assert history[-1]["timesteps_total"] == transitions
    window = [ret for _, ret, _ in episodes[-5:]]
    assert abs(history[-1]["reward_window_mean"] - sum(window) / len(window)) <= 1e-9
    means = [h["episode_reward_mean"] for h in history]
    assert [step for step, _ in optuna_cb.reports] == [c for c, m in enumerate(means) if not math.isnan(m)]
    assert [v for _, v in optuna_cb.reports] == [m for m in means if not math.isnan(m)]
    assert checkpoint_cb.best_cycle is not None and (tmp_path / "best" / "best_model.pt").exists()
    assert len(continuous_cb.copies) == 3  # one per ModelCheckpoint file, on disk when copied
    # evaluation: the eval env's own episodes of each validation, kept apart from training episodes
    val_episodes, _ = val_truth.episodes()
    assert evaluation_cb.num_evaluations == 3
    assert sum(r["episodes"] for r in evaluation_cb.history) == len(val_episodes)
    first = [ret for _, ret, _ in val_episodes[:evaluation_cb.history[0]["episodes"]]]
    assert abs(evaluation_cb.history[0]["episode_reward_mean"] - sum(first) / len(first)) <= 1e-9


def test_eval_episodes_are_kept_apart_from_training_episodes():
    truth, val_truth = _truth_env(2), _truth_env(2)
    recorder = GrammarRecorder()
    module = MODULE_CLASSES["manual_ppo"](wrap_env(truth), wrap_env(val_truth, role="eval"), val_episodes=3)
    _fit(module, recorder.proxy)
    train_episodes, _ = truth.episodes()
    val_episodes, _ = val_truth.episodes()
    assert len(val_episodes) >= 9
    ends = _events(recorder.records, "on_episode_end")
    assert len(ends) == len(train_episodes)  # no eval episode among them
    assert ends[-1]["counters"]["num_episodes"] == len(train_episodes)
    results = [r["args"]["eval_results"] for r in _events(recorder.records, "on_evaluation_end")]
    assert sum(r["episodes"] for r in results) == len(val_episodes)
    metrics = [r["args"]["metrics"] for r in _events(recorder.records, "on_metrics_computed")]
    assert [m["eval_episode_reward_mean"] for m in metrics] == [r["episode_reward_mean"] for r in results]


def test_wrapping_a_non_gymnasium_object_is_one_clear_error():
    with pytest.raises(TypeError, match=r"wrap_env needs a gymnasium.Env or gymnasium.vector.VectorEnv; got builtins.dict"):
        wrap_env({"not": "an env"})
    with pytest.raises(ValueError, match="role must be one of 'train', 'eval'; got 'test'"):
        wrap_env(make_cartpole(None), role="test")
    env = wrap_env(make_cartpole(2))
    assert isinstance(env, RLVectorEnvWrapper) and wrap_env(env) is env
    assert isinstance(wrap_env(make_cartpole(None)), RLEnvWrapper)


def test_stepping_outside_fit_warns_once_and_passes_through():
    env = wrap_env(make_cartpole(2))
    env.reset(seed=0)  # resetting before fit (e.g. in a module's __init__) is normal: no warning
    with pytest.warns(OutsideFitWarning, match=r"stepped outside Trainer.fit, so no legacy callback hears it") as caught:
        for _ in range(3):
            out = env.step(np.zeros(2, dtype=np.int64))
    assert len(caught) == 1 and out[0].shape == (2, 4)


def test_after_fit_the_wrapper_is_unbound_and_without_listeners_it_only_forwards():
    truth = _truth_env(2)
    env = wrap_env(truth)
    trainer = _fit(MODULE_CLASSES["dqn"](env), epochs=1)  # no legacy callback at all
    assert hub_of(trainer) is None and env._hub is None
    assert not any(isinstance(cb, EnvEventHub) for cb in trainer.callbacks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.step(np.zeros(2, dtype=np.int64))
    assert [w.category for w in caught] == [OutsideFitWarning]


def test_episodes_begun_before_fit_are_announced_after_training_start():
    env = wrap_env(make_cartpole(3))
    env.reset(seed=1)  # before fit: announced at the env's first use inside fit
    recorder = GrammarRecorder()
    module = MODULE_CLASSES["dqn"](env)
    module.env.obs = module.env._batch(env.reset(seed=1)[0])
    _fit(module, recorder.proxy, epochs=1)
    events = [r["event"] for r in recorder.records]
    assert events[:5] == ["on_training_start"] + ["on_episode_start"] * 3 + ["on_rollout_start"]
    assert [r["args"]["episode_info"]["env_index"] for r in recorder.records[1:4]] == [0, 1, 2]


def test_a_resumed_run_continues_the_counters(tmp_path):
    recorder = GrammarRecorder()
    module = MODULE_CLASSES["dqn"](wrap_env(make_cartpole(2)))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), save_last=True)
    trainer = pl.Trainer(max_epochs=2, callbacks=[LegacyCallbackAdapter(recorder.proxy), checkpoint], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module)
    before = recorder.records[-1]["counters"]
    resumed = GrammarRecorder()
    module = MODULE_CLASSES["dqn"](wrap_env(make_cartpole(2)))
    trainer = pl.Trainer(max_epochs=3, callbacks=[LegacyCallbackAdapter(resumed.proxy)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         accelerator="cpu")
    trainer.fit(module, ckpt_path=str(tmp_path / "last.ckpt"))
    first_step = _events(resumed.records, "on_step_end")[0]
    assert first_step["args"]["step_info"]["total_timesteps"] == before["total_timesteps"] + 2
    assert first_step["counters"]["total_timesteps"] == before["total_timesteps"] + 2
    ends = _events(resumed.records, "on_episode_end")
    assert ends[0]["counters"]["num_episodes"] == before["num_episodes"] + 1


class _StepsInWorker(torch.utils.data.Dataset):
    """Steps a wrapped env inside a DataLoader worker process and returns the warnings it got there."""

    def __init__(self, env):
        self.env = env

    def __len__(self):
        return 1

    def __getitem__(self, index):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.env.step(0)
        return [str(w.message) for w in caught]


def test_stepping_in_a_dataloader_worker_says_so():
    env = wrap_env(make_cartpole(None))
    env.reset(seed=0)
    loader = torch.utils.data.DataLoader(_StepsInWorker(env), batch_size=None, num_workers=1)
    (messages,) = list(loader)
    assert len(messages) == 1 and "in a DataLoader worker process" in messages[0] and "num_workers=0" in messages[0]
