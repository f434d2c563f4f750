"""A team's own ports from outside the process: an installed package's ``fxai_compat.ports`` entry point (a real
``*.dist-info/entry_points.txt`` on sys.path, as pip would leave it) and ``port: module:attr`` in a run file, used
by the command line (train, parity) like the built-in ports."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import yaml

from fxai_compat import port_discovery
from fxai_compat.cli import main
from fxai_compat.toggle import REGISTRY

PORTS_MODULE = '''
"""A team's port: counts cycles, legacy and native."""
import pytorch_lightning as pl
from fxai_compat.toggle import PortPair


class LegacyCycleCounter:
    def __init__(self, start=0):
        self.count = start

    def on_cycle_complete(self, metrics):
        self.count += 1


class NativeCycleCounter(pl.Callback):
    def __init__(self, start=0):
        self.count = start

    def on_train_epoch_end(self, trainer, pl_module):
        self.count += 1


PAIR = PortPair("cycle_counter", LegacyCycleCounter, NativeCycleCounter)


def make_pair():
    from fxai_compat.toggle import Observable
    return PortPair("whatever", LegacyCycleCounter, NativeCycleCounter,
                    observables=(Observable("count", lambda cb: cb.count, lambda cb: cb.count),))
'''


@pytest.fixture
def team_package(tmp_path, monkeypatch):
    """``team_ports`` installed the way pip leaves a package: the module and its dist-info on sys.path."""
    site = tmp_path / "site"
    (site / "team_ports-1.2.dist-info").mkdir(parents=True)
    (site / "team_ports.py").write_text(PORTS_MODULE)
    (site / "team_ports-1.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: team-ports\nVersion: 1.2\n")
    (site / "team_ports-1.2.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [fxai_compat.ports]
        team_counter = team_ports:make_pair
        broken_port = team_ports_missing:PAIR
        """))
    monkeypatch.syspath_prepend(str(site))
    before = dict(REGISTRY)
    port_discovery.load_entry_point_ports(reload=True)
    yield site
    for name in set(REGISTRY) - set(before):
        REGISTRY.pop(name)
        port_discovery.PORT_SOURCES.pop(name, None)
    port_discovery.load_entry_point_ports(reload=True)  # back to what this process has installed


def _run_file(tmp_path, callbacks):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 2, "update_epochs": 1,
                  "minibatch_size": 32, "eval_every": 0, "checkpoint_every": 0, "hidden_sizes": [8],
                  "data_length": 1000, "checkpoint_dir": str(tmp_path / "run" / "checkpoints")},
        "trainer": {"enable_progress_bar": False},
        "callbacks": callbacks}))
    return str(path)


def test_an_installed_entry_point_port_runs_in_shadow_from_the_command_line(team_package, tmp_path, capsys):
    sources = port_discovery.port_sources()
    assert sources["team_counter"] == "entry point team_counter = team_ports:make_pair (team-ports 1.2)"
    assert any("broken_port" in e and "team_ports_missing" in e for e in port_discovery.DISCOVERY_ERRORS)
    assert main(["train", "--config", _run_file(tmp_path, {"team_counter": {"impl": "shadow"}})]) == 0
    out = capsys.readouterr().out
    assert "team_counter=shadow (config)" in out
    assert "shadow mode: 1/1 proven, 0 unchecked, 0 failing; 1 pair(s), 2 comparisons, 0 mismatch(es)" in out, out


def test_parity_checks_an_entry_point_port(team_package, tmp_path, capsys):
    code = main(["parity", "--config", _run_file(tmp_path, {"team_counter": {}}), "--callbacks", "team_counter"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "team_counter" in out


def test_a_run_file_names_a_port_by_module_attr(team_package, tmp_path, capsys):
    path = _run_file(tmp_path, {"counter": {"port": "team_ports:PAIR", "impl": "native", "start": 5}})
    assert main(["train", "--config", path]) == 0
    assert "counter=native (config)" in capsys.readouterr().out
    assert port_discovery.PORT_SOURCES["counter"].startswith("callbacks.counter.port team_ports:PAIR")


@pytest.mark.parametrize("spec, message", [
    ("team_ports_nosuch:PAIR", "callbacks.counter.port team_ports_nosuch:PAIR (run file): cannot import team_ports_nosuch"),
    ("team_ports:NOPE", "module team_ports has no attribute NOPE"),
    ("team_ports", "callbacks.counter.port must be 'module:attr'"),
    ("team_ports:LegacyCycleCounter", "returned LegacyCycleCounter, not a fxai_compat.toggle.PortPair"),
])
def test_bad_port_names_are_one_line_exit_2(team_package, tmp_path, capsys, spec, message):
    assert main(["train", "--config", _run_file(tmp_path, {"counter": {"port": spec}})]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_an_unknown_name_says_how_to_declare_a_port(tmp_path, capsys):
    assert main(["train", "--config", _run_file(tmp_path, {"team_thing": {}})]) == 2
    assert "port: module:attr" in capsys.readouterr().err


def test_the_legacy_host_builds_the_legacy_side_of_an_entry_point_port(team_package, tmp_path, capsys):
    path = _run_file(tmp_path, {"metrics": {"window_size": 5}, "team_counter": {"start": 3}})
    assert main(["train", "--config", path, "--host", "legacy"]) == 0
    assert "metrics=legacy (--host legacy), team_counter=legacy (--host legacy)" in capsys.readouterr().out


def test_audit_lists_the_ports_found_and_where_from(team_package, tmp_path, capsys):
    (tmp_path / "mine.py").write_text("class MyCounter:\n    def on_cycle_complete(self, metrics):\n        pass\n")
    config = _run_file(tmp_path, {"counter": {"port": "team_ports:PAIR"}})
    assert main(["audit", str(tmp_path / "mine.py"), "--config", config]) == 0
    out = capsys.readouterr().out
    assert "ports registered (" in out
    assert re.search(r"^  team_counter +entry point team_counter = team_ports:make_pair \(team-ports 1\.2\)$", out, re.M)
    assert re.search(r"^  counter +callbacks\.counter\.port team_ports:PAIR \(" + re.escape(config) + r"\)$", out, re.M)
    assert re.search(r"^  metrics +built in \(fxai_compat\.toggle\)$", out, re.M)
    assert "warning: port not loaded: entry point broken_port = team_ports_missing:PAIR (team-ports 1.2): cannot import" in out
    assert main(["audit", str(tmp_path / "mine.py"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ports"]["team_counter"].startswith("entry point team_counter = team_ports:make_pair")
