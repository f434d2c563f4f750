"""Legacy callbacks in the user's own LightningModule (issue 19): Level 1 (no change to the module) and
Level 3 (the module announces RL events with ``RLEventBus``), native ports and shadow pairs at setup,
positional-only binding.

Every test is a real ``pl.Trainer.fit`` of a module from ``tests/user_modules`` (written without
fxai_compat) on CartPole, a few tiny epochs; nothing of Lightning is mocked.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter

import optuna
import pytest
import pytorch_lightning as pl
from conftest import RecordingCallback
from pytorch_lightning.callbacks import ModelCheckpoint
from user_modules import DQNModule, ManualPPOModule, MODULE_CLASSES, PPOModule, make_cartpole

from fxai_compat import LegacyCallbackAdapter, MissingRLEventError, RLEventBus, RLPayloadError, build_callbacks
from fxai_compat.adapter.plain_module import LEVEL_EVENTS
from fxai_compat.callbacks import MetricsCallback as NativeMetrics
from fxai_compat.ppo import METRIC_KEYS
from legacy_callbacks import EVENTS, create_callbacks

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_the_levels_table_covers_the_sixteen_events_once():
    from fxai_compat.rl_events import LEVEL_OF_RL_EVENT

    assert sorted(LEVEL_EVENTS[1] + LEVEL_EVENTS[2]) == sorted(EVENTS)
    assert {f"on_{e}" for e, level in LEVEL_OF_RL_EVENT.items() if level == 2} == set(LEVEL_EVENTS[2])


def trainer_for(tmp_path, callbacks, epochs=3, checkpoints=True, **kwargs):
    callbacks = list(callbacks)
    if checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1))
    kwargs.setdefault("num_sanity_val_steps", 0)
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=callbacks,
                      enable_checkpointing=checkpoints, **kwargs)


class Recorder(RecordingCallback):
    """The conftest recorder, plus raw metrics, eval results, update infos and what trainer.model was."""

    def __init__(self):
        super().__init__()
        self.metrics, self.cycle_metrics, self.evals, self.updates, self.models, self.saved = [], [], [], [], [], []

    def on_metrics_computed(self, trainer, **offered):
        super().on_metrics_computed(trainer, **offered)
        self.metrics.append(offered["metrics"])
        self.models.append(trainer.model)

    def on_cycle_complete(self, trainer, **offered):
        super().on_cycle_complete(trainer, **offered)
        self.cycle_metrics.append(offered["metrics"])

    def on_evaluation_end(self, trainer, **offered):
        super().on_evaluation_end(trainer, **offered)
        self.evals.append(offered["eval_results"])

    def on_update_end(self, trainer, **offered):
        super().on_update_end(trainer, **offered)
        self.updates.append(offered["update_info"])

    def on_checkpoint_saved(self, trainer, **offered):
        super().on_checkpoint_saved(trainer, **offered)
        path = offered["checkpoint_path"]
        self.saved.append((path, os.path.isfile(path)))

    def names(self):
        return [event for event, *_ in self.trace]


def optimizer_steps(module, trainer):
    return module.optimizer_steps if isinstance(module, ManualPPOModule) else trainer.global_step


# --------------------------------------------------------------------------- Level 1


@pytest.mark.parametrize("n_envs", [None, 2], ids=["single_env", "vector_env"])
@pytest.mark.parametrize("style", sorted(MODULE_CLASSES))
def test_level1_events_metrics_updates_checkpoints(style, n_envs, tmp_path):
    rec = Recorder()
    module = MODULE_CLASSES[style](make_cartpole(n_envs), val_env=make_cartpole(None))
    trainer = trainer_for(tmp_path, [LegacyCallbackAdapter(rec)], num_sanity_val_steps=1)
    trainer.fit(module)
    names = rec.names()
    counts = Counter(names)
    epochs = 3
    assert names[0] == "on_training_start" and names[-1] == "on_training_end"
    assert counts["on_training_start"] == counts["on_training_end"] == 1
    assert set(counts) == set(LEVEL_EVENTS[1]) - {"on_checkpoint_loaded"}  # exactly Level 1's (nothing was loaded)
    for event in ("on_rollout_start", "on_rollout_end", "on_evaluation_start", "on_evaluation_end",
                  "on_metrics_computed", "on_cycle_complete", "on_checkpoint_saved"):
        assert counts[event] == epochs, event  # the sanity check fired nothing
    steps = optimizer_steps(module, trainer)
    assert steps > 0 and counts["on_update_start"] == counts["on_update_end"] == steps
    assert [u["update_index"] for u in rec.updates] == list(range(steps))
    # Each cycle, in the contract's order: rollout, its updates, evaluation, metrics, cycle, checkpoint.
    body = names[1:-1]
    cycles = [body[i:i + len(body) // epochs] for i in range(0, len(body), len(body) // epochs)]
    assert len(cycles) == epochs
    for cycle in cycles:
        updates = [e for e in cycle if e.startswith("on_update")]
        assert cycle[:2] == ["on_rollout_start", "on_rollout_end"]
        assert cycle[2:2 + len(updates)] == ["on_update_start", "on_update_end"] * (len(updates) // 2)
        assert cycle[2 + len(updates):] == ["on_evaluation_start", "on_evaluation_end", "on_metrics_computed",
                                            "on_cycle_complete", "on_checkpoint_saved"]
    # metrics: everything logged, under its name, plain floats; the contract's keys; the same dict twice
    logged = {"iterable_ppo": {"avg_ep_reward", "avg_ep_len", "loss", "loss_actor", "loss_critic", "val_reward"},
              "dqn": {"avg_ep_reward", "epsilon", "loss", "val_reward"},
              "manual_ppo": {"avg_ep_reward", "loss", "val_reward"}}[style]
    for cycle, (metrics, again) in enumerate(zip(rec.metrics, rec.cycle_metrics)):
        assert metrics == again or all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in
                                       zip(metrics.values(), again.values()))
        assert metrics is not again
        if style != "dqn" or cycle > 0:  # the DQN logs its reward once an episode has ended
            assert logged <= set(metrics), (cycle, sorted(metrics))
        assert set(METRIC_KEYS) | {"eval_episode_reward_mean", "eval_win_rate"} <= set(metrics)
        assert metrics["cycle"] == cycle
        assert all(type(v) in (float, int) for v in metrics.values()), metrics
        assert math.isnan(metrics["timesteps_total"]) and math.isnan(metrics["episode_reward_mean"])
    final = trainer.callback_metrics
    for name in logged:
        assert rec.metrics[-1][name] == pytest.approx(float(final[name]), rel=1e-6)
    assert all(model is module for model in rec.models)
    last_eval = rec.evals[-1]
    assert last_eval["val_reward"] == float(final["val_reward"]) and math.isnan(last_eval["episode_reward_mean"])
    written = sorted(str(p) for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert sorted(path for path, _ in rec.saved) == written and all(on_disk for _, on_disk in rec.saved)


def test_level1_update_events_follow_every_optimizer_step_of_two_optimizers(tmp_path):
    rec = Recorder()
    module = ManualPPOModule(make_cartpole(2), two_optimizers=True, rollouts_per_epoch=2, steps_per_epoch=16)
    trainer_for(tmp_path, [LegacyCallbackAdapter(rec)], epochs=2, checkpoints=False).fit(module)
    per_epoch = module.optimizer_steps // 2
    assert len(rec.updates) == module.optimizer_steps > 0
    assert [u["minibatch"] for u in rec.updates] == list(range(per_epoch)) * 2
    # both optimizers of one minibatch report that minibatch's backward loss
    losses = [u["loss"] for u in rec.updates]
    assert losses[0::2] == losses[1::2] and not any(math.isnan(x) for x in losses)
    assert all(u["epoch"] is None for u in rec.updates)


def test_level1_metric_keys_map_logged_names_to_legacy_keys(tmp_path):
    rec = Recorder()
    module = PPOModule(make_cartpole(2), val_env=make_cartpole(None))
    adapter = LegacyCallbackAdapter(rec, metric_keys={"episode_reward_mean": "avg_ep_reward",
                                                      "eval_episode_reward_mean": "val_reward"})
    trainer_for(tmp_path, [adapter], epochs=2, checkpoints=False).fit(module)
    for metrics, results in zip(rec.metrics, rec.evals):
        assert metrics["episode_reward_mean"] == metrics["avg_ep_reward"]
        assert metrics["eval_episode_reward_mean"] == results["episode_reward_mean"] == metrics["val_reward"]


def test_level1_six_legacy_callbacks_run_unchanged_and_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="own",
                                pruner=optuna.pruners.NopPruner())

    def six(trial):
        return create_callbacks({
            "metrics": {"window_size": 5},
            "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 2, "monitor": "loss"},
            "wandb": {"mode": "offline", "dir": str(tmp_path), "log_episodes": True},
            "evaluation": {"reward_threshold": 1e9},
            "continuous_training": {"checkpoint_dir": str(tmp_path / "versions")},
            "optuna": {"trial": trial, "monitor": "loss"}})

    first = six(study.ask())
    module = DQNModule(make_cartpole(2), val_env=make_cartpole(None))
    trainer_for(tmp_path, [LegacyCallbackAdapter(cb) for cb in first]).fit(module)
    metrics_cb, checkpoint_cb, wandb_cb, evaluation_cb, continuous_cb, optuna_cb = first
    assert [r["cycle"] for r in metrics_cb.history] == [0, 1, 2]
    assert [os.path.basename(p) for p in checkpoint_cb.saved_paths if "cycle" in p] == ["model_cycle_0001.pt"]
    assert evaluation_cb.num_evaluations == 3 and len(optuna_cb.reports) == 3
    assert [os.path.basename(p) for p in continuous_cb.copies] == [f"version_{i:04d}.ckpt" for i in (1, 2, 3)]
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    # A second run: ContinuousTrainingCallback loads the newest copy with trainer.load_checkpoint.
    rec = Recorder()
    second = six(study.ask())
    module2 = DQNModule(make_cartpole(2))
    trainer_for(tmp_path / "2", [LegacyCallbackAdapter(rec)] + [LegacyCallbackAdapter(cb) for cb in second],
                epochs=1).fit(module2)
    loaded = [offered for event, offered, _ in rec.trace if event == "on_checkpoint_loaded"]
    assert loaded == [{"checkpoint_path": "version_0003.ckpt"}] and second[4].resumed_from.endswith("version_0003.ckpt")


def test_level1_resume_from_ckpt_path_fires_checkpoint_loaded_with_its_path(tmp_path):
    trainer_for(tmp_path, [], epochs=2).fit(DQNModule(make_cartpole(None)))
    path = tmp_path / "ckpt" / "epoch=1-step=64.ckpt"
    rec = Recorder()
    trainer_for(tmp_path / "resumed", [LegacyCallbackAdapter(rec)], epochs=3).fit(DQNModule(make_cartpole(None)),
                                                                                  ckpt_path=str(path))
    loaded = [(offered, counters["cycle"]) for event, offered, counters in rec.trace if event == "on_checkpoint_loaded"]
    assert loaded == [({"checkpoint_path": path.name}, 1)]  # trainer.cycle: the checkpoint's cycle, as in legacy
    assert [m["cycle"] for m in rec.metrics] == [2]


def test_level1_warns_at_setup_about_env_events_it_cannot_provide(tmp_path):
    class Episodes:
        def on_episode_end(self, episode_info):
            pass

    with pytest.warns(UserWarning, match=r"Episodes .* needs the event 'on_episode_end', which DQNModule does not "
                                         r"announce .* Level 2: wrap the module's environment"):
        trainer_for(tmp_path, [LegacyCallbackAdapter(Episodes())], epochs=1, checkpoints=False).fit(
            DQNModule(make_cartpole(None)))


def test_positional_only_parameters_are_bound_in_a_real_fit(tmp_path):
    seen = []

    class PositionalOnly:
        def on_cycle_complete(self, trainer, /, metrics):
            seen.append(("cycle", trainer.cycle, metrics["cycle"]))

        def on_update_end(self, update_info, /):
            seen.append(("update", update_info["update_index"]))

    module = ManualPPOModule(make_cartpole(None), steps_per_epoch=16)
    trainer_for(tmp_path, [LegacyCallbackAdapter(PositionalOnly())], epochs=2, checkpoints=False).fit(module)
    assert [s for s in seen if s[0] == "cycle"] == [("cycle", 0, 0), ("cycle", 1, 1)]
    assert [s[1] for s in seen if s[0] == "update"] == list(range(module.optimizer_steps))


# --------------------------------------------------------------------------- native ports and shadow pairs


def test_a_native_port_needing_env_events_is_refused_at_setup(tmp_path):
    module = DQNModule(make_cartpole(None))
    with pytest.raises(MissingRLEventError, match=r"MetricsCallback \(a native RL callback\) needs the event "
                                                  r"'episode_end', which DQNModule does not announce .*Level 2"):
        trainer_for(tmp_path, [NativeMetrics()], epochs=1, checkpoints=False).fit(module)
    assert module.env_steps == 0  # refused before anything was trained


def test_a_shadowed_pair_needing_env_events_is_refused_at_setup(tmp_path):
    built = build_callbacks({"metrics": {"impl": "shadow"}}, env={}, run_dir=tmp_path)
    module = DQNModule(make_cartpole(None))
    with pytest.raises(MissingRLEventError, match=r"needs the event '(on_)?episode_end', which DQNModule does not "
                                                  r"announce .*Level 2"):
        trainer_for(tmp_path, built.callbacks, epochs=1, checkpoints=False).fit(module)
    assert module.env_steps == 0


# --------------------------------------------------------------------------- Level 3


ANNOUNCED = ("episode_start", "step_start", "step_end", "episode_end")


def announce_env_events(module, broken_key=None):
    """Level 3 in a user's module: its env runner announces steps and episodes with the public RLEventBus."""
    module.vector_steps = module.total = 0
    runner = module.env
    step, reset = runner.step, runner.reset

    def announced_reset():
        obs = reset()
        bus = RLEventBus.of(module.trainer, module)
        for i in range(runner.num_envs):
            bus.emit("episode_start", {"env_index": i, "episode_index": i})
        return obs

    def announced_step(actions):
        bus = RLEventBus.of(module.trainer, module)
        bus.emit("step_start", module.vector_steps)
        ended = len(runner.finished)
        before, rewards, dones, valid = step(actions)
        module.vector_steps += 1
        module.total += int(valid.sum())
        bus.emit("step_end", {"step": module.vector_steps - 1, "total_timesteps": module.total,
                              "rewards": rewards.tolist(), "dones": dones.tolist(), "actions": list(actions)})
        for env_index, ret, length in runner.finished[ended:]:
            info = {"env_index": env_index, "episode_index": len(runner.finished) - 1, "reward": ret,
                    "length": length, "pnl": 0.0, "trades": 0, "win_rate": float("nan")}
            if broken_key:
                del info[broken_key]
            bus.emit("episode_end", info)
            bus.emit("episode_start", {"env_index": env_index, "episode_index": len(runner.finished)})
        return before, rewards, dones, valid

    runner.step, runner.reset = announced_step, announced_reset
    return module


