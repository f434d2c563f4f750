"""Adversarial "bring your own module" tests (issue 19): module styles not in ``tests/user_modules``, trained
as an FxAI engineer would, with legacy callbacks at the three levels.

The modules (``tests/own_modules_adv.py``, no fxai_compat inside the classes): an A2C whose single env is
made in ``setup()`` (``accumulate_grad_batches``, gradient clipping); a REINFORCE whose vector env lives in
a ``LightningDataModule`` and is stepped by the dataloader, with a validation loop on a separate eval env,
in each gymnasium autoreset mode; a two-optimizer actor-critic with manual optimization. Each keeps its own
ground truth of the episodes it saw end. Real ``pl.Trainer.fit`` runs on CartPole, a few tiny epochs.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import optuna
import pytest
import pytorch_lightning as pl
from conftest import RecordingCallback
from own_modules_adv import A2CSetupEnv, ReinforceOnDataModule, TwoOptimizerAC, VecEnvDataModule
from pytorch_lightning.callbacks import ModelCheckpoint

from fxai_compat import (LegacyCallbackAdapter, MissingRLEventError, OutsideFitWarning, RLEventBus, RLPayloadError,
                         build_callbacks, wrap_env)
from fxai_compat.callbacks import MetricsCallback as NativeMetrics
from fxai_compat.parity.grammar import GrammarRecorder, check_grammar
from legacy_callbacks import create_callbacks

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
MODES = gym.vector.AutoresetMode


def fit(tmp_path, module, callbacks, epochs=3, datamodule=None, ckpt_path=None, checkpoints=False, **kwargs):
    callbacks = list(callbacks)
    if checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1))
    kwargs.setdefault("num_sanity_val_steps", 0)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=callbacks,
                         enable_checkpointing=checkpoints, **kwargs)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def events(recorder, name):
    return [args for event, args, _ in recorder.trace if event == name]


def episodes(recorder):
    return [(e["episode_info"]["env_index"], e["episode_info"]["reward"], e["episode_info"]["length"])
            for e in events(recorder, "on_episode_end")]


def assert_same_episodes(seen, truth):
    assert len(seen) == len(truth) > 0
    for (i, ret, length), (ti, tret, tlength) in zip(seen, truth):
        assert (i, length) == (ti, tlength) and abs(ret - tret) <= 1e-9


def vec_env(mode=MODES.NEXT_STEP, n=3):
    return lambda: wrap_env(gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync",
                                         vector_kwargs={"autoreset_mode": mode}))


def eval_env():
    return wrap_env(gym.make("CartPole-v1"), role="eval")


# --------------------------------------------------------------------------- Level 2, env made late

def test_env_made_in_module_setup_gets_one_rollout_per_update_and_exact_episodes(tmp_path):
    """The wrapped env is made in the module's setup() (after the adapters' setup): it binds at its first reset
    and its rollouts replace Level 1's (before the fix: two on_rollout_start in a row each epoch)."""
    rec, grammar = RecordingCallback(), GrammarRecorder()
    module = A2CSetupEnv(lambda: wrap_env(gym.make("CartPole-v1")), n_steps=24)
    fit(tmp_path, module, [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)],
        accumulate_grad_batches=2, gradient_clip_val=0.5)
    assert grammar.check().ok, grammar.check().summary()
    assert_same_episodes(episodes(rec), module.true_episodes)
    assert rec.trace[-1][2]["timesteps"] == module.env_steps == 3 * 4 * 24
    assert rec.trace[-1][2]["episodes"] == len(module.true_episodes)
    assert len(events(rec, "on_update_end")) == 3 * 2  # 4 batches an epoch, one optimizer step per 2
    metrics = events(rec, "on_metrics_computed")
    for m in metrics:
        assert {"actor_loss", "critic_loss", "episode_reward_mean", "timesteps_total", "episodes_total"} <= set(m["metrics"])


