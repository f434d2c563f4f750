"""``EVENT_MAP``: the one table saying where each of the 16 legacy events comes from.

Each row names the legacy event, its *source* (an RL-protocol event announced by the training
module, or a Lightning hook), the condition under which it fires, the offered argument that
carries its payload, what the original refactoring guide mapped it to, and why this table departs
from that. The legacy loop routes the core's RL events with it, the adapter dispatches with it,
and the docs and tests are generated from / parametrized over it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventRoute", "EVENT_MAP", "RL_SOURCE", "LIGHTNING_SOURCE", "CHECKPOINT_IO_SOURCE", "route_for"]

RL_SOURCE = "rl"                # announced by the LightningModule through the RL event protocol
LIGHTNING_SOURCE = "lightning"  # a Lightning callback hook
CHECKPOINT_IO_SOURCE = "checkpoint_io"  # the notifying CheckpointIO, after a file is on disk


@dataclass(frozen=True)
class EventRoute:
    event: str
    """The legacy event (``on_*`` method of a legacy callback)."""
    kind: str
    """``rl``, ``lightning`` or ``checkpoint_io``."""
    source: str
    """The RL event name (``episode_end``), Lightning hook (``on_train_start``) or ``save``/``load``."""
    payload: str | None
    """The offered argument carrying the event's payload (besides ``trainer``), if any."""
    condition: str
    seed_hook: str
    """What the original refactoring guide (section 3.1) mapped the event to."""
    departure: str = ""
    """Why this row differs from the guide; empty where it does not."""


EVENT_MAP: tuple[EventRoute, ...] = (
    EventRoute("on_training_start", LIGHTNING_SOURCE, "setup", None,
               "once, at setup of fit, before a ckpt_path is restored (under DDP: at on_train_start)",
               "on_train_start",
               "the legacy loop fires it before restoring a resumed run; by on_train_start Lightning has already "
               "restored counters, model and callback state"),
    EventRoute("on_episode_start", RL_SOURCE, "episode_start", "episode_info",
               "an environment begins an episode", "on_train_batch_start",
               "episodes are environment events, not batches; one batch holds a whole cycle"),
    EventRoute("on_rollout_start", RL_SOURCE, "rollout_start", None,
               "start of each cycle's collection", "on_train_epoch_start",
               "Lightning fetches the first epoch's batch before on_train_epoch_start, so collection runs inside training_step"),
    EventRoute("on_step_start", RL_SOURCE, "step_start", "step",
               "before each vector-environment step", "on_train_batch_start",
               "one vector step is not one Lightning batch"),
    EventRoute("on_step_end", RL_SOURCE, "step_end", "step_info",
               "after each vector-environment step", "on_train_batch_end",
               "one vector step is not one Lightning batch"),
    EventRoute("on_episode_end", RL_SOURCE, "episode_end", "episode_info",
               "each environment that finished an episode in that step, in env_index order", "on_train_batch_end",
               "announced live by the module with the real episode statistics, not guessed from batch done flags"),
    EventRoute("on_rollout_end", RL_SOURCE, "rollout_end", "rollout_info",
               "after the cycle's last step, before its first update", "on_train_epoch_end",
               "the rollout ends before the updates, long before the epoch ends"),
    EventRoute("on_update_start", RL_SOURCE, "update_start", "update_info",
               "before each minibatch update", "on_before_optimizer_step",
               "on_before_optimizer_step runs after backward and has no opt_idx in Lightning 2.x; the legacy event precedes the forward pass"),
    EventRoute("on_update_end", RL_SOURCE, "update_end", "update_info",
               "after each optimizer step, with its losses", "on_train_batch_end",
               "all of a cycle's minibatch updates run inside one training_step (manual optimization)"),
    EventRoute("on_evaluation_start", LIGHTNING_SOURCE, "on_validation_start", None,
               "validation loop on due cycles, never during the sanity check", "on_validation_start"),
    EventRoute("on_evaluation_end", LIGHTNING_SOURCE, "on_validation_end", "eval_results",
               "after evaluation, never during the sanity check", "on_validation_end",
               "eval_results come from the module's exact results, not float32 logged tensors"),
    EventRoute("on_metrics_computed", LIGHTNING_SOURCE, "on_train_epoch_end", "metrics",
               "every cycle, after updates and evaluation", "pl_module.log()",
               "pl_module.log is not a hook; the metrics dict is built at epoch end from what the module logged"),
    EventRoute("on_cycle_complete", LIGHTNING_SOURCE, "on_train_epoch_end", "metrics",
               "every cycle, right after on_metrics_computed", "on_train_epoch_end"),
    EventRoute("on_checkpoint_saved", CHECKPOINT_IO_SOURCE, "save", "checkpoint_path",
               "after a checkpoint file is completely on disk (ModelCheckpoint or manual save)", "on_save_checkpoint",
               "on_save_checkpoint runs before the file exists and has no path; the CheckpointIO fires after the write"),
    EventRoute("on_checkpoint_loaded", LIGHTNING_SOURCE, "on_train_start", "checkpoint_path",
               "on resume (ckpt_path) and after trainer.load_checkpoint", "on_load_checkpoint",
               "on_load_checkpoint runs before optimizers and loop counters are restored and has no path"),
    EventRoute("on_training_end", LIGHTNING_SOURCE, "on_train_end", None,
               "once, last", "on_train_end"),
)

_BY_EVENT = {route.event: route for route in EVENT_MAP}
#: RL event -> route, for the rows the training module announces.
RL_ROUTES = {route.source: route for route in EVENT_MAP if route.kind == RL_SOURCE}


def route_for(event: str) -> EventRoute:
    try:
        return _BY_EVENT[event]
    except KeyError:
        raise KeyError(f"Unknown legacy event {event!r}; the 16 events are: {', '.join(_BY_EVENT)}.") from None
