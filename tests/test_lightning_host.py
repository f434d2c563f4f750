"""The Lightning host against the legacy loop: same run, same numbers, real Lightning on tiny configs.

Covers ``fit`` / ``PPOLightningModule`` / ``CycleCheckpoint`` / ``RLDDPStrategy``: parameter, optimizer,
metric, evaluation and checkpoint parity with ``LegacyTrainer``; metrics logged under the documented
names (CSV, ``callback_metrics``, a monitoring ``ModelCheckpoint``); sanity-check validation without
side effects; periodic checkpoints and what they restore; resume on both hosts and across hosts;
DDP on two CPU processes; trainer kwargs pass-through; and the hook interleaving the module
docstring documents, recorded from a real run.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from conftest import normalize, same, tiny
from fxai_compat import LOGGED_METRICS, LegacyCallbackAdapter, LegacyTrainer, RL_EVENTS, fit, read_training_checkpoint
from fxai_compat.legacy_host import checkpoint_filename
from fxai_compat.lightning_host import NotifyingCheckpointIO
from fxai_compat.ppo import METRIC_KEYS
from legacy_callbacks.base import EVENTS

TOL = 1e-6
SCRIPTS = Path(__file__).parent / "scripts"
_BY_LOGGED_NAME = {name: key for key, name in LOGGED_METRICS.items()}


# -- recorders ------------------------------------------------------------------------------------

class LegacyRecorder:
    """A legacy callback recording each cycle's metrics and each evaluation's results."""

    def __init__(self):
        self.metrics: list[dict] = []
        self.evals: list[dict] = []

    def on_cycle_complete(self, metrics):
        self.metrics.append(metrics)

    def on_evaluation_end(self, eval_results):
        self.evals.append(eval_results)


class LightningRecorder(pl.Callback):
    """Per cycle: the module's exact logged values as a legacy ``metrics`` dict, the evaluation results,
    and (with ``snapshots=True``) copies of parameters, optimizer and RL state taken just before
    ``ModelCheckpoint`` runs (ordinary callbacks come first at ``on_train_epoch_end``)."""

    def __init__(self, snapshots: bool = False):
        self.metrics: list[dict] = []
        self.evals: list[dict] = []
        self.snapshots: dict[int, dict] = {}
        self.take_snapshots = snapshots

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.evals.append(dict(pl_module.last_eval_results))

    def on_train_epoch_end(self, trainer, pl_module):
        self.metrics.append({_BY_LOGGED_NAME[name]: value for name, value in pl_module.exact_logged.items()
                             if name in _BY_LOGGED_NAME})
        if self.take_snapshots:
            self.snapshots[pl_module.core.cycle] = {
                "model": copy.deepcopy(pl_module.policy.state_dict()),
                "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
                "rl_state": copy.deepcopy(pl_module.core.state_dict())}


class StopLightningAfter(pl.Callback):
    """Stops the run at the end of the given cycle (0-based), as a user's callback would."""

    def __init__(self, cycle: int):
        self.cycle = cycle

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.cycle:
            trainer.should_stop = True


class StopLegacyAfter:
    def __init__(self, cycle: int):
        self.cycle = cycle

    def on_cycle_complete(self, metrics):
        return False if metrics["cycle"] == self.cycle else None


# -- comparisons ----------------------------------------------------------------------------------

def max_param_diff(model_a: torch.nn.Module, model_b: torch.nn.Module) -> float:
    pairs = list(zip(model_a.state_dict().items(), model_b.state_dict().items()))
    assert [a[0] for a in pairs] == [b[0] for b in pairs] and pairs
    return max((a[1] - b[1]).abs().max().item() for a, b in pairs)


