"""The native callbacks' base: RL hooks the bus skips unless overridden, the public surface, and every docstring example."""

from __future__ import annotations

import doctest
import importlib

import pytest
import pytorch_lightning as pl

import fxai_compat.callbacks as native
from fxai_compat import RL_HOOKS, RLEventBus
from fxai_compat.callbacks import RLCallback

MODULES = ["base", "metrics", "checkpoint", "wandb", "evaluation", "continuous_training", "optuna", "patterns"]


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_examples_run(name):
    module = importlib.import_module(f"fxai_compat.callbacks.{name}")
    assert module.__doc__ and module.__doc__.strip().splitlines()[0].endswith(".")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0


def test_bus_calls_only_overridden_rl_hooks():
    calls = []

    class EpisodeEnds(RLCallback):
        def on_rl_episode_end(self, trainer, pl_module, payload):
            calls.append(payload)

    listener, silent = EpisodeEnds(), RLCallback()
    trainer = pl.Trainer(callbacks=[silent, listener], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    bus = RLEventBus(trainer, None)
    assert {event: len(fns) for event, fns in bus.listeners.items()} == {
        event: int(event == "episode_end") for event in RL_HOOKS}
    episode = {"env_index": 0, "episode_index": 0, "reward": 1.0, "length": 3, "pnl": 0.0, "trades": 0,
               "win_rate": float("nan")}
    bus.emit("episode_end", episode)
    assert calls == [episode]


def test_public_surface_is_all():
    assert sorted(native.__all__) == sorted(set(native.__all__))
    for name in native.__all__:
        assert getattr(native, name) is not None
