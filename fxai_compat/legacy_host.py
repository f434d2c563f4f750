"""``LegacyTrainer``: FxAI's original training loop, the reference every parity check compares against.

It drives the shared :class:`~fxai_compat.ppo.PPOCore` and fires the 16 legacy events in exactly
the contract's order (``shared/spec/legacy-contract.md`` section 4), through a
``legacy_callbacks.CallbackManager`` (by-name binding, stop protocol, error policy).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from legacy_callbacks import CallbackManager, TrainingContext

from .checkpoints import LEGACY_FORMAT, join_location, read_training_checkpoint, write_atomic
from .config import TrainConfig
from .events import RL_ROUTES
from .ppo import PPOCore
from .resume_point import announce_resume

__all__ = ["LegacyTrainer", "checkpoint_filename", "callback_state_keys"]


def checkpoint_filename(cycle: int) -> str:
    """The file name both hosts give the periodic checkpoint written at the end of ``cycle``."""
    return f"cycle-{cycle:04d}.ckpt"


def callback_state_keys(callbacks: Iterable[Any]) -> dict[str, Any]:
    """Stable, unique keys for the stateful callbacks of a list (``ClassName``, ``ClassName#2`` ...)."""
    keys: dict[str, Any] = {}
    for cb in callbacks:
        if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None)):
            base, n = type(cb).__name__, 1
            key = base
            while key in keys:
                n += 1
                key = f"{base}#{n}"
            keys[key] = cb
    return keys


class _ManagerSink:
    """Routes the core's RL events to legacy events through the manager (the rows of ``EVENT_MAP``)."""

    def __init__(self, trainer: "LegacyTrainer"):
        self.trainer = trainer
        self.manager = trainer.callbacks
        self.routes = {rl: (route.event, route.payload) for rl, route in RL_ROUTES.items()}

    def wants(self, event: str) -> bool:
        return self.manager.has(self.routes[event][0])

    def emit(self, event: str, payload: Any) -> None:
        name, arg = self.routes[event]
        offered = {"trainer": self.trainer}
        if arg is not None:
            offered[arg] = payload
        if self.manager.fire(name, **offered):
            self.trainer.stop_training = True


