"""``log_value`` (the shortcut past ``self.log``'s fixed cost) against plain ``self.log``: same run, same values.

Each run logs through the host and the six native ports, with a CSV logger, a monitoring ``ModelCheckpoint``
and ``EarlyStopping``; everything a user can see of the logged values is compared between the two paths.
"""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from conftest import tiny
from fxai_compat import fast_paths, fit
from fxai_compat.bench import _six_native


class Seen(pl.Callback):
    """Per cycle, after every other callback: callback_metrics, logged metrics and progress-bar metrics."""

    def __init__(self):
        self.cycles = []

    def on_train_epoch_end(self, trainer, pl_module):
        as_floats = lambda d: {k: float(v) for k, v in d.items()}  # noqa: E731
        self.cycles.append((as_floats(trainer.callback_metrics), as_floats(trainer.logged_metrics),
                            as_floats(trainer.progress_bar_metrics)))


_SELF_LOG = pl.LightningModule.log


def _run(tmp_path, fast: bool, monkeypatch):
    monkeypatch.setattr(fast_paths, "FAST_PATHS", fast)
    calls = []
    original = _SELF_LOG

    def counting_log(self, name, *args, **kwargs):
        calls.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(pl.LightningModule, "log", counting_log)
    cfg = tiny(tmp_path, cycles=6, eval_every=1, checkpoint_every=3)
    built = _six_native(tmp_path / "ports")
    seen = Seen()
    best = ModelCheckpoint(dirpath=str(tmp_path / "best"), monitor="train/episode_reward_mean", mode="max",
                           save_top_k=2, filename="b-{epoch}")
    stop = EarlyStopping(monitor="val/episode_reward_mean", mode="max", patience=100)
    logger = CSVLogger(str(tmp_path / "logs"), name="run", version=0)
    try:
        trainer = fit(cfg, [*built.callbacks, best, stop, seen], logger=[logger, *built.loggers])
    finally:
        import wandb

        wandb.finish()  # the W&B port's (disabled) run must not leak into later tests of the process
    with open(tmp_path / "logs" / "run" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"seen": seen.cycles, "csv": rows, "best": {k.rsplit("/", 1)[-1]: float(v) for k, v in best.best_k_models.items()},
            "best_score": float(best.best_model_score), "stop": (stop.best_score.item(), stop.wait_count),
            "params": [p.detach().clone() for p in trainer.lightning_module.parameters()], "log_calls": calls}


def test_log_value_shows_users_what_self_log_shows_at_a_fraction_of_the_calls(tmp_path, monkeypatch):
    fast = _run(tmp_path / "fast", True, monkeypatch)
    plain = _run(tmp_path / "plain", False, monkeypatch)
    assert fast["seen"] == plain["seen"] and len(fast["seen"]) == 6
    assert fast["csv"] == plain["csv"] and len(fast["csv"]) >= 6
    assert fast["best"] == plain["best"] and fast["best_score"] == plain["best_score"]
    assert fast["stop"] == plain["stop"]
    assert all(torch.equal(a, b) for a, b in zip(fast["params"], plain["params"]))
    # Every value went through self.log on the plain path; on the fast one, each name once.
    names = set(plain["log_calls"])
    assert set(fast["log_calls"]) == names and len(names) >= 19
    assert len(fast["log_calls"]) == len(names) < len(plain["log_calls"]) / 4


def test_log_value_falls_back_to_self_log_when_options_change(tmp_path, monkeypatch):
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    class Changing(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            # Different options for the same name in the same hook: self.log refuses, so must log_value.
            fast_paths.log_value(pl_module, "x/y", 1.0, on_step=False, on_epoch=True, prog_bar=trainer.current_epoch == 1)

    with pytest.raises(MisconfigurationException, match="twice"):
        fit(tiny(tmp_path, cycles=3, eval_every=0, checkpoint_every=0), [Changing()], logger=False)


def test_plain_backward_and_step_only_when_nothing_listens_same_numbers_and_global_step(tmp_path, monkeypatch):
    from pytorch_lightning.core.optimizer import LightningOptimizer

    calls = {"backward": 0, "step": 0}
    backward, step = pl.LightningModule.manual_backward, LightningOptimizer.step

    def counting_backward(self, loss, *a, **k):
        calls["backward"] += 1
        return backward(self, loss, *a, **k)

    def counting_step(self, *a, **k):
        calls["step"] += 1
        return step(self, *a, **k)

    monkeypatch.setattr(pl.LightningModule, "manual_backward", counting_backward)
    monkeypatch.setattr(LightningOptimizer, "step", counting_step)

    class Listening(pl.Callback):
        def __init__(self, hook):
            self.count = 0
            setattr(self, hook, lambda *args: setattr(self, "count", self.count + 1))

    cfg = tiny(tmp_path, cycles=2, eval_every=0, checkpoint_every=0)
    updates = cfg.cycles * cfg.update_epochs * cfg.minibatches_per_epoch

    def run(*callbacks):
        calls.update(backward=0, step=0)
        trainer = fit(cfg, list(callbacks), logger=False)
        assert trainer.global_step == updates  # the optimizer step progress is counted either way
        return [p.detach().clone() for p in trainer.lightning_module.parameters()], dict(calls)

    plain, counted = run()
    assert counted == {"backward": 0, "step": 0}  # nothing listens: loss.backward() and optimizer.step()
    for hook in ("on_before_backward", "on_after_backward", "on_before_optimizer_step"):
        listening = Listening(hook)
        hooked, counted = run(listening)
        assert counted == {"backward": updates, "step": updates} and listening.count == updates, hook
        assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    monkeypatch.setattr(fast_paths, "FAST_PATHS", False)
    slow, counted = run()
    assert counted == {"backward": updates, "step": updates}
    assert all(torch.equal(a, b) for a, b in zip(plain, slow))
