"""fxai-compat: run FxAI's legacy RL callbacks unchanged inside PyTorch Lightning, port them one at a
time, and prove that old and new behave the same.

The public surface is ``__all__``; names load lazily so that ``fxai-compat --help`` does not pay
for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrainConfig": "config", "ConfigError": "config",
    "FXTradingEnv": "envs", "make_vector_env": "envs",
    "PPOCore": "ppo", "Policy": "ppo", "RL_EVENTS": "ppo",
    "EVENT_MAP": "events", "EventRoute": "events",
    "LegacyTrainer": "legacy_host",
    "PPOLightningModule": "lightning_host", "RLDataModule": "lightning_host", "RLEventBus": "rl_events",
    "RLPayloadError": "rl_events", "RLCounters": "rl_events", "provided_events": "rl_events",
    "MissingRLEventError": "rl_events",
    "RL_HOOKS": "lightning_host", "NotifyingCheckpointIO": "lightning_host", "fit": "lightning_host",
    "build_trainer": "lightning_host", "LOGGED_METRICS": "lightning_host",
    "LegacyCallbackAdapter": "adapter", "LightningTrainerView": "adapter", "wrap": "adapter",
    "CheckpointError": "checkpoints", "read_training_checkpoint": "checkpoints",
    "build_callbacks": "toggle", "register_port": "toggle",
    "wrap_env": "envwrap", "OutsideFitWarning": "envwrap",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fxai_compat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