class LegacyTrainer:
    """The legacy FxAI loop: ``LegacyTrainer(config, callbacks=[...]).train()``.

    It is also the *trainer surface* legacy callbacks see (contract section 2): ``model``,
    ``config``, ``total_timesteps``, ``num_episodes``, ``cycle``, ``context``, ``stop_training``,
    ``save_checkpoint(path)`` and ``load_checkpoint(path)``.
    """

    def __init__(self, config: TrainConfig | Mapping[str, Any], callbacks: Iterable[Any] | CallbackManager = (),
                 *, on_error: str = "raise", progress: Any = None):
        self.train_config = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
        self.core = PPOCore(self.train_config)
        self.optimizer = self.core.make_optimizer()
        self.context = TrainingContext()
        self.stop_training = False
        self.callbacks = callbacks if isinstance(callbacks, CallbackManager) else CallbackManager(list(callbacks), on_error=on_error)
        self.run_cycles_done = 0
        #: The cycles this run trains in all: ``cycles``, or an interrupted run's own target when it is continued.
        self.run_target = self.train_config.cycles
        self._looping = False
        self.checkpoint_paths: list[str] = []
        self._config_view = MappingProxyType(self.train_config.to_dict())
        self.progress = progress
        """A :class:`fxai_compat.progress.RunProgress` (or None): the run's progress, shown like under Lightning."""

    # -- trainer surface -------------------------------------------------------------------------
    @property
    def model(self):
        return self.core.policy

    @property
    def config(self) -> Mapping[str, Any]:
        return self._config_view

    @property
    def total_timesteps(self) -> int:
        return self.core.total_timesteps

    @property
    def num_episodes(self) -> int:
        return self.core.num_episodes

    @property
    def cycle(self) -> int:
        return self.core.cycle

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write a full training checkpoint atomically, then fire ``on_checkpoint_saved``."""
        path = str(path)
        write_atomic({"format": LEGACY_FORMAT, "model": self.core.policy.state_dict(),
                      "optimizer": self.optimizer.state_dict(), "rl_state": self.core.state_dict(),
                      "callbacks": {k: cb.state_dict() for k, cb in callback_state_keys(self.callbacks.callbacks).items()},
                      "run_cycles_done": self.run_cycles_done, "config": self.train_config.to_dict(),
                      "target_cycles": self.run_target, "stopped": bool(self.stop_training)}, path)
        self._fire("on_checkpoint_saved", checkpoint_path=path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, counters and RNG/environment state, then fire ``on_checkpoint_loaded``.

        How many cycles follow is ``TrainConfig.cycles``'s one rule: a checkpoint of an *interrupted* run (killed
        or crashed before its cycles, not stopped by a callback) continues that run, which ends at ``cycles`` in
        all; a finished run's checkpoint starts a new run of ``cycles`` cycles on the loaded state.
        """
        self._restore(path, whole_run=False)

    # -- the loop ----------------------------------------------------------------------------------
    def train(self, resume_from: str | os.PathLike | None = None) -> "LegacyTrainer":
        """Run ``config.cycles`` cycles (fewer if a callback asks to stop; see ``TrainConfig.cycles`` for resumes).

        ``resume_from`` continues an interrupted run from its checkpoint: counters, callback state
        and the number of cycles this run already did are restored.
        """
        cfg = self.train_config
        sink = _ManagerSink(self)
        self._fire("on_training_start")
        if resume_from is not None:
            self._restore(resume_from, whole_run=True)
        self.core.start(sink)
        progress, core = self.progress, self.core
        if progress is not None:  # after any restore: the run's own cycle numbers (see fxai_compat.progress)
            progress.start(core.cycles_completed,
                           core.cycles_completed + max(0, self.run_target - self.run_cycles_done), core.total_timesteps)
        self._looping = True
        try:
            while self.run_cycles_done < self.run_target and not self.stop_training:
                metrics = self._run_cycle(sink)
                if progress is not None:
                    progress.cycle_done(core.cycles_completed, core.total_timesteps, metrics.get("episode_reward_mean"))
        finally:
            self._looping = False
            if progress is not None:
                progress.close()
        self._fire("on_training_end")
        return self

    def _run_cycle(self, sink: _ManagerSink) -> dict[str, Any]:
        cfg, core = self.train_config, self.core
        core.begin_cycle()
        core.collect_rollout(sink)
        core.update(self.optimizer, sink)
        core.end_cycle()
        self.run_cycles_done += 1
        eval_results = None
        if cfg.eval_due(self.run_cycles_done):
            self._fire("on_evaluation_start")
            eval_results = core.evaluate()
            self._fire("on_evaluation_end", eval_results=dict(eval_results))
        metrics = core.cycle_metrics(eval_results)
        self._fire("on_metrics_computed", metrics=dict(metrics))
        self._fire("on_cycle_complete", metrics=dict(metrics))
        if cfg.checkpoint_due(self.run_cycles_done):
            path = self.save_checkpoint(join_location(cfg.checkpoint_dir, checkpoint_filename(core.cycle)))
            self.checkpoint_paths.append(path)
        return metrics

    def _fire(self, event: str, **offered: Any) -> None:
        if self.callbacks.fire(event, trainer=self, **offered):
            self.stop_training = True

    def _restore(self, path: str | os.PathLike, *, whole_run: bool) -> None:
        ckpt = read_training_checkpoint(path)
        self.core.policy.load_state_dict(ckpt.model)
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        self.core.load_state_dict(ckpt.rl_state)
        announce_resume(path, ckpt.rl_state)  # auto-resume and a callback's load (continuous training) alike
        if whole_run:
            self.run_cycles_done, self.run_target = ckpt.run_cycles_done, self.train_config.cycles
        elif ckpt.interrupted and not self._looping:  # TrainConfig.cycles: an interrupted run is finished, not restarted
            self.run_cycles_done, self.run_target = ckpt.run_cycles_done, ckpt.target_cycles
        if whole_run:
            for key, cb in callback_state_keys(self.callbacks.callbacks).items():
                if key in ckpt.callbacks:
                    cb.load_state_dict(ckpt.callbacks[key])
        self._fire("on_checkpoint_loaded", checkpoint_path=str(path))
