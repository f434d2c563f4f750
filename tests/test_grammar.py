"""The parity toolkit's event-grammar check: a correct trace passes, each kind of violation is named,
and it runs on any module's trace (the bundled PPO, a user's module, from pytest and from the CLI)."""

from __future__ import annotations

import pytest
from user_modules import PPOModule, make_cartpole

from fxai_compat import LegacyCallbackAdapter, fit, wrap_env
from fxai_compat.cli import main
from fxai_compat.parity import parity_config
from fxai_compat.parity.grammar import VIOLATION_KINDS, GrammarRecorder, check_grammar, check_module_grammar


def ep(event, env, index, **counters):
    return {"event": event, "args": {"episode_info": {"env_index": env, "episode_index": index}}, "counters": counters}


def ev(event, **counters):
    return {"event": event, "args": {}, "counters": counters}


def good_trace():
    """Two cycles of one env, in the contract's order, with consistent counters."""
    return [ev("on_training_start", cycle=0, total_timesteps=0, num_episodes=0),
            ep("on_episode_start", 0, 0),
            ev("on_rollout_start"), ev("on_step_start"), ev("on_step_end", total_timesteps=1, num_episodes=0),
            ep("on_episode_end", 0, 0, num_episodes=1), ep("on_episode_start", 0, 1),
            ev("on_rollout_end"), ev("on_update_start"), ev("on_update_end"),
            ev("on_evaluation_start"), ev("on_evaluation_end"),
            ev("on_metrics_computed", cycle=0), ev("on_cycle_complete", cycle=0), ev("on_checkpoint_saved"),
            ev("on_rollout_start", cycle=1), ev("on_step_start"), ev("on_step_end", total_timesteps=2, num_episodes=1),
            ev("on_rollout_end"), ev("on_update_start"), ev("on_update_end"),
            ev("on_metrics_computed", cycle=1), ev("on_cycle_complete", cycle=1), ev("on_training_end")]


def test_a_correct_trace_passes():
    result = check_grammar(good_trace(), "good")
    assert result.ok and result.summary() == "event grammar of good: ok\n  24 events checked"


def _broken(kind):
    t = good_trace()
    if kind == "training_start_first":
        t.insert(0, ep("on_episode_start", 0, 0))
    elif kind == "training_end_last":
        t.append(ev("on_checkpoint_saved")), t.append(ev("on_cycle_complete", cycle=2))
    elif kind == "episode_end_without_start":
        t[5] = ep("on_episode_end", 1, 0, num_episodes=1)  # env 1 never started an episode
    elif kind == "update_during_rollout":
        t[7], t[8] = t[8], t[7]  # update_start before rollout_end
        t[8], t[9] = t[9], t[8]
    elif kind == "unbalanced":
        del t[4]  # a step_start without its step_end
    elif kind == "cycle_structure":
        del t[12]  # cycle_complete without metrics_computed
    elif kind == "counters":
        t[16 + 1]["counters"]["total_timesteps"] = 0  # goes down
    return t


@pytest.mark.parametrize("kind", VIOLATION_KINDS)
def test_each_kind_of_violation_is_named(kind):
    result = check_grammar(_broken(kind), kind)
    assert not result.ok and kind in result.kinds, result.summary()
    assert f"{kind} at event #" in result.summary()


def test_specific_messages():
    assert "episode_end of env_index 1 without an on_episode_start" in str(check_grammar(_broken("episode_end_without_start")).violations[0])
    t = good_trace()
    t[5] = ep("on_episode_end", 0, 7, num_episodes=1)
    assert "but the episode that started there is 0" in check_grammar(t).summary()
    t = good_trace()  # an update that starts before the env step it trains on (begun inside the update)
    t[15:21] = [ev("on_update_start"), ev("on_rollout_start", cycle=1), ev("on_step_start"),
                ev("on_step_end", total_timesteps=2, num_episodes=1), ev("on_rollout_end"), ev("on_update_end")]
    assert "on_rollout_start while the update started at event #15 is still open" in check_grammar(t).summary()
    t = good_trace()
    t[5]["counters"]["num_episodes"] = 2
    assert "trainer.num_episodes is 2 at an on_episode_end; it was 0 before" in check_grammar(t).summary()
    # a resumed run's first episode end on an env may belong to an episode begun before the trace
    t = good_trace()
    del t[1]
    assert not check_grammar(t).ok and check_grammar(t, resumed=True).ok
    with pytest.raises(ValueError, match="Unknown legacy event 'on_epoch_end'"):
        check_grammar(["on_training_start", "epoch_end"])


def test_bundled_ppo_trace_follows_the_grammar(tmp_path):
    recorder = GrammarRecorder()
    fit(parity_config(checkpoint_dir=str(tmp_path / "ckpt"), cycles=2), [LegacyCallbackAdapter(recorder.proxy)],
        logger=False)
    result = recorder.check("PPOLightningModule")
    assert result.ok, result.summary()
    assert {"on_update_start", "on_episode_end", "on_evaluation_end"} <= {r["event"] for r in recorder.records}


def wrapped_ppo():
    """A module factory for the tests below (``--module test_grammar:wrapped_ppo``)."""
    return PPOModule(wrap_env(make_cartpole(2, "same_step")), steps_per_epoch=16)


def test_a_users_module_from_the_pytest_fixture(fxai_parity):
    result = fxai_parity.assert_grammar(wrapped_ppo, max_epochs=2)
    assert result.ok and result.events > 10


def test_a_users_module_from_the_command_line(capsys):
    assert main(["parity", "--module", "test_grammar:wrapped_ppo", "--epochs", "2"]) == 0
    assert "event grammar of test_grammar:wrapped_ppo: ok" in capsys.readouterr().out
    assert main(["parity", "--module", "test_grammar"]) == 2
    assert "--module takes 'package.module:factory'" in capsys.readouterr().err
    assert main(["parity", "--module", "test_grammar:nothing_here"]) == 2
    assert "has no attribute 'nothing_here'" in capsys.readouterr().err


def test_check_module_grammar_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="returned dict, not a pytorch_lightning.LightningModule"):
        check_module_grammar(dict)


TINY_MODULE = '''
import gymnasium as gym, pytorch_lightning as pl, torch
from fxai_compat import wrap_env

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.env, self.layer, self.obs = wrap_env(gym.make("CartPole-v1")), torch.nn.Linear(4, 2), None
    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(30), batch_size=None)
    def training_step(self, batch, batch_idx):
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=0)
        self.obs, _, terminated, truncated, _ = self.env.step(int(batch) % 2)
        if terminated or truncated:
            self.obs, _ = self.env.reset()
        return self.layer(torch.as_tensor(self.obs)).sum()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
'''


def test_the_console_script_imports_the_users_module_from_the_current_folder(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "tiny_module.py").write_text(TINY_MODULE)
    script = Path(sys.executable).parent / "fxai-compat"
    done = subprocess.run([str(script), "parity", "--module", "tiny_module:Tiny", "--epochs", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "event grammar of tiny_module:Tiny: ok" in done.stdout
