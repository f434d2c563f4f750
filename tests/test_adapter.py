"""LegacyCallbackAdapter: all 16 legacy events inside Lightning, trace-identical to ``LegacyTrainer``.

Every test runs real training (``LegacyTrainer`` and Lightning ``fit`` on CPU) on tiny configs;
nothing of Lightning is mocked. Fits that several tests read are module-scoped fixtures. The DDP
test runs ``tests/scripts/ddp_adapter_run.py`` in a subprocess (two DDP fits cannot share a process).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordingCallback, first_difference, tiny

from fxai_compat import LOGGED_METRICS, EVENT_MAP, LegacyTrainer, NotifyingCheckpointIO, PPOLightningModule, fit
from fxai_compat.adapter import SUPPORTED_HOOKS, AdapterConfigError, LegacyCallbackAdapter, wrap
from fxai_compat.checkpoints import read_training_checkpoint
from fxai_compat.events import CHECKPOINT_IO_SOURCE, LIGHTNING_SOURCE, RL_SOURCE
from fxai_compat.ppo import RL_EVENTS
from legacy_callbacks import (EVENT_ARGS, EVENTS, CallbackManager, CheckpointCallback, ContinuousTrainingCallback,
                              EvaluationCallback, MetricsCallback, OptunaCallback, WandbCallback)

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Resumed runs write to a new directory on purpose (the hosts must not share files).
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")
SCRIPTS = Path(__file__).parent / "scripts"

#: The keys of each event's payload, as the contract's table lists them.
PAYLOAD_KEYS = {
    "on_episode_start": {"env_index", "episode_index"},
    "on_step_end": {"step", "total_timesteps", "rewards", "dones", "actions"},
    "on_episode_end": {"env_index", "episode_index", "reward", "length", "pnl", "trades", "win_rate"},
    "on_rollout_end": {"steps", "episodes", "reward_mean"},
    "on_update_start": {"update_index", "epoch", "minibatch"},
    "on_update_end": {"update_index", "epoch", "minibatch", "loss", "policy_loss", "value_loss", "entropy",
                      "approx_kl", "clip_fraction"},
    "on_evaluation_end": {"episode_reward_mean", "episode_reward_std", "episode_length_mean", "episodes", "win_rate"},
}
METRIC_KEYS = {"timesteps_total", "episodes_total", "cycle", "episode_reward_mean", "episode_length_mean", "loss",
               "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
EVAL_METRIC_KEYS = {"eval_episode_reward_mean", "eval_win_rate"}
COUNTERS = {"timesteps_total", "episodes_total", "cycle"}


# --------------------------------------------------------------------------- helpers


def run_legacy(cfg, callbacks, resume_from=None):
    trainer = LegacyTrainer(cfg, callbacks)
    trainer.train(resume_from=None if resume_from is None else str(resume_from))
    return trainer


def run_lightning(cfg, callbacks, **kwargs):
    """``fit`` with every legacy callback in its own adapter (Lightning callbacks pass as they are)."""
    wrapped = [cb if isinstance(cb, pl.Callback) else LegacyCallbackAdapter(cb) for cb in callbacks]
    return fit(cfg, wrapped, **kwargs)


def other_dir(cfg, name):
    """The same config writing its checkpoints elsewhere (the two hosts must not share files)."""
    return cfg.replace(checkpoint_dir=str(Path(cfg.checkpoint_dir).parent / name))


def assert_same_trace(legacy_trace, lightning_trace):
    diff = first_difference(legacy_trace, lightning_trace)
    assert diff is None, f"traces differ at record {diff[0]}:\n legacy:    {diff[1]}\n lightning: {diff[2]}"


def params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def fx_name(trainer):
    """The Lightning hook running right now (what ``self.log`` uses), or None under the legacy loop."""
    view = getattr(trainer, "lightning_trainer", None)
    return None if view is None else view.lightning_module._current_fx_name


class CheckingRecorder(RecordingCallback):
    """Records the trace, keeps the raw metrics dicts, and reads every checkpoint the moment it is announced."""

    def __init__(self):
        super().__init__()
        self.raw_metrics = []
        self.raw_cycle_metrics = []
        self.saved = []

    def on_metrics_computed(self, trainer, **offered):
        super().on_metrics_computed(trainer, **offered)
        self.raw_metrics.append(offered["metrics"])

    def on_cycle_complete(self, trainer, **offered):
        super().on_cycle_complete(trainer, **offered)
        self.raw_cycle_metrics.append(offered["metrics"])

    def on_checkpoint_saved(self, trainer, **offered):
        super().on_checkpoint_saved(trainer, **offered)
        path = offered["checkpoint_path"]
        assert isinstance(path, str) and os.path.isfile(path), path
        ckpt = read_training_checkpoint(path)  # complete and loadable right now
        self.saved.append((os.path.basename(path), ckpt.rl_state["total_timesteps"], trainer.total_timesteps))


class StopReturningFalse(CheckingRecorder):
    """Asks for a stop by returning False from on_cycle_complete at cycle 1."""

    def on_cycle_complete(self, trainer, **offered):
        super().on_cycle_complete(trainer, **offered)
        return False if trainer.cycle == 1 else None


class StopFlagInStepEnd(CheckingRecorder):
    """Asks for a stop by setting trainer.stop_training in on_step_end, early in cycle 1."""

    def on_step_end(self, trainer, **offered):
        super().on_step_end(trainer, **offered)
        if trainer.cycle == 1 and offered["step_info"]["step"] == trainer.config["n_steps"] + 3:
            trainer.stop_training = True


class StopObserver:
    """Another callback (its own adapter): sees the stop flag that the recorder set, as under the legacy loop."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, trainer):
        if trainer.stop_training and not self.seen:
            self.seen.append(("step_end", trainer.cycle))

    def on_cycle_complete(self, trainer):
        self.seen.append(("cycle_complete", trainer.cycle, trainer.stop_training))


