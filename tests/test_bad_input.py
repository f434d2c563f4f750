"""Every bad input the command line can be given: exit code 2, one line on stderr, no traceback, nothing written.

One table; each row is a command line (``--set`` values, files it makes) and the words the line must hold.
"Nothing written": no ``lightning_logs/``, no ``hparams.yaml``, no checkpoint, no trial in the study. The
rows run in-process through ``fxai_compat.cli.main`` (no interpreter start-up per row).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tiny

from fxai_compat import fit
from fxai_compat.cli import main

TINY = ["--set", "n_envs=2", "--set", "n_steps=16", "--set", "minibatch_size=16", "--set", "update_epochs=1",
        "--set", "cycles=1", "--set", "eval_every=0", "--set", "hidden_sizes=[8]", "--set", "data_length=500",
        "--set", "episode_length=20", "--set", "trainer.enable_progress_bar=false"]


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


#: id -> (command after ``fxai-compat``; {run_dir}/{tmp} are filled in, ``file:NAME=CONTENT`` makes a file), words.
CASES = {
    "trainer-unknown-key": ("train --set trainer.max_epoch=2", "unknown pl.Trainer option max_epoch (did you mean max_epochs?)"),
    "trainer-wrong-type": ("train --set trainer.max_epochs=abc", "max_epochs must be an integer or null"),
    "trainer-no-gpu": ("train --set trainer.accelerator=gpu", "is not available on this machine"),
    "trainer-no-strategy": ("train --set trainer.strategy=nosuch", "invalid strategy name"),
    "trainer-bad-value": ("train --set trainer.limit_val_batches=-1", "limit_val_batches"),
    "nan-vf-coef": ("train --set vf_coef=.nan", "vf_coef must be a finite number, got nan"),
    "inf-ent-coef": ("train --set ent_coef=.inf", "ent_coef must be a finite number, got inf"),
    "nan-transaction-cost": ("train --set transaction_cost=.nan", "transaction_cost must be a finite number"),
    "seed-negative": ("train --set seed=-1", "numpy's seed range"),
    "seed-too-big": ("train --set seed=18446744073709551616", "numpy's seed range"),
    "too-big-for-memory": ("train --set n_steps=100000000 --set n_envs=100000", "of memory"),
    "too-wide-for-memory": ("train --set hidden_sizes=[1000000,1000000]", "of memory"),
    "5000-digit-set": ("train --set n_envs=" + "9" * 5000, "n_envs"),
    "5000-digit-file": ("train --config file:big.yaml=train: {n_envs: " + "9" * 5000 + "}", "big.yaml"),
    "checkpoint-dir-is-a-file": ("train --set checkpoint_dir=file:taken=x", "is a file"),
    "checkpoint-dir-not-writable": ("train --set checkpoint_dir=/sys/fxai-test/ckpt", "is not writable"),
    "legacy-checkpoint-dir-is-a-file": ("train --host legacy --set checkpoint_dir=file:taken=x", "is a file"),
    "legacy-not-writable": ("train --host legacy --set checkpoint_dir=/sys/fxai-test/ckpt", "is not writable"),
    "price-csv-not-utf8": ("train --set env=fx --set price_csv=file:prices.csv=date,close\n2024,1.1\xff\xfe\n",
                           "is not UTF-8"),
    "unknown-env": ("train --set env=NoSuchEnv-v9", "Unknown environment 'NoSuchEnv-v9'"),
    "legacy-unknown-env": ("train --host legacy --set env=NoSuchEnv-v9", "Unknown environment"),
    "resume-other-n-envs": ("train --set n_envs=4 --set minibatch_size=16 --resume-from GOOD", "n_envs=2"),
    "auto-resume-other-n-envs": ("train --set n_envs=4 --set checkpoint_dir=GOODDIR", "n_envs=2"),
    "tune-trainer-key": ("tune --study s --n-trials 1 --storage sqlite:///{tmp}/study.db --set trainer.max_epoch=2",
                         "unknown pl.Trainer option"),
    "tune-nan": ("tune --study s --n-trials 1 --storage sqlite:///{tmp}/study.db --set lr=.nan", "lr must be"),
    "tune-unknown-env": ("tune --study s --n-trials 1 --storage sqlite:///{tmp}/study.db --set env=NoSuchEnv-v9",
                         "Unknown environment"),
    "tune-not-writable": ("tune --study s --n-trials 1 --storage sqlite:///{tmp}/study.db "
                          "--set checkpoint_dir=/sys/fxai-test/ckpt", "is not writable"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished one-cycle Lightning run with n_envs=2 (and TINY's other values)."""
    cfg = tiny(tmp_path_factory.mktemp("good"), n_envs=2, n_steps=16, minibatch_size=16, update_epochs=1, cycles=1,
               eval_every=0, checkpoint_every=1, hidden_sizes=(8,), data_length=500, episode_length=20, seed=0)
    fit(cfg, logger=False)
    return Path(cfg.checkpoint_dir)


def _argv(command: str, tmp_path: Path, run_dir: Path, good: Path) -> list[str]:
    head, _, rest = command.partition(" ")
    argv = [head, *TINY]  # the row's own values come after, and win
    words = rest.split(" ")
    if head == "tune":
        words = [w.replace("{tmp}", str(tmp_path)) for w in words] + ["--set", "callbacks.optuna.impl=native"]
    for word in words:
        if "file:" in word:
            before, _, spec = word.partition("file:")
            name, _, content = spec.partition("=")
            word = before + _file(tmp_path, name, content.encode("latin-1"))
        argv.append(word.replace("GOODDIR", str(good)).replace("GOOD", str(good / "cycle-0000.ckpt")))
    if not any(w.startswith("checkpoint_dir=") for w in argv):
        argv += ["--set", f"checkpoint_dir={run_dir / 'ckpt'}"]
    return argv


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, good_run, case):
    command, words = CASES[case]
    if command.startswith("train --config file:"):  # a config file with a space in it: written directly
        name, _, content = command.split("file:", 1)[1].partition("=")
        path = tmp_path / name
        path.write_text(content)
        argv = ["train", "--config", str(path), "--set", f"checkpoint_dir={tmp_path / 'run' / 'ckpt'}"]
    else:
        argv = _argv(command, tmp_path, tmp_path / "run", good_run)
    storage = f"sqlite:///{tmp_path}/study.db"
    if argv[0] == "tune":  # a shared study that exists already: it must get no trial
        import optuna

        optuna.create_study(study_name="s", storage=storage, direction="maximize")
        capsys.readouterr()  # optuna's own log line
    good_before = sorted(os.listdir(good_run))
    before = set(_tree(tmp_path))
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (argv[:6], err, captured.out[-500:])
    assert words in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("fxai-compat: error: "), err
    assert set(_tree(tmp_path)) == before, sorted(set(_tree(tmp_path)) - before)  # nothing written ...
    assert sorted(os.listdir(good_run)) == good_before  # ... next to a run being resumed either
    assert not (good_run.parent / "lightning_logs").exists()
    if argv[0] == "tune":
        assert optuna.load_study(study_name="s", storage=storage).trials == []


def _tree(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")]


def test_the_trainer_options_docstring_examples_run():
    import doctest

    import fxai_compat.trainer_options as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
