"""The 16 legacy events, the arguments each one offers, and the no-op ``BaseCallback``."""

from __future__ import annotations

from typing import Any

#: The 16 legacy events, in the order of the contract's table.
EVENTS: tuple[str, ...] = (
    "on_training_start",
    "on_episode_start",
    "on_rollout_start",
    "on_step_start",
    "on_step_end",
    "on_episode_end",
    "on_rollout_end",
    "on_update_start",
    "on_update_end",
    "on_evaluation_start",
    "on_evaluation_end",
    "on_metrics_computed",
    "on_cycle_complete",
    "on_checkpoint_saved",
    "on_checkpoint_loaded",
    "on_training_end",
)

#: The named arguments each event offers; a callback method receives only those it names.
EVENT_ARGS: dict[str, tuple[str, ...]] = {
    "on_training_start": ("trainer",),
    "on_episode_start": ("trainer", "episode_info"),
    "on_rollout_start": ("trainer",),
    "on_step_start": ("trainer", "step"),
    "on_step_end": ("trainer", "step_info"),
    "on_episode_end": ("trainer", "episode_info"),
    "on_rollout_end": ("trainer", "rollout_info"),
    "on_update_start": ("trainer", "update_info"),
    "on_update_end": ("trainer", "update_info"),
    "on_evaluation_start": ("trainer",),
    "on_evaluation_end": ("trainer", "eval_results"),
    "on_metrics_computed": ("trainer", "metrics"),
    "on_cycle_complete": ("trainer", "metrics"),
    "on_checkpoint_saved": ("trainer", "checkpoint_path"),
    "on_checkpoint_loaded": ("trainer", "checkpoint_path"),
    "on_training_end": ("trainer",),
}

#: The offered argument that carries an event's dict payload (``None`` when the event has none).
EVENT_PAYLOAD: dict[str, str | None] = {
    event: next((name for name in names if name not in ("trainer", "step", "checkpoint_path")), None)
    for event, names in EVENT_ARGS.items()
}


class BaseCallback:
    """Optional base class of legacy callbacks: every event is a no-op.

    Subclasses override the events they care about, with any subset of the offered
    arguments as parameters (``def on_episode_end(self, episode_info)``). Inherited no-ops
    are never called. ``state_dict()`` / ``load_state_dict()`` are deliberately not defined
    here; a callback with state to checkpoint defines both.
    """

    def on_training_start(self, trainer: Any) -> Any:
        pass

    def on_episode_start(self, trainer: Any, episode_info: dict) -> Any:
        pass

    def on_rollout_start(self, trainer: Any) -> Any:
        pass

    def on_step_start(self, trainer: Any, step: int) -> Any:
        pass

    def on_step_end(self, trainer: Any, step_info: dict) -> Any:
        pass

    def on_episode_end(self, trainer: Any, episode_info: dict) -> Any:
        pass

    def on_rollout_end(self, trainer: Any, rollout_info: dict) -> Any:
        pass

    def on_update_start(self, trainer: Any, update_info: dict) -> Any:
        pass

    def on_update_end(self, trainer: Any, update_info: dict) -> Any:
        pass

    def on_evaluation_start(self, trainer: Any) -> Any:
        pass

    def on_evaluation_end(self, trainer: Any, eval_results: dict) -> Any:
        pass

    def on_metrics_computed(self, trainer: Any, metrics: dict) -> Any:
        pass

    def on_cycle_complete(self, trainer: Any, metrics: dict) -> Any:
        pass

    def on_checkpoint_saved(self, trainer: Any, checkpoint_path: str) -> Any:
        pass

    def on_checkpoint_loaded(self, trainer: Any, checkpoint_path: str) -> Any:
        pass

    def on_training_end(self, trainer: Any) -> Any:
        pass