def events_of(trace, name):
    return [record for record in trace if record[0] == name]


# --------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The tiny config (2 envs, uneven minibatches, evaluation and checkpoints due) under both hosts."""
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = tiny(tmp)
    legacy_rec, lightning_rec = CheckingRecorder(), CheckingRecorder()
    legacy = run_legacy(cfg, [legacy_rec])
    lightning = run_lightning(other_dir(cfg, "ckpt_pl"), [lightning_rec])
    return dict(cfg=cfg, tmp=tmp, legacy=legacy, lightning=lightning, legacy_rec=legacy_rec,
                lightning_rec=lightning_rec, legacy_ckpt=Path(cfg.checkpoint_dir) / "cycle-0001.ckpt",
                lightning_ckpt=tmp / "ckpt_pl" / "cycle-0001.ckpt")


# --------------------------------------------------------------------------- 1. trace parity


def test_trace_parity_baseline(baseline):
    legacy, lightning = baseline["legacy_rec"], baseline["lightning_rec"]
    assert_same_trace(legacy.trace, lightning.trace)
    names = [record[0] for record in legacy.trace]
    assert set(names) == set(EVENTS) - {"on_checkpoint_loaded"}  # every event but the resume one occurs
    assert names[0] == "on_training_start" and names[-1] == "on_training_end"
    assert len(events_of(legacy.trace, "on_cycle_complete")) == 4
    assert len(events_of(legacy.trace, "on_evaluation_end")) == 2
    assert [s[0] for s in lightning.saved] == ["cycle-0001.ckpt", "cycle-0003.ckpt"]
    assert lightning.saved == legacy.saved
    # the file announced holds the counters of that very moment: it was complete on disk
    assert all(in_file == live for _, in_file, live in lightning.saved)


@pytest.mark.parametrize("changes, recorder", [
    (dict(n_envs=1), CheckingRecorder),
    (dict(n_envs=4, minibatch_size=40), CheckingRecorder),
    (dict(), StopReturningFalse),
    (dict(), StopFlagInStepEnd),
    (dict(env="CartPole-v1", n_steps=20, eval_episodes=1), CheckingRecorder),
], ids=["1-env", "4-envs", "stop-by-return-false", "stop-by-flag-in-step-end", "cartpole"])
def test_trace_parity(tmp_path, changes, recorder):
    cfg = tiny(tmp_path, **changes)
    legacy_rec, lightning_rec = recorder(), recorder()
    legacy_observer, lightning_observer = StopObserver(), StopObserver()
    run_legacy(cfg, [legacy_rec, legacy_observer])
    run_lightning(other_dir(cfg, "ckpt_pl"), [lightning_rec, lightning_observer])
    assert_same_trace(legacy_rec.trace, lightning_rec.trace)
    assert lightning_observer.seen == legacy_observer.seen
    assert cfg.rollout_size % cfg.minibatch_size != 0  # the last minibatch is smaller
    cycles = len(events_of(legacy_rec.trace, "on_cycle_complete"))
    assert cycles == (2 if recorder is not CheckingRecorder else cfg.cycles)
    assert legacy_rec.trace[-1][0] == "on_training_end"
    if changes.get("env") == "CartPole-v1":
        episode = events_of(legacy_rec.trace, "on_episode_end")[0][1]["episode_info"]
        assert episode["pnl"] == 0 and episode["trades"] == 0 and math.isnan(episode["win_rate"])


def test_trace_parity_resume(baseline, tmp_path):
    """legacy ``train(resume_from=...)`` vs ``fit(ckpt_path=...)`` from each host's cycle-1 checkpoint."""
    cfg = baseline["cfg"].replace(checkpoint_dir=str(tmp_path / "ckpt"))
    legacy_rec, lightning_rec = CheckingRecorder(), CheckingRecorder()
    legacy = run_legacy(cfg, [legacy_rec], resume_from=baseline["legacy_ckpt"])
    lightning = run_lightning(other_dir(cfg, "ckpt_pl"), [lightning_rec], ckpt_path=str(baseline["lightning_ckpt"]))
    assert_same_trace(legacy_rec.trace, lightning_rec.trace)
    assert [r[0] for r in lightning_rec.trace[:2]] == ["on_training_start", "on_checkpoint_loaded"]
    assert lightning_rec.trace[1][1] == {"checkpoint_path": "cycle-0001.ckpt"}
    assert [r[1]["metrics"]["cycle"] for r in events_of(lightning_rec.trace, "on_cycle_complete")] == [2.0, 3.0]
    # a resumed run ends where the uninterrupted one did
    uninterrupted = params(baseline["lightning"].lightning_module.policy)
    assert torch.allclose(params(lightning.lightning_module.policy), uninterrupted, atol=1e-6)
    assert torch.allclose(params(legacy.model), params(baseline["legacy"].model), atol=1e-6)


