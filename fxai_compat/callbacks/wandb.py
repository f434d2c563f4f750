"""Weights & Biases for RL runs: ``create_wandb_logger`` (Lightning's ``WandbLogger``) and ``RLWandbCallback``.

The native port of ``legacy_callbacks.WandbCallback``.

**Metric names.** By default (``metric_names="legacy"``) the run looks like the legacy callback's, so
dashboards built on legacy runs keep working: the cycle's metrics are logged under the legacy names
(``episode_reward_mean``, ``eval_episode_reward_mean``, ``approx_kl``, ...), exact values, in one
``run.log`` per cycle after that cycle's ``episode/reward``/``episode/length`` rows (so ``_step`` numbers
the same rows), and the run config is the legacy one (the train config, then the ``config`` option).
The logger from ``create_wandb_logger`` drops Lightning's copies of those metrics (``train/*``,
``val/*``, ``epoch``); anything else logged with ``self.log`` (a native ``MetricsCallback``'s ``metrics/*``,
``val/best_episode_reward_mean``, ``training/version``) joins the cycle's row, so no row is added and
``_step`` stays the legacy one. The W&B port itself adds only ``charts/*`` (and ``videos/*``) keys, in the
cycle's row (:data:`ADDED_METRICS`). ``fxai-compat
parity`` reads both offline runs back and proves it. ``metric_names="lightning"`` (on both the logger
and the callback) logs Lightning's names instead: ``train/episode_reward_mean``, ``val/...``,
``trainer/global_step`` (the x-axis), histograms in rows of their own; dashboards must then be rebuilt.

In ``lightning`` mode the per-cycle metrics reach W&B through Lightning's logger (everything the module
and the callbacks ``self.log``), so the callback only adds what a logger cannot see:

* ``episode/reward`` and ``episode/length`` of every finished episode (as the legacy callback logs
  them), buffered during the cycle and written at its end (the hot path is a list append);
* once per cycle, histograms ``charts/action_distribution`` (the actions of the cycle's
  ``on_rl_step_end`` payloads, one bin per discrete action) and ``charts/value_estimates`` (the
  critic's values of the rollout, which the core computed anyway: no extra forward pass);
* every ``video_every_n_cycles`` cycles, a video of one greedy episode (``videos/episode``) when
  ``moviepy`` is importable (``wandb.Video`` needs it to encode arrays, ~190 MB with ffmpeg, so it is
  optional); without it, one warning and no videos.

Runs are offline by default (no network, no API key; files under ``<dir>/wandb/offline-run-*``).
Lightning's ``WandbLogger`` does not finish the run after ``fit``: call ``logger.experiment.finish()``
when the run is done (a plain ``WandbLogger`` would even reuse a run left in progress; the logger of
``create_wandb_logger`` always starts its own). Under DDP only global rank 0 logs (its own actions; episodes of rank 0).

>>> logger = create_wandb_logger({"project": "fxai", "mode": "offline"})  # wandb.init runs lazily, in fit
>>> type(logger).__name__, isinstance(logger, WandbLogger), logger.metric_names
('RLWandbLogger', True, 'legacy')
>>> create_wandb_logger({"mode": "offline", "log_model": True})
Traceback (most recent call last):
...
ValueError: create_wandb_logger: log_model=True uploads checkpoints as W&B artifacts, which needs an online run, but mode is 'offline'. Set mode='online' (with a W&B API key) or log_model=False.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from .base import RLCallback

__all__ = ["create_wandb_logger", "RLWandbCallback", "RLWandbLogger", "episode_frames", "WANDB_MODES",
           "METRIC_NAMES", "ADDED_METRICS"]

WANDB_MODES = ("offline", "online", "disabled")
#: ``legacy`` (default: the legacy callback's names and rows) or ``lightning`` (Lightning's names).
METRIC_NAMES = ("legacy", "lightning")
#: Prefixes of what the native port logs beyond the legacy callback's metrics (in either mode).
ADDED_METRICS = ("charts/", "videos/")
_LOGGER_OPTIONS = ("project", "name", "mode", "dir", "config", "tags", "notes", "group", "log_model", "id",
                   "metric_names")


def _check_metric_names(value: str, who: str) -> str:
    if value not in METRIC_NAMES:
        raise ValueError(f"{who} metric_names must be one of {', '.join(map(repr, METRIC_NAMES))}; got {value!r}.")
    return value


def _lightning_names() -> frozenset[str]:
    """Lightning's copies of the legacy metrics (``train/*``, ``val/*``) and its ``epoch``: dropped by the logger
    in ``legacy`` mode, where the callback logs the legacy names itself."""
    from ..lightning_host import _EVAL_LOGGED, LOGGED_METRICS

    return frozenset([*LOGGED_METRICS.values(), *_EVAL_LOGGED.values(), "epoch"])


class RLWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with a ``metric_names`` mode (see the module docstring). In ``legacy`` mode
    it logs no Lightning copies of the legacy metrics, no hyperparameters (the run config is the legacy one,
    set by ``RLWandbCallback``) and sets no ``trainer/global_step`` x-axis; ``lightning`` mode is ``WandbLogger``."""

    def __init__(self, *args: Any, metric_names: str = "legacy", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.metric_names = _check_metric_names(metric_names, "create_wandb_logger")
        self._dropped = _lightning_names() if metric_names == "legacy" else frozenset()
        self._row: dict[str, Any] | None = None  # the cycle's legacy row, until the epoch's metrics join it
        self._early: dict[str, Any] = {}  # metrics logged during the cycle (validation), for its row

    @property
    @rank_zero_experiment
    def experiment(self):  # noqa: D401 - WandbLogger's property, with two differences
        """The logger's own W&B run. Unlike ``WandbLogger`` it never takes over a run another callback or logger
        left open in this process (it starts a new one, as the legacy callback does), and in ``legacy`` mode it
        sets no ``trainer/global_step`` x-axis (``define_metric`` would add that key to every row)."""
        if self._experiment is None:
            import wandb

            from legacy_callbacks.wandb_callback import _reinit_value

            self._experiment = wandb.init(**{**self._wandb_init, "reinit": _reinit_value(wandb)})
            if self.metric_names == "lightning" and getattr(self._experiment, "define_metric", None):
                self._experiment.define_metric("trainer/global_step")
                self._experiment.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.metric_names == "lightning":
            super().log_metrics(metrics, step)
            return
        # Legacy rows: Lightning's copies dropped; the rest joins the cycle's row (staged by RLWandbCallback at the
        # end of the cycle, before Lightning logs the epoch's metrics), never a row of its own.
        kept = {k: v for k, v in metrics.items() if k not in self._dropped}
        if self._row is not None:
            self._row.update(kept)
            self.flush_row()
        else:
            self._early.update(kept)

    def stage_row(self, row: Mapping[str, Any]) -> None:
        """The cycle's legacy row: sent with what Lightning logs at the end of the epoch (or at the next flush)."""
        self.flush_row()
        self._row = {**row, **self._early}
        self._early = {}

    def flush_row(self) -> None:
        """Send the staged row, if any."""
        row, self._row = self._row, None
        if row:
            self.experiment.log(row)

    def finalize(self, status: str) -> None:
        self.flush_row()
        if self._early and self.metric_names == "legacy":
            early, self._early = self._early, {}
            self.experiment.log(early)
        super().finalize(status)

    def log_hyperparams(self, params: Any) -> None:
        if self.metric_names == "lightning":
            super().log_hyperparams(params)


def create_wandb_logger(config: Mapping[str, Any] | None = None, **options: Any) -> WandbLogger:
    """Lightning's ``WandbLogger`` from a mapping (the legacy ``wandb`` section's keys) and/or keywords.

    Options: ``project`` (default ``"fxai"``), ``name``, ``mode`` (``"offline"`` default, ``"online"``,
    ``"disabled"``), ``dir`` (where ``wandb/`` goes, default the working directory), ``config``
    (extra run config), ``tags``, ``notes``, ``group``, ``id``, ``log_model`` (online only),
    ``metric_names`` (``"legacy"`` default, or ``"lightning"``; give ``RLWandbCallback`` the same).
    The mode is passed to ``wandb.init`` for this run only: unlike ``WandbLogger(offline=True)``, it
    does not set ``WANDB_MODE`` for the whole process.
    """
    merged = {**dict(config or {}), **options}
    unknown = sorted(set(merged) - set(_LOGGER_OPTIONS))
    if unknown:
        hint = (" log_episodes is an option of RLWandbCallback(log_episodes=...)." if "log_episodes" in unknown else "")
        raise ValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for create_wandb_logger; "
                         f"accepted options: {', '.join(_LOGGER_OPTIONS)}.{hint}")
    mode = merged.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise ValueError(f"create_wandb_logger mode must be one of {', '.join(map(repr, WANDB_MODES))}; got {mode!r}.")
    log_model = merged.get("log_model", False)
    if log_model not in (False, True, "all"):
        raise ValueError(f"create_wandb_logger log_model must be False, True or 'all'; got {log_model!r}.")
    if log_model and mode != "online":
        raise ValueError(f"create_wandb_logger: log_model={log_model!r} uploads checkpoints as W&B artifacts, which "
                         f"needs an online run, but mode is {mode!r}. Set mode='online' (with a W&B API key) or "
                         f"log_model=False.")
    directory = merged.get("dir")
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    init_kwargs = {key: merged[key] for key in ("tags", "notes", "group", "config") if merged.get(key) is not None}
    return RLWandbLogger(project=merged.get("project", "fxai"), name=merged.get("name"), id=merged.get("id"),
                         save_dir=os.fspath(directory) if directory is not None else ".", log_model=log_model,
                         mode=mode, metric_names=merged.get("metric_names", "legacy"), **init_kwargs)


