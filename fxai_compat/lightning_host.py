"""The Lightning host: ``PPOLightningModule``, ``RLDataModule``, the RL event protocol and ``fit``.

One Lightning epoch is one cycle of the legacy contract, and the whole cycle's PPO work runs in a
single ``training_step`` with manual optimization: collect the rollout, then ``update_epochs`` x
minibatches of updates, one optimizer step each. This is a measured design decision: collecting
in ``on_train_epoch_start`` and drawing minibatches from the dataloader makes Lightning fetch the
first batch before the epoch starts (parameters diverge from the plain loop), and one Lightning
batch per minibatch costs ~0.5 ms of loop and hook dispatch per update. Evaluation runs in
Lightning's validation loop, every ``eval_every`` epochs. Under DDP each rank steps its own
environments (seeded by rank); the logged metrics count the environments of all ranks, and
checkpoints hold every rank's RL state, so a resume continues each rank's environments.

Where each legacy event's moment falls in Lightning's hook sequence (the adapter relies on it)::

    setup (callbacks, then module) ................. on_training_start, before a ckpt_path is restored
                                                      (under DDP: at on_train_start, once the module's
                                                      setup has given each rank its own core)
    sanity check (if any) .......................... nothing
    on_train_start (callbacks, then module) ........ on a resume, on_checkpoint_loaded; then the module
                                                      starts the envs -> RL episode_start x n_envs (not
                                                      again on a resume: the envs continue)
    training_step (one per epoch = cycle) .......... RL rollout_start, step_start/step_end,
                                                      episode_end/episode_start, rollout_end,
                                                      update_start/update_end
    validation loop (when due; never sanity) ....... on_validation_start -> on_evaluation_start,
                                                      on_validation_end -> on_evaluation_end
    on_train_epoch_end (callbacks, module, then
      ModelCheckpoint) ............................. on_metrics_computed, on_cycle_complete, then
                                                      the checkpoint write -> on_checkpoint_saved
    on_train_end ................................... on_training_end

The **RL event protocol**: the module announces environment-level events live by calling
:class:`~fxai_compat.rl_events.RLEventBus` ``emit(event, payload)``; every callback of the trainer that
defines ``on_rl_<event>(trainer, pl_module, payload)`` receives it, in callback order. Any
LightningModule can speak it; :mod:`fxai_compat.rl_events` documents it (payload checks, declarations,
counters).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import warnings
from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.strategies import DDPStrategy

from .checkpoints import RL_STATE_KEY, RUN_INFO_KEY, is_url, parent_location, write_atomic
from .config import TrainConfig
from .fast_paths import log_value, plain_step, plain_steps_suffice
from .ppo import EVAL_KEYS, PPOCore
from .resume_point import announce_resume
from .rl_events import RL_HOOKS, RLEventBus, rl_noop  # noqa: F401 - public names kept here too

__all__ = ["PPOLightningModule", "RLDataModule", "RLEventBus", "RL_HOOKS", "NotifyingCheckpointIO",
           "CycleCheckpoint", "RLModelCheckpoint", "RLDDPStrategy", "fit", "build_trainer", "LOGGED_METRICS",
           "keep_keyboard_interrupt"]

#: Legacy metric key -> the name the module logs it under (``self.log``); data, overridable by adapters.
LOGGED_METRICS = {
    "timesteps_total": "train/timesteps_total",
    "episodes_total": "train/episodes_total",
    "cycle": "train/cycle",
    "episode_reward_mean": "train/episode_reward_mean",
    "episode_length_mean": "train/episode_length_mean",
    "loss": "train/loss",
    "policy_loss": "train/policy_loss",
    "value_loss": "train/value_loss",
    "entropy": "train/entropy",
    "approx_kl": "train/approx_kl",
    "clip_fraction": "train/clip_fraction",
    "eval_episode_reward_mean": "val/episode_reward_mean",
    "eval_win_rate": "val/win_rate",
}
_EVAL_LOGGED = {key: f"val/{key}" for key in EVAL_KEYS if key != "episodes"}


class _Ticks(torch.utils.data.Dataset):
    """One item per epoch: the 'batch' only tells the module a cycle is due; the data is the environment."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return index


