"""Unit tests of the legacy callback system: binding, dispatch, error policy and the six callbacks.

The callbacks are driven by ``FakeTrainer``, a small hand-written object with the trainer
surface; the real training loops are tested elsewhere. wandb and optuna are real (offline /
in-memory), not mocked.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import subprocess
import sys
from types import MappingProxyType

import numpy as np
import optuna
import pytest
import torch

import legacy_callbacks
from legacy_callbacks import (
    CALLBACK_CLASSES,
    EVENT_ARGS,
    EVENTS,
    TRAINER_SURFACE,
    BaseCallback,
    CallbackManager,
    CallbackSignatureError,
    CheckpointCallback,
    ContinuousTrainingCallback,
    EvaluationCallback,
    MetricsCallback,
    OptunaCallback,
    TrainerSurface,
    TrainingContext,
    WandbCallback,
    bind_event,
    create_callbacks,
    is_stop,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- helpers


class FakeTrainer:
    """The trainer surface of contract section 2, and nothing else."""

    def __init__(self, config=None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 2)
        self.config = MappingProxyType(dict(config or {"lr": 3e-4, "n_envs": 2}))
        self.total_timesteps = 0
        self.num_episodes = 0
        self.cycle = 0
        self.context = TrainingContext()
        self.stop_training = False
        self.saved = []
        self.loaded = []

    def save_checkpoint(self, path):
        torch.save({"model": self.model.state_dict()}, path)
        self.saved.append(path)

    def load_checkpoint(self, path):
        self.loaded.append(path)


def episode_info(reward, length=10, env_index=0, episode_index=0):
    return {"env_index": env_index, "episode_index": episode_index, "reward": reward, "length": length,
            "pnl": 0.0, "trades": 0, "win_rate": math.nan}


def metrics_for(cycle, reward, **extra):
    metrics = {
        "timesteps_total": 100 * (cycle + 1), "episodes_total": 5 * (cycle + 1), "cycle": cycle,
        "episode_reward_mean": reward, "episode_length_mean": 10.0, "loss": 0.5, "policy_loss": 0.1,
        "value_loss": 0.3, "entropy": 0.6, "approx_kl": 0.01, "clip_fraction": 0.1,
    }
    metrics.update(extra)
    return metrics


def offered_values(event):
    """A plausible value for every argument ``event`` offers."""
    values = {
        "trainer": FakeTrainer(),
        "episode_info": episode_info(1.0),
        "step": 3,
        "step_info": {"step": 3, "total_timesteps": 6, "rewards": [0.0, 1.0], "dones": [False, True],
                      "actions": [0, 1]},
        "rollout_info": {"steps": 4, "episodes": 1, "reward_mean": 1.0},
        "update_info": {"update_index": 0, "epoch": 0, "minibatch": 0},
        "eval_results": {"episode_reward_mean": 1.0, "episode_reward_std": 0.0, "episode_length_mean": 10.0,
                         "episodes": 2, "win_rate": math.nan},
        "metrics": metrics_for(0, 1.0),
        "checkpoint_path": "/tmp/ckpt.pt",
    }
    return {name: values[name] for name in EVENT_ARGS[event]}


# --------------------------------------------------------------------------- events table


def test_events_table_matches_contract_order():
    assert EVENTS == (
        "on_training_start", "on_episode_start", "on_rollout_start", "on_step_start", "on_step_end",
        "on_episode_end", "on_rollout_end", "on_update_start", "on_update_end", "on_evaluation_start",
        "on_evaluation_end", "on_metrics_computed", "on_cycle_complete", "on_checkpoint_saved",
        "on_checkpoint_loaded", "on_training_end",
    )
    assert tuple(EVENT_ARGS) == EVENTS
    assert EVENT_ARGS["on_step_end"] == ("trainer", "step_info")
    assert EVENT_ARGS["on_checkpoint_saved"] == ("trainer", "checkpoint_path")
    assert all(names[0] == "trainer" for names in EVENT_ARGS.values())


@pytest.mark.parametrize("event", EVENTS)
def test_base_callback_methods_take_exactly_the_offered_args(event):
    params = list(inspect.signature(getattr(BaseCallback, event)).parameters)
    assert tuple(params[1:]) == EVENT_ARGS[event]
    assert getattr(BaseCallback(), event)(**offered_values(event)) is None


def test_base_callback_defines_no_state_dict():
    assert not hasattr(BaseCallback, "state_dict")
    assert not hasattr(BaseCallback, "load_state_dict")


# --------------------------------------------------------------------------- binding


class EpisodeInfoOnly:
    def __init__(self):
        self.calls = []

    def on_episode_end(self, episode_info):
        self.calls.append(("on_episode_end", episode_info))


def _shape_cases():
    """(callback factory, event, expected received arguments as a function of offered)."""

    class TrainerAndMetrics:
        def on_cycle_complete(self, trainer, metrics):
            self.got = {"trainer": trainer, "metrics": metrics}

    class NoArgs:
        def on_training_start(self):
            self.got = {}

    class CheckpointPath(BaseCallback):
        def on_checkpoint_saved(self, trainer, checkpoint_path):
            self.got = {"trainer": trainer, "checkpoint_path": checkpoint_path}

    class Kwargs:
        def on_step_end(self, **kwargs):
            self.got = kwargs

    class DefaultOffered:
        def on_metrics_computed(self, metrics=None):
            self.got = {"metrics": metrics}

    class DefaultNotOffered:
        def on_episode_end(self, episode_info, scale=2):
            self.got = {"episode_info": episode_info, "scale": scale}

    class DefaultBeforeOffered:
        def on_metrics_computed(self, extra="kept", metrics=None):
            self.got = {"extra": extra, "metrics": metrics}

    class KeywordOnly:
        def on_step_end(self, *, step_info, trainer):
            self.got = {"step_info": step_info, "trainer": trainer}

    class VarArgs:
        def on_step_start(self, *args, step):
            self.got = {"args": args, "step": step}

    class ExtraNamedAndKwargs:
        def on_update_end(self, update_info, **rest):
            self.got = {"update_info": update_info, "rest": rest}

    def instance_function():
        cb = type("InstanceFunction", (), {})()

        def on_step_start(step):
            cb.got = {"step": step}

        cb.on_step_start = on_step_start
        return cb

    def instance_partial():
        cb = type("InstancePartial", (), {})()

        def record(target, episode_info, tag="untagged"):
            target.got = {"episode_info": episode_info, "tag": tag}

        cb.on_episode_end = functools.partial(record, cb, tag="partial")
        return cb

    return [
        pytest.param(TrainerAndMetrics, "on_cycle_complete", lambda o: o, id="(self, trainer, metrics)"),
        pytest.param(NoArgs, "on_training_start", lambda o: {}, id="(self)"),
        pytest.param(CheckpointPath, "on_checkpoint_saved", lambda o: o, id="(self, trainer, checkpoint_path)"),
        pytest.param(Kwargs, "on_step_end", lambda o: o, id="(self, **kwargs)"),
        pytest.param(DefaultOffered, "on_metrics_computed", lambda o: {"metrics": o["metrics"]},
                     id="default, offered"),
        pytest.param(DefaultNotOffered, "on_episode_end", lambda o: {"episode_info": o["episode_info"], "scale": 2},
                     id="default, not offered"),
        pytest.param(DefaultBeforeOffered, "on_metrics_computed", lambda o: {"extra": "kept", "metrics": o["metrics"]},
                     id="unoffered default before offered"),
        pytest.param(KeywordOnly, "on_step_end", lambda o: o, id="keyword-only"),
        pytest.param(VarArgs, "on_step_start", lambda o: {"args": (), "step": o["step"]}, id="*args ignored"),
        pytest.param(ExtraNamedAndKwargs, "on_update_end",
                     lambda o: {"update_info": o["update_info"], "rest": {"trainer": o["trainer"]}},
                     id="named + **kwargs"),
        pytest.param(instance_function, "on_step_start", lambda o: {"step": o["step"]}, id="function on instance"),
        pytest.param(instance_partial, "on_episode_end", lambda o: {"episode_info": o["episode_info"], "tag": "partial"},
                     id="functools.partial on instance"),
    ]


def test_binding_episode_info_only():
    cb = EpisodeInfoOnly()
    offered = offered_values("on_episode_end")
    manager = CallbackManager([cb])
    manager.fire("on_episode_end", **offered)
    assert cb.calls == [("on_episode_end", offered["episode_info"])]
    assert bind_event(cb, "on_episode_end").names == ("episode_info",)


@pytest.mark.parametrize("make, event, expected", _shape_cases())
def test_binding_signature_shapes(make, event, expected):
    cb = make()
    offered = offered_values(event)
    manager = CallbackManager([cb])
    assert manager.has(event)
    assert manager.fire(event, **offered) is False
    assert cb.got == expected(offered)

    # The binding alone does the same, whether called with a dict or with keywords.
    binding = bind_event(cb, event)
    del cb.got
    binding.call(offered)
    assert cb.got == expected(offered)
    del cb.got
    binding(**offered)
    assert cb.got == expected(offered)


def test_inherited_noops_are_not_bound():
    class TwoEvents(BaseCallback):
        def on_training_start(self, trainer):
            pass

        def on_cycle_complete(self, metrics):
            pass

    bound = [event for event in EVENTS if bind_event(TwoEvents(), event) is not None]
    assert bound == ["on_training_start", "on_cycle_complete"]
    assert [event for event in EVENTS if bind_event(BaseCallback(), event)] == []
    manager = CallbackManager([TwoEvents()])
    assert [event for event in EVENTS if manager.has(event)] == ["on_training_start", "on_cycle_complete"]


def test_base_noop_reassigned_on_subclass_is_still_skipped():
    class Reassigned(BaseCallback):
        on_step_end = BaseCallback.on_step_end

    assert bind_event(Reassigned(), "on_step_end") is None


def test_methods_set_to_none_are_not_bound():
    class OffOnClass(BaseCallback):
        on_episode_end = None

        def on_step_end(self, step_info):
            pass

    cb = OffOnClass()
    assert bind_event(cb, "on_episode_end") is None
    cb.on_step_end = None
    assert bind_event(cb, "on_step_end") is None


def test_non_callable_event_attribute_is_rejected():
    class Broken:
        on_step_end = 5

    with pytest.raises(TypeError, match=r"Broken\.on_step_end is 5, which is not callable"):
        CallbackManager([Broken()])


@pytest.mark.parametrize("define, shown, param", [
    ("def on_episode_end(self, info): pass", "(self, info)", "info"),
    ("def on_episode_end(self, episode_info, *, verbose): pass", "(self, episode_info, *, verbose)", "verbose"),
])
def test_unbindable_signature_fails_at_registration(define, shown, param):
    namespace = {}
    exec(define, namespace)
    Unbindable = type("Unbindable", (), {"on_episode_end": namespace["on_episode_end"]})
    manager = CallbackManager()
    with pytest.raises(CallbackSignatureError) as excinfo:
        manager.add(Unbindable())
    message = str(excinfo.value)
    assert isinstance(excinfo.value, TypeError)
    assert "Unbindable" in message
    assert "on_episode_end" in message
    assert shown in message
    assert f"{param!r}" in message
    assert "(trainer, episode_info)" in message
    assert "rename the parameter" in message and "give it a default" in message
    assert manager.callbacks == []


def test_binding_does_not_inspect_at_call_time(monkeypatch):
    cb = EpisodeInfoOnly()
    manager = CallbackManager([cb])

    def forbidden(*args, **kwargs):
        raise AssertionError("signature inspected during dispatch")

    monkeypatch.setattr(inspect, "signature", forbidden)
    manager.fire("on_episode_end", **offered_values("on_episode_end"))
    assert len(cb.calls) == 1


def test_bind_event_rejects_unknown_event():
    with pytest.raises(ValueError, match="Unknown legacy event 'on_epsiode_end'.*on_training_start"):
        bind_event(EpisodeInfoOnly(), "on_epsiode_end")


def test_object_without_events_is_not_a_callback():
    class NotACallback:
        def on_train_start(self, trainer):
            pass

    with pytest.raises(TypeError, match=r"NotACallback is not a legacy callback: it defines none of the 16 events"):
        CallbackManager([NotACallback()])
    # A bare BaseCallback defines nothing either, but says what it is.
    assert len(CallbackManager([BaseCallback()])) == 1


def test_registering_twice_is_rejected():
    cb = EpisodeInfoOnly()
    manager = CallbackManager([cb])
    with pytest.raises(ValueError, match="already registered"):
        manager.add(cb)


# --------------------------------------------------------------------------- dispatch


def test_fire_calls_in_registration_order_with_only_named_args():
    out = []

    class A:
        def on_step_start(self, step):
            out.append(("A", step))

    class B(BaseCallback):
        def on_step_start(self, trainer, step):
            out.append(("B", type(trainer).__name__, step))

    class C(BaseCallback):
        def on_step_end(self, step_info):
            out.append(("C", step_info["step"]))

    manager = CallbackManager([A(), B(), C()])
    trainer = FakeTrainer()
    manager.fire("on_step_start", trainer=trainer, step=7)
    manager.fire("on_step_end", trainer=trainer, step_info={"step": 8})
    assert out == [("A", 7), ("B", "FakeTrainer", 7), ("C", 8)]
    assert not manager.has("on_training_start")
    assert manager.fire("on_training_start", trainer=trainer) is False


def test_fire_requires_exactly_the_offered_args():
    manager = CallbackManager([EpisodeInfoOnly()])
    with pytest.raises(TypeError, match=r"exactly the offered arguments \(trainer, episode_info\); got \(episode_info\)"):
        manager.fire("on_episode_end", episode_info={})
    with pytest.raises(ValueError, match="Unknown legacy event"):
        manager.fire("on_episode_ended", trainer=None)
    with pytest.raises(ValueError, match="Unknown legacy event"):
        manager.has("on_episode_ended")


@pytest.mark.parametrize("value", [False, np.bool_(False), np.array(False), torch.tensor(False)],
                         ids=["False", "numpy.bool_", "numpy 0-dim", "torch 0-dim"])
def test_false_like_values_are_stops(value):
    assert is_stop(value)


@pytest.mark.parametrize("value", [None, 0, 0.0, "", [], True, np.bool_(True), torch.tensor(True),
                                   torch.tensor([False]), torch.tensor(0), np.array([False])],
                         ids=["None", "0", "0.0", "empty str", "empty list", "True", "numpy True", "torch True",
                              "torch 1-dim", "torch int", "numpy 1-dim"])
def test_other_values_are_not_stops(value):
    assert not is_stop(value)


@pytest.mark.parametrize("returned, stops", [(False, True), (np.bool_(False), True), (torch.tensor(False), True),
                                             (None, False), (0, False)])
def test_fire_reports_stop_and_runs_every_callback(returned, stops):
    out = []

    class Stopper:
        def on_cycle_complete(self, metrics):
            out.append("stopper")
            return returned

    class After:
        def on_cycle_complete(self, metrics):
            out.append("after")

    manager = CallbackManager([Stopper(), After()])
    assert manager.fire("on_cycle_complete", **offered_values("on_cycle_complete")) is stops
    assert out == ["stopper", "after"]


def test_payload_mutation_affects_nobody_else():
    seen = []

    class Mutator:
        def on_episode_end(self, episode_info):
            episode_info["reward"] = -999.0
            episode_info.pop("length")

        def on_step_end(self, step_info):
            step_info["rewards"].append(42.0)
            step_info["rewards"][0] = -1.0

    class Observer:
        def on_episode_end(self, episode_info):
            seen.append(dict(episode_info))

        def on_step_end(self, step_info):
            seen.append(list(step_info["rewards"]))

    manager = CallbackManager([Mutator(), Observer()])
    trainer = FakeTrainer()
    manager.fire("on_episode_end", trainer=trainer, episode_info=episode_info(1.5, length=12))
    manager.fire("on_step_end", trainer=trainer,
                 step_info={"step": 1, "total_timesteps": 2, "rewards": [0.5, 0.25], "dones": [False, False],
                            "actions": [1, 0]})
    assert seen[0]["reward"] == 1.5 and seen[0]["length"] == 12
    assert seen[1] == [0.5, 0.25]


def test_single_receiver_gets_the_payload_without_copy():
    received = []

    class Only:
        def on_metrics_computed(self, metrics):
            received.append(metrics)

    class TrainerOnly:
        def on_metrics_computed(self, trainer):
            pass

    payload = metrics_for(0, 1.0)
    CallbackManager([Only(), TrainerOnly()]).fire("on_metrics_computed", trainer=FakeTrainer(), metrics=payload)
    assert received[0] is payload


# --------------------------------------------------------------------------- error policy


class Boom:
    def __init__(self, exc=None):
        self.exc = exc or ValueError("boom")
        self.calls = 0

    def on_step_end(self, step_info):
        self.calls += 1
        raise self.exc

    def on_episode_end(self, episode_info):
        self.calls += 1
        raise self.exc


class Counter:
    def __init__(self):
        self.calls = 0

    def on_step_end(self, step_info):
        self.calls += 1


def test_on_error_is_validated():
    with pytest.raises(ValueError, match=r"on_error must be one of 'raise', 'warn', 'disable'; got 'ignore'"):
        CallbackManager(on_error="ignore")


def test_raise_policy_propagates_same_exception_with_note():
    boom = Boom()
    manager = CallbackManager([boom])
    with pytest.raises(ValueError) as excinfo:
        manager.fire("on_step_end", **offered_values("on_step_end"))
    assert excinfo.value is boom.exc
    assert excinfo.value.__notes__ == ["Raised in legacy callback Boom during event on_step_end"]


def test_note_context_is_appended():
    boom = Boom(KeyError("missing"))
    manager = CallbackManager([boom])
    manager.note_context = lambda: "Lightning hook on_train_epoch_end, epoch 3, batch 0"
    with pytest.raises(KeyError) as excinfo:
        manager.fire("on_episode_end", **offered_values("on_episode_end"))
    assert excinfo.value.__notes__ == [
        "Raised in legacy callback Boom during event on_episode_end "
        "(Lightning hook on_train_epoch_end, epoch 3, batch 0)"
    ]


def test_warn_policy_continues_and_logs_once_per_callback_and_event(caplog):
    boom, counter = Boom(), Counter()
    manager = CallbackManager([boom, counter], on_error="warn")
    caplog.set_level(logging.WARNING, logger="legacy_callbacks")
    for _ in range(2):
        assert manager.fire("on_step_end", **offered_values("on_step_end")) is False
    manager.fire("on_episode_end", **offered_values("on_episode_end"))
    manager.fire("on_episode_end", **offered_values("on_episode_end"))
    assert boom.calls == 4 and counter.calls == 2
    records = [r for r in caplog.records if r.name == "legacy_callbacks"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert "Boom during event on_step_end" in records[0].getMessage()
    assert "Boom during event on_episode_end" in records[1].getMessage()


def test_disable_policy_stops_calling_the_failing_callback(caplog):
    boom, counter = Boom(), Counter()
    manager = CallbackManager([boom, counter], on_error="disable")
    caplog.set_level(logging.WARNING, logger="legacy_callbacks")
    for _ in range(3):
        manager.fire("on_step_end", **offered_values("on_step_end"))
    manager.fire("on_episode_end", **offered_values("on_episode_end"))
    assert boom.calls == 1 and counter.calls == 3
    assert manager.disabled == [boom]
    assert manager.callbacks == [boom, counter]
    assert not manager.has("on_episode_end")
    records = [r for r in caplog.records if r.name == "legacy_callbacks"]
    assert len(records) == 1 and "disabled" in records[0].getMessage()


@pytest.mark.parametrize("policy", ["warn", "disable"])
@pytest.mark.parametrize("exc", [optuna.TrialPruned("pruned"), KeyboardInterrupt()], ids=["TrialPruned", "KeyboardInterrupt"])
def test_control_flow_exceptions_propagate_under_every_policy(policy, exc):
    boom, counter = Boom(exc), Counter()
    manager = CallbackManager([boom, counter], on_error=policy)
    with pytest.raises(type(exc)) as excinfo:
        manager.fire("on_step_end", **offered_values("on_step_end"))
    assert excinfo.value is exc
    assert "Boom during event on_step_end" in excinfo.value.__notes__[-1]
    assert manager.disabled == []


# --------------------------------------------------------------------------- context and trainer surface


def test_training_context_store():
    context = TrainingContext({"a": 1})
    context.set("b", [1, 2])
    context.update({"c": 3.5})
    assert "a" in context and "z" not in context
    assert context["b"] == [1, 2] and context.get("z") is None and context.get("z", 7) == 7
    snapshot = context.as_dict()
    snapshot["a"] = 100
    assert context["a"] == 1
    with pytest.raises(KeyError, match="'z' is not in the training context"):
        context["z"]
    with pytest.raises(TypeError, match="keys must be strings"):
        context.set(1, "x")


def test_training_context_state_dict_keeps_plain_values_only(tmp_path):
    context = TrainingContext()
    context.update({"reward": 1.5, "history": [1, 2, {"x": None}], "name": "run", "model": torch.nn.Linear(1, 1),
                    "array": np.zeros(2)})
    state = context.state_dict()
    assert state == {"reward": 1.5, "history": [1, 2, {"x": None}], "name": "run"}
    torch.save(state, tmp_path / "context.pt")
    restored = TrainingContext({"stale": 1})
    restored.load_state_dict(torch.load(tmp_path / "context.pt", weights_only=True))
    assert restored.as_dict() == state


def test_fake_trainer_has_the_trainer_surface():
    assert isinstance(FakeTrainer(), TrainerSurface)
    assert not isinstance(object(), TrainerSurface)
    protocol_members = set(TrainerSurface.__annotations__) | {"save_checkpoint", "load_checkpoint"}
    assert set(TRAINER_SURFACE) == protocol_members
    assert len(TRAINER_SURFACE) == 9


# --------------------------------------------------------------------------- the six callbacks


def test_metrics_callback_windows_match_numpy():
    trainer = FakeTrainer()
    cb = MetricsCallback(window_size=100)
    manager = CallbackManager([cb])
    assert all(math.isnan(v) for v in cb.window_stats().values())

    rng = np.random.default_rng(0)
    rewards = rng.normal(size=150).tolist()
    lengths = rng.integers(5, 50, size=150).tolist()
    for i, (reward, length) in enumerate(zip(rewards, lengths)):
        manager.fire("on_episode_end", trainer=trainer, episode_info=episode_info(reward, length, episode_index=i))

    stats = cb.window_stats()
    assert stats["reward_window_mean"] == pytest.approx(np.mean(rewards[-100:]))
    assert stats["reward_window_std"] == pytest.approx(np.std(rewards[-100:]))
    assert stats["length_window_mean"] == pytest.approx(np.mean(lengths[-100:]))
    assert stats["length_window_std"] == pytest.approx(np.std(lengths[-100:]))
    assert all(type(v) is float for v in stats.values())

    metrics = metrics_for(0, 0.25)
    manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics)
    manager.fire("on_cycle_complete", trainer=trainer, metrics=metrics)
    assert cb.history == [{"cycle": 0, "timesteps_total": 100, "episode_reward_mean": 0.25, **stats}]
    assert {k: trainer.context[k] for k in trainer.context} == {f"metrics/{k}": v for k, v in stats.items()}

    restored = MetricsCallback(window_size=100)
    restored.load_state_dict(cb.state_dict())
    assert restored.window_stats() == stats and restored.history == cb.history


def test_metrics_callback_rejects_bad_window():
    with pytest.raises(ValueError, match="window_size must be a positive int; got 0"):
        MetricsCallback(window_size=0)


def test_checkpoint_callback_saves_best_and_periodic(tmp_path):
    save_dir = tmp_path / "ckpts"
    trainer = FakeTrainer()
    cb = CheckpointCallback(save_dir, save_freq=2)
    manager = CallbackManager([cb])
    weights_at_best = None
    for cycle, reward in enumerate([1.0, 3.0, 2.0, 5.0, math.nan, 4.0]):
        with torch.no_grad():
            trainer.model.weight.fill_(float(cycle))
        manager.fire("on_cycle_complete", trainer=trainer, metrics=metrics_for(cycle, reward))
        if cycle == 3:
            weights_at_best = trainer.model.weight.clone()

    assert cb.best_reward == 5.0 and cb.best_cycle == 3
    assert sorted(os.listdir(save_dir)) == ["best_model.pt", "model_cycle_0001.pt", "model_cycle_0003.pt",
                                             "model_cycle_0005.pt"]
    best = torch.load(save_dir / "best_model.pt", weights_only=True)
    assert torch.equal(best["weight"], weights_at_best)
    periodic = torch.load(save_dir / "model_cycle_0005.pt", weights_only=True)
    assert torch.equal(periodic["weight"], torch.full((2, 3), 5.0))
    assert cb.saved_paths[-1] == str(save_dir / "model_cycle_0005.pt")

    restored = CheckpointCallback(save_dir)
    restored.load_state_dict(cb.state_dict())
    assert (restored.best_reward, restored.best_cycle) == (5.0, 3)


def test_checkpoint_callback_missing_monitor_lists_available_metrics(tmp_path):
    cb = CheckpointCallback(tmp_path, monitor="eval_episode_reward_mean")
    with pytest.raises(KeyError, match="'eval_episode_reward_mean'.*available metrics: approx_kl, clip_fraction"):
        cb.on_cycle_complete(FakeTrainer(), metrics_for(0, 1.0))


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path


def test_wandb_callback_offline_run(wandb_env):
    trainer = FakeTrainer({"lr": 0.01})
    cb = WandbCallback(project="fxai-test", dir=str(wandb_env), name="unit", config={"seed": 7})
    manager = CallbackManager([cb])
    manager.fire("on_training_start", trainer=trainer)
    assert cb.run is not None
    assert cb.run.config["lr"] == 0.01 and cb.run.config["seed"] == 7
    manager.fire("on_episode_end", trainer=trainer, episode_info=episode_info(2.5, 30))
    manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics_for(0, 2.5))
    assert cb.run.summary["episode/reward"] == 2.5
    assert cb.run.summary["timesteps_total"] == 100
    manager.fire("on_training_end", trainer=trainer)

    run_dirs = list((wandb_env / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert list(run_dirs[0].glob("*.wandb"))


def test_wandb_callback_allows_several_runs_per_process(wandb_env):
    trainer = FakeTrainer()
    first, second = WandbCallback(dir=str(wandb_env)), WandbCallback(dir=str(wandb_env), log_episodes=False)
    first.on_training_start(trainer)
    second.on_training_start(trainer)  # while the first is still running
    assert first.run.id != second.run.id
    first.on_metrics_computed(trainer, metrics_for(0, 1.0))
    second.on_metrics_computed(trainer, metrics_for(0, 2.0))
    first.on_training_end()
    second.on_training_end()
    assert len(list((wandb_env / "wandb").glob("offline-run-*"))) == 2


def test_wandb_callback_validates_mode_and_needs_a_run():
    with pytest.raises(ValueError, match="mode must be one of 'offline', 'disabled', 'online'; got 'local'"):
        WandbCallback(mode="local")
    with pytest.raises(RuntimeError, match="on_training_start must fire"):
        WandbCallback().on_episode_end(episode_info(1.0))


def test_evaluation_callback_threshold_stops_training():
    trainer = FakeTrainer()
    cb = EvaluationCallback(reward_threshold=10.0)
    manager = CallbackManager([cb])
    for cycle, reward in enumerate([4.0, 12.0, 8.0]):
        trainer.cycle = cycle
        manager.fire("on_evaluation_start", trainer=trainer)
        results = dict(offered_values("on_evaluation_end")["eval_results"], episode_reward_mean=reward)
        manager.fire("on_evaluation_end", trainer=trainer, eval_results=results)
        if cycle == 0:
            assert trainer.stop_training is False
    assert trainer.stop_training is True
    assert cb.stopped_at_cycle == 1
    assert cb.num_evaluations == 3
    assert (cb.best_reward, cb.best_cycle) == (12.0, 1)
    assert [(r["cycle"], r["episode_reward_mean"]) for r in cb.history] == [(0, 4.0), (1, 12.0), (2, 8.0)]

    restored = EvaluationCallback()
    restored.load_state_dict(cb.state_dict())
    assert restored.state_dict() == cb.state_dict()


def test_evaluation_callback_without_threshold_never_stops():
    trainer = FakeTrainer()
    cb = EvaluationCallback()
    cb.on_evaluation_end(trainer, dict(offered_values("on_evaluation_end")["eval_results"], episode_reward_mean=1e9))
    assert trainer.stop_training is False and cb.stopped_at_cycle is None


def test_continuous_training_resumes_copies_and_prunes(tmp_path):
    ckpt_dir = tmp_path / "versions"
    ckpt_dir.mkdir()
    for name in ["version_0001.ckpt", "version_0003.ckpt", ".version_0004.ckpt.tmp-123", "version_0005.ckpt.partial",
                 "notes.txt"]:
        (ckpt_dir / name).write_text(name)

    trainer = FakeTrainer()
    cb = ContinuousTrainingCallback(ckpt_dir, keep_versions=2)
    assert cb.version == 3
    manager = CallbackManager([cb])
    manager.fire("on_training_start", trainer=trainer)
    assert trainer.loaded == [str(ckpt_dir / "version_0003.ckpt")]
    assert cb.resumed_from == str(ckpt_dir / "version_0003.ckpt")

    for cycle in range(2):
        saved = tmp_path / f"last_{cycle}.ckpt"
        trainer.save_checkpoint(str(saved))
        manager.fire("on_checkpoint_saved", trainer=trainer, checkpoint_path=str(saved))
        assert (ckpt_dir / f"version_{4 + cycle:04d}.ckpt").read_bytes() == saved.read_bytes()

    assert cb.version == 5
    assert cb.copies == [str(ckpt_dir / "version_0004.ckpt"), str(ckpt_dir / "version_0005.ckpt")]
    versions = sorted(p.name for p in ckpt_dir.glob("version_*.ckpt"))
    assert versions == ["version_0004.ckpt", "version_0005.ckpt"]
    # Our own temp files never linger; foreign partial files are left alone but never resumed from.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        ".version_0004.ckpt.tmp-123", "notes.txt", "version_0004.ckpt", "version_0005.ckpt", "version_0005.ckpt.partial"]
    assert ContinuousTrainingCallback(ckpt_dir).version == 5


def test_continuous_training_fresh_dir_does_not_resume(tmp_path):
    trainer = FakeTrainer()
    cb = ContinuousTrainingCallback(tmp_path / "missing")
    assert cb.version == 0
    cb.on_training_start(trainer)
    assert trainer.loaded == [] and cb.resumed_from is None
    saved = tmp_path / "a.ckpt"
    trainer.save_checkpoint(str(saved))
    cb.on_checkpoint_saved(trainer, str(saved))
    assert sorted(os.listdir(tmp_path / "missing")) == ["version_0001.ckpt"]


def test_continuous_training_rejects_bad_keep_versions(tmp_path):
    with pytest.raises(ValueError, match="keep_versions must be None .* or a positive int; got 0"):
        ContinuousTrainingCallback(tmp_path, keep_versions=0)


def test_optuna_callback_reports_and_prunes():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.0))
    trial = study.ask()
    cb = OptunaCallback(trial)
    manager = CallbackManager([cb], on_error="warn")  # pruning must get through even so
    trainer = FakeTrainer()
    manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics_for(0, 1.0))
    manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics_for(1, math.nan))  # skipped
    manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics_for(2, 2.0))
    with pytest.raises(optuna.TrialPruned, match=r"Trial 0 pruned at step 3 \(episode_reward_mean=-1.0\)") as excinfo:
        manager.fire("on_metrics_computed", trainer=trainer, metrics=metrics_for(3, -1.0))
    assert "OptunaCallback during event on_metrics_computed" in excinfo.value.__notes__[-1]
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    assert cb.reports == [(0, 1.0), (2, 2.0), (3, -1.0)]
    assert study.trials[0].intermediate_values == {0: 1.0, 2: 2.0, 3: -1.0}
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED


def test_optuna_callback_report_step_and_missing_monitor():
    study = optuna.create_study()
    trial = study.ask()
    cb = OptunaCallback(trial, monitor="loss", report_step="timesteps_total")
    cb.on_metrics_computed(metrics_for(1, 1.0))
    assert study.trials[0].intermediate_values == {200: 0.5}
    with pytest.raises(KeyError, match="'eval_win_rate'.*available metrics: approx_kl"):
        OptunaCallback(trial, monitor="eval_win_rate").on_metrics_computed(metrics_for(0, 1.0))


# --------------------------------------------------------------------------- factory


def test_create_callbacks_builds_all_six_in_order(tmp_path):
    trial = optuna.create_study().ask()
    config = {
        "optuna": {"trial": trial, "monitor": "loss"},
        "metrics": {"window_size": 5},
        "checkpoint": {"save_dir": str(tmp_path / "ckpt"), "save_freq": 3},
        "wandb": {"mode": "disabled", "dir": str(tmp_path), "log_episodes": False},
        "evaluation": {"reward_threshold": 100.0},
        "continuous_training": {"checkpoint_dir": str(tmp_path / "versions"), "keep_versions": 2},
    }
    callbacks = create_callbacks(config)
    assert [type(cb) for cb in callbacks] == [OptunaCallback, MetricsCallback, CheckpointCallback, WandbCallback,
                                              EvaluationCallback, ContinuousTrainingCallback]
    optuna_cb, metrics_cb, checkpoint_cb, wandb_cb, evaluation_cb, continuous_cb = callbacks
    assert optuna_cb.trial is trial and optuna_cb.monitor == "loss"
    assert metrics_cb.window_size == 5
    assert checkpoint_cb.save_freq == 3 and checkpoint_cb.save_dir == str(tmp_path / "ckpt")
    assert wandb_cb.mode == "disabled" and wandb_cb.log_episodes is False
    assert evaluation_cb.reward_threshold == 100.0
    assert continuous_cb.keep_versions == 2
    assert len(CallbackManager(callbacks)) == 6
    assert set(CALLBACK_CLASSES) == {"metrics", "checkpoint", "wandb", "evaluation", "continuous_training", "optuna"}


def test_create_callbacks_enabled_false_and_empty_sections():
    callbacks = create_callbacks({"metrics": None, "evaluation": {"enabled": False, "reward_threshold": 1.0},
                                  "wandb": {"enabled": True}})
    assert [type(cb) for cb in callbacks] == [MetricsCallback, WandbCallback]
    assert create_callbacks({}) == []


@pytest.mark.parametrize("config, message", [
    ({"metric": {}}, r"Unknown callback section 'metric'; known sections: metrics, checkpoint, wandb, evaluation, "
                     r"continuous_training, optuna\."),
    ({"metrics": {"window": 5}}, r"Unknown option 'window' for callback section 'metrics'; accepted options: "
                                 r"window_size, enabled\."),
    ({"checkpoint": {"save_freq": 5}}, r"Callback section 'checkpoint' is missing required option 'save_dir'\."),
    ({"optuna": {}}, r"Callback section 'optuna' is missing required option 'trial'\."),
    ({"metrics": [("window_size", 5)]}, r"Callback section 'metrics' must be a mapping of options"),
    ({"metrics": {"enabled": "no"}}, r"Option 'enabled' of callback section 'metrics' must be true or false"),
    (["metrics"], r"must be a mapping of section name to options"),
])
def test_create_callbacks_errors(config, message):
    with pytest.raises(ValueError, match=message):
        create_callbacks(config)


def test_create_callbacks_notes_which_section_failed():
    with pytest.raises(ValueError, match="save_freq must be a positive int") as excinfo:
        create_callbacks({"checkpoint": {"save_dir": "x", "save_freq": 0}})
    assert excinfo.value.__notes__ == ["While creating callback section 'checkpoint' (CheckpointCallback)."]


# --------------------------------------------------------------------------- package boundaries


def test_package_imports_nothing_from_fxai_compat_nor_optional_services():
    code = ("import sys, legacy_callbacks; "
            "print(sorted(m for m in ('fxai_compat', 'wandb', 'optuna', 'pytorch_lightning', 'lightning') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(legacy_callbacks.__file__)))
    assert result.stdout.strip() == "[]"


def test_public_api_is_exported():
    for name in legacy_callbacks.__all__:
        assert hasattr(legacy_callbacks, name), name