def assert_close_tree(a, b, where="", tol=TOL):
    """Tensors within ``tol`` (exactly equal for non-float tensors), everything else equal, recursively."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=0, atol=tol, equal_nan=True), f"{where}: max diff {(a - b).abs().max()}"
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_close_tree(a[key], b[key], f"{where}.{key}", tol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_tree(x, y, f"{where}[{i}]", tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_metrics(legacy: list[dict], lightning: list[dict]):
    assert len(legacy) == len(lightning), (len(legacy), len(lightning))
    for cycle, (a, b) in enumerate(zip(legacy, lightning)):
        assert set(METRIC_KEYS) <= a.keys(), f"cycle {cycle}: legacy metrics lack {set(METRIC_KEYS) - a.keys()}"
        assert a.keys() == b.keys(), f"cycle {cycle}: {sorted(a)} vs {sorted(b)}"
        assert same(normalize(a), normalize(b), TOL), f"cycle {cycle}:\nlegacy    {a}\nlightning {b}"


def cycle_files(checkpoint_dir) -> list[str]:
    path = Path(checkpoint_dir)
    return sorted(p.name for p in path.glob("cycle-*.ckpt")) if path.exists() else []


def due_files(cfg) -> list[str]:
    return [checkpoint_filename(c - 1) for c in range(1, cfg.cycles + 1) if cfg.checkpoint_due(c)]


# -- shared reference runs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The default tiny config run uninterrupted on both hosts (4 cycles, evaluation and checkpoint due on
    cycles 2 and 4); read-only for the tests that use it."""
    root = tmp_path_factory.mktemp("reference")
    legacy_cfg, lightning_cfg = tiny(root / "legacy"), tiny(root / "lightning")
    legacy_rec, lightning_rec = LegacyRecorder(), LightningRecorder(snapshots=True)
    legacy = LegacyTrainer(legacy_cfg, [legacy_rec]).train()
    pl_trainer = fit(lightning_cfg, [lightning_rec])
    return {"legacy": legacy, "legacy_cfg": legacy_cfg, "legacy_rec": legacy_rec,
            "pl_trainer": pl_trainer, "lightning_cfg": lightning_cfg, "lightning_rec": lightning_rec}


# -- parity with the legacy loop ------------------------------------------------------------------

PARITY_CASES = {
    # the default tiny config: 2 envs, 4 cycles, evaluation and checkpoint both due on cycles 2 and 4
    "fx-eval-and-checkpoint-due": None,
    "fx-1-env": dict(n_envs=1, cycles=3, eval_every=3, checkpoint_every=2),
    "fx-4-envs": dict(n_envs=4, cycles=2, eval_every=2, checkpoint_every=1),
    "cartpole": dict(env="CartPole-v1", cycles=2, eval_every=1, checkpoint_every=2),
}


