"""``vector_env: async``: the environments step in worker processes with the same results as ``sync``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import normalize, same, tiny
from fxai_compat import LegacyTrainer, fit
from fxai_compat.config import ConfigError
from fxai_compat.envs import SLOW_CARTPOLE, make_vector_env


def _cartpole(tmp_path, mode, **changes):
    settings = dict(env="CartPole-v1", vector_env=mode, n_envs=3, n_steps=40, cycles=3, eval_every=3, eval_episodes=2,
                    checkpoint_every=0)
    return tiny(tmp_path / mode, **{**settings, **changes})


class Episodes:
    def __init__(self):
        self.ended = []

    def on_episode_end(self, episode_info):
        self.ended.append(episode_info)

    def on_cycle_complete(self, metrics):
        self.ended.append(dict(metrics))


def test_async_vector_env_steps_in_worker_processes_with_the_sync_results(tmp_path):
    runs = {}
    for mode in ("sync", "async"):
        recorder = Episodes()
        trainer = LegacyTrainer(_cartpole(tmp_path, mode), [recorder]).train()
        runs[mode] = (recorder.ended, [p.detach().clone() for p in trainer.model.parameters()], trainer.core.env)
    (sync_events, sync_params, sync_env), (async_events, async_params, async_env) = runs["sync"], runs["async"]
    assert isinstance(sync_env, gym.vector.SyncVectorEnv) and isinstance(async_env, gym.vector.AsyncVectorEnv)
    assert len({p.pid for p in async_env.processes}) == 3  # one worker process per environment
    assert same(normalize(sync_events), normalize(async_events), 0.0) and sum("reward" in e for e in sync_events) >= 3
    assert all(torch.equal(a, b) for a, b in zip(sync_params, async_params))
    async_env.close()


def test_async_under_lightning_equals_sync(tmp_path):
    params = {}
    for mode in ("sync", "async"):
        trainer = fit(_cartpole(tmp_path, mode, cycles=2), logger=False)
        params[mode] = [p.detach().clone() for p in trainer.lightning_module.parameters()]
        trainer.lightning_module.core.env.close()
    assert all(torch.equal(a, b) for a, b in zip(params["sync"], params["async"]))


def test_slow_env_does_its_extra_cpu_work_per_step(tmp_path):
    import time

    slow = make_vector_env(tiny(tmp_path, env=SLOW_CARTPOLE, n_envs=2), 2, seed=0)
    plain = make_vector_env(tiny(tmp_path, env="CartPole-v1", n_envs=2), 2, seed=0)
    seconds = {}
    for name, env in (("slow", slow), ("plain", plain)):
        start = time.process_time()
        for _ in range(20):
            env.step(np.zeros(2, dtype=np.int64))
        seconds[name] = time.process_time() - start
    assert seconds["slow"] > 5 * seconds["plain"] and seconds["slow"] > 20 * 2 * 2e-4  # CPU work, not waiting


@pytest.mark.parametrize("changes, message", [
    ({"vector_env": "threads"}, "vector_env must be 'sync' or 'async', got 'threads'"),
    ({"vector_env": "async"}, "vector_env 'async' applies to gymnasium environments"),
])
def test_bad_vector_env_is_refused_in_one_sentence(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny(tmp_path, **changes)