class AnnouncingPPO(ManualPPOModule):
    """Level 3: the manual PPO announcing its env steps and episodes."""

    rl_events_provided = ANNOUNCED

    def __init__(self, *args, broken_key=None, **kwargs):
        super().__init__(*args, **kwargs)
        announce_env_events(self, broken_key)


class AnnouncingDQN(DQNModule):
    """Level 3: the step-based DQN (automatic optimization) announcing its env steps and episodes; its
    training_step also returns ``dones`` (which the batch-derived fallback must then leave alone)."""

    rl_events_provided = ANNOUNCED

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        announce_env_events(self)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return None if loss is None else {"loss": loss, "dones": [True] * self.env.num_envs}


def test_level3_step_based_module_keeps_env_steps_out_of_updates(tmp_path):
    rec = Recorder()
    module = AnnouncingDQN(make_cartpole(2), warm_start=16)
    trainer = trainer_for(tmp_path, [LegacyCallbackAdapter(rec)], epochs=2, checkpoints=False)
    trainer.fit(module)
    names = rec.names()
    assert Counter(names)["on_step_end"] == module.env_steps == 64
    assert Counter(names)["on_update_end"] == trainer.global_step
    assert Counter(names)["on_episode_end"] == len(module.episode_log)  # announced ones only, none derived
    inside = False
    for event in names:  # training_step runs inside optimizer.step: the update still starts after its env step
        if event == "on_update_start":
            inside = True
        elif event == "on_update_end":
            inside = False
        elif event.startswith(("on_step", "on_episode")):
            assert not inside, names
    first = names.index("on_step_start")
    assert names.index("on_rollout_start") < first < names.index("on_rollout_end") < names.index("on_update_start")