@pytest.mark.parametrize("changes", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_fit_reproduces_the_legacy_run(tmp_path, reference, changes):
    if changes is None:
        legacy_cfg, lightning_cfg = reference["legacy_cfg"], reference["lightning_cfg"]
        legacy_rec, lightning_rec = reference["legacy_rec"], reference["lightning_rec"]
        legacy, pl_trainer = reference["legacy"], reference["pl_trainer"]
    else:
        legacy_cfg, lightning_cfg = tiny(tmp_path / "legacy", **changes), tiny(tmp_path / "lightning", **changes)
        legacy_rec, lightning_rec = LegacyRecorder(), LightningRecorder()
        legacy = LegacyTrainer(legacy_cfg, [legacy_rec]).train()
        pl_trainer = fit(lightning_cfg, [lightning_rec])
    module = pl_trainer.lightning_module
    assert legacy_cfg.rollout_size % legacy_cfg.minibatch_size, "every case has a smaller last minibatch"

    assert max_param_diff(legacy.model, module.policy) <= TOL
    assert_close_tree(legacy.optimizer.state_dict(), pl_trainer.optimizers[0].state_dict(), "optimizer")
    assert len(legacy_rec.metrics) == legacy_cfg.cycles
    assert_same_metrics(legacy_rec.metrics, lightning_rec.metrics)
    n_evals = sum(legacy_cfg.eval_due(c) for c in range(1, legacy_cfg.cycles + 1))
    assert n_evals and len(legacy_rec.evals) == n_evals
    assert same(normalize(legacy_rec.evals), normalize(lightning_rec.evals), TOL), (legacy_rec.evals, lightning_rec.evals)
    assert cycle_files(legacy_cfg.checkpoint_dir) == cycle_files(lightning_cfg.checkpoint_dir) == due_files(legacy_cfg)
    for name in due_files(legacy_cfg):  # both hosts wrote the same state for the same cycle
        a = read_training_checkpoint(Path(legacy_cfg.checkpoint_dir) / name)
        b = read_training_checkpoint(Path(lightning_cfg.checkpoint_dir) / name)
        assert_close_tree(a.model, b.model, f"{name} model")
        assert_close_tree(a.rl_state, b.rl_state, f"{name} rl_state")
    counters = ("total_timesteps", "num_episodes", "cycles_completed", "num_updates")
    assert {k: getattr(legacy.core, k) for k in counters} == {k: getattr(module.core, k) for k in counters}


# -- logging ----------------------------------------------------------------------------------------

def test_metrics_reach_csv_callback_metrics_and_a_monitoring_model_checkpoint(tmp_path):
    cfg = tiny(tmp_path)  # evaluation every 2 cycles: the user's ModelCheckpoint saves at validation end
    rec = LightningRecorder()
    best = ModelCheckpoint(monitor="train/episode_reward_mean", mode="max", dirpath=str(tmp_path / "best"),
                           filename="best-{epoch}", save_top_k=-1)
    pl_trainer = fit(cfg, [rec, best])

    # CSVLogger: every documented name is a column; each cycle's row holds that cycle's values.
    assert isinstance(pl_trainer.logger, CSVLogger)
    with open(Path(pl_trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert set(LOGGED_METRICS.values()) <= set(rows[0].keys())
    train_rows = [r for r in rows if r["train/episode_reward_mean"]]
    val_rows = [r for r in rows if r["val/episode_reward_mean"]]
    assert [int(r["epoch"]) for r in train_rows] == list(range(cfg.cycles))
    assert [int(r["epoch"]) for r in val_rows] == [c - 1 for c in range(1, cfg.cycles + 1) if cfg.eval_due(c)]
    for row, metrics in zip(train_rows, rec.metrics):
        for key in METRIC_KEYS:
            assert float(row[LOGGED_METRICS[key]]) == pytest.approx(metrics[key], rel=1e-6, abs=1e-6, nan_ok=True), key
    for row, results in zip(val_rows, rec.evals):
        assert float(row["val/episode_reward_mean"]) == pytest.approx(results["episode_reward_mean"], rel=1e-6, abs=1e-6)

    # callback_metrics: every documented name, with the last cycle's values.
    last = rec.metrics[-1]
    assert set(LOGGED_METRICS.values()) <= set(pl_trainer.callback_metrics)
    for key, name in LOGGED_METRICS.items():
        assert pl_trainer.callback_metrics[name].item() == pytest.approx(last[key], rel=1e-6, abs=1e-6, nan_ok=True)

    # ModelCheckpoint(monitor=...): it wrote its files, and each file's score is the reward of the cycle
    # whose model that file holds (not the previous cycle's), so the best file is the best cycle.
    assert best.best_model_path and Path(best.best_model_path).is_file()
    assert best.best_k_models
    for path, score in best.best_k_models.items():
        cycle = read_training_checkpoint(path).rl_state["cycles_completed"] - 1
        assert score.item() == pytest.approx(rec.metrics[cycle]["episode_reward_mean"], rel=1e-6), (path, cycle)
    assert best.best_model_score.item() == pytest.approx(max(s.item() for s in best.best_k_models.values()))
    # ... and it is in addition to the periodic cycle checkpoints, not instead of them.
    assert cycle_files(cfg.checkpoint_dir) == due_files(cfg)


# -- sanity-check validation --------------------------------------------------------------------------

class SanityProbe(pl.Callback):
    """Counts evaluations and checks, at the end of the sanity check, that nothing has moved."""

    def __init__(self):
        self.sanity_batches = 0
        self.evaluations = 0
        self.at_sanity_end = None

    def setup(self, trainer, pl_module, stage):
        core = pl_module.core
        self.initial_rl_state = copy.deepcopy(core.state_dict())
        evaluate = core.evaluate

        def counting_evaluate():
            self.evaluations += 1
            return evaluate()

        core.evaluate = counting_evaluate

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            self.sanity_batches += 1

    def on_sanity_check_end(self, trainer, pl_module):
        self.at_sanity_end = {"exact_logged": dict(pl_module.exact_logged), "last_eval": pl_module.last_eval_results,
                              "evaluations": self.evaluations, "rl_state": copy.deepcopy(pl_module.core.state_dict()),
                              "callback_metrics": dict(trainer.callback_metrics)}


def test_sanity_check_validation_does_not_disturb_the_run(tmp_path, reference):
    cfg = tiny(tmp_path)
    probe, rec = SanityProbe(), LightningRecorder()
    pl_trainer = fit(cfg, [probe, rec], num_sanity_val_steps=2)

    assert probe.sanity_batches >= 1, "the sanity check ran validation_step"
    seen = probe.at_sanity_end
    assert seen["exact_logged"] == {} and seen["last_eval"] is None and seen["callback_metrics"] == {}
    assert seen["evaluations"] == 0
    assert_close_tree(seen["rl_state"], probe.initial_rl_state, "rl_state after sanity check", tol=0)
    assert probe.evaluations == sum(cfg.eval_due(c) for c in range(1, cfg.cycles + 1))

    ref = reference["pl_trainer"]
    assert max_param_diff(pl_trainer.lightning_module.policy, ref.lightning_module.policy) == 0.0
    assert_close_tree(pl_trainer.optimizers[0].state_dict(), ref.optimizers[0].state_dict(), "optimizer", tol=0)
    assert_same_metrics(reference["lightning_rec"].metrics, rec.metrics)
    assert same(normalize(reference["lightning_rec"].evals), normalize(rec.evals), 0.0)


# -- periodic checkpoints ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # restoring the reference run's file elsewhere
def test_periodic_checkpoints_hold_the_full_training_state(reference, tmp_path):
    cfg, rec = reference["lightning_cfg"], reference["lightning_rec"]
    ckpt_dir = Path(cfg.checkpoint_dir)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == due_files(cfg) + ["last.ckpt"]
    assert (ckpt_dir / "last.ckpt").resolve() == (ckpt_dir / due_files(cfg)[-1]).resolve()

    for name in due_files(cfg):
        cycle = int(name[len("cycle-"):-len(".ckpt")])
        snap = rec.snapshots[cycle]
        ckpt = read_training_checkpoint(ckpt_dir / name)
        assert_close_tree(ckpt.model, snap["model"], f"{name} model", tol=0)
        assert_close_tree(ckpt.optimizer, snap["optimizer"], f"{name} optimizer", tol=0)
        assert_close_tree(ckpt.rl_state, snap["rl_state"], f"{name} rl_state", tol=0)
        assert ckpt.rl_state["cycles_completed"] == cycle + 1
        assert ckpt.rl_state["total_timesteps"] == (cycle + 1) * cfg.rollout_size
        assert ckpt.rl_state["num_episodes"] == rec.metrics[cycle]["episodes_total"]
        assert "env" in ckpt.rl_state and "generator" in ckpt.rl_state

    # Restoring through Lightning (ckpt_path) brings back model, optimizer, counters, env and sampling RNG.
    first = due_files(cfg)[0]
    cycle = int(first[len("cycle-"):-len(".ckpt")])
    restored = fit(tiny(tmp_path, cycles=cycle + 1), ckpt_path=str(ckpt_dir / first), logger=False)
    module = restored.lightning_module
    snap = rec.snapshots[cycle]
    assert_close_tree(module.policy.state_dict(), snap["model"], "restored model", tol=0)
    assert_close_tree(restored.optimizers[0].state_dict(), snap["optimizer"], "restored optimizer", tol=0)
    assert_close_tree(module.core.state_dict(), snap["rl_state"], "restored rl_state", tol=0)
    assert module.core.env.state_dict()["t"].tolist() == snap["rl_state"]["env"]["t"].tolist()
    assert not list(Path(tmp_path / "ckpt").glob("*.ckpt")), "nothing was due in the restored run"


def test_no_checkpoint_is_written_when_none_is_due(tmp_path):
    """As in the legacy loop: fewer cycles than checkpoint_every writes no file and fires no save."""
    saved = []

    class Listener(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            NotifyingCheckpointIO.of(trainer).listeners.append(saved.append)

    legacy_cfg, cfg = tiny(tmp_path / "legacy", cycles=1), tiny(tmp_path / "lightning", cycles=1)
    LegacyTrainer(legacy_cfg).train()
    fit(cfg, [Listener()], logger=False)
    assert saved == []
    for directory in (legacy_cfg.checkpoint_dir, cfg.checkpoint_dir):
        assert not Path(directory).exists() or not any(Path(directory).iterdir())


# -- resume ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stop_after", [1, 2], ids=["stop-on-due-cycle", "stop-after-due-cycle"])
def test_lightning_resume_from_last_equals_the_uninterrupted_run(tmp_path, reference, stop_after):
    cfg = tiny(tmp_path)
    assert cfg.checkpoint_due(2) and not cfg.checkpoint_due(3)
    first = fit(cfg, [StopLightningAfter(stop_after)])
    assert first.lightning_module.core.cycles_completed == stop_after + 1
    assert cycle_files(cfg.checkpoint_dir) == ["cycle-0001.ckpt"]

    rec = LightningRecorder()
    resumed = fit(cfg, [rec], ckpt_path="last")
    assert Path(resumed.ckpt_path).name == "last.ckpt"
    module, ref = resumed.lightning_module, reference["pl_trainer"]
    assert max_param_diff(module.policy, ref.lightning_module.policy) <= TOL
    assert_close_tree(resumed.optimizers[0].state_dict(), ref.optimizers[0].state_dict(), "optimizer")
    assert_close_tree(module.core.state_dict(), ref.lightning_module.core.state_dict(), "rl_state")
    # The resumed run did cycles 2 and 3 (the last checkpoint is cycle 1's) exactly as the uninterrupted one.
    assert_same_metrics(reference["lightning_rec"].metrics[2:], rec.metrics)
    assert same(normalize(reference["lightning_rec"].evals[-1:]), normalize(rec.evals), TOL)
    assert cycle_files(cfg.checkpoint_dir) == due_files(cfg)


def test_legacy_resume_equals_the_uninterrupted_legacy_run(tmp_path, reference):
    cfg = tiny(tmp_path)
    LegacyTrainer(cfg, [StopLegacyAfter(1)]).train()
    assert cycle_files(cfg.checkpoint_dir) == ["cycle-0001.ckpt"]
    rec = LegacyRecorder()
    resumed = LegacyTrainer(cfg, [rec]).train(resume_from=Path(cfg.checkpoint_dir) / "cycle-0001.ckpt")
    ref = reference["legacy"]
    assert max_param_diff(resumed.model, ref.model) <= TOL
    assert_close_tree(resumed.optimizer.state_dict(), ref.optimizer.state_dict(), "optimizer")
    assert_same_metrics(reference["legacy_rec"].metrics[2:], rec.metrics)


def test_checkpoints_are_readable_across_hosts(reference, tmp_path):
    """Each host's cycle checkpoint reads with read_training_checkpoint and holds the same state as the other
    host's; LegacyTrainer.load_checkpoint accepts the Lightning file."""
    name = due_files(reference["legacy_cfg"])[0]
    legacy_file = Path(reference["legacy_cfg"].checkpoint_dir) / name
    lightning_file = Path(reference["lightning_cfg"].checkpoint_dir) / name
    a, b = read_training_checkpoint(legacy_file), read_training_checkpoint(lightning_file)
    assert_close_tree(a.model, b.model, "model")
    assert_close_tree(a.optimizer, b.optimizer, "optimizer")
    assert_close_tree(a.rl_state, b.rl_state, "rl_state")

    loader = LegacyTrainer(tiny(tmp_path))
    loader.load_checkpoint(lightning_file)
    assert_close_tree(loader.model.state_dict(), a.model, "model loaded from the Lightning file")
    assert_close_tree(loader.optimizer.state_dict(), a.optimizer, "optimizer loaded from the Lightning file")
    assert_close_tree(loader.core.state_dict(), a.rl_state, "rl_state loaded from the Lightning file")


def test_legacy_resume_from_a_lightning_checkpoint_equals_the_uninterrupted_run(reference, tmp_path):
    """A Lightning checkpoint counts the cycles done like the legacy one (ModelCheckpoint writes it before
    Lightning marks the epoch completed), so a legacy resume from it does the remaining cycles only."""
    name = due_files(reference["lightning_cfg"])[0]
    lightning_file = Path(reference["lightning_cfg"].checkpoint_dir) / name
    assert read_training_checkpoint(lightning_file).run_cycles_done == \
        read_training_checkpoint(Path(reference["legacy_cfg"].checkpoint_dir) / name).run_cycles_done
    rec = LegacyRecorder()
    resumed = LegacyTrainer(tiny(tmp_path), [rec]).train(resume_from=lightning_file)
    assert max_param_diff(resumed.model, reference["legacy"].model) <= TOL
    assert_same_metrics(reference["legacy_rec"].metrics[2:], rec.metrics)


# -- trainer kwargs ------------------------------------------------------------------------------------

def test_fit_passes_trainer_kwargs_through(tmp_path, reference):
    default = reference["pl_trainer"]
    assert isinstance(default.logger, CSVLogger) and default.progress_bar_callback is None

    cfg = tiny(tmp_path, cycles=3)
    pl_trainer = fit(cfg, logger=False, enable_progress_bar=True, max_epochs=2)
    assert pl_trainer.logger is None and not (tmp_path / "lightning_logs").exists()
    assert pl_trainer.progress_bar_callback is not None
    assert pl_trainer.current_epoch == 2 and pl_trainer.lightning_module.core.cycles_completed == 2
    assert cycle_files(cfg.checkpoint_dir) == ["cycle-0001.ckpt"]

    # enable_checkpointing=False turns the periodic checkpoints off; a user's ModelCheckpoint works without them.
    off = tiny(tmp_path / "off", cycles=2)
    fit(off, logger=False, enable_checkpointing=False)
    assert not Path(off.checkpoint_dir).exists()
    none_due = tiny(tmp_path / "user", cycles=2, checkpoint_every=0)
    user = ModelCheckpoint(dirpath=str(tmp_path / "user" / "mine"), filename="mine-{epoch}", save_top_k=-1)
    fit(none_due, [user], logger=False)
    assert user.best_model_path and Path(user.best_model_path).is_file()


# -- DDP ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_cpu_processes_train_one_model_on_rank_specific_environments_and_resume(tmp_path):
    script = SCRIPTS / "ddp_host_fit.py"
    env = dict(os.environ, MASTER_PORT=str(_free_port()), MASTER_ADDR="127.0.0.1")
    for launched_by_someone_else in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(launched_by_someone_else, None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], timeout=180, cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"rank"')]
    ranks = {r["rank"]: r for r in lines}
    assert sorted(ranks) == [0, 1], proc.stdout[-2000:]
    r0, r1 = ranks[0]["full"], ranks[1]["full"]
    assert r0["world_size"] == r1["world_size"] == 2 and (r0["core_rank"], r1["core_rank"]) == (0, 1)
    # One model: identical parameters after averaged updates.
    assert r0["param_sha256"] == r1["param_sha256"]
    cycles, rollout, updates_per_cycle = 4, 2 * 32, 2 * 3
    for r in (r0, r1):
        assert (r["cycles_completed"], r["total_timesteps"], r["num_updates"]) == \
            (cycles, cycles * rollout, cycles * updates_per_cycle)
        assert r["num_episodes"] == len(r["episode_returns"]) > 0
        assert r["eval_rewards"] == r0["eval_rewards"] and len(r["eval_rewards"]) == 2
    # Rank-specific environments: global env indices rank * n_envs + i, interleaved episode numbering,
    # different observations and episode returns.
    assert r0["env_indices"] == [0, 1] and r1["env_indices"] == [2, 3]
    assert all(i % 2 == 0 for i in r0["episode_indices"]) and all(i % 2 == 1 for i in r1["episode_indices"])
    assert r0["first_obs"] != r1["first_obs"]
    assert [x[1] for x in r0["episode_returns"]] != [x[1] for x in r1["episode_returns"]]
    # The logged metrics count the environments of both ranks (every rank logs the same values).
    assert r0["logged"] == r1["logged"] and len(r0["logged"]) == cycles
    for cycle, (timesteps, episodes, reward_mean) in enumerate(r0["logged"]):
        ended = [x[1] for r in (r0, r1) for x in r["episode_returns"] if x[0] == cycle]
        ended_so_far = sum(x[0] <= cycle for r in (r0, r1) for x in r["episode_returns"])
        assert (timesteps, episodes) == (2 * (cycle + 1) * rollout, ended_so_far)
        assert reward_mean == pytest.approx(sum(ended) / len(ended), rel=1e-9) if ended else math.isnan(reward_mean)
    # One checkpoint write per due cycle, by rank 0 only.
    assert r0["saved"] == ["cycle-0001.ckpt", "cycle-0003.ckpt"] and r1["saved"] == []
    assert sorted(p.name for p in (tmp_path / "full" / "ckpt").iterdir()) == ["cycle-0001.ckpt", "cycle-0003.ckpt",
                                                                              "last.ckpt"]

    # Stopped after cycle 2 and resumed from last.ckpt: each rank continues its own environments, and the
    # run ends as the uninterrupted one did.
    for rank in (0, 1):
        full, stopped, resumed = ranks[rank]["full"], ranks[rank]["stopped"], ranks[rank]["resumed"]
        assert stopped["cycles_completed"] == 2 and stopped["saved"] == (["cycle-0001.ckpt"] if rank == 0 else [])
        assert resumed["param_sha256"] == full["param_sha256"]
        for key in ("total_timesteps", "num_episodes", "cycles_completed", "num_updates"):
            assert resumed[key] == full[key], (rank, key)
        assert resumed["episode_returns"] == [x for x in full["episode_returns"] if x[0] >= 2], rank
        assert resumed["logged"] == full["logged"][2:], rank
        assert resumed["eval_rewards"] == full["eval_rewards"][1:]


# -- the documented hook interleaving ---------------------------------------------------------------------

_RECORDED_HOOKS = ("setup", "on_train_start", "on_train_end", "on_train_epoch_start", "on_train_epoch_end",
                   "on_validation_start", "on_validation_end", "on_train_batch_start", "on_train_batch_end",
                   "on_sanity_check_start", "on_sanity_check_end")


class HookRecorder(pl.Callback):
    """Records real Lightning hook calls, RL-protocol events and checkpoint writes into one list."""

    def __init__(self, records: list):
        self.records = records  # not `log`: Lightning sets `callback.log = pl_module.log` on every callback

    def _saved(self, path):
        self.records.append(("io", "saved", Path(path).name))


def _hook_recorder(hook):
    def method(self, trainer, pl_module, *args, **kwargs):
        if hook == "setup":
            NotifyingCheckpointIO.of(trainer).listeners.append(self._saved)
        sanity = " (sanity)" if trainer.sanity_checking and "validation" in hook else ""
        self.records.append(("pl", hook + sanity))
    return method


def _rl_recorder(event):
    def method(self, trainer, pl_module, payload):
        if event in ("episode_start", "episode_end"):
            self.records.append(("rl", event, payload["env_index"]))
        else:
            self.records.append(("rl", event))
    return method


for _hook in _RECORDED_HOOKS:
    setattr(HookRecorder, _hook, _hook_recorder(_hook))
for _event in RL_EVENTS:
    setattr(HookRecorder, f"on_rl_{_event}", _rl_recorder(_event))


class LegacyEventLog:
    def __init__(self, records: list):
        self.records = records


for _event in EVENTS:
    setattr(LegacyEventLog, _event, (lambda e: lambda self: self.records.append(("legacy", e)))(_event))


def expected_interleaving(cfg, *, sanity: bool, resumed_after: int = 0) -> list[tuple]:
    """The module docstring's claims, spelled out for an FX run (episodes end every episode_length vector
    steps, in all environments at once) with a recorder callback and then a legacy adapter; a resumed run
    continues after ``resumed_after`` cycles."""
    seq = [("pl", "setup"), ("legacy", "on_training_start")]
    if sanity:
        seq += [("pl", "on_sanity_check_start"), ("pl", "on_validation_start (sanity)"),
                ("pl", "on_validation_end (sanity)"), ("pl", "on_sanity_check_end")]
    seq += [("pl", "on_train_start")]
    if resumed_after:
        seq += [("legacy", "on_checkpoint_loaded")]
    else:
        for i in range(cfg.n_envs):
            seq += [("rl", "episode_start", i), ("legacy", "on_episode_start")]
    vector_step = resumed_after * cfg.n_steps
    for cycle in range(resumed_after, cfg.cycles):
        seq += [("pl", "on_train_epoch_start"), ("pl", "on_train_batch_start"),
                ("rl", "rollout_start"), ("legacy", "on_rollout_start")]
        for _ in range(cfg.n_steps):
            seq += [("rl", "step_start"), ("legacy", "on_step_start"), ("rl", "step_end"), ("legacy", "on_step_end")]
            vector_step += 1
            if vector_step % cfg.episode_length == 0:
                for i in range(cfg.n_envs):
                    seq += [("rl", "episode_end", i), ("legacy", "on_episode_end"),
                            ("rl", "episode_start", i), ("legacy", "on_episode_start")]
        seq += [("rl", "rollout_end"), ("legacy", "on_rollout_end")]
        for _ in range(cfg.update_epochs * cfg.minibatches_per_epoch):
            seq += [("rl", "update_start"), ("legacy", "on_update_start"),
                    ("rl", "update_end"), ("legacy", "on_update_end")]
        seq += [("pl", "on_train_batch_end")]
        if cfg.eval_due(cycle + 1):
            seq += [("pl", "on_validation_start"), ("legacy", "on_evaluation_start"),
                    ("pl", "on_validation_end"), ("legacy", "on_evaluation_end")]
        seq += [("pl", "on_train_epoch_end"), ("legacy", "on_metrics_computed"), ("legacy", "on_cycle_complete")]
        if cfg.checkpoint_due(cycle + 1):
            seq += [("io", "saved", checkpoint_filename(cycle)), ("legacy", "on_checkpoint_saved")]
    seq += [("pl", "on_train_end"), ("legacy", "on_training_end")]
    return seq


def assert_same_sequence(got: list, expected: list) -> None:
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    assert got == expected, (f"first difference at {first}: got {got[max(0, first - 2):first + 4]}, "
                             f"documented {expected[max(0, first - 2):first + 4]}")


def test_hook_interleaving_is_the_documented_one(tmp_path):
    # 3 cycles of 26 steps (episodes of 24 end mid-rollout), 2 minibatches per update epoch;
    # evaluation due on cycle 2, a checkpoint on cycle 3, neither on cycle 1.
    cfg = tiny(tmp_path, cycles=3, n_steps=26, update_epochs=1, minibatch_size=40, eval_every=2, checkpoint_every=3)
    records: list = []
    fit(cfg, [HookRecorder(records), LegacyCallbackAdapter(LegacyEventLog(records))], num_sanity_val_steps=1,
        logger=False)
    assert_same_sequence(records, expected_interleaving(cfg, sanity=True))

    # A resume: on_checkpoint_loaded at on_train_start; the environments continue (no new episode starts).
    longer = cfg.replace(cycles=4)
    records.clear()
    fit(longer, [HookRecorder(records), LegacyCallbackAdapter(LegacyEventLog(records))], logger=False,
        ckpt_path=str(Path(cfg.checkpoint_dir) / checkpoint_filename(2)))
    assert_same_sequence(records, expected_interleaving(longer, sanity=False, resumed_after=3))


def test_rl_checkpoints_see_what_model_checkpoint_sees_and_stay_idle_between_due_cycles(tmp_path):
    from fxai_compat.lightning_host import CycleCheckpoint

    class Probe(CycleCheckpoint):
        """Records, on each cycle, the values Lightning's own ModelCheckpoint would gather and ours."""

        def __init__(self, *args):
            super().__init__(*args)
            self.compared, self.saved_cycles = 0, []

        def on_train_epoch_end(self, trainer, pl_module):
            theirs = ModelCheckpoint._monitor_candidates(self, trainer)
            ours = self._monitor_candidates(trainer)
            assert ours.pop("cycle").item() == pl_module.core.cycle
            assert set(ours) == set(theirs) and len(ours) > 10
            for name, value in theirs.items():
                assert torch.equal(ours[name], value) and ours[name].dtype == value.dtype, name
                assert ours[name] is not trainer.callback_metrics.get(name)  # copies, as ModelCheckpoint's
            self.compared += 1
            super().on_train_epoch_end(trainer, pl_module)

        def _save_checkpoint(self, trainer, filepath):
            self.saved_cycles.append(trainer.lightning_module.core.cycle)
            super()._save_checkpoint(trainer, filepath)

    cfg = tiny(tmp_path, cycles=5, checkpoint_every=2)
    probe = Probe(cfg.checkpoint_dir, cfg.checkpoint_every)
    fit(cfg, [probe])
    assert probe.compared == 5 and probe.saved_cycles == [1, 3]
    assert sorted(os.listdir(cfg.checkpoint_dir)) == ["cycle-0001.ckpt", "cycle-0003.ckpt", "last.ckpt"]
    assert os.path.realpath(Path(cfg.checkpoint_dir) / "last.ckpt") == str(Path(cfg.checkpoint_dir) / "cycle-0003.ckpt")