# --------------------------------------------------------------------------- 2. each EVENT_MAP row


def single_event_class(event):
    """A legacy callback class defining ONLY ``event``; it records what each call received and where."""

    def method(self, **offered):
        trainer = offered["trainer"]
        call = {"offered": set(offered), "fx": fx_name(trainer)}
        payload = {k: v for k, v in offered.items() if k != "trainer"}
        if payload:
            (name, value), = payload.items()
            call["value"] = value
            if name == "checkpoint_path":
                assert os.path.isfile(value)
                call["rl_timesteps"] = read_training_checkpoint(value).rl_state["total_timesteps"]
                call["live_timesteps"] = trainer.total_timesteps
        self.calls.append(call)

    return type(f"Only_{event}", (), {"__init__": lambda self: setattr(self, "calls", []), event: method})


@pytest.fixture(scope="module")
def single_event_runs(baseline, tmp_path_factory):
    """16 callbacks, each defining one event and wrapped in its own adapter, in a resumed run of both hosts
    (a resume, so that on_checkpoint_loaded fires too)."""
    tmp = tmp_path_factory.mktemp("single")
    cfg = baseline["cfg"].replace(checkpoint_dir=str(tmp / "ckpt"))
    legacy_cbs = {event: single_event_class(event)() for event in EVENTS}
    lightning_cbs = {event: single_event_class(event)() for event in EVENTS}
    run_legacy(cfg, list(legacy_cbs.values()), resume_from=baseline["legacy_ckpt"])
    trainer = run_lightning(other_dir(cfg, "ckpt_pl"), list(lightning_cbs.values()),
                            ckpt_path=str(baseline["lightning_ckpt"]))
    return dict(legacy=legacy_cbs, lightning=lightning_cbs, trainer=trainer, ckpt=baseline["lightning_ckpt"])


@pytest.mark.parametrize("route", EVENT_MAP, ids=[route.event for route in EVENT_MAP])
def test_event_map_row_is_delivered_at_its_source(route, single_event_runs):
    calls = single_event_runs["lightning"][route.event].calls
    expected = single_event_runs["legacy"][route.event].calls
    assert len(calls) == len(expected) > 0
    for call in calls:
        assert call["offered"] == set(EVENT_ARGS[route.event])
        if route.event in PAYLOAD_KEYS:
            assert set(call["value"]) == PAYLOAD_KEYS[route.event]
        if route.event in ("on_metrics_computed", "on_cycle_complete"):
            assert METRIC_KEYS <= set(call["value"]) <= METRIC_KEYS | EVAL_METRIC_KEYS
        if route.event == "on_step_start":
            assert type(call["value"]) is int
    if route.kind == RL_SOURCE:  # announced live from inside the cycle's training_step
        assert {call["fx"] for call in calls} == {"training_step"}
    elif route.kind == LIGHTNING_SOURCE:
        assert {call["fx"] for call in calls} == {route.source}
    else:
        assert route.kind == CHECKPOINT_IO_SOURCE
        # after the write: the file is on disk and holds the state of this very moment
        assert all(call["rl_timesteps"] == call["live_timesteps"] for call in calls)
    if route.event == "on_checkpoint_loaded":
        assert calls[0]["value"] == str(single_event_runs["ckpt"])


# --------------------------------------------------------------------------- 3. only defined events dispatch


class EpisodesAndCycles:
    def __init__(self):
        self.episodes = 0
        self.cycles = 0

    def on_episode_end(self, episode_info):
        self.episodes += 1

    def on_cycle_complete(self, trainer, metrics):
        self.cycles += 1


def test_only_defined_events_are_dispatched(baseline, tmp_path):
    cb = EpisodesAndCycles()
    adapter = LegacyCallbackAdapter(cb)
    trainer = fit(tiny(tmp_path), [adapter])
    legacy_trace = baseline["legacy_rec"].trace
    assert cb.episodes == len(events_of(legacy_trace, "on_episode_end")) > 0
    assert cb.cycles == 4
    assert set(adapter.routes) == {"on_episode_end", "on_cycle_complete"}
    for rl_event in RL_EVENTS:
        hook = getattr(adapter, f"on_rl_{rl_event}")
        assert (hook is not None) == (rl_event == "episode_end"), rl_event
    for hook in ("on_validation_start", "on_validation_end", "on_train_end", "on_train_epoch_start",
                 "on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step", "on_fit_start",
                 "on_fit_end", "on_before_backward", "on_after_backward", "on_before_zero_grad"):
        assert getattr(adapter, hook) is None, hook
    bus = trainer.lightning_module.rl_events
    assert {event for event, listeners in bus.listeners.items() if listeners} == {"episode_end"}


