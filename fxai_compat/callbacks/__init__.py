"""Native PyTorch Lightning ports of FxAI's legacy callbacks, and the RL callback patterns.

Each port does its legacy counterpart's job with Lightning's own machinery (logging, checkpoints,
resume, validation loop, collectives) and is checked against it by the parity tests
(``tests/test_native_*.py``):

=============================  =========================================================
legacy (``legacy_callbacks``)  native (``fxai_compat.callbacks``)
=============================  =========================================================
``MetricsCallback``            :class:`MetricsCallback`
``CheckpointCallback``         :class:`RLCheckpointCallback`, :func:`create_checkpoint_callback`
``WandbCallback``              :func:`create_wandb_logger` + :class:`RLWandbCallback`
``EvaluationCallback``         :class:`EvaluationCallback`
``ContinuousTrainingCallback`` :class:`ContinuousTrainingCallback`, :func:`continue_training`
``OptunaCallback``             :class:`OptunaPruningCallback` (alias ``OptunaCallback``)
=============================  =========================================================
"""

from .base import MissingMetricError, MissingRLEventError, RLCallback
from .checkpoint import RLCheckpointCallback, create_checkpoint_callback
from .continuous_training import ContinuousTrainingCallback, continue_training
from .evaluation import EvaluationCallback
from .metrics import MetricsCallback
from .optuna import OptunaCallback, OptunaPruningCallback
from .patterns import (CompositeRLCallback, DistributedRLCallback, Phase, StateMachineCallback, Transition,
                       after_cycles, metric_at_least)
from .wandb import RLWandbCallback, create_wandb_logger

__all__ = ["RLCallback", "MissingMetricError", "MissingRLEventError", "MetricsCallback", "RLCheckpointCallback", "create_checkpoint_callback",
           "create_wandb_logger", "RLWandbCallback", "EvaluationCallback", "ContinuousTrainingCallback",
           "continue_training", "OptunaPruningCallback", "OptunaCallback", "CompositeRLCallback",
           "StateMachineCallback", "Phase", "Transition", "after_cycles", "metric_at_least", "DistributedRLCallback"]
