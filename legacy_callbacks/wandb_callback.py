"""Logs episodes and per-cycle metrics to a Weights & Biases run (offline by default: no network, no API key)."""

from .base import BaseCallback

WANDB_MODES = ("offline", "disabled", "online")


class WandbCallback(BaseCallback):
    def __init__(self, project="fxai", mode="offline", dir=None, name=None, config=None, log_episodes=True):
        if mode not in WANDB_MODES:
            raise ValueError(f"WandbCallback mode must be one of {', '.join(map(repr, WANDB_MODES))}; got {mode!r}.")
        self.project = project
        self.mode = mode
        self.dir = dir
        self.name = name
        self.config = dict(config or {})
        self.log_episodes = log_episodes
        self.run = None

    def on_training_start(self, trainer):
        # Imported here: wandb takes a while to import and only runs that log need it.
        import wandb

        if self.run is not None:
            self.run.finish()
        run_config = dict(trainer.config)
        run_config.update(self.config)
        self.run = wandb.init(
            project=self.project,
            mode=self.mode,
            dir=self.dir,
            name=self.name,
            config=run_config,
            # Each callback owns its run, so several runs (Optuna trials, parity runs) can share
            # a process without finishing or reusing each other's.
            reinit=_reinit_value(wandb),
        )

    def on_episode_end(self, episode_info):
        if self.log_episodes:
            self._require_run().log({
                "episode/reward": episode_info["reward"],
                "episode/length": episode_info["length"],
            })

    def on_metrics_computed(self, trainer, metrics):
        # No explicit step: W&B needs steps to increase across all log calls, including the
        # episode ones; timesteps_total inside the dict is the x-axis to plot against.
        self._require_run().log(dict(metrics))

    def on_training_end(self):
        if self.run is not None:
            self.run.finish()

    def _require_run(self):
        if self.run is None:
            raise RuntimeError("WandbCallback has no run: on_training_start must fire before other events.")
        return self.run


def _reinit_value(wandb):
    # "create_new" exists from wandb 0.19; older releases only know True (finish the previous run).
    try:
        major, minor = (int(part) for part in wandb.__version__.split(".")[:2])
    except ValueError:
        return "create_new"
    return "create_new" if (major, minor) >= (0, 19) else True