# --------------------------------------------------------------------------- 4. mapping= overrides


def test_mapping_is_validated_at_construction():
    with pytest.raises(AdapterConfigError) as info:
        LegacyCallbackAdapter(RecordingCallback(), mapping={"on_episode_finish": None})
    assert "'on_episode_finish'" in str(info.value)
    assert all(event in str(info.value) for event in EVENTS)
    with pytest.raises(AdapterConfigError) as info:
        LegacyCallbackAdapter(RecordingCallback(), mapping={"on_rollout_end": "on_epoch_end"})
    assert "'on_epoch_end'" in str(info.value) and "on_rollout_end" in str(info.value)
    assert all(hook in str(info.value) for hook in SUPPORTED_HOOKS)
    with pytest.raises(AdapterConfigError, match="unknown RL event 'rollout_finish'; RL events are: episode_start"):
        LegacyCallbackAdapter(RecordingCallback(), mapping={"on_rollout_end": "rl:rollout_finish"})
    with pytest.raises(AdapterConfigError, match="got 5"):
        LegacyCallbackAdapter(RecordingCallback(), mapping={"on_rollout_end": 5})


class MetricsOnly:
    def __init__(self):
        self.metrics = []

    def on_metrics_computed(self, metrics):
        self.metrics.append(metrics)


def test_mapping_moves_and_drops_events(baseline, tmp_path):
    rec, metrics_cb = RecordingCallback(), MetricsOnly()
    renamed = dict(LOGGED_METRICS)
    renamed["reward"] = renamed.pop("episode_reward_mean")
    fit(tiny(tmp_path), [
        LegacyCallbackAdapter(rec, mapping={"on_rollout_end": "on_train_epoch_end", "on_step_start": None}),
        LegacyCallbackAdapter(metrics_cb, metric_keys=renamed)])
    legacy = [r for r in baseline["legacy_rec"].trace if r[0] != "on_step_start"]
    assert not events_of(rec.trace, "on_step_start")
    first_rollout_end = next(i for i, r in enumerate(legacy) if r[0] == "on_rollout_end")
    assert first_difference(legacy, rec.trace)[0] == first_rollout_end
    # the moved event, and only it, sits elsewhere: right before on_metrics_computed, same payload
    assert_same_trace([r for r in legacy if r[0] != "on_rollout_end"],
                      [r for r in rec.trace if r[0] != "on_rollout_end"])
    moved = [i for i, r in enumerate(rec.trace) if r[0] == "on_rollout_end"]
    assert len(moved) == 4 and all(rec.trace[i + 1][0] == "on_metrics_computed" for i in moved)
    assert [rec.trace[i][1] for i in moved] == [r[1] for r in events_of(legacy, "on_rollout_end")]
    # metric_keys= renames a key
    expected = [m["episode_reward_mean"] for m in baseline["legacy_rec"].raw_metrics]
    assert all("reward" in m and "episode_reward_mean" not in m for m in metrics_cb.metrics)
    assert all(math.isclose(m["reward"], e, abs_tol=1e-6) for m, e in zip(metrics_cb.metrics, expected))


# --------------------------------------------------------------------------- 5. binding errors


def test_binding_errors_are_raised_by_the_constructor():
    class NeedsExtra:
        def on_episode_end(self, episode_info, threshold):
            pass

    with pytest.raises(TypeError) as info:
        LegacyCallbackAdapter(NeedsExtra())
    message = str(info.value)
    for part in ("NeedsExtra", "on_episode_end", "(self, episode_info, threshold)", "'threshold'",
                 "trainer, episode_info"):
        assert part in message, part

    with pytest.raises(AdapterConfigError, match="already a Lightning callback"):
        LegacyCallbackAdapter(pl.callbacks.LearningRateMonitor())
    with pytest.raises((TypeError, ValueError), match="defines none of the 16 events"):
        LegacyCallbackAdapter(object())
    with pytest.raises(AdapterConfigError, match="on_error must be one of"):
        LegacyCallbackAdapter(RecordingCallback(), on_error="ignore")
    with pytest.raises(AdapterConfigError, match="ranks must be"):
        LegacyCallbackAdapter(RecordingCallback(), ranks="one")


# --------------------------------------------------------------------------- 6. trainer surface


class Surface:
    """Reads the trainer surface, shares a value through the context and saves a checkpoint itself."""

    def __init__(self, save_to):
        self.save_to = str(save_to)
        self.log = []
        self.saved_params = None

    def on_training_start(self, trainer):
        trainer.context.set("shared/answer", 42)
        with pytest.raises(TypeError):
            trainer.config["lr"] = 1.0
        self.log.append(("start", trainer.config["n_envs"], trainer.cycle, trainer.total_timesteps,
                         trainer.num_episodes, trainer.stop_training))
        self.model = trainer.model

    def on_cycle_complete(self, trainer, metrics):
        self.log.append(("cycle", trainer.cycle, trainer.total_timesteps, trainer.num_episodes))
        if trainer.cycle == 0:
            trainer.save_checkpoint(self.save_to)
            self.saved_params = params(trainer.model).clone()
            self.log.append(("save returned",))

    def on_checkpoint_saved(self, trainer, checkpoint_path):
        self.log.append(("saved", os.path.basename(checkpoint_path), os.path.isfile(checkpoint_path)))


