"""Builds legacy callbacks from a configuration mapping, one section per callback."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from .base import BaseCallback
from .checkpoint import CheckpointCallback
from .continuous_training import ContinuousTrainingCallback
from .evaluation import EvaluationCallback
from .metrics import MetricsCallback
from .optuna_callback import OptunaCallback
from .wandb_callback import WandbCallback

__all__ = ["CALLBACK_CLASSES", "create_callbacks"]

#: Section name -> callback class, as accepted by ``create_callbacks``.
CALLBACK_CLASSES: dict[str, type[BaseCallback]] = {
    "metrics": MetricsCallback,
    "checkpoint": CheckpointCallback,
    "wandb": WandbCallback,
    "evaluation": EvaluationCallback,
    "continuous_training": ContinuousTrainingCallback,
    "optuna": OptunaCallback,
}


def _options(cls: type) -> tuple[list[str], list[str]]:
    """(accepted, required) keyword options of ``cls``'s constructor."""
    params = list(inspect.signature(cls).parameters.values())
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.name in accepted and p.default is p.empty]
    return accepted, required


def create_callbacks(config: Mapping[str, Any]) -> list[BaseCallback]:
    """One callback per section of ``config``, in the mapping's order.

    Each section maps a name of ``CALLBACK_CLASSES`` to the constructor's keyword options
    (``None`` means all defaults); ``enabled: false`` skips the section. The ``optuna``
    section needs the running trial as its ``trial`` option.

    >>> [type(cb).__name__ for cb in create_callbacks({"metrics": {"window_size": 10}, "evaluation": None})]
    ['MetricsCallback', 'EvaluationCallback']
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"The callbacks configuration must be a mapping of section name to options; "
                         f"got {type(config).__name__}.")
    callbacks = []
    for section, options in config.items():
        cls = CALLBACK_CLASSES.get(section)
        if cls is None:
            raise ValueError(f"Unknown callback section {section!r}; known sections: {', '.join(CALLBACK_CLASSES)}.")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ValueError(f"Callback section {section!r} must be a mapping of options (or empty); "
                             f"got {type(options).__name__} {options!r}.")
        options = dict(options)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"Option 'enabled' of callback section {section!r} must be true or false; got {enabled!r}.")
        if not enabled:
            continue
        accepted, required = _options(cls)
        for name in options:
            if name not in accepted:
                raise ValueError(f"Unknown option {name!r} for callback section {section!r}; "
                                 f"accepted options: {', '.join(accepted + ['enabled'])}.")
        for name in required:
            if name not in options:
                raise ValueError(f"Callback section {section!r} is missing required option {name!r}.")
        try:
            callbacks.append(cls(**options))
        except Exception as exc:
            exc.add_note(f"While creating callback section {section!r} ({cls.__name__}).")
            raise
    return callbacks
