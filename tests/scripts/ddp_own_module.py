"""2-process CPU DDP fits of a user's own LightningModule with legacy callbacks, for ``tests/test_own_module_ddp.py``.

Usage: ``python ddp_own_module.py OUT_DIR`` (MASTER_ADDR/MASTER_PORT from the environment). Lightning re-executes
this script for rank 1 (``LOCAL_RANK=1``); both processes then run the same three fits in turn:

* ``progress``: the bundled module through ``fxai_compat.fit(..., enable_progress_bar=True)`` (the run's progress
  display; stdout is a pipe, so one plain line per cycle);
* ``zero``: ``tests/user_modules.PPOModule`` (imports nothing of fxai_compat) on a ``wrap_env``'d CartPole vector
  env (and an unwrapped CartPole for its validation loop), a plain ``pl.Trainer(strategy="ddp", devices=2)``,
  one ``LegacyCallbackAdapter(Recorder())`` (``ranks="zero"``) and a ``ModelCheckpoint`` every epoch;
* ``all``: the same with ``ranks="all"`` (last, so each process exits right after a user's module's fit).

Each rank seeds its module differently (``seed=10 + rank``), so the two ranks play different episodes. The env's own
episodes are recorded underneath the wrapper (:class:`VectorTruth`); its rewards are uneven (:class:`AngleReward`).
Every rank writes ``OUT_DIR/rank<r>.json``: per own-module fit what the recorder saw, what the env did, the optimizer
steps and epochs; for ``progress`` the lines its progress display showed and the run's counters.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the user-style modules

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from user_modules import PPOModule, make_cartpole  # noqa: E402

from fxai_compat import LegacyCallbackAdapter, TrainConfig, fit, wrap_env  # noqa: E402

EPOCHS = 3
N_ENVS = 2  # the CartPole vector env of each rank (SAME_STEP autoreset)
#: Per rank: 2 envs x 32 vector steps = 64 transitions an epoch (SAME_STEP: every step is one), 2 passes of
#: batches of 32 = 4 optimizer steps an epoch, on both ranks alike (DDP needs the same number of batches).
MODULE_OPTIONS = {"steps_per_epoch": 32, "batch_size": 32, "nb_optim_iters": 2, "hidden": 8}
PROGRESS_CONFIG = {"n_envs": 2, "n_steps": 16, "episode_length": 12, "cycles": 3, "update_epochs": 1,
                   "minibatch_size": 32, "eval_every": 0, "checkpoint_every": 0, "hidden_sizes": (8,),
                   "data_length": 500, "seed": 3}


class AngleReward(gym.vector.VectorWrapper):
    """CartPole's reward made uneven (1 - |pole angle|), so that an episode's return says more than its length."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        return obs, 1.0 - np.abs(np.asarray(obs)[:, 2]).astype(np.float64), terminated, truncated, infos


class VectorTruth(gym.vector.VectorWrapper):
    """What a SAME_STEP vector env really did, below the wrapper under test: its finished episodes."""

    def __init__(self, env):
        super().__init__(env)
        n = env.num_envs
        self.returns, self.lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.finished: list[list] = []  # [env_index, return, length], in order
        self.transitions = 0

    def reset(self, *, seed=None, options=None):
        self.returns[:], self.lengths[:] = 0.0, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        out = self.env.step(actions)
        self.returns += np.asarray(out[1], dtype=np.float64)
        self.lengths += 1
        self.transitions += self.num_envs
        for i in np.flatnonzero(np.logical_or(out[2], out[3])):
            self.finished.append([int(i), float(self.returns[i]), int(self.lengths[i])])
            self.returns[i], self.lengths[i] = 0.0, 0
        return out