def test_level3_announced_events_reach_legacy_callbacks_with_exact_values(tmp_path):
    rec, metrics_cb = Recorder(), create_callbacks({"metrics": {"window_size": 100}})[0]
    module = AnnouncingPPO(make_cartpole(2), steps_per_epoch=24)
    trainer_for(tmp_path, [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(metrics_cb)], epochs=3,
                checkpoints=False).fit(module)
    names = rec.names()
    counts = Counter(names)
    assert counts["on_step_start"] == counts["on_step_end"] == module.vector_steps == 3 * 24
    assert counts["on_episode_end"] == len(module.episode_log) > 0
    first_step = names.index("on_step_start")  # the env resets lazily, inside the first rollout
    assert names[first_step - 2:first_step] == ["on_episode_start", "on_episode_start"]
    ends = [offered["episode_info"] for event, offered, _ in rec.trace if event == "on_episode_end"]
    assert [(e["env_index"], e["reward"], e["length"]) for e in ends] == \
        [(i, pytest.approx(r, abs=1e-9), n) for i, r, n in module.episode_log]
    assert list(metrics_cb.rewards) == [r for _, r, _ in module.episode_log]
    # counters on the trainer view, read at the event: after the step at on_step_end
    for event, offered, counters in rec.trace:
        if event == "on_step_end":
            assert counters["timesteps"] == offered["step_info"]["total_timesteps"]
    assert rec.trace[-1][2]["episodes"] == len(module.episode_log)
    # the legacy metric keys of each cycle, from the episodes that ended in it
    episode_cycles = [counters["cycle"] for event, _, counters in rec.trace if event == "on_episode_end"]
    for cycle, metrics in enumerate(rec.metrics):
        returns = [r for (_, r, _), c in zip(module.episode_log, episode_cycles) if c == cycle]
        expected = sum(returns) / len(returns) if returns else math.nan
        assert metrics["episode_reward_mean"] == pytest.approx(expected, abs=1e-9, nan_ok=True)
        assert metrics["episodes_total"] == sum(1 for c in episode_cycles if c <= cycle)
    # rollouts: every step inside one (the first opens at the first step), updates after rollout_end
    inside = False
    for event in names:
        if event == "on_rollout_start":
            inside = True
        elif event == "on_rollout_end":
            inside = False
        elif event in ("on_step_start", "on_step_end"):
            assert inside, names
        elif event.startswith("on_update"):
            assert not inside
    rollouts = [offered["rollout_info"] for event, offered, _ in rec.trace if event == "on_rollout_end"]
    assert [r["steps"] for r in rollouts] == [48, 48, 48] or sum(r["steps"] for r in rollouts) == module.total