class RLDataModule(pl.LightningDataModule):
    """Provides the per-cycle ticks for training and evaluation.

    In RL the data is generated by the environments, which the PPO core owns (both hosts step the
    same environments the same way); this data module gives Lightning's loops one batch per cycle.
    """

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Ticks(), batch_size=None)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_Ticks(), batch_size=None)


class PPOLightningModule(pl.LightningModule):
    """PPO on the shared core, one cycle per epoch (manual optimization), speaking the RL event protocol.

    It announces all eight RL events (``rl_events_provided``). Exact (Python float) values of everything it logs are kept in ``exact_logged`` for parity
    checks, since ``self.log`` stores float32 tensors. ``last_eval_results`` holds the latest
    evaluation's results.
    """

    rl_events_provided = "all"

    def __init__(self, config: TrainConfig | Mapping[str, Any]):
        super().__init__()
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
        self.save_hyperparameters({"config": self.config.to_dict()})
        self.automatic_optimization = False
        self.core = PPOCore(self.config)
        self.policy = self.core.policy
        self.exact_logged: dict[str, Any] = {}
        self.last_eval_results: dict[str, Any] | None = None
        self.rl_events: RLEventBus | None = None
        self._sync_gradients = None
        self._rank_states: list[dict[str, Any]] | None = None
        self._train_metrics: dict[str, Any] | None = None
        self._plain_steps = False

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if trainer.world_size > 1 and self.core.world_size != trainer.world_size:
            # Each rank steps its own environments, seeded by rank; the policy init is identical.
            self.core = PPOCore(self.config, rank=trainer.global_rank, world_size=trainer.world_size)
            self.policy = self.core.policy
        if trainer.world_size > 1:
            self._sync_gradients = _average_gradients

    def configure_optimizers(self):
        return self.core.make_optimizer(self.policy.parameters())

    def on_train_start(self) -> None:
        # Callbacks' on_train_start (on_training_start, a legacy resume) has run; now start the envs.
        self.rl_events = RLEventBus(self.trainer, self, counters=False)  # the core keeps the counters
        self.core.to_device(self.device)  # buffers and observations where the policy is; the envs stay on the CPU
        self._plain_steps = plain_steps_suffice(self.trainer, self)
        self.core.start(self.rl_events)

    # -- a cycle --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        core, bus = self.core, self.rl_events
        if bus is None:  # a module driven without on_train_start (e.g. tests calling fit_loop pieces)
            bus = self.rl_events = RLEventBus(self.trainer, self, counters=False)
            core.to_device(self.device)
            self._plain_steps = False
            core.start(bus)
        self.exact_logged = {}
        self.last_eval_results = None
        opt = self.optimizers()
        core.begin_cycle()
        rollout_info = core.collect_rollout(bus)
        if self._plain_steps:  # where manual_backward and opt.step would call only empty hooks (fast_paths)
            core.update(opt, bus, backward=None, step=plain_step(opt), sync_gradients=self._sync_gradients)
        else:
            core.update(opt, bus, backward=self.manual_backward, step=opt.step, sync_gradients=self._sync_gradients)
        core.end_cycle()
        metrics = core.cycle_metrics(None)
        if self.trainer.world_size > 1:
            # One small collective per cycle, while all ranks are at the same point: every rank's RL state
            # (only rank 0 writes checkpoints, but each rank has its own environments and random state),
            # and the cycle's metrics over the environments of all ranks (what rank 0 logs and reports).
            gathered = _gather_objects((core.state_dict(), metrics, rollout_info["episodes"]), self.trainer.world_size)
            self._rank_states = [state for state, _, _ in gathered]
            metrics = _merge_rank_metrics([(m, episodes) for _, m, episodes in gathered])
        self._train_metrics = metrics
        for key, value in metrics.items():
            self._log_exact(LOGGED_METRICS[key], value, prog_bar=key == "episode_reward_mean", on_step=True)
        return None

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:  # sanity checks must not evaluate (no side effects, no RNG drift)
            return None
        results = self.core.evaluate()
        self.last_eval_results = results
        for key, name in _EVAL_LOGGED.items():
            self._log_exact(name, results[key], prog_bar=key == "episode_reward_mean")
        return None

    def _log_exact(self, name: str, value: Any, prog_bar: bool = False, on_step: bool = False) -> None:
        # The cycle's training values are logged at step level (one step = one cycle): epoch-level values
        # are only reduced at on_train_epoch_end, after the validation loop, so a monitor that reads
        # callback_metrics at validation end (ModelCheckpoint when eval_every > 1, pruning callbacks)
        # would see the previous cycle's value. Evaluation results are epoch-level values of the val loop.
        # log_value is self.log without its fixed per-call cost from the second cycle on (see fast_paths).
        self.exact_logged[name] = value
        log_value(self, name, value, on_step=on_step, on_epoch=not on_step, prog_bar=prog_bar)

    def cycle_metrics(self) -> dict[str, Any]:
        """The legacy ``metrics`` dict of the cycle just finished (exact values), eval keys included when due."""
        return {**self.core.cycle_metrics(self.last_eval_results), **(self._train_metrics or {})}

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.core.state_dict()
        checkpoint[RL_STATE_KEY] = state  # this process's (rank 0's): what single-process readers restore
        trainer = self._trainer
        if trainer is not None:  # whether a resume continues this run or starts a new one (TrainConfig.cycles)
            target = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
            checkpoint[RUN_INFO_KEY] = {"target_cycles": target, "stopped": bool(trainer.should_stop),
                                        "checkpoint_every": int(getattr(self.config, "checkpoint_every", 0))}
        ranks = self._rank_states
        if ranks is not None and all(ranks[0][k] == state[k] for k in _MOMENT_KEYS):
            # Every rank's state as of the end of this cycle (not written for saves in the middle of a cycle,
            # when the other ranks' gathered states are a cycle old).
            checkpoint[RL_RANK_STATES_KEY] = ranks

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RL_STATE_KEY not in checkpoint:
            return
        state = checkpoint[RL_STATE_KEY]
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            ranks = checkpoint.get(RL_RANK_STATES_KEY)
            if ranks is not None and len(ranks) == trainer.world_size:
                state = ranks[trainer.global_rank]
            elif trainer.global_rank != 0:
                held = (f"the RL states of {len(ranks)} processes" if ranks is not None else
                        "one process's RL state (written by a single process, or in the middle of a cycle)")
                warnings.warn(f"The checkpoint holds {held}, not one for each of the {trainer.world_size} processes: "
                              f"rank {trainer.global_rank} restores rank 0's environments and random state, so its "
                              f"rollouts repeat rank 0's. Resume with the number of processes that wrote the "
                              f"checkpoint, from a checkpoint written at the end of a cycle.", stacklevel=2)
        self.core.load_state_dict(state)
        if trainer is not None and trainer.is_global_zero and trainer.ckpt_path:
            announce_resume(trainer.ckpt_path, state)  # every Lightning resume says where it continues


