"""FxAI's legacy callback system: 16 events, by-name binding, and the six stock callbacks.

This package knows nothing of Lightning; hosts (the legacy trainer, the Lightning adapter)
drive it through ``CallbackManager`` or reuse ``bind_event`` / ``EVENT_ARGS`` directly.
"""

from .base import EVENT_ARGS, EVENT_PAYLOAD, EVENTS, BaseCallback
from .callback_manager import (
    ON_ERROR_POLICIES,
    CallbackManager,
    CallbackSignatureError,
    EventBinding,
    bind_event,
    callback_name,
    is_stop,
)
from .checkpoint import CheckpointCallback
from .context import TRAINER_SURFACE, TrainerSurface, TrainingContext
from .continuous_training import ContinuousTrainingCallback
from .evaluation import EvaluationCallback
from .factory import CALLBACK_CLASSES, create_callbacks
from .metrics import MetricsCallback
from .optuna_callback import OptunaCallback
from .wandb_callback import WandbCallback

__all__ = [
    "CALLBACK_CLASSES",
    "EVENTS",
    "EVENT_ARGS",
    "EVENT_PAYLOAD",
    "ON_ERROR_POLICIES",
    "TRAINER_SURFACE",
    "BaseCallback",
    "CallbackManager",
    "CallbackSignatureError",
    "CheckpointCallback",
    "ContinuousTrainingCallback",
    "EvaluationCallback",
    "EventBinding",
    "MetricsCallback",
    "OptunaCallback",
    "TrainerSurface",
    "TrainingContext",
    "WandbCallback",
    "bind_event",
    "callback_name",
    "create_callbacks",
    "is_stop",
]