@pytest.mark.parametrize("impl", ["native", "shadow"])
def test_level3_native_port_and_shadow_pair_run_when_the_module_announces_its_events(impl, tmp_path):
    built = build_callbacks({"metrics": {"window_size": 100, "impl": impl}}, env={}, run_dir=tmp_path,
                            shadow_strict=True)
    module = AnnouncingPPO(make_cartpole(2), steps_per_epoch=24)
    trainer_for(tmp_path, built.callbacks, epochs=2, checkpoints=False).fit(module)
    assert list(built.native["metrics"].rewards) == [r for _, r, _ in module.episode_log]
    if impl == "shadow":  # the legacy control saw the same episodes: every per-cycle comparison agreed
        assert list(built.legacy["metrics"].rewards) == [r for _, r, _ in module.episode_log]
        summary = built.monitor.summary()
        assert built.monitor.mismatches == 0 and re.search(r"[1-9]\d* comparisons, 0 mismatch", summary), summary


@pytest.mark.parametrize("key", ["pnl", "reward"])
def test_level3_payload_missing_a_key_fails_at_its_first_emit(key, tmp_path):
    module = AnnouncingPPO(make_cartpole(None), broken_key=key, steps_per_epoch=64)
    with pytest.raises(RLPayloadError, match=rf"RL event 'episode_end': the payload is missing key '{key}'"):
        trainer_for(tmp_path, [], epochs=1, checkpoints=False).fit(module)
    assert len(module.episode_log) == 1  # the first episode's announcement failed


