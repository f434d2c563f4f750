"""The run file's ``tune:`` section (distributions, ranges, log scale), checked before a study is opened; each
trial's W&B run in its own folder and in the study's group; the end of ``tune`` names the storage, the study, the
best trial and how to open it in optuna-dashboard. Real journal storages, real offline W&B runs."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from fxai_compat.cli import main

SPACE = {"params": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                    "update_epochs": {"type": "int", "low": 1, "high": 3},
                    "gae_lambda": {"low": 0.9, "high": 0.99, "step": 0.03},
                    "hidden_sizes": {"choices": [[8], [16, 16]]}}}


def _config(tmp_path, tune=None, wandb=False):
    callbacks = {"optuna": {"impl": "native"}}
    if wandb:
        callbacks["wandb"] = {"mode": "offline", "project": "p"}
    data = {"train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                      "minibatch_size": 32, "eval_every": 0, "checkpoint_every": 0, "hidden_sizes": [8],
                      "data_length": 1000, "checkpoint_dir": str(tmp_path / "run" / "ckpt")},
            "trainer": {"logger": False}, "callbacks": callbacks}
    if tune is not None:
        data["tune"] = tune
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_the_tune_section_is_the_search_space_and_the_end_says_where_the_study_is(tmp_path, capsys):
    log = tmp_path / "study.log"
    assert main(["tune", "--config", _config(tmp_path, SPACE), "--storage", f"journal://{log}", "--study", "s",
                 "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(log)))).trials
    assert len(trials) == 2
    for t in trials:
        assert set(t.params) == {"lr", "update_epochs", "gae_lambda", "hidden_sizes"}
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["update_epochs"] in (1, 2, 3)
        assert math.isclose((t.params["gae_lambda"] - 0.9) / 0.03, round((t.params["gae_lambda"] - 0.9) / 0.03))
        assert t.params["hidden_sizes"] in ("[8]", "[16, 16]")
        assert isinstance(t.distributions["lr"], optuna.distributions.FloatDistribution) and t.distributions["lr"].log
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert f"best: trial {best.number}, episode_reward_mean {best.value:.3f}, {best.params}" in out
    assert f"storage: journal://{log}; open the study with: optuna-dashboard {log}" in out


def test_each_trial_has_its_own_wandb_run_folder_and_the_study_as_group(tmp_path, capsys):
    assert main(["tune", "--config", _config(tmp_path, wandb=True), "--study", "grp", "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "storage: in memory (the study is gone when this process ends; pass --storage to keep it)" in out
    for n in (0, 1):
        runs = list((tmp_path / "run" / "tune" / "grp" / f"trial-{n:04d}" / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
    from wandb.sdk import wandb_setup

    assert wandb_setup.singleton().settings.run_group is None  # the group is the trials' only


def test_trial_runs_join_the_study_group():
    """What the trials' W&B runs are given: the group, read back from a real (offline) run."""
    import tempfile

    import wandb

    from fxai_compat.tune_space import trial_wandb_group

    with tempfile.TemporaryDirectory() as folder, trial_wandb_group("study-x"):
        run = wandb.init(mode="offline", dir=folder, project="p")
        try:
            assert run.group == "study-x"
        finally:
            run.finish()


@pytest.mark.parametrize("tune, message", [
    ({"params": {"lrr": {"low": 1, "high": 2}}}, "[tune].params.lrr is not a field of the train section"),
    ({"params": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "a log scale needs low > 0"),
    ({"params": {"lr": {"low": 0.1, "high": 0.01}}}, "low (0.1) must be below high (0.01)"),
    ({"params": {"lr": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}}, "log and step exclude each other"),
    ({"params": {"n_envs": {"type": "int", "low": 0, "high": 4}}}, "n_envs: 0 is not a valid value"),
    ({"params": {"update_epochs": {"type": "int", "low": 1.5, "high": 4}}}, "low must be an integer"),
    ({"params": {"lr": {"low": 1e-4}}}, "needs low and high (or choices)"),
    ({"params": {"lr": {"lo": 1e-4, "high": 1}}}, "unknown key(s) lo"),
    ({"params": {"hidden_sizes": {"choices": []}}}, "choices must be a non-empty list"),
    ({"params": {"lr": {"type": "normal", "low": 0, "high": 1}}}, "type must be float, int or categorical"),
    ({"space": {}}, "unknown key(s) space"),
    ([1, 2], "Section 'tune' of"),
])
def test_bad_tune_sections_are_one_line_exit_2_before_a_study_exists(tmp_path, capsys, tune, message):
    log = tmp_path / "study.log"
    assert main(["tune", "--config", _config(tmp_path, tune), "--storage", f"journal://{log}", "--study", "s",
                 "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not log.exists()
