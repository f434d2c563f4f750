"""``RLCallback``: a Lightning callback that can also receive the RL host's environment-level events.

``PPOLightningModule`` announces episodes, environment steps, rollouts and minibatch updates through
:class:`~fxai_compat.lightning_host.RLEventBus`, which calls ``on_rl_<event>(trainer, pl_module,
payload)`` on every trainer callback that defines it. ``RLCallback`` declares the eight hooks as
no-ops marked with :func:`~fxai_compat.lightning_host.rl_noop`, so the bus never calls the ones a
subclass does not override: a callback listening to ``episode_end`` costs nothing per step.

Payloads are those of the legacy contract (``shared/spec/legacy-contract.md`` section 3):
``episode_start`` {env_index, episode_index}; ``step_start`` the vector step (int); ``step_end``
{step, total_timesteps, rewards, dones, actions}; ``episode_end`` {env_index, episode_index, reward,
length, pnl, trades, win_rate}; ``rollout_start`` None; ``rollout_end`` {steps, episodes,
reward_mean}; ``update_start`` / ``update_end`` {update_index, epoch, minibatch (+ losses at end)}.

>>> from fxai_compat.lightning_host import RL_HOOKS
>>> class EpisodeCounter(RLCallback):
...     def __init__(self):
...         self.episodes = 0
...     def on_rl_episode_end(self, trainer, pl_module, payload):
...         self.episodes += 1
>>> [hook for hook in RL_HOOKS.values() if not is_rl_noop(getattr(EpisodeCounter(), hook))]
['on_rl_episode_end']
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from ..lightning_host import rl_noop
from ..rl_events import MissingRLEventError

__all__ = ["RLCallback", "is_rl_noop", "MissingMetricError", "MissingRLEventError"]



class MissingMetricError(KeyError):
    """A callback's monitored metric was not logged; the message lists the metrics that were.

    A ``KeyError`` (as the legacy callbacks raise) whose message prints as a plain sentence.
    """

    def __init__(self, owner: str, monitor: str, available: Any, hint: str = ""):
        self.owner, self.monitor, self.available = owner, monitor, sorted(str(name) for name in available)
        listed = ", ".join(self.available) or "none"
        self.message = (f"{owner} monitors {monitor!r}, which was not logged this cycle; "
                        f"metrics that exist: {listed}.{(' ' + hint) if hint else ''}")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def legacy_metric_hint(monitor: str) -> str:
    """A hint for a monitor given under its legacy name (``episode_reward_mean``) or a validation metric."""
    from ..lightning_host import LOGGED_METRICS

    if monitor in LOGGED_METRICS:
        return f"The legacy metric {monitor!r} is logged as {LOGGED_METRICS[monitor]!r}: monitor that name."
    if monitor.startswith("val/"):
        return ("Validation metrics exist only on cycles with evaluation (every eval_every cycles): "
                "check them on those cycles only.")
    return ""


def is_rl_noop(hook: Any) -> bool:
    """True for a hook the RL event bus skips: ``None`` or an inherited ``rl_noop`` method."""
    return not callable(hook) or bool(getattr(hook, "_fxai_rl_noop", False))


class RLCallback(pl.Callback):
    """Base class of native RL callbacks: Lightning's hooks plus the eight RL-protocol hooks (no-ops).

    At setup (at ``on_fit_start`` for a module with its own ``setup()``, which may wrap its environment
    there) it checks that the module announces every RL event the callback overrides a hook for
    (``fxai_compat.rl_events.provided_events``): in a user's own module that does not, it raises
    :class:`MissingRLEventError` naming the event and the level of "bring your own module" that would
    provide it, instead of letting the callback silently see nothing. Subclasses that override
    ``setup`` or ``on_fit_start`` call ``super()``'s.
    """

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._fxai_events_checked = stage != "fit"
        # A module with its own setup() may wrap its environment there, after the callbacks' setup:
        # its check waits for on_fit_start (still before any training); others are refused now.
        if stage == "fit" and type(pl_module).setup is pl.LightningModule.setup:
            self._check_provided_events(pl_module)

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not getattr(self, "_fxai_events_checked", True):
            self._check_provided_events(pl_module)

    def _check_provided_events(self, pl_module: "pl.LightningModule") -> None:
        from ..rl_events import RL_HOOKS, provided_events, unprovided_message

        self._fxai_events_checked = True
        provided = provided_events(pl_module)
        for event, hook in RL_HOOKS.items():
            if event not in provided and not is_rl_noop(getattr(self, hook, None)):
                raise MissingRLEventError(unprovided_message(type(self).__name__, "a native RL callback", event,
                                                             pl_module, event))

    @rl_noop
    def on_rl_episode_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """An environment began an episode."""

    @rl_noop
    def on_rl_episode_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """An environment finished an episode (called per environment, in ``env_index`` order)."""

    @rl_noop
    def on_rl_step_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: int) -> None:
        """Before a vector-environment step; ``payload`` is the number of vector steps so far."""

    @rl_noop
    def on_rl_step_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """After a vector-environment step."""

    @rl_noop
    def on_rl_rollout_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: None) -> None:
        """Start of a cycle's collection, before its first environment step."""

    @rl_noop
    def on_rl_rollout_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """After the cycle's last environment step, before its first update."""

    @rl_noop
    def on_rl_update_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """Before a minibatch update."""

    @rl_noop
    def on_rl_update_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        """After a minibatch update's optimizer step, with its losses."""