def test_level3_payload_is_checked_once_per_event_not_per_call():
    got = []

    class Listener(pl.Callback):
        def on_rl_step_end(self, trainer, pl_module, payload):
            got.append(payload)

    trainer = pl.Trainer(callbacks=[Listener()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    bus = RLEventBus(trainer, None)
    good = {"step": 0, "total_timesteps": 1, "rewards": [1.0], "dones": [False], "actions": [0]}
    with pytest.raises(RLPayloadError, match="RL event 'step_end': the payload is missing key 'actions'"):
        bus.emit("step_end", {k: v for k, v in good.items() if k != "actions"})
    assert got == []
    counted = RLEventBus(trainer, None)
    counted.emit("step_end", good)
    assert counted.counters.total_timesteps == 1 and got == [good]
    bus = RLEventBus(trainer, None, counters=False)
    bus.emit("step_end", good)
    bus.emit("step_end", {"step": 1})  # after the first emit, no check: the hot path pays nothing
    assert got == [good, good, {"step": 1}]
    with pytest.raises(RLPayloadError, match="Unknown RL event 'step_ended'"):
        bus.emit("step_ended", good)
    with pytest.raises(RLPayloadError, match="'step_start' takes the vector step as an int"):
        bus.emit("step_start", {"step": 0})


# --------------------------------------------------------------------------- the bundled module is unaffected


def test_the_bundled_module_pays_for_none_of_it(tmp_path):
    from conftest import tiny

    from fxai_compat import fit

    class Steps:
        steps = 0

        def on_step_end(self, step_info):
            self.steps += 1

        def on_cycle_complete(self, metrics):
            pass

    adapter = LegacyCallbackAdapter(Steps())
    cfg = tiny(tmp_path, cycles=1, eval_every=0, checkpoint_every=0)
    trainer = fit(cfg, [adapter], logger=False)
    assert adapter._own is None and adapter.callback.steps == cfg.n_steps
    for hook in ("on_before_backward", "on_train_batch_start", "on_train_epoch_start", "on_validation_end"):
        assert getattr(adapter, hook) is None, hook  # switched off: Lightning skips them
    assert trainer.lightning_module.rl_events.counters is None  # the core counts; the bus keeps no counters
    from fxai_compat.adapter.plain_module import is_foreign

    user = DQNModule(make_cartpole(None))
    user.core = pl.LightningModule()  # a user's own "core" does not make it the bundled module
    assert is_foreign(user) and not is_foreign(trainer.lightning_module)


# --------------------------------------------------------------------------- what Level 2 builds on


def test_declared_providers_are_found_inside_the_module_and_the_fit_is_active(tmp_path):
    import gymnasium as gym

    from fxai_compat.rl_events import active_trainer, provided_events

    class Announcing(gym.Wrapper):  # stands for the Level-2 wrapper: it declares what it announces
        fxai_rl_provides = ("episode_start", "step_start", "step_end", "episode_end")

    module = DQNModule(gym.wrappers.TimeLimit(Announcing(make_cartpole(None)), 50))
    assert provided_events(module) == {"episode_start", "step_start", "step_end", "episode_end"}
    assert provided_events(DQNModule(make_cartpole(2))) == frozenset()
    seen = []

    class Active:
        def on_cycle_complete(self, trainer):
            seen.append(active_trainer() is trainer.lightning_trainer)

    class Episodes(Active):
        def on_episode_end(self, episode_info):
            pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_for(tmp_path, [LegacyCallbackAdapter(Episodes())], epochs=1, checkpoints=False).fit(module)
    assert not [w for w in caught if "does not announce" in str(w.message)]  # the module announces episode_end
    assert seen == [True] and active_trainer() is None