class ContextReader:
    def __init__(self):
        self.seen = []

    def on_training_start(self, trainer):
        self.seen.append(trainer.context.get("shared/answer"))
        trainer.context.set("shared/reader", "here")

    def on_training_end(self, trainer):
        self.seen.append(dict(trainer.context))


def test_trainer_surface_and_nested_save(tmp_path):
    cfg = tiny(tmp_path, cycles=2)
    legacy_surface, legacy_reader = Surface(tmp_path / "legacy-manual.ckpt"), ContextReader()
    lightning_surface, lightning_reader = Surface(tmp_path / "manual.ckpt"), ContextReader()
    legacy = run_legacy(cfg, [legacy_surface, legacy_reader])
    trainer = run_lightning(other_dir(cfg, "ckpt_pl"), [lightning_surface, lightning_reader])
    assert lightning_surface.model is trainer.lightning_module.policy  # the policy, not the LightningModule
    assert legacy_surface.model is legacy.model
    expected = [e if e[0] != "saved" or e[1] != "legacy-manual.ckpt" else ("saved", "manual.ckpt", True)
                for e in legacy_surface.log]
    assert lightning_surface.log == expected
    # nested: the manual save fired on_checkpoint_saved inside on_cycle_complete, before save_checkpoint returned
    assert lightning_surface.log[2:4] == [("saved", "manual.ckpt", True), ("save returned",)]
    assert lightning_reader.seen == legacy_reader.seen == [42, {"shared/answer": 42, "shared/reader": "here"}]
    # the manual save is a loadable Lightning checkpoint holding the model of that moment
    raw = torch.load(tmp_path / "manual.ckpt", map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer_states", "loops", "pytorch-lightning_version"} <= set(raw)
    module = PPOLightningModule.load_from_checkpoint(str(tmp_path / "manual.ckpt"))
    assert torch.equal(params(module.policy), lightning_surface.saved_params)
    assert not torch.equal(params(trainer.lightning_module.policy), lightning_surface.saved_params)
    assert read_training_checkpoint(tmp_path / "manual.ckpt").rl_state["cycles_completed"] == 1


@pytest.mark.parametrize("written_by", ["legacy", "lightning"])
def test_load_checkpoint_in_on_training_start_really_resumes(baseline, tmp_path, written_by):
    """ContinuousTrainingCallback finds version_0001.ckpt and calls trainer.load_checkpoint in on_training_start."""
    source = baseline["legacy_ckpt"] if written_by == "legacy" else baseline["lightning_ckpt"]
    dirs = {}
    for host in ("legacy", "lightning"):
        dirs[host] = tmp_path / host / "versions"
        dirs[host].mkdir(parents=True)
        shutil.copy(source, dirs[host] / "version_0001.ckpt")
    cfg = tiny(tmp_path, cycles=2)

    class Loaded(ContinuousTrainingCallback):
        def on_checkpoint_loaded(self, trainer, checkpoint_path):
            self.loaded = (os.path.basename(checkpoint_path), trainer.total_timesteps, trainer.num_episodes,
                           trainer.cycle)

    legacy_cb, lightning_cb = Loaded(dirs["legacy"]), Loaded(dirs["lightning"])
    legacy_rec, lightning_rec = RecordingCallback(), RecordingCallback()
    legacy = run_legacy(cfg, [legacy_cb, legacy_rec])
    trainer = run_lightning(other_dir(cfg, "ckpt_pl"), [lightning_cb, lightning_rec])
    loaded = read_training_checkpoint(source).rl_state
    assert lightning_cb.loaded == legacy_cb.loaded == ("version_0001.ckpt", loaded["total_timesteps"],
                                                      loaded["num_episodes"], 2)
    assert_same_trace(legacy_rec.trace, lightning_rec.trace)
    first_cycle = events_of(lightning_rec.trace, "on_cycle_complete")[0][1]["metrics"]
    assert first_cycle["cycle"] == 2 and first_cycle["timesteps_total"] == loaded["total_timesteps"] + cfg.rollout_size
    assert torch.allclose(params(trainer.lightning_module.policy), params(legacy.model), atol=1e-6)
    # the run continued from the loaded parameters: the same as the uninterrupted baseline run
    assert torch.allclose(params(legacy.model), params(baseline["legacy"].model), atol=1e-6)
    assert [os.path.basename(p) for p in lightning_cb.copies] == [os.path.basename(p) for p in legacy_cb.copies] \
        == ["version_0002.ckpt"]


# --------------------------------------------------------------------------- 7. checkpoint events


class SavedPaths:
    def __init__(self):
        self.paths = []
        self.io_seen = []

    def on_checkpoint_saved(self, trainer, checkpoint_path):
        assert os.path.isfile(checkpoint_path)
        read_training_checkpoint(checkpoint_path)
        self.paths.append(checkpoint_path)
        io = trainer.lightning_trainer.strategy.checkpoint_io
        self.io_seen.append((id(io), type(io), len(io.listeners)))


class ManualSave(pl.Callback):
    def __init__(self, path):
        self.path = str(path)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


def test_checkpoint_saved_for_model_checkpoint_and_manual_saves_two_adapters_one_io(tmp_path):
    cfg = tiny(tmp_path)
    first, second = SavedPaths(), SavedPaths()
    trainer = run_lightning(cfg, [first, second, ManualSave(tmp_path / "manual.ckpt")])
    expected = [str(tmp_path / "manual.ckpt"), str(Path(cfg.checkpoint_dir) / "cycle-0001.ckpt"),
                str(Path(cfg.checkpoint_dir) / "cycle-0003.ckpt")]
    assert first.paths == second.paths == expected
    io = trainer.strategy.checkpoint_io
    assert type(io) is NotifyingCheckpointIO
    assert {seen for seen in first.io_seen + second.io_seen} == {(id(io), NotifyingCheckpointIO, 2)}
    assert io.listeners == []  # each adapter removed its own listener at teardown


# --------------------------------------------------------------------------- 8. metrics


def test_metrics_keys_types_and_values_match_legacy(baseline):
    legacy, lightning = baseline["legacy_rec"], baseline["lightning_rec"]
    for attr in ("raw_metrics", "raw_cycle_metrics"):
        assert len(getattr(lightning, attr)) == len(getattr(legacy, attr)) == 4
        for cycle, (got, want) in enumerate(zip(getattr(lightning, attr), getattr(legacy, attr))):
            assert set(got) == set(want)
            expected_keys = METRIC_KEYS | (EVAL_METRIC_KEYS if cycle % 2 == 1 else set())
            assert set(got) == expected_keys
            for key, value in got.items():
                assert type(value) is (int if key in COUNTERS else float), (key, value)
                if key in COUNTERS:
                    assert value == want[key]
                else:
                    assert (math.isnan(value) and math.isnan(want[key])) or abs(value - want[key]) <= 1e-6, key
    # fresh dicts: on_metrics_computed and on_cycle_complete do not share one object
    assert all(m is not c for m, c in zip(lightning.raw_metrics, lightning.raw_cycle_metrics))


# --------------------------------------------------------------------------- 9. control flow


class RaiseAt:
    """Raises from ``event`` at ``cycle``; also listens to on_step_end (so batch-level hooks are live)."""

    def __init__(self, event, cycle):
        self.event, self.cycle, self.raised = event, cycle, None
        setattr(self, event, self._maybe_raise)

    def on_step_end(self, step_info):
        pass

    def _maybe_raise(self, trainer, **offered):
        if trainer.cycle == self.cycle and self.raised is None:
            self.raised = ValueError(f"boom in {self.event}")
            raise self.raised


@pytest.mark.parametrize("event, cycle, hook, batch", [
    ("on_update_end", 0, "training_step", True),
    ("on_cycle_complete", 1, "on_train_epoch_end", False),
], ids=["rl-event-in-training-step", "epoch-end"])
def test_exceptions_keep_identity_and_gain_a_note(tmp_path, event, cycle, hook, batch):
    cb = RaiseAt(event, cycle)
    with pytest.raises(ValueError) as info:
        run_lightning(tiny(tmp_path), [cb])
    assert info.value is cb.raised
    note = " ".join(getattr(info.value, "__notes__", []))
    for part in ("RaiseAt", event, f"Lightning hook {hook}", f"epoch {cycle}"):
        assert part in note, (part, note)
    assert ("batch 0" in note) == batch, note


class Flaky:
    """Raises in every on_episode_end; counts the calls it got."""

    def __init__(self):
        self.calls = 0

    def on_episode_end(self, episode_info):
        self.calls += 1
        raise RuntimeError("flaky")


def test_warn_disable_and_sanity_check(baseline, tmp_path, caplog):
    rec, warned, disabled = RecordingCallback(), Flaky(), Flaky()
    with caplog.at_level(logging.WARNING, logger="legacy_callbacks"):
        fit(tiny(tmp_path), [LegacyCallbackAdapter(warned, on_error="warn"),
                             LegacyCallbackAdapter(disabled, on_error="disable"),
                             LegacyCallbackAdapter(rec)], num_sanity_val_steps=2)
    episodes = len(events_of(baseline["legacy_rec"].trace, "on_episode_end"))
    assert warned.calls == episodes > 1  # warned, and kept receiving events
    assert disabled.calls == 1  # switched off after its first error
    messages = [r.getMessage() for r in caplog.records if "flaky" in r.getMessage()]
    assert len([m for m in messages if "on_error='warn'" in m]) == 1
    assert len([m for m in messages if "on_error='disable'" in m]) == 1
    # the others continued, and the sanity-check validation fired nothing extra
    assert_same_trace(baseline["legacy_rec"].trace, rec.trace)


def test_trial_pruned_reaches_the_caller(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    cb = OptunaCallback(trial)
    with pytest.raises(optuna.TrialPruned) as info:
        run_lightning(tiny(tmp_path, cycles=2), [cb])
    assert any("OptunaCallback" in note for note in info.value.__notes__)


# --------------------------------------------------------------------------- 10. callback state


def test_callback_state_is_checkpointed_per_instance_and_restored(tmp_path):
    cfg = tiny(tmp_path, cycles=2, eval_every=0)
    small, large = MetricsCallback(window_size=3), MetricsCallback(window_size=50)
    adapters = [LegacyCallbackAdapter(small), LegacyCallbackAdapter(large)]
    fit(cfg, adapters)
    ckpt_path = Path(cfg.checkpoint_dir) / "cycle-0001.ckpt"
    states = torch.load(ckpt_path, map_location="cpu", weights_only=True)["callbacks"]
    keys = [a.state_key for a in adapters]
    assert len(set(keys)) == 2 and set(keys) <= set(states)
    assert states[keys[0]]["MetricsCallback"] == small.state_dict()
    assert states[keys[1]]["MetricsCallback"] == large.state_dict()
    assert len(small.rewards) == 3 < len(large.rewards)

    small2, large2 = MetricsCallback(window_size=3), MetricsCallback(window_size=50)
    fit(cfg.replace(cycles=3, checkpoint_dir=str(tmp_path / "resumed")),
        [LegacyCallbackAdapter(small2), LegacyCallbackAdapter(large2)], ckpt_path=str(ckpt_path))
    # each instance got its own state back (the windows differ), then ran one more cycle
    assert small2.history[:2] == small.history and large2.history[:2] == large.history
    assert small.history != large.history
    assert len(small2.history) == len(large2.history) == 3


# --------------------------------------------------------------------------- 11. plain LightningModules


class PlainModule(pl.LightningModule):
    """No RL protocol: each training_step reports dones and finished episodes' rewards/lengths."""

    DONES = [[0, 1, 0], [1, 0, 1], [0, 0, 0]]

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        dones = torch.tensor(self.DONES[batch_idx], dtype=torch.bool)
        return {"loss": loss, "dones": dones, "episode_rewards": torch.tensor([1.0, 2.0, 3.0]) + batch_idx,
                "episode_lengths": torch.tensor([10, 20, 30]) + batch_idx}

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(3, 2), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Episodes:
    def __init__(self):
        self.episodes = []
        self.cycles = []

    def on_episode_end(self, trainer, episode_info):
        self.episodes.append((episode_info["env_index"], episode_info["episode_index"], episode_info["reward"],
                              episode_info["length"], trainer.num_episodes))

    def on_cycle_complete(self, trainer, metrics):
        self.cycles.append(trainer.cycle)


def test_plain_module_fallback_derives_episodes_from_outputs(tmp_path):
    cb = Episodes()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[LegacyCallbackAdapter(cb)])
    trainer.fit(PlainModule())
    # episode_index counts episodes from 0 in the order they end (an off-by-one fails here)
    assert cb.episodes == [(1, 0, 2.0, 20, 1), (0, 1, 2.0, 11, 2), (2, 2, 4.0, 31, 3)]
    assert cb.cycles == [0]


# --------------------------------------------------------------------------- 12. managers and wrap


class Ordered:
    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    def on_rollout_end(self, trainer, rollout_info):
        self.log.append((self.name, trainer.cycle))
        if self.fail:
            raise RuntimeError(f"{self.name} fails")


def test_wrapped_manager_keeps_order_and_error_policy(tmp_path, caplog):
    cfg = tiny(tmp_path, cycles=2, eval_every=0, checkpoint_every=0)
    logs = {}
    for host in ("legacy", "lightning"):
        log = logs[host] = []
        manager = CallbackManager([Ordered("a", log), Ordered("b", log, fail=True), Ordered("c", log)],
                                  on_error="disable")
        if host == "legacy":
            LegacyTrainer(cfg, manager).train()
        else:
            adapter = LegacyCallbackAdapter(manager)
            assert adapter.manager is manager
            fit(other_dir(cfg, "ckpt_pl"), [adapter])
            assert [type(cb).__name__ for cb in manager.disabled] == ["Ordered"]
    assert logs["lightning"] == logs["legacy"] == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("c", 1)]