def test_accumulated_gradients_report_the_loss_of_the_batches_the_step_applies(tmp_path):
    """With accumulate_grad_batches=2 an optimizer step applies the mean of two batches' losses; update_info's
    and metrics' loss were half the last batch's (Lightning backpropagates loss / 2)."""
    rec = RecordingCallback()
    module = A2CSetupEnv(lambda: gym.make("CartPole-v1"), n_steps=8)  # Level 1: the loss does not need the env
    fit(tmp_path, module, [LegacyCallbackAdapter(rec)], epochs=2, accumulate_grad_batches=2)
    updates = [u["update_info"]["loss"] for u in events(rec, "on_update_end")]
    losses = module.step_losses
    expected = [(losses[2 * k] + losses[2 * k + 1]) / 2 for k in range(len(losses) // 2)]
    assert updates == pytest.approx(expected, rel=1e-5)
    cycle_loss = [m["metrics"]["loss"] for m in events(rec, "on_metrics_computed")]
    assert cycle_loss == pytest.approx([sum(expected[:2]) / 2, sum(expected[2:]) / 2], rel=1e-5)


# --------------------------------------------------------------------------- Level 2, env in a DataModule

@pytest.mark.parametrize("reset_in_setup", [True, False], ids=["reset-in-dm-setup", "reset-at-first-batch"])
def test_datamodule_env_with_eval_env_in_the_validation_loop(reset_in_setup, tmp_path):
    """The env lives in a LightningDataModule (made, and maybe reset, in its setup, which runs before the
    adapters' setup: that reset crashed inside the adapter) and is stepped by the dataloader."""
    rec, grammar = RecordingCallback(), GrammarRecorder()
    dm = VecEnvDataModule(vec_env(), eval_env, n_steps=20, reset_in_setup=reset_in_setup)
    fit(tmp_path, ReinforceOnDataModule(), [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)],
        datamodule=dm, num_sanity_val_steps=1)
    assert grammar.check().ok, grammar.check().summary()
    assert_same_episodes(episodes(rec), dm.true_episodes)
    assert rec.trace[-1][2]["timesteps"] == dm.transitions
    assert [e for e, _, _ in rec.trace].count("on_episode_start") == len(dm.true_episodes) + 3
    played = dm.true_eval_episodes[1:]  # the first was played by the sanity check, which fires nothing
    evals = [e["eval_results"] for e in events(rec, "on_evaluation_end")]
    assert [(e["episode_reward_mean"], e["episodes"]) for e in evals] == [(r, 1) for r, _ in played]
    metrics = [m["metrics"] for m in events(rec, "on_metrics_computed")]
    assert [m["eval_episode_reward_mean"] for m in metrics] == [r for r, _ in played]
    assert {"loss", "mean_step_reward", "val_return", "timesteps_total", "episodes_total"} <= set(metrics[-1])


@pytest.mark.parametrize("mode", [MODES.SAME_STEP, MODES.DISABLED], ids=lambda m: m.name)
def test_datamodule_vector_env_in_each_autoreset_mode(mode, tmp_path):
    rec, grammar = RecordingCallback(), GrammarRecorder()
    dm = VecEnvDataModule(vec_env(mode, n=2), n_steps=24, batches=2)
    fit(tmp_path, ReinforceOnDataModule(), [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)],
        epochs=2, datamodule=dm)
    assert grammar.check().ok, grammar.check().summary()
    assert_same_episodes(episodes(rec), dm.true_episodes)
    assert rec.trace[-1][2]["timesteps"] == dm.transitions == 2 * 2 * 24 * 2


@pytest.mark.parametrize("impl", ["native", "shadow"])
def test_native_port_and_shadow_pair_accept_an_env_wrapped_in_the_datamodule(impl, tmp_path):
    """provided_events looked at the module only: an env kept by the DataModule was refused at setup with
    'use Level 2: wrap the module's environment', although it was wrapped."""
    built = build_callbacks({"metrics": {"window_size": 50, "impl": impl}}, env={}, run_dir=tmp_path)
    dm = VecEnvDataModule(vec_env(n=2), n_steps=24, batches=2)
    fit(tmp_path, ReinforceOnDataModule(), built.callbacks, epochs=2, datamodule=dm)
    assert list(built.native["metrics"].rewards) == pytest.approx([r for _, r, _ in dm.true_episodes], abs=1e-9)
    if impl == "shadow":
        assert list(built.legacy["metrics"].rewards) == pytest.approx([r for _, r, _ in dm.true_episodes], abs=1e-9)


def test_native_port_accepts_an_env_made_in_the_modules_setup(tmp_path):
    module = A2CSetupEnv(lambda: wrap_env(gym.make("CartPole-v1")), n_steps=24)
    native = NativeMetrics(window_size=50)
    fit(tmp_path, module, [native], epochs=2)
    assert list(native.rewards) == pytest.approx([r for _, r, _ in module.true_episodes], abs=1e-9)


