"""``TrainingContext``, the store callbacks share values through, and ``TrainerSurface``, the trainer they see."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["TRAINER_SURFACE", "TrainerSurface", "TrainingContext"]

logger = logging.getLogger("legacy_callbacks")

_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


class TrainingContext(MutableMapping):
    """A string-keyed store that callbacks use to share values during a run.

    >>> context = TrainingContext()
    >>> context.set("metrics/reward_window_mean", 1.5)
    >>> context.get("metrics/reward_window_mean"), context.get("missing", 0)
    (1.5, 0)
    """

    def __init__(self, values: Mapping[str, Any] | None = None):
        self._values: dict[str, Any] = {}
        if values is not None:
            self.update(values)

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in the training context; keys present: {sorted(self._values)}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"TrainingContext keys must be strings; got {key!r} ({type(key).__name__}).")
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"TrainingContext({self._values!r})"

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of the stored values."""
        return dict(self._values)

    def state_dict(self) -> dict[str, Any]:
        """The plain values (None, bool, int, float, str, bytes, and lists/tuples/dicts of them).

        Other values (models, tensors, open files) are live objects, not state; they are left
        out so that the result loads with ``torch.load(weights_only=True)``.
        """
        state = {key: copy.deepcopy(value) for key, value in self._values.items() if _is_plain(value)}
        if len(state) != len(self._values):
            logger.debug("TrainingContext.state_dict left out non-plain values: %s",
                         sorted(set(self._values) - set(state)))
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the stored values with those of ``state``."""
        self._values.clear()
        self.update(copy.deepcopy(dict(state)))


@runtime_checkable
class TrainerSurface(Protocol):
    """The ``trainer`` argument as legacy callbacks see it (contract section 2)."""

    model: Any
    """The policy (``torch.nn.Module``) being trained."""
    config: Mapping[str, Any]
    """The run's configuration (read-only)."""
    total_timesteps: int
    """Environment transitions so far, all environments together."""
    num_episodes: int
    """Episodes completed so far."""
    cycle: int
    """Index of the current cycle, from 0."""
    context: TrainingContext
    """The shared store callbacks use to exchange values."""
    stop_training: bool
    """Settable; ``True`` requests a stop after the current cycle."""

    def save_checkpoint(self, path: str) -> None:
        """Write a full training checkpoint to ``path``, then fire ``on_checkpoint_saved``."""

    def load_checkpoint(self, path: str) -> None:
        """Restore model, optimizer and counters from ``path``, then fire ``on_checkpoint_loaded``."""


#: Every name of the trainer surface, in the contract's order.
TRAINER_SURFACE: tuple[str, ...] = (
    "model",
    "config",
    "total_timesteps",
    "num_episodes",
    "cycle",
    "context",
    "stop_training",
    "save_checkpoint",
    "load_checkpoint",
)