def test_wrap_normalizes_a_mixed_list():
    legacy, manager = RecordingCallback(), CallbackManager([MetricsCallback()])
    lr_monitor = pl.callbacks.LearningRateMonitor()
    out = wrap([legacy, lr_monitor, manager])
    assert [type(cb) for cb in out] == [LegacyCallbackAdapter, pl.callbacks.LearningRateMonitor, LegacyCallbackAdapter]
    assert out[0].callback is legacy and out[1] is lr_monitor and out[2].manager is manager
    single = wrap(legacy, on_error="warn")
    assert len(single) == 1 and single[0].callback is legacy and single[0].manager.on_error == "warn"
    # a manager keeps its own error policy; a different one asked for is refused, not silently ignored
    with pytest.raises(AdapterConfigError, match="conflicts with the wrapped CallbackManager's own on_error='raise'"):
        wrap([manager], on_error="warn")


# --------------------------------------------------------------------------- 13. the six legacy callbacks


def six_callbacks(root, trial):
    return [MetricsCallback(window_size=5),
            CheckpointCallback(root / "best", save_freq=2),
            EvaluationCallback(),
            ContinuousTrainingCallback(root / "versions"),
            OptunaCallback(trial),
            WandbCallback(project="fxai-adapter-test", mode="offline", dir=str(root))]