class RLWandbCallback(RLCallback):
    """Episode logs, action/value histograms and (with ``moviepy``) episode videos into the trainer's ``WandbLogger``.

    Args:
        log_episodes: log ``episode/reward`` and ``episode/length`` of every finished episode.
        histograms: log the action and value histograms once per cycle.
        video_every_n_cycles: log a greedy episode's video every this many cycles (``None``: never).
        video_max_steps: at most this many frames per video.
        video_fps: frames per second of the video.
        metric_names: ``"legacy"`` (default): the legacy callback's metric names, rows and run config;
            ``"lightning"``: Lightning's names (see the module docstring). Give the logger the same.
    """

    def __init__(self, log_episodes: bool = True, histograms: bool = True, video_every_n_cycles: int | None = 10,
                 video_max_steps: int = 200, video_fps: int = 30, metric_names: str = "legacy"):
        super().__init__()
        self.metric_names = _check_metric_names(metric_names, "RLWandbCallback")
        if video_every_n_cycles is not None and (isinstance(video_every_n_cycles, bool)
                                                 or not isinstance(video_every_n_cycles, int) or video_every_n_cycles < 1):
            raise ValueError(f"RLWandbCallback video_every_n_cycles must be None or a positive int; "
                             f"got {video_every_n_cycles!r}.")
        self.log_episodes = log_episodes
        self.histograms = histograms
        self.video_every_n_cycles = video_every_n_cycles
        self.video_max_steps = video_max_steps
        self.video_fps = video_fps
        self.videos_enabled = video_every_n_cycles is not None
        self._warned: set[str] = set()
        self._logger: WandbLogger | None = None
        self._actions: list[int] = []
        self._episodes: list[tuple[float, int]] = []
        if not log_episodes:
            self.on_rl_episode_end = None  # the RL bus skips a hook set to None
        if not histograms:
            self.on_rl_step_end = None

    # -- hot path -----------------------------------------------------------------------------
    def on_rl_step_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        self._actions.extend(payload["actions"])

    def on_rl_episode_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", payload: dict) -> None:
        self._episodes.append((float(payload["reward"]), int(payload["length"])))

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            names = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "none"
            raise ValueError(f"RLWandbCallback logs to the trainer's WandbLogger, but the trainer has none "
                             f"(loggers: {names}). Pass logger=create_wandb_logger(...) to fit() or the Trainer.")
        self._logger = loggers[0]
        names = getattr(self._logger, "metric_names", None)
        if names is not None and names != self.metric_names:
            raise ValueError(f"RLWandbCallback(metric_names={self.metric_names!r}) and its logger's metric_names={names!r} "
                             f"differ; pass create_wandb_logger(metric_names={self.metric_names!r}).")
        if names is None and self.metric_names == "legacy":
            self._warn_once("plain", "RLWandbCallback logs the legacy metric names, and this plain WandbLogger also logs "
                                     "Lightning's copies (train/*, val/*) in rows of their own; use "
                                     "create_wandb_logger(...) for runs that look like the legacy callback's.")
        if self.videos_enabled and importlib.util.find_spec("moviepy") is None:
            self._warn_once("moviepy", "RLWandbCallback: moviepy is not installed, so episode videos are not logged "
                                       "(pip install moviepy to enable them; other W&B logging is unaffected).")
            self.videos_enabled = False

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        config = getattr(pl_module, "config", None)
        if self.metric_names == "legacy" and trainer.is_global_zero and self._logger is not None and config is not None:
            run = self._logger.experiment
            # The legacy run config: the train config, then the config option (already in the run) on top.
            given = {k: v for k, v in dict(run.config).items() if not str(k).startswith("_")}
            run.config.update({**config.to_dict(), **given}, allow_val_change=True)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        actions, episodes = self._actions, self._episodes
        self._actions, self._episodes = [], []
        if not trainer.is_global_zero or self._logger is None:
            return
        import wandb

        run = self._logger.experiment
        legacy = self.metric_names == "legacy"
        step = {} if legacy else {"trainer/global_step": trainer.global_step}
        if legacy and hasattr(self._logger, "flush_row"):
            self._logger.flush_row()  # the previous cycle's row goes before this cycle's episodes
        for reward, length in episodes:
            run.log({"episode/reward": reward, "episode/length": length, **step})
        charts: dict[str, Any] = {}
        if self.histograms:
            if actions:
                n_actions = getattr(getattr(pl_module, "core", None), "n_actions", None) or (max(actions) + 1)
                counts, edges = np.histogram(actions, bins=np.arange(n_actions + 1) - 0.5)
                charts["charts/action_distribution"] = wandb.Histogram(np_histogram=(counts, edges))
            values = _rollout_values(pl_module)
            if values is not None and values.size:
                charts["charts/value_estimates"] = wandb.Histogram(values)
        cycle = getattr(getattr(pl_module, "core", None), "cycle", trainer.current_epoch)
        if self.videos_enabled and (cycle + 1) % self.video_every_n_cycles == 0:
            try:
                frames = episode_frames(pl_module, self.video_max_steps)
            except Exception as exc:  # an environment that cannot render must not end training
                self._warn_once("render", f"RLWandbCallback: cannot render episodes of this environment "
                                          f"({type(exc).__name__}: {exc}); videos are off for this run.")
                self.videos_enabled = False
            else:
                charts["videos/episode"] = wandb.Video(frames, fps=self.video_fps, format="mp4")
        if legacy:  # the legacy callback's one row per cycle: its metrics dict, exact values (+ the charts)
            metrics = pl_module.cycle_metrics() if callable(getattr(pl_module, "cycle_metrics", None)) else {}
            if metrics or charts:
                if hasattr(self._logger, "stage_row"):
                    self._logger.stage_row({**metrics, **charts})
                else:
                    run.log({**metrics, **charts})
        elif charts:
            run.log({**charts, **step})

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.is_global_zero and hasattr(self._logger, "flush_row"):
            self._logger.flush_row()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)


