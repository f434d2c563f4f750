"""``trainer.logger`` in the run file: csv | tensorboard | wandb | a list | Lightning's class_path/init_args form,
checked at load time (one line, exit code 2, nothing written). TensorBoard's event files are read back."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from fxai_compat.cli import main


def _run_file(tmp_path, **trainer):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                  "minibatch_size": 32, "eval_every": 2, "eval_episodes": 1, "checkpoint_every": 0,
                  "hidden_sizes": [8], "data_length": 1000, "checkpoint_dir": str(tmp_path / "run" / "checkpoints")},
        "trainer": {"enable_progress_bar": False, **trainer}}))
    return str(path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="the tensorboard extra is not installed (pip install 'fxai-compat[tensorboard]')")
def test_csv_and_tensorboard_from_set_and_the_event_files_read_back(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "--config", _run_file(tmp_path), "--set", "trainer.logger=[csv, tensorboard]"]) == 0
    out = capsys.readouterr().out
    tb_dir = tmp_path / "run" / "tensorboard" / "version_0"
    assert f"TensorBoard logs: {tb_dir}; view them with: tensorboard --logdir {tb_dir}" in out
    assert (tmp_path / "run" / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    rewards = events.Scalars("train/episode_reward_mean")
    assert [e.step for e in rewards] == [0, 1]  # one value per cycle
    assert [e.step for e in events.Scalars("val/episode_reward_mean")] == [1]
    assert [e.value for e in events.Scalars("train/cycle")] == [0.0, 1.0]


def test_class_path_form_with_init_args(tmp_path, capsys):
    path = _run_file(tmp_path, logger={"class_path": "pytorch_lightning.loggers.CSVLogger",
                                       "init_args": {"name": "mine", "flush_logs_every_n_steps": 1}})
    assert main(["train", "--config", path]) == 0
    metrics = tmp_path / "run" / "mine" / "version_0" / "metrics.csv"  # save_dir: the run's folder by default
    assert f"CSV logs: {metrics}" in capsys.readouterr().out
    assert metrics.read_text().count("\n") >= 3


def test_logger_false_writes_no_logs(tmp_path):
    assert main(["train", "--config", _run_file(tmp_path, logger=False)]) == 0
    assert not (tmp_path / "run" / "lightning_logs").exists()


@pytest.mark.parametrize("value, message", [
    ("tensorbord", "logger: unknown logger 'tensorbord'; use csv, tensorboard, wandb, a list of them"),
    ("[csv, [tensorboard]]", "a list of loggers holds names or class_path mappings"),
    ("{class_path: nosuch_pkg.Logger}", "class_path nosuch_pkg.Logger: cannot import nosuch_pkg"),
    ("{class_path: collections.OrderedDict}", "class_path collections.OrderedDict is not a Lightning Logger class"),
    ("{class_path: CSVLogger, init_args: {bogus: 1}}", "CSVLogger: got an unexpected keyword argument 'bogus'"),
    ("{class_path: CSVLogger, init_args: 5}", "init_args must be a mapping"),
    ("{clas_path: CSVLogger}", "a logger mapping takes class_path and init_args"),
    ("7", "7 is not a logger"),
])
def test_bad_logger_values_are_one_line_exit_2_before_anything_runs(tmp_path, capsys, value, message):
    assert main(["train", "--config", _run_file(tmp_path), "--set", f"trainer.logger={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "[trainer] logger" in err, err
    assert not (tmp_path / "run").exists()


def test_wandb_logger_by_name_is_an_offline_run_in_the_run_folder(tmp_path, capsys):
    import re
    from pathlib import Path

    import wandb

    if wandb.run is not None:  # a run another test left in progress would be reused by the WandbLogger
        wandb.run.finish()
    assert main(["train", "--config", _run_file(tmp_path, logger="wandb")]) == 0
    found = re.search(r"^W&B run \(native WandbLogger\): (\S+); upload it with: wandb sync \1$",
                      capsys.readouterr().out, re.M)
    assert found and Path(found[1]).parent == tmp_path / "run" / "wandb" and list(Path(found[1]).glob("run-*.wandb"))
    # Its run was finished: the next W&B logger of the process gets a run of its own (WandbLogger reuses one in
    # progress otherwise).
    assert wandb.run is None