#: Checkpoint key of the list of every rank's RL state (DDP); ``RL_STATE_KEY`` holds rank 0's.
RL_RANK_STATES_KEY = "fxai_rl_state_by_rank"
#: Core counters that tell whether two states were taken at the same moment of the run.
_MOMENT_KEYS = ("cycles_completed", "vector_steps", "num_updates")


def _gather_objects(obj: Any, world_size: int) -> list[Any]:
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _merge_rank_metrics(per_rank: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """A cycle's metrics over all ranks, from each rank's metrics and its number of episodes ended in the
    cycle: counters summed, episode means weighted by episodes, update means averaged (every rank makes
    the same number of updates)."""
    metrics = dict(per_rank[0][0])
    for key in ("timesteps_total", "episodes_total"):
        metrics[key] = sum(m[key] for m, _ in per_rank)
    episodes = sum(n for _, n in per_rank)
    for key in ("episode_reward_mean", "episode_length_mean"):
        metrics[key] = sum(m[key] * n for m, n in per_rank if n) / episodes if episodes else float("nan")
    for key in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        metrics[key] = sum(m[key] for m, _ in per_rank) / len(per_rank)
    return metrics


def _average_gradients(params: list[torch.Tensor]) -> None:
    """All-reduce the gradients of all ranks in one collective (the module is not wrapped in DDP)."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


class RLDDPStrategy(DDPStrategy):
    """DDP without the ``DistributedDataParallel`` wrapper.

    A PPO cycle runs many backward passes inside one ``training_step``; DDP's reducer allows one
    per forward of the wrapper. The module averages gradients itself after each backward (one
    all-reduce per minibatch), so the wrapper is left out; everything else is Lightning's DDP.
    """

    def configure_ddp(self) -> None:
        pass


#: Lightning's DDP strategy names -> the start method of the equivalent ``RLDDPStrategy``.
_DDP_START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


class NotifyingCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints atomically and tells listeners (with the path or URL) once the file is written.

    A local path: temp file in the same folder, fsync, rename. A URL (``s3://``, ``memory://``): through
    fsspec, as Lightning's ``TorchCheckpointIO`` writes (serialized first, then written in a transaction).

    Lightning 2.x has no after-save hook (``on_save_checkpoint`` runs before the write, with the
    dict); this is the one place every save passes through: ``ModelCheckpoint`` and manual
    ``trainer.save_checkpoint`` alike. One instance per trainer; any number of listeners.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options (got {storage_options!r}).")
        write_atomic(checkpoint, path)
        for listener in list(self.listeners):
            listener(os.fspath(path))

    @staticmethod
    def of(trainer: "pl.Trainer") -> "NotifyingCheckpointIO":
        """The trainer's notifying CheckpointIO, installed on first use if the trainer has the default one."""
        io = trainer.strategy.checkpoint_io
        if isinstance(io, NotifyingCheckpointIO):
            return io
        if type(io) is not TorchCheckpointIO:
            raise TypeError(f"The trainer uses a custom CheckpointIO ({type(io).__name__}); checkpoint events need "
                            f"fxai_compat.NotifyingCheckpointIO. Pass plugins=[NotifyingCheckpointIO()] or subclass it.")
        io = NotifyingCheckpointIO()
        trainer.strategy.checkpoint_io = io
        return io


class RLModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for RL cycles, the base of every checkpoint callback of this library.

    * ``cycle`` (the cycle just finished) is among the values file names can use (``"cycle-{cycle:04d}"``);
    * the values are copied with ``Tensor.clone`` where ``ModelCheckpoint`` deep-copies
      ``trainer.callback_metrics``: an RL cycle logs some twenty values, and ``deepcopy`` made that about
      1.7 ms per checkpoint callback per cycle;
    * on a cycle when nothing is due (``every_n_epochs``), it does nothing: ``ModelCheckpoint`` would still
      gather the values and re-create its ``last`` link.
    """

    def _monitor_candidates(self, trainer: "pl.Trainer") -> dict[str, torch.Tensor]:
        candidates = {name: value.detach().clone() if isinstance(value, torch.Tensor) else deepcopy(value)
                      for name, value in trainer.callback_metrics.items()}
        # As ModelCheckpoint: epoch and step as ints (self.log would have made them floats).
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        candidates["step"] = step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        core = getattr(trainer.lightning_module, "core", None)
        candidates["cycle"] = torch.tensor(core.cycle if core is not None else trainer.current_epoch)
        return candidates

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        every = self._every_n_epochs
        if every >= 1 and (trainer.current_epoch + 1) % every == 0:
            super().on_train_epoch_end(trainer, pl_module)

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        # ModelCheckpoint refuses save_last="link" off the local disk; _link_checkpoint below copies there instead.
        link = self.save_last == "link" and is_url(self.dirpath or "")
        if link:
            self.save_last = True
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            if link:
                self.save_last = "link"

    @staticmethod
    def _link_checkpoint(trainer: "pl.Trainer", filepath: str, linkpath: str) -> None:
        # ModelCheckpoint removes the link and then re-creates it: a process killed in between leaves no
        # last.ckpt. Here the new link is made under a temporary name and renamed over the old one (atomic on
        # POSIX). On a remote filesystem (no links) the file is copied, inside a transaction.
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            replace_link(filepath, linkpath)
        trainer.strategy.barrier()


class CycleCheckpoint(RLModelCheckpoint):
    """``ModelCheckpoint`` writing one ``cycle-NNNN.ckpt`` per due cycle (named like the legacy loop's files)
    plus a ``last.ckpt`` link for ``ckpt_path="last"``."""

    def __init__(self, dirpath: str, every_n_epochs: int):
        super().__init__(dirpath=dirpath, filename="cycle-{cycle:04d}", every_n_epochs=every_n_epochs, save_top_k=-1,
                         save_last="link", save_on_train_epoch_end=True, auto_insert_metric_name=False,
                         enable_version_counter=False)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # ModelCheckpoint writes a last.ckpt at the end of a run in which nothing was saved yet (fewer
        # cycles than checkpoint_every, or a resumed run ending before its next due cycle). The legacy
        # loop writes checkpoints on due cycles only, and each write fires on_checkpoint_saved.
        pass


def replace_link(filepath: str, linkpath: str) -> None:
    """Point ``linkpath`` at ``filepath``, replacing what was there in one step (a reader sees the old link or the new
    one, never none); a copy where links cannot be made (remote filesystems, Windows without the right)."""
    if is_url(linkpath):
        import fsspec

        fs, target = fsspec.core.url_to_fs(linkpath)
        with fs.transaction:
            fs.copy(fsspec.core.url_to_fs(filepath)[1], target)
        return
    folder = os.path.dirname(linkpath) or "."
    tmp = os.path.join(folder, f".{os.path.basename(linkpath)}.link-{os.getpid()}")
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        try:
            os.symlink(os.path.relpath(filepath, folder), tmp)
        except OSError:
            shutil.copy(filepath, tmp)
        if os.path.isdir(linkpath) and not os.path.islink(linkpath):
            shutil.rmtree(linkpath)
        os.replace(tmp, linkpath)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def build_trainer(config: TrainConfig, callbacks: Iterable[pl.Callback] | None = None, **trainer_kwargs: Any) -> pl.Trainer:
    """A ``pl.Trainer`` set up for RL cycles: one epoch per cycle, validation every ``eval_every``
    epochs, periodic checkpoints, atomic notifying checkpoint writes, CSV logs. ``trainer_kwargs`` win.
    ``enable_progress_bar=True`` shows one progress display for the whole run (``RunProgressBar``) unless a
    progress bar is among ``callbacks``; logged epoch/step continue after a resume (``ContinuedRunLogging``)."""
    callbacks = list(callbacks or [])
    # A user's own ModelCheckpoint (e.g. monitoring a metric) comes in addition to the periodic cycle
    # checkpoints; enable_checkpointing=False turns the periodic ones off.
    if (config.checkpoint_every and trainer_kwargs.get("enable_checkpointing", True) is not False
            and not any(isinstance(cb, CycleCheckpoint) for cb in callbacks)):
        callbacks.append(CycleCheckpoint(config.checkpoint_dir, config.checkpoint_every))
    root = trainer_kwargs.pop("default_root_dir", None) or parent_location(config.checkpoint_dir)
    kwargs: dict[str, Any] = dict(
        max_epochs=config.cycles, accelerator="cpu", devices=1, num_sanity_val_steps=0,
        check_val_every_n_epoch=config.eval_every or 1, limit_val_batches=1 if config.eval_every else 0,
        logger=CSVLogger(save_dir=root, name="lightning_logs"), enable_model_summary=False,
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks), log_every_n_steps=1,
        default_root_dir=root, enable_progress_bar=False)
    kwargs.update(trainer_kwargs)
    if kwargs.get("enable_progress_bar") and not any(isinstance(cb, ProgressBar) for cb in callbacks):
        from .progress_bar import RunProgressBar

        callbacks.append(RunProgressBar())  # one bar for the whole run, not Lightning's one per epoch
    from .run_steps import ContinuedRunLogging

    callbacks.append(ContinuedRunLogging())  # logged epoch/step continue after a resume outside ckpt_path
    strategy = kwargs.get("strategy")
    if isinstance(strategy, str) and strategy in _DDP_START_METHODS:
        kwargs["strategy"] = RLDDPStrategy(start_method=_DDP_START_METHODS[strategy])
    elif isinstance(strategy, DDPStrategy) and not isinstance(strategy, RLDDPStrategy):
        raise TypeError("A PPO cycle runs many backward passes in one training_step, which the "
                        "DistributedDataParallel wrapper of DDPStrategy refuses; pass strategy='ddp' "
                        "(or fxai_compat.RLDDPStrategy(...)) instead.")
    plugins = list(kwargs.pop("plugins", None) or [])
    if not any(isinstance(p, TorchCheckpointIO) for p in plugins):
        plugins.append(NotifyingCheckpointIO())
    kwargs["plugins"] = plugins
    kwargs["callbacks"] = callbacks
    _quiet_rl_warnings()
    return pl.Trainer(**kwargs)


def fit(config: TrainConfig | Mapping[str, Any], callbacks: Iterable[pl.Callback] | None = None, *,
        ckpt_path: str | None = None, **trainer_kwargs: Any) -> pl.Trainer:
    """Train PPO under Lightning and return the trainer (``trainer.lightning_module`` holds the model).

    Same config and seed as ``LegacyTrainer`` = the same run. ``trainer_kwargs`` pass through to
    ``pl.Trainer`` (``strategy="ddp", devices=2``, ``logger=...``, ``enable_progress_bar=True`` ...).
    ``ckpt_path`` resumes an interrupted run (``"last"`` picks the newest ``last.ckpt``). Each cycle's
    training metrics are logged once, at step level (one step per cycle; ``log_every_n_steps=1``), so
    monitors see them as soon as the cycle's updates are done; evaluation results once per evaluation.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    trainer = build_trainer(cfg, callbacks, **trainer_kwargs)
    module = PPOLightningModule(cfg)
    with keep_keyboard_interrupt():
        trainer.fit(module, datamodule=RLDataModule(cfg), ckpt_path=ckpt_path)
    return trainer


@contextlib.contextmanager
def keep_keyboard_interrupt():
    """Lightning turns a ``KeyboardInterrupt`` (Ctrl-C, or one raised by a callback) into ``SystemExit(1)`` after its
    graceful shutdown, and leaves SIGINT ignored for the rest of the process. Here the caller gets the
    ``KeyboardInterrupt`` itself back (the same object, with the notes the legacy callback manager added) and the
    SIGINT handler it had: a command line can then say "interrupted" and exit 130, a notebook stays interruptible.
    ``fit`` uses it; wrap your own ``trainer.fit(...)`` in ``with keep_keyboard_interrupt():`` for the same."""
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if on_main else None
    try:
        yield
    except SystemExit as exc:
        interrupt = exc.__context__
        if exc.code == 1 and isinstance(interrupt, KeyboardInterrupt):
            raise interrupt from None
        raise
    finally:
        if on_main and previous is not None and signal.getsignal(signal.SIGINT) is not previous:
            signal.signal(signal.SIGINT, previous)


def _quiet_rl_warnings() -> None:
    from .run_summary import quiet_noise

    quiet_noise()  # Lightning's litlogger tips: nothing a user of this library can act on
    # One batch per epoch is the design, not a data-loading problem.
    for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                    ".*is an invalid value for `max_epochs`.*", ".*Checkpoint directory .* exists and is not empty.*",
                    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"):
        warnings.filterwarnings("ignore", message=pattern)