def test_six_stock_legacy_callbacks_in_a_datamodule_module_see_what_the_env_did(tmp_path):
    trial = optuna.create_study(direction="maximize").ask()
    cbs = create_callbacks({
        "metrics": {"window_size": 100}, "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 1},
        "wandb": {"mode": "offline", "dir": str(tmp_path / "wandb")}, "evaluation": None,
        "continuous_training": {"checkpoint_dir": str(tmp_path / "ct")}, "optuna": {"trial": trial}})
    metrics, best, _, evaluation, _, tuner = cbs
    rec = RecordingCallback()
    dm = VecEnvDataModule(vec_env(n=2), eval_env, n_steps=30)
    fit(tmp_path, ReinforceOnDataModule(), [LegacyCallbackAdapter(c) for c in [*cbs, rec]], datamodule=dm,
        checkpoints=True)
    truth = [r for _, r, _ in dm.true_episodes]
    assert list(metrics.rewards) == pytest.approx(truth, abs=1e-9)
    cycle_means = [m["metrics"]["episode_reward_mean"] for m in events(rec, "on_metrics_computed")]
    assert [v for _, v in tuner.reports] == pytest.approx(cycle_means, abs=1e-12)
    finite = [v for v in cycle_means if not math.isnan(v)]
    assert best.best_reward == pytest.approx(max(finite), abs=1e-12)
    assert [h["episode_reward_mean"] for h in evaluation.history] == [r for r, _ in dm.true_eval_episodes]


# --------------------------------------------------------------------------- manual optimization, resume

def test_two_optimizers_manual_optimization_one_update_per_step(tmp_path):
    rec, grammar = RecordingCallback(), GrammarRecorder()
    module = TwoOptimizerAC(wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")))
    fit(tmp_path, module, [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)], epochs=2)
    assert grammar.check().ok, grammar.check().summary()
    updates = [u["update_info"] for u in events(rec, "on_update_end")]
    assert len(updates) == module.opt_steps == 2 * 2 * 2 * 2
    assert [u["update_index"] for u in updates] == list(range(len(updates)))
    assert all(math.isfinite(u["loss"]) for u in updates)