def _rollout_values(pl_module: "pl.LightningModule") -> np.ndarray | None:
    """The critic's values of the last rollout (computed during collection), flattened; None if unknown."""
    core = getattr(pl_module, "core", None)
    if core is None:
        return None
    public = getattr(core, "rollout_values", None)
    # Until PPOCore exposes its rollout buffer publicly, read the buffer the core filled during collection.
    values = public() if callable(public) else getattr(core, "_buf_values", None)
    return None if values is None else torch.as_tensor(values).detach().reshape(-1).numpy().astype(np.float64)


def episode_frames(pl_module: "pl.LightningModule", max_steps: int = 200, height: int = 64) -> np.ndarray:
    """Frames ``(T, 3, H, W)`` uint8 of one greedy episode of the module's environment, on a fresh env.

    Gymnasium environments render themselves (``render_mode="rgb_array"``); the FX environment has
    no renderer, so each frame draws the episode's cumulative reward so far (white) over the
    position taken at each step (green long, red short, grey flat).
    """
    config = pl_module.config
    policy = pl_module.policy
    device = next(policy.parameters()).device
    if config.env != "fx":
        import gymnasium as gym

        env = gym.make(config.env, render_mode="rgb_array")
        obs, _ = env.reset(seed=config.seed)
        frames = [env.render()]
        for _ in range(max_steps - 1):
            with torch.no_grad():
                action = int(policy(torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)[None]).argmax(-1))
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            if terminated or truncated:
                break
        env.close()
        return np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)).astype(np.uint8)
    from ..envs import make_vector_env

    env = make_vector_env(config, 1, seed=config.seed)
    obs, _ = env.reset(seed=config.seed)
    returns, actions = [0.0], []
    for _ in range(max_steps):
        with torch.no_grad():
            action = policy(torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)).argmax(-1).cpu().numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        returns.append(returns[-1] + float(reward[0]))
        actions.append(int(action[0]))
        if terminated[0] or truncated[0]:
            break
    env.close()
    return _chart_frames(np.asarray(returns[1:]), actions, height)


def _chart_frames(returns: np.ndarray, actions: list[int], height: int) -> np.ndarray:
    steps = len(returns)
    width = max(steps, 32)
    low, high = float(returns.min()), float(returns.max())
    span = high - low if high > low else 1.0
    rows = (height - 9) - np.round((returns - low) / span * (height - 10)).astype(int)
    colours = {0: (220, 0, 0), 1: (128, 128, 128), 2: (0, 200, 0)}  # FX actions: 0 short, 1 flat, 2 long
    canvas = np.zeros((steps, 3, height, width), dtype=np.uint8)
    for t in range(steps):
        canvas[t:, :, rows[t], t] = 255
        canvas[t:, :, height - 6:, t] = np.asarray(colours.get(actions[t] % 3, (128, 128, 128)), dtype=np.uint8)[:, None]
    return canvas
