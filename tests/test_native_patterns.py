"""The advanced patterns in real fits: a composite forwarding every hook in order, a state machine changing the
learning rate and entropy coefficient at a defined cycle, and global reward statistics."""

from __future__ import annotations

import numpy as np
import pytest
from pytorch_lightning.callbacks import ModelCheckpoint

from fxai_compat import fit
from fxai_compat.callbacks import (CompositeRLCallback, DistributedRLCallback, Phase, RLCallback, StateMachineCallback,
                                   Transition, after_cycles, metric_at_least)


from conftest import same, tiny


class Recorder(RLCallback):
    """Appends (name, hook) to a shared list for a few Lightning and RL hooks; counts episodes as its state."""

    def __init__(self, name, calls):
        self.name, self.calls, self.episodes = name, calls, 0

    def setup(self, trainer, pl_module, stage):
        self.calls.append((self.name, "setup"))

    def on_train_epoch_end(self, trainer, pl_module):
        self.calls.append((self.name, "on_train_epoch_end"))

    def on_validation_end(self, trainer, pl_module):
        self.calls.append((self.name, "on_validation_end"))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.calls.append((self.name, "on_save_checkpoint"))

    def on_rl_rollout_end(self, trainer, pl_module, payload):
        self.calls.append((self.name, "on_rl_rollout_end"))

    def on_rl_episode_end(self, trainer, pl_module, payload):
        self.episodes += 1

    @property
    def state_key(self):
        return f"Recorder[{self.name}]"

    def state_dict(self):
        return {"episodes": self.episodes}

    def load_state_dict(self, state_dict):
        self.episodes = state_dict["episodes"]


def test_composite_forwards_every_hook_in_order_and_keeps_state(tmp_path):
    cfg = tiny(tmp_path, cycles=2, eval_every=2, checkpoint_every=2)
    calls = []
    first, second = Recorder("a", calls), Recorder("b", calls)
    composite = CompositeRLCallback([first, second])
    assert composite.on_test_start is None and composite.on_rl_step_end is None  # nobody listens: switched off
    fit(cfg, [composite])

    assert calls[:2] == [("a", "setup"), ("b", "setup")]
    per_hook = {}
    for name, hook in calls:
        per_hook.setdefault(hook, []).append(name)
    for hook, names in per_hook.items():
        assert names == ["a", "b"] * (len(names) // 2), hook  # each call reaches a, then b
    assert len(per_hook["on_rl_rollout_end"]) == 2 * cfg.cycles
    assert len(per_hook["on_validation_end"]) == 2 and len(per_hook["on_save_checkpoint"]) == 2
    assert first.episodes == second.episodes > 0

    resumed = CompositeRLCallback([Recorder("a", []), Recorder("b", [])])
    fit(cfg.replace(cycles=3), [resumed], ckpt_path="last")
    assert resumed.callbacks[0].episodes > first.episodes  # restored, then counted on

    with pytest.raises(TypeError, match="cannot hold ModelCheckpoint.*pass it to the Trainer directly"):
        CompositeRLCallback([ModelCheckpoint()])


class Probe(RLCallback):
    """The learning rate and entropy coefficient each cycle's updates use, and each cycle's exact losses."""

    def __init__(self):
        self.lr, self.ent_coef, self.logged = [], [], []

    def on_rl_update_start(self, trainer, pl_module, payload):
        if payload["epoch"] == payload["minibatch"] == 0:
            self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])
            self.ent_coef.append(pl_module.core.config.ent_coef)

    def on_train_epoch_end(self, trainer, pl_module):
        self.logged.append(dict(pl_module.exact_logged))


def test_state_machine_changes_lr_and_entropy_at_the_defined_cycle(tmp_path):
    cfg = tiny(tmp_path, cycles=4, checkpoint_every=3, eval_every=0)
    machine = StateMachineCallback(
        [Phase("warmup", lr=1e-3), Phase("finetune", lr=1e-4, ent_coef=0.0), Phase("done")],
        [Transition("warmup", "finetune", after_cycles(2)), Transition("finetune", "done", metric_at_least("train/cycle", 3))])
    probe = Probe()
    trainer = fit(cfg, [probe, machine])

    assert probe.lr == [1e-3, 1e-3, 1e-4, 1e-4]
    assert probe.ent_coef == [cfg.ent_coef, cfg.ent_coef, 0.0, 0.0]
    assert machine.history == [{"cycle": 1, "from": "warmup", "to": "finetune"},
                               {"cycle": 3, "from": "finetune", "to": "done"}]
    assert machine.phase == "done" and trainer.callback_metrics["phase/index"].item() == 1.0  # cycle 3 ran in finetune
    for logged, ent in zip(probe.logged, probe.ent_coef):  # the updates really used the entropy coefficient
        expected = logged["train/policy_loss"] - ent * logged["train/entropy"] + cfg.vf_coef * logged["train/value_loss"]
        assert logged["train/loss"] == pytest.approx(expected, abs=1e-6)

    # Resumed after the transition (checkpoint after cycle 3 = index 2): the phase and its settings come back.
    probe2 = Probe()
    machine2 = StateMachineCallback(machine.phases, machine.transitions)
    fit(cfg, [probe2, machine2], ckpt_path=str(tmp_path / "ckpt" / "cycle-0002.ckpt"))
    assert (probe2.lr, probe2.ent_coef) == ([1e-4], [0.0])
    assert machine2.history == machine.history

    with pytest.raises(ValueError, match="names unknown phase 'fine'; phases are: warmup, finetune, done"):
        StateMachineCallback(machine.phases, [Transition("warmup", "fine", after_cycles(1))])


class Rewards(RLCallback):
    def __init__(self):
        self.by_cycle = {}

    def on_rl_episode_end(self, trainer, pl_module, payload):
        self.by_cycle.setdefault(pl_module.core.cycle, []).append(payload["reward"])


def test_distributed_statistics_single_process(tmp_path):
    cfg = tiny(tmp_path, cycles=3, checkpoint_every=0, eval_every=0)
    rewards, stats = Rewards(), DistributedRLCallback()
    trainer = fit(cfg, [rewards, stats])
    expected = [{"cycle": c, "episodes": len(r), "global_reward_mean": float(np.mean(r)),
                 "global_reward_std": float(np.std(r)), "episodes_per_rank": [len(r)]}
                for c, r in sorted(rewards.by_cycle.items())]
    assert same(stats.history, expected)
    assert trainer.callback_metrics["distributed/global_reward_std"].item() == pytest.approx(
        expected[-1]["global_reward_std"], rel=1e-6)