@pytest.mark.parametrize("where", ["init", "setup"])
def test_resumed_fit_shows_the_restored_counters_at_checkpoint_loaded(where, tmp_path):
    """Contract: on_checkpoint_loaded comes after the counters are restored; they read 0 until the env's
    first step, because the hub fed the bus only once connected."""
    def module():
        if where == "init":
            return TwoOptimizerAC(wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")))
        return A2CSetupEnv(lambda: wrap_env(gym.make("CartPole-v1")), n_steps=24)

    first = RecordingCallback()
    fit(tmp_path, module(), [LegacyCallbackAdapter(first)], epochs=2, checkpoints=True)
    done = first.trace[-1][2]
    ckpt = sorted((tmp_path / "ckpt").glob("epoch=1-*.ckpt"))[0]
    second, grammar = RecordingCallback(), GrammarRecorder()
    fit(tmp_path, module(), [LegacyCallbackAdapter(second), LegacyCallbackAdapter(grammar.proxy)], epochs=3,
        checkpoints=True, ckpt_path=str(ckpt))
    loaded = [c for e, _, c in second.trace if e == "on_checkpoint_loaded"]
    assert loaded and (loaded[0]["timesteps"], loaded[0]["episodes"]) == (done["timesteps"], done["episodes"])
    assert check_grammar(grammar.records, resumed=True).ok, check_grammar(grammar.records, resumed=True).summary()
    assert second.trace[-1][2]["timesteps"] > done["timesteps"]


# --------------------------------------------------------------------------- misuse

def test_misuse_messages(tmp_path):
    with pytest.raises(TypeError, match=r"wrap_env needs a gymnasium.Env or gymnasium.vector.VectorEnv; got "
                                        r"builtins.dict"):
        wrap_env({"not": "an env"})
    module = TwoOptimizerAC(wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")))
    fit(tmp_path, module, [LegacyCallbackAdapter(RecordingCallback())], epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.env.step(module.env.action_space.sample())
        module.env.step(module.env.action_space.sample())
    outside = [w for w in caught if issubclass(w.category, OutsideFitWarning)]
    assert len(outside) == 1 and "outside Trainer.fit" in str(outside[0].message)
    # a native port needing an event the module does not provide (Level 1: env not wrapped)
    plain = TwoOptimizerAC(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    with pytest.raises(MissingRLEventError, match=r"needs the event 'episode_end', which TwoOptimizerAC does not "
                                                  r"announce.*Level 2.*wrap_env"):
        fit(tmp_path, plain, [NativeMetrics()], epochs=1)
    assert plain.opt_steps == 0


def test_level3_payload_missing_a_key_names_event_and_key_in_a_users_module(tmp_path):
    class Announcing(TwoOptimizerAC):
        rl_events_provided = ("episode_end",)

        def training_step(self, batch, batch_idx):
            RLEventBus.of(self.trainer, self).emit("episode_end", {"env_index": 0, "episode_index": 0,
                                                                   "reward": 1.0, "length": 1, "pnl": 0.0,
                                                                   "trades": 0})
    with pytest.raises(RLPayloadError, match=r"episode_end.*missing key 'win_rate'"):
        fit(tmp_path, Announcing(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")),
            [LegacyCallbackAdapter(RecordingCallback())], epochs=1)


def test_save_and_load_checkpoint_from_a_legacy_callback_restore_the_env_counters(tmp_path):
    """trainer.save_checkpoint / load_checkpoint in a user's module at Level 2: the counters come back, and the
    grammar check accepts the restore (it flagged 'total_timesteps went down' at on_checkpoint_loaded)."""
    path = str(tmp_path / "manual.ckpt")

    class SaveThenLoad:
        def on_cycle_complete(self, trainer, metrics):
            if trainer.cycle == 0:
                trainer.save_checkpoint(path)
                self.saved = (trainer.total_timesteps, trainer.num_episodes)
            elif trainer.cycle == 1:
                trainer.load_checkpoint(path)
                self.loaded = (trainer.total_timesteps, trainer.num_episodes)

    probe, rec, grammar = SaveThenLoad(), RecordingCallback(), GrammarRecorder()
    module = TwoOptimizerAC(wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")))
    fit(tmp_path, module, [LegacyCallbackAdapter(cb) for cb in (probe, rec, grammar.proxy)], epochs=3)
    assert probe.loaded == probe.saved and probe.saved[0] > 0
    loaded = [c for e, _, c in rec.trace if e == "on_checkpoint_loaded"]
    assert [(c["timesteps"], c["episodes"]) for c in loaded] == [probe.saved]
    assert grammar.check().ok, grammar.check().summary()


def test_grammar_accepts_counters_restored_by_a_load_but_no_other_decrease():
    def rec(event, steps):
        return {"event": event, "counters": {"total_timesteps": steps, "num_episodes": 0, "cycle": 0}}

    head = [rec("on_training_start", 0), rec("on_step_start", 0), rec("on_step_end", 10)]
    tail = [rec("on_metrics_computed", 4), rec("on_cycle_complete", 4), rec("on_training_end", 4)]
    assert check_grammar(head + [rec("on_checkpoint_loaded", 4)] + tail).ok
    assert check_grammar(head + tail).kinds == ["counters"]


def test_rollout_collected_after_the_last_epoch_end_is_closed_before_training_end(tmp_path):
    """A module that collects in its own on_train_epoch_end (after the callbacks') left the last rollout open
    at on_training_end; the grammar check did not notice an event pair still open at the end."""
    from own_modules_adv import EpochEndCollector

    rec, grammar = RecordingCallback(), GrammarRecorder()
    module = EpochEndCollector(wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")))
    fit(tmp_path, module, [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)], epochs=2)
    names = [e for e, _, _ in rec.trace]
    assert names.count("on_rollout_start") == names.count("on_rollout_end") == 3
    assert names[-2:] == ["on_rollout_end", "on_training_end"]
    assert grammar.check().ok, grammar.check().summary()
    assert check_grammar(["training_start", "rollout_start", "training_end"]).kinds == ["unbalanced"]


def test_no_false_warning_for_a_legacy_callback_when_the_env_is_wrapped_in_the_modules_setup(tmp_path):
    """The 'needs the event ..., which ... does not announce' warning fired at the adapters' setup, before the
    module's setup() wrapped its env; the callback then received every episode. It is now given at
    on_train_start, and only for events really missing."""
    from legacy_callbacks import MetricsCallback

    module = A2CSetupEnv(lambda: wrap_env(gym.make("CartPole-v1")), n_steps=24)
    metrics = MetricsCallback(window_size=50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, module, [LegacyCallbackAdapter(metrics)], epochs=2)
    assert not [w for w in caught if "does not announce" in str(w.message)]
    assert list(metrics.rewards) == pytest.approx([r for _, r, _ in module.true_episodes], abs=1e-9)
    plain = A2CSetupEnv(lambda: gym.make("CartPole-v1"), n_steps=8)
    with pytest.warns(UserWarning, match=r"needs the event 'on_episode_end', which A2CSetupEnv does not announce"):
        fit(tmp_path, plain, [LegacyCallbackAdapter(MetricsCallback())], epochs=1)


def test_module_grammar_check_runs_a_module_fed_by_a_datamodule():
    """check_module_grammar (behind `fxai-compat parity --module` and the fixture) could only fit a bare
    module; a factory may now return (module, datamodule)."""
    from fxai_compat.parity.grammar import check_module_grammar

    result = check_module_grammar(lambda: (ReinforceOnDataModule(), VecEnvDataModule(vec_env(n=2), eval_env)),
                                  max_epochs=2, name="dm")
    assert result.ok and result.events > 50, result.summary()


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_a_second_fit_of_the_same_module_announces_the_episodes_still_running(vector, tmp_path):
    """fit, then fit again with a new Trainer (a notebook's 'train some more'): the episodes running across the
    two fits ended in the second run without an on_episode_start there (and with the first run's index)."""
    if vector:
        env = wrap_env(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
        module = TwoOptimizerAC(env)
    else:
        module = A2CSetupEnv(lambda: wrap_env(gym.make("CartPole-v1")), n_steps=24)
    first, grammar1 = RecordingCallback(), GrammarRecorder()
    fit(tmp_path, module, [LegacyCallbackAdapter(first), LegacyCallbackAdapter(grammar1.proxy)], epochs=1)
    second, grammar2 = RecordingCallback(), GrammarRecorder()
    fit(tmp_path, module, [LegacyCallbackAdapter(second), LegacyCallbackAdapter(grammar2.proxy)], epochs=1)
    assert grammar1.check().ok and grammar2.check().ok, grammar2.check().summary()
    n_envs = 2 if vector else 1
    starts = events(second, "on_episode_start")[:n_envs]
    assert [s["episode_info"]["episode_index"] for s in starts] == list(range(n_envs))
    if not vector:  # the A2C keeps its own truth across both fits
        seen = episodes(first) + episodes(second)
        assert_same_episodes(seen, module.true_episodes)


class AnnouncesItsUpdates(TwoOptimizerAC):
    """Level 3 as the README shows it: ``rl_events_provided = ("update_start", "update_end")``, announced around
    each optimizer step of a rollout collected in the same training_step."""

    rl_events_provided = ("update_start", "update_end")

    def training_step(self, batch, batch_idx):
        import torch

        if self.obs is None:
            self.obs, _ = self.env.reset(seed=0)
        with torch.no_grad():
            for _ in range(self.n_steps):
                logits = self.actor(torch.as_tensor(self.obs, dtype=torch.float32))
                self.obs, *_ = self.env.step(torch.distributions.Categorical(logits=logits).sample().numpy())
        bus, opt = RLEventBus.of(self.trainer, self), self.optimizers()[0]
        for k in range(2):
            info = {"update_index": self.opt_steps, "epoch": 0, "minibatch": k}
            bus.emit("update_start", info)
            loss = self.actor(torch.ones(4)).pow(2).sum()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.opt_steps += 1
            self.announced.append(float(loss) + 1.0)
            bus.emit("update_end", {**info, "loss": float(loss), "policy_loss": float(loss) + 1.0, "value_loss": 2.0,
                                    "entropy": 0.5, "approx_kl": 0.0, "clip_fraction": 0.25})


@pytest.mark.parametrize("wrapped", [False, True], ids=["level1+3", "level2+3"])
def test_announced_updates_come_after_the_rollout_and_feed_the_cycle_metrics(wrapped, tmp_path):
    """The README's Level-3 declaration: the derived (Level 1) or env (Level 2) rollout ended only at the
    backward, after the module's own on_update_start (update_during_rollout); and the cycle's metrics kept
    policy_loss, value_loss, ... NaN although every update announced them."""
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    module = AnnouncesItsUpdates(wrap_env(env) if wrapped else env)
    module.announced = []
    rec, grammar = RecordingCallback(), GrammarRecorder()
    fit(tmp_path, module, [LegacyCallbackAdapter(rec), LegacyCallbackAdapter(grammar.proxy)], epochs=2)
    assert grammar.check().ok, grammar.check().summary()
    metrics = [m["metrics"] for m in events(rec, "on_metrics_computed")]
    per_epoch = module.opt_steps // 2
    for epoch, m in enumerate(metrics):
        mine = module.announced[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert m["policy_loss"] == pytest.approx(sum(mine) / len(mine), abs=1e-12)
        assert (m["value_loss"], m["entropy"], m["clip_fraction"]) == (2.0, 0.5, 0.25)