class Recorder:
    """A legacy callback recording what it is given, in the process it runs in."""

    def __init__(self):
        self.events: Counter = Counter()
        self.episodes: list[list] = []  # [env_index, reward, length, trainer.num_episodes at the event]
        self.steps: list[int] = []  # step_info["total_timesteps"]
        self.updates: list[int] = []
        self.rollouts: list[dict] = []
        self.cycles: list[dict] = []
        self.saved: list[str] = []
        self.evals: list[float] = []  # eval_results["val_reward"]: the module's validation (its val env not wrapped)

    def on_training_start(self, trainer):
        self.events["on_training_start"] += 1

    def on_episode_start(self, trainer, episode_info):
        self.events["on_episode_start"] += 1

    def on_rollout_start(self, trainer):
        self.events["on_rollout_start"] += 1

    def on_step_start(self, trainer, step):
        self.events["on_step_start"] += 1

    def on_step_end(self, trainer, step_info):
        self.events["on_step_end"] += 1
        self.steps.append(step_info["total_timesteps"])

    def on_episode_end(self, trainer, episode_info):
        self.events["on_episode_end"] += 1
        self.episodes.append([episode_info["env_index"], episode_info["reward"], episode_info["length"],
                              trainer.num_episodes])

    def on_rollout_end(self, trainer, rollout_info):
        self.events["on_rollout_end"] += 1
        self.rollouts.append(dict(rollout_info))

    def on_update_start(self, trainer, update_info):
        self.events["on_update_start"] += 1

    def on_update_end(self, trainer, update_info):
        self.events["on_update_end"] += 1
        self.updates.append(update_info["update_index"])

    def on_evaluation_start(self, trainer):
        self.events["on_evaluation_start"] += 1

    def on_evaluation_end(self, trainer, eval_results):
        self.events["on_evaluation_end"] += 1
        self.evals.append(eval_results["val_reward"])

    def on_metrics_computed(self, trainer, metrics):
        self.events["on_metrics_computed"] += 1
        self.cycles.append({"cycle": trainer.cycle, "metrics_cycle": metrics["cycle"],
                            "timesteps_total": metrics["timesteps_total"], "episodes_total": metrics["episodes_total"],
                            "episode_reward_mean": metrics["episode_reward_mean"],
                            "total_timesteps": trainer.total_timesteps, "num_episodes": trainer.num_episodes})

    def on_cycle_complete(self, trainer, metrics):
        self.events["on_cycle_complete"] += 1

    def on_checkpoint_saved(self, trainer, checkpoint_path):
        self.events["on_checkpoint_saved"] += 1
        self.saved.append(os.path.basename(checkpoint_path))

    def on_training_end(self, trainer):
        self.events["on_training_end"] += 1

    def facts(self) -> dict:
        return {"events": dict(self.events), "episodes": self.episodes, "steps": self.steps, "updates": self.updates,
                "rollouts": self.rollouts, "cycles": self.cycles, "saved": self.saved,
                "evals": self.evals}


def own_module_fit(out: Path, rank: int, ranks: str) -> dict:
    truth = VectorTruth(AngleReward(make_cartpole(N_ENVS, "same_step")))
    module = PPOModule(wrap_env(truth), make_cartpole(None), seed=10 + rank, val_episodes=1, **MODULE_OPTIONS)
    recorder = Recorder()
    trainer = pl.Trainer(max_epochs=EPOCHS, strategy="ddp", devices=2, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(out / ranks),
                         callbacks=[LegacyCallbackAdapter(recorder, ranks=ranks),
                                    ModelCheckpoint(dirpath=str(out / ranks / "ckpt"), every_n_epochs=1,
                                                    save_top_k=-1, filename="epoch-{epoch}")])
    trainer.fit(module)
    return {"recorder": recorder.facts(), "truth": truth.finished, "transitions": truth.transitions,
            "module_episodes": [list(e) for e in module.episode_log], "global_step": trainer.global_step,
            "current_epoch": trainer.current_epoch, "world_size": trainer.world_size,
            "files": sorted(p.name for p in (out / ranks / "ckpt").iterdir()) if rank == 0 else None}


def progress_fit(out: Path) -> dict:
    config = TrainConfig(**PROGRESS_CONFIG, checkpoint_dir=str(out / "progress" / "ckpt"))
    trainer = fit(config, [], strategy="ddp", devices=2, accelerator="cpu", logger=False, enable_progress_bar=True,
                  default_root_dir=str(out / "progress"))
    bar = trainer.progress_bar_callback
    core = trainer.lightning_module.core
    return {"bar": type(bar).__name__, "disabled": bar.is_disabled, "lines": bar.progress.lines,
            "rank_timesteps": core.total_timesteps, "cycles_completed": core.cycles_completed}


def main(out: Path) -> None:
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    result: dict = {"rank": rank}
    try:
        result["progress"] = progress_fit(out)
        result["zero"] = own_module_fit(out, rank, "zero")
        # Last: the process ends right after this fit (where gloo's exit race showed, see adapter/ddp.py).
        result["all"] = own_module_fit(out, rank, "all")
    finally:
        (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":  # (the test imports this file for its sizes: no side effects above)
    warnings.filterwarnings("ignore")
    main(Path(sys.argv[1]))
