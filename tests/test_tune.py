"""``fxai-compat tune``: Optuna studies on real journal and SQLite storages. The requested number of finished
trials in all (two worker processes on one storage included), no duplicates, pruned trials recorded as PRUNED,
resumable, live and dead workers' trials told apart, a worker SIGKILLed mid-trial on SQLite (its trial FAIL and
retried, by process id or by stale heartbeat), and one-line errors (no password) for bad storages or options."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import fxai_compat.tune as tune_module
from conftest import stop_processes
from fxai_compat.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)
EXE = os.path.join(os.path.dirname(sys.executable), "fxai-compat")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def write_config(tmp_path, cycles=3, **callbacks):
    data = {"train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": cycles, "update_epochs": 1,
                      "minibatch_size": 32, "eval_every": 0, "checkpoint_every": 0,
                      "checkpoint_dir": str(tmp_path / "run" / "ckpt"), "hidden_sizes": [8], "data_length": 1000},
            "trainer": {"logger": False},
            "callbacks": callbacks or {"metrics": {"window_size": 5},
                                       "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 1},
                                       "optuna": {"impl": "native"}}}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def journal(tmp_path, name="study.log"):
    return f"journal://{tmp_path / name}", lambda: JournalStorage(JournalFileBackend(str(tmp_path / name)))


def trials_of(storage, study="s"):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def tune(config, storage, n, *extra, study="s"):
    return main(["tune", "--config", str(config), "--storage", storage, "--study", study, "--n-trials", str(n), *extra])


def test_single_worker_runs_the_trials_and_resumes(tmp_path, capsys):
    config = write_config(tmp_path)
    url, storage = journal(tmp_path)
    assert tune(config, url, 2) == 0
    out = capsys.readouterr().out
    assert "callback implementations: metrics=legacy (default), checkpoint=legacy (default), optuna=native (config)" in out
    assert "study 's': 2 finished trials (2 complete, 0 pruned)" in out and "best: trial" in out
    trials = trials_of(storage())
    assert [t.number for t in trials] == [0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert set(t.params) == set(tune_module._TUNED)
        assert all(low <= t.params[k] <= high for k, (low, high, _) in tune_module._TUNED.items())
        assert sorted(t.intermediate_values) == [0, 1, 2]  # reported every cycle by the native port
        # Each trial has its own directories: the checkpoint callback's best models do not overwrite each other.
        trial_dir = tmp_path / "run" / "tune" / "s" / f"trial-{t.number:04d}"
        assert (trial_dir / "checkpoint" / "best_model.pt").is_file()
    assert not (tmp_path / "best").exists()

    # Resumable: the same command again has nothing left to do; a larger --n-trials adds the difference.
    assert tune(config, url, 2) == 0
    assert "2 finished trials" in capsys.readouterr().out and len(trials_of(storage())) == 2
    assert tune(config, url, 3, "--impl", "optuna=legacy") == 0
    assert "optuna=legacy (--impl)" in capsys.readouterr().out
    trials = trials_of(storage())
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state in FINISHED for t in trials)


def test_pruned_trials_are_recorded_pruned(tmp_path, capsys):
    """Two earlier trials with huge intermediate values: the MedianPruner (2 startup trials, 2 warm-up steps)
    prunes every new trial at its cycle 2, through the legacy and through the native Optuna callback."""
    config = write_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    seeded = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for _ in range(2):
        seeded.add_trial(optuna.trial.create_trial(value=1e9, intermediate_values={s: 1e9 for s in range(3)}))
    assert tune(config, url, 3) == 0
    assert tune(config, url, 4, "--impl", "optuna=legacy") == 0
    out = capsys.readouterr().out
    assert "study 's': 4 finished trials (2 complete, 2 pruned)" in out
    trials = trials_of(url)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    for t in trials[2:]:
        assert t.state == TrialState.PRUNED and sorted(t.intermediate_values) == [0, 1, 2]


@pytest.mark.parametrize("impl", ["native", "legacy"])
def test_each_trial_gets_its_own_wandb_run(tmp_path, impl):
    """A WandbLogger never finishes its run, and the next one in the process reuses it: trials must not share."""
    config = write_config(tmp_path, cycles=2, wandb={"project": "tune", "mode": "offline", "dir": str(tmp_path / "wb")},
                          optuna={})
    assert tune(config, journal(tmp_path)[0], 2, "--impl", f"wandb={impl}") == 0
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == 2


def _worker(config, url, n, log, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([EXE, "tune", "--config", str(config), "--storage", url, "--study", "s",
                             "--n-trials", str(n), *extra], stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_storage(tmp_path, kind):
    config = write_config(tmp_path, cycles=2)
    url = journal(tmp_path)[0] if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in range(2)]
    workers = [_worker(config, url, 4, log) for log in logs]
    try:
        codes = [w.wait(timeout=150) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
    assert codes == [0, 0], outputs
    assert all("study 's': " in out and "Traceback" not in out for out in outputs), outputs
    storage = journal(tmp_path)[1]() if kind == "journal" else url
    trials = trials_of(storage)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == max(numbers) + 1  # no duplicates, no gaps
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 4, [(t.number, t.state.name) for t in trials]  # the requested trials, no more
    # Anything else is a trial two workers asked for at the same moment, recorded as surplus and not run.
    assert all(t.user_attrs.get(tune_module._SURPLUS_ATTR) and not t.params for t in trials if t.state not in FINISHED)
    assert {t.user_attrs[tune_module._WORKER_ATTR].rpartition(":")[2] for t in finished} <= {str(w.pid) for w in workers}
    assert len({t.params["lr"] for t in finished}) == 4  # four different trials, not one run twice


def test_live_and_dead_workers_trials_are_told_apart(tmp_path, capsys):
    """A RUNNING trial of a live worker counts towards --n-trials (no overshoot); one whose worker died on this
    host (the journal storage has no heartbeats) is marked FAIL and does not block the study."""
    config = write_config(tmp_path, cycles=2)
    url, storage = journal(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage(), direction="maximize")
    live = study.ask()
    live.set_user_attr(tune_module._WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    assert tune(config, url, 1) == 0
    assert "0 finished trials" in capsys.readouterr().out and len(trials_of(storage())) == 1
    assert tune(config, url, 2) == 0  # one more, alongside the live one
    assert [t.state for t in trials_of(storage())] == [TrialState.RUNNING, TrialState.COMPLETE]
    study.tell(live, 0.0)

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = study.ask()
    dead.set_user_attr(tune_module._WORKER_ATTR, f"{socket.gethostname()}:{gone.pid}")
    assert tune(config, url, 3) == 0
    assert [t.state for t in trials_of(storage())] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                                       TrialState.COMPLETE]


BEATS = ("--heartbeat-interval", "1", "--heartbeat-grace", "2")


def _wait_for(predicate, what, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_a_worker_killed_mid_trial_on_sqlite_leaves_a_failed_trial_that_is_retried(tmp_path):
    """SIGKILL a tune worker in the middle of the study's last trial on an RDB (SQLite) storage, then run the
    command again: the killed trial ends FAIL (not RUNNING), is retried once with its parameters (the retry is
    run, not counted as in progress), the study gets its requested finished trials with no duplicates, and loads.
    Two studies, side by side: on "here" (default heartbeats: 10 s, grace 30 s) the next worker sees the dead
    process id long before the heartbeat goes stale; on "there" the trial is relabelled as another machine's, so
    only its stale heartbeat (interval 1 s, grace 2 s) can tell."""
    config = write_config(tmp_path, cycles=8)
    urls = {where: f"sqlite:///{tmp_path / f'{where}.db'}" for where in ("here", "there")}
    storages = {where: optuna.storages.RDBStorage(url) for where, url in urls.items()}  # readers: no heartbeats
    logs = {where: open(tmp_path / f"killed-{where}.log", "w+") for where in urls}
    beats = {"here": (), "there": BEATS}
    killed = {where: _worker(config, url, 2, logs[where], *beats[where]) for where, url in urls.items()}
    victims = {}

    def mid_last_trial(where):
        storage = storages[where]
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name("s"), deepcopy=False)
        except KeyError:  # the study is not created yet
            return False
        return (len(trials) == 2 and trials[0].state == TrialState.COMPLETE
                and trials[1].state == TrialState.RUNNING and len(trials[1].intermediate_values) > 0)

    try:  # both workers watched at once: each is killed as soon as its trial 1 has reported its first cycle
        deadline = time.monotonic() + 90
        while len(victims) < len(killed):
            for where, proc in killed.items():
                if where in victims:
                    continue
                if mid_last_trial(where):
                    proc.send_signal(signal.SIGKILL)
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    storage = storages[where]
                    victims[where] = storage.get_all_trials(storage.get_study_id_from_name("s"))[1]
                elif proc.poll() is not None:
                    logs[where].seek(0)
                    pytest.fail(f"the worker on {where} ended (rc {proc.returncode}) before it could be killed "
                                f"mid-trial:\n{logs[where].read()[-2000:]}")
            assert time.monotonic() < deadline, "timed out waiting for the workers' trial 1"
            time.sleep(0.1)  # a trial runs 8 cycles: this poll (two SQLite reads) lands in the middle of one
    finally:
        stop_processes(killed.values())
    for where, victim in victims.items():
        assert victim.state == TrialState.RUNNING and len(victim.intermediate_values) < 8, "the kill was not mid-trial"
        assert victim.user_attrs[tune_module._WORKER_ATTR] == f"{socket.gethostname()}:{killed[where].pid}"
    there, victim = storages["there"], victims["there"]
    there.set_trial_user_attr(victim._trial_id, tune_module._WORKER_ATTR, "elsewhere:1")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        checker = optuna.storages.RDBStorage(urls["there"], heartbeat_interval=1, grace_period=2)
    study_id = there.get_study_id_from_name("s")
    _wait_for(lambda: victim._trial_id in checker._get_stale_trial_ids(study_id),  # what fail_stale_trials asks
              "trial 1's heartbeat on 'there' went stale", timeout=15)

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    again = {where: subprocess.Popen([EXE, "tune", "--config", str(config), "--storage", url, "--study", "s",
                                      "--n-trials", "2", *beats[where]], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env) for where, url in urls.items()}
    try:
        outputs = {where: proc.communicate(timeout=150)[0] for where, proc in again.items()}
    finally:
        stop_processes(again.values())
    for where, url in urls.items():
        out, victim = outputs[where], victims[where]
        assert again[where].returncode == 0 and "Traceback" not in out, out
        assert "study 's': 2 finished trials" in out and "running in other workers" not in out, out
        study = optuna.load_study(study_name="s", storage=url)  # the study still loads
        trials = study.get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(trials))), numbers  # no duplicates, no gaps
        states = {t.number: t.state.name for t in trials}
        assert states[1] == "FAIL" and sum(t.state in FINISHED for t in trials) == 2, (where, states)
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], (where, states)
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
        assert len(retries) == 1, (where, states)  # retried once
        retry = retries[0]
        assert retry.state in FINISHED and retry.params == victim.params  # the same trial, run to its end
        # run and labelled by the new worker, not by the dead one
        assert retry.user_attrs[tune_module._WORKER_ATTR] == f"{socket.gethostname()}:{again[where].pid}"
        assert [t.number for t in trials if t.state in FINISHED] == [0, retry.number]
        assert trials[0].params != victim.params and study.best_trial.number in (0, retry.number)


def test_heartbeat_options_are_checked_before_the_study_is_touched(tmp_path, capsys):
    config = write_config(tmp_path)
    sqlite = f"sqlite:///{tmp_path / 'study.db'}"
    for url, extra, message in [
        (sqlite, ["--heartbeat-interval", "0"], "--heartbeat-interval must be a positive number of seconds, got 0"),
        (sqlite, ["--heartbeat-interval", "5", "--heartbeat-grace", "5"], "--heartbeat-grace (5 s) must be longer"),
        (sqlite, ["--heartbeat-grace", "8"], "--heartbeat-grace (8 s) must be longer than --heartbeat-interval (10 s)"),
        (journal(tmp_path)[0], ["--heartbeat-grace", "60"], "the journal storage has no heartbeats"),
    ]:
        assert tune(config, url, 1, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "study.log").exists()


def test_a_trial_asked_in_a_race_is_surplus_not_run(tmp_path, monkeypatch, capsys):
    """Two workers counting at the same moment both ask: the later-numbered trial sees the earlier one and is
    recorded as a surplus FAIL without training."""
    config = write_config(tmp_path, cycles=2)
    url, storage = journal(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage(), direction="maximize")
    other = study.ask()  # the other worker's trial, just asked
    other.set_user_attr(tune_module._WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    real, raced = tune_module._census, []

    def census(study, before=None):
        if before is None and not raced:  # this worker counted before the other one asked
            raced.append(True)
            return 0, 0
        return real(study, before)

    monkeypatch.setattr(tune_module, "_census", census)
    assert tune(config, url, 1) == 0
    trials = trials_of(storage())
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert trials[1].user_attrs[tune_module._SURPLUS_ATTR] is True and trials[1].params == {}
    assert not (tmp_path / "run" / "tune" / "s" / "trial-0001").exists()


@pytest.mark.parametrize("storage", ["postgresql://user:secret@127.0.0.1:1/db",
                                     "mysql+pymysql://user:secret@127.0.0.1:1/db"])
def test_unreachable_storage_fails_fast_in_one_line_without_the_password(tmp_path, capsys, storage):
    config = write_config(tmp_path)
    start = time.monotonic()
    assert tune(config, storage, 2) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert time.monotonic() - start < 30
    assert err.startswith("fxai-compat: error: Cannot open Optuna storage ") and len(err.splitlines()) == 1
    assert "user:***@127.0.0.1:1/db" in err and "Traceback" not in err
    assert "secret" not in captured.out + captured.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--n-trials", "0"], "--n-trials must be a positive number of trials, got 0"),
    (["--impl", "optuna=nativ"], "unknown implementation 'nativ'"),
    (["--set", "callbacks.optuna.report_step=cycle", "--impl", "optuna=native"], "does not accept option(s) report_step"),
    (["--set", "callbacks.optuna.enabled=false", "--set", "callbacks.evaluation.bogus=1"], "does not accept option(s) bogus"),
])
def test_user_errors_exit_2_before_the_study_is_touched(tmp_path, capsys, args, message):
    config = write_config(tmp_path)
    url, _ = journal(tmp_path)
    argv = ["tune", "--config", str(config), "--storage", url, "--study", "s", "--n-trials", "2", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "study.log").exists()


def test_bad_storage_paths_and_configs_without_optuna(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    for url in (f"sqlite:///{tmp_path / 'afile' / 'study.db'}", f"journal://{tmp_path / 'afile' / 'study.log'}"):
        assert tune(config, url, 1) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fxai-compat: error: Cannot open Optuna storage") and len(err.splitlines()) == 1
    (tmp_path / "x").mkdir()
    no_optuna = write_config(tmp_path / "x", metrics={"window_size": 5})
    url, _ = journal(tmp_path)
    assert tune(no_optuna, url, 1) == 2
    assert "tuning needs an optuna entry" in capsys.readouterr().err
    assert not (tmp_path / "study.log").exists()


def test_help_and_bad_flags():
    with pytest.raises(SystemExit) as done:
        main(["tune", "--help"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as bad:
        main(["tune", "--study", "s", "--n-trials", "many"])
    assert bad.value.code == 2
    with pytest.raises(SystemExit) as missing:
        main(["tune", "--n-trials", "2"])
    assert missing.value.code == 2