def test_six_legacy_callbacks_have_the_same_effects(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny(tmp_path, cycles=3)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="adapter",
                                pruner=optuna.pruners.NopPruner())
    trials = {host: study.ask() for host in ("legacy", "lightning")}
    cbs = {}
    for host in ("legacy", "lightning"):
        root = tmp_path / host
        root.mkdir()
        cbs[host] = six_callbacks(root, trials[host])
    run_legacy(cfg, cbs["legacy"])
    run_lightning(other_dir(cfg, "ckpt_pl"), cbs["lightning"])
    legacy_m, legacy_ckpt, legacy_eval, legacy_ct, legacy_opt, legacy_wb = cbs["legacy"]
    m, ckpt, ev, ct, opt, wb = cbs["lightning"]

    def close(a, b):
        return all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-6 for x, y in zip(a.values(), b.values()))

    assert m.window_stats().keys() == legacy_m.window_stats().keys()
    assert close(m.window_stats(), legacy_m.window_stats())
    assert list(m.rewards) == pytest.approx(list(legacy_m.rewards), abs=1e-6)
    assert ckpt.best_cycle == legacy_ckpt.best_cycle is not None
    assert [os.path.basename(p) for p in ckpt.saved_paths] == [os.path.basename(p) for p in legacy_ckpt.saved_paths]
    assert ev.num_evaluations == legacy_eval.num_evaluations == 1
    assert ev.history[0]["cycle"] == legacy_eval.history[0]["cycle"] == 1
    assert [os.path.basename(p) for p in ct.copies] == [os.path.basename(p) for p in legacy_ct.copies] \
        == ["version_0001.ckpt"]
    assert len(opt.reports) == len(legacy_opt.reports) > 0
    stored = {t.number: t.intermediate_values for t in study.get_trials(deepcopy=False)}
    assert stored[trials["lightning"].number].keys() == stored[trials["legacy"].number].keys()
    assert all(abs(stored[trials["lightning"].number][k] - v) <= 1e-6
               for k, v in stored[trials["legacy"].number].items())
    for host, callback in (("legacy", legacy_wb), ("lightning", wb)):
        run_dirs = list((tmp_path / host / "wandb").glob("offline-run-*"))
        assert len(run_dirs) == 1 and list(run_dirs[0].glob("run-*.wandb")), host
    assert wb.run.config["n_envs"] == cfg.n_envs


