"""What a run leaves behind: the end of ``train`` names every output (the W&B run folders, native and legacy, with
the ``wandb sync`` command; the Optuna storage and study), and the noise a user cannot act on is gone (Lightning's
litlogger tip, Optuna's "A new study created", the moviepy warning for an environment that cannot render)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

EXE = os.path.join(os.path.dirname(sys.executable), "fxai-compat")


def _run_file(tmp_path, callbacks):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                  "minibatch_size": 32, "eval_every": 0, "checkpoint_every": 1, "hidden_sizes": [8],
                  "data_length": 1000, "checkpoint_dir": str(tmp_path / "run" / "checkpoints")},
        "callbacks": callbacks}))
    return str(path)


def test_the_end_of_train_names_every_output_and_the_noise_is_gone(tmp_path):
    storage = f"sqlite:///{tmp_path / 'run' / 'optuna.db'}"
    path = _run_file(tmp_path, {
        "wandb": {"mode": "offline", "dir": str(tmp_path / "run" / "legacy_wandb"), "project": "p"},
        "checkpoint": {"save_dir": str(tmp_path / "run" / "best")},
        "optuna": {"study_name": "demo", "storage": storage}})
    # A subprocess: the command as a user runs it, its real stdout and stderr (Lightning and Optuna log there).
    done = subprocess.run([EXE, "train", "--config", path], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_SILENT": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    out, err = done.stdout, done.stderr
    folder = re.search(r"^W&B run \(WandbCallback\): (\S+); upload it with: wandb sync (\S+)$", out, re.M)
    assert folder and folder[1] == folder[2], out
    run_folder = Path(folder[1])
    assert run_folder.parent == tmp_path / "run" / "legacy_wandb" / "wandb" and run_folder.name.startswith("offline-run-")
    assert list(run_folder.glob("run-*.wandb"))  # the folder with the metrics, not its files/ subfolder
    assert f"Optuna study 'demo' in {storage}; open it with: optuna-dashboard {storage}" in out
    assert f"checkpoints: {tmp_path / 'run' / 'checkpoints'} (2 periodic)" in out
    assert f"CheckpointCallback: {tmp_path / 'run' / 'best'}" in out
    assert f"CSV logs: {tmp_path / 'run' / 'lightning_logs' / 'version_0' / 'metrics.csv'}" in out
    assert "litlogger" not in out + err and "A new study created" not in out + err


def test_the_native_wandb_run_folder_is_named(tmp_path, capsys):
    from fxai_compat.cli import main

    path = _run_file(tmp_path, {"wandb": {"mode": "offline", "dir": str(tmp_path / "run"), "impl": "native"}})
    assert main(["train", "--config", path, "--set", "trainer.enable_progress_bar=false"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"^W&B run \(native WandbLogger\): (\S+); upload it with: wandb sync \1$", out, re.M)
    assert found and Path(found[1]).parent == tmp_path / "run" / "wandb" and list(Path(found[1]).glob("run-*.wandb"))


@pytest.mark.skipif(importlib.util.find_spec("pygame") is not None,
                    reason="pygame is installed, so CartPole can render and the moviepy hint is relevant")
def test_no_moviepy_warning_for_an_environment_that_cannot_render(tmp_path):
    from fxai_compat import fit
    from fxai_compat.callbacks.wandb import RLWandbCallback, create_wandb_logger
    from tests.conftest import tiny

    config = tiny(tmp_path, env="CartPole-v1", cycles=2, eval_every=0, checkpoint_every=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = create_wandb_logger(mode="offline", dir=str(tmp_path))
        fit(config, [RLWandbCallback(video_every_n_cycles=1)], logger=logger)
        logger.experiment.finish()
    assert not [w for w in caught if "moviepy" in str(w.message)]


def test_optuna_study_lines_are_quiet_on_a_new_and_an_existing_study(tmp_path, capfd):
    import optuna

    from fxai_compat.run_summary import quiet_noise

    quiet_noise()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for _ in range(2):  # first creates the study, then finds it
        optuna.create_study(storage=storage, study_name="quiet", load_if_exists=True)
    out, err = capfd.readouterr()
    assert "A new study created" not in out + err and "Using an existing study" not in out + err
