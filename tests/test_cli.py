"""The fxai-compat command line: train under both hosts, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from fxai_compat.cli import main


def write_config(tmp_path, **train):
    data = {"train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                      "minibatch_size": 32, "eval_every": 2, "eval_episodes": 2, "checkpoint_every": 1,
                      "checkpoint_dir": str(tmp_path / "ckpt"), "hidden_sizes": [8], "data_length": 1000, **train},
            "callbacks": {"metrics": {"window_size": 5}, "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 1}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("host", ["legacy", "lightning"])
def test_train_runs_and_says_where_outputs_went(tmp_path, capsys, host):
    path = write_config(tmp_path)
    assert main(["train", "--config", str(path), "--host", host, "--set", "cycles=2",
                 "--set", "trainer.enable_progress_bar=false"] if host == "lightning" else
                ["train", "--config", str(path), "--host", host]) == 0
    out = capsys.readouterr().out
    assert "trained 2 cycles" in out and str(tmp_path / "ckpt") in out and "CheckpointCallback" in out
    assert sorted(os.listdir(tmp_path / "ckpt"))[:2] == ["cycle-0000.ckpt", "cycle-0001.ckpt"]
    assert os.path.isfile(tmp_path / "best" / "best_model.pt")


@pytest.mark.parametrize("args, message", [
    (["--set", "n_envs=0"], "n_envs must be a positive integer"),
    (["--set", "bogus=1"], "Unknown key(s)"),
    (["--set", "n_envs=abc"], "n_envs must be an integer"),
    (["--set", "minibatch_size=4096"], "larger than the rollout"),
    (["--set", "env=NoSuchEnv-v9"], "Unknown environment"),
    (["--set", "callbacks.nosuch.x=1"], "nosuch"),
    (["--set", "noequals"], "key=value"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    path = write_config(tmp_path)
    assert main(["train", "--config", str(path), "--host", "legacy", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "ckpt").exists()


def test_unreadable_and_malformed_yaml(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "Cannot read config file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    bad.write_text("train: [1, 2]\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Section 'train'" in err and "must be a mapping" in err and len(err.strip().splitlines()) == 1


def test_console_script_help_and_bad_flag():
    exe = os.path.join(os.path.dirname(sys.executable), "fxai-compat")
    ok = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--config" in ok.stdout
    bad = subprocess.run([exe, "train", "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