# --------------------------------------------------------------------------- 14. DDP


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_rank_zero_sees_every_episode_once_and_stops_both_ranks(tmp_path):
    load_script("ddp_adapter_run").write_start_checkpoint(tmp_path)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, str(SCRIPTS / "ddp_adapter_run.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    n_envs, world = result["n_envs"], 2
    # both ranks ran exactly the 2 cycles rank 0 allowed, and exited
    assert result["cycles"] == [0, 1]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    assert [r["epochs"] for r in ranks] == [2, 2]
    # trainer.load_checkpoint in on_training_start (a rank-0 callback) loaded the file on both ranks
    assert [r["started_from_file"] for r in ranks] == [True, True]
    assert ranks[0]["final_params"] == ranks[1]["final_params"]
    # every episode of both ranks, exactly once, with global env indices
    ends = result["episode_ends"]
    starts = result["episode_starts"]
    assert {env_index for env_index, _ in starts} == set(range(world * n_envs))
    assert {env_index for env_index, _ in ends} == set(range(world * n_envs))
    assert len(set(map(tuple, ends))) == len(ends) and len(set(map(tuple, starts))) == len(starts)
    assert len(ends) == sum(r["episodes"] for r in ranks) > 0
    assert len(starts) == world * n_envs + len(ends)
    assert result["first_events"][:1 + world * n_envs + 1] == (
        ["on_training_start"] + ["on_episode_start"] * (world * n_envs) + ["on_rollout_start"])
    assert result["counts"]["on_rollout_start"] == result["counts"]["on_rollout_end"] == 2
    assert result["counts"]["on_step_end"] == 2 * result["n_steps"]
    assert result["step_end_widths"] == [world * n_envs]
    assert result["counts"]["on_update_end"] == 2 * result["updates_per_cycle"]
    # trainer counters count the environments of all ranks, at the moment of each event
    assert result["counter_problems"] == []
    assert result["cycle_counters"] == [2 * world * n_envs * result["n_steps"], len(ends)]
    # side effects once: one process wrote the file
    lines = (tmp_path / "writer.log").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "cycle", "cycle", "end"]
    assert len({line.split()[1] for line in lines}) == 1
