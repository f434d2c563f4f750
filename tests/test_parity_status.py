"""No unchecked green: a port that compared nothing is ``unchecked`` (never ``ok``) in the report's table and
summary line, in ``parity.json``, in the pytest fixture and in shadow mode; ``--require-all`` fails on it."""

from __future__ import annotations

import json

import pytest

from fxai_compat.callbacks.metrics import MetricsCallback as NativeMetrics
from fxai_compat.cli import main
from fxai_compat.parity import check_port_parity, parity_config
from fxai_compat.parity.plugin import ParityFixture
from fxai_compat.parity.status import exit_code, summary_line, verdict
from fxai_compat.toggle import REGISTRY, register_port
from legacy_callbacks import MetricsCallback

from test_parity_report import parse_table


class ControlFails(MetricsCallback):
    """A legacy control that raises at its first cycle: shadow mode switches it off, nothing is compared."""

    def on_cycle_complete(self, trainer, metrics):
        raise RuntimeError("control broke")


@pytest.fixture
def silent_pairs():
    """Two registered pairs that prove nothing: one without observables, one whose only observable is never
    compared (its control is switched off before the first comparison)."""
    register_port("no_observables", MetricsCallback, "fxai_compat.callbacks.metrics:MetricsCallback",
                  native_options=("window_size",))
    register_port("never_compared", ControlFails, "fxai_compat.callbacks.metrics:MetricsCallback",
                  observables={"window_stats": (lambda cb: cb.window_stats(), lambda cb: cb.window_stats())},
                  native_options=("window_size",))
    yield
    REGISTRY.pop("no_observables")
    REGISTRY.pop("never_compared")


def test_verdict_rules():
    assert verdict(["ok", "ok"]) == "proven"
    assert verdict(["ok", "unchecked"]) == "unchecked"
    assert verdict(["ok", "no native port"]) == "proven"  # a legacy-only callback: its trace is what is proven
    assert verdict(["n/a", "no native port"]) == "unchecked"  # nothing compared at all
    assert verdict(["unchecked", "FAILED"]) == verdict(["error", "ok"]) == "failing"
    verdicts = {"a": "proven", "b": "unchecked", "c": "proven"}
    assert summary_line(verdicts) == "2/3 proven, 1 unchecked, 0 failing (unchecked: b)"
    assert exit_code(verdicts) == 0 and exit_code(verdicts, require_all=True) == 1
    assert exit_code({"a": "failing"}) == 1 and exit_code({"a": "proven"}, require_all=True) == 0


def test_a_port_without_observables_or_comparisons_is_unchecked_not_ok(silent_pairs, tmp_path):
    for name, why in (("no_observables", "no observables registered"),
                      ("never_compared", "window_stats (compared 0 times)")):
        result = check_port_parity(name, parity_config(cycles=2), workdir=tmp_path / name)
        assert not result.ok and not result and result.status == "unchecked", result.summary()
        assert result.unchecked == [why] and result.divergence is None
        assert f"port parity of {name}: unchecked" in result.summary() and why in result.summary()
        assert result.to_dict()["status"] == "unchecked" and result.to_dict()["ok"] is False


def test_report_says_unchecked_and_require_all_fails(silent_pairs, capsys, tmp_path):
    argv = ["parity", "--callbacks", "metrics,no_observables", "--set", "cycles=2",
            "--out", str(tmp_path)]
    assert main(argv) == 0  # unchecked is not a failure without --require-all, but it is not "ok" either
    out = capsys.readouterr().out
    rows = {row["callback"]: row for row in parse_table(out)}
    assert rows["metrics"]["status"] == "proven" and rows["metrics"]["port_parity"] == "ok"
    assert rows["metrics"]["observables_compared"] == "2 (window_stats 2)"
    row = rows["no_observables"]
    assert row["trace_parity"] == "ok" and row["port_parity"] == "unchecked" and row["status"] == "unchecked", row
    assert row["first_divergence"] == "port unchecked: no observables registered"
    assert "parity: 1/2 proven, 1 unchecked, 0 failing (unchecked: no_observables)" in out
    summary = json.loads((tmp_path / "parity.json").read_text())
    assert summary["ok"] is False and summary["counts"] == {"proven": 1, "unchecked": 1, "failing": 0}
    by_name = {c["name"]: c for c in summary["callbacks"]}
    assert by_name["no_observables"]["ok"] is False and by_name["no_observables"]["status"] == "unchecked"
    assert by_name["no_observables"]["port"]["unchecked"] == ["no observables registered"]
    assert by_name["metrics"]["ok"] is True and by_name["metrics"]["status"] == "proven"

    assert main([*argv, "--require-all"]) == 1
    assert "1 unchecked" in capsys.readouterr().out


def test_the_fixture_fails_an_unchecked_port(silent_pairs, tmp_path):
    fixture = ParityFixture(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="port parity of no_observables: unchecked.*no observables"):
        fixture.assert_port("no_observables", parity_config(cycles=2))
    assert fixture.assert_port("metrics", parity_config(cycles=2)).status == "ok"


def test_shadow_mode_summary_names_the_unchecked_pairs(silent_pairs, tmp_path):
    from fxai_compat import fit
    from fxai_compat.toggle import build_callbacks

    section = {"metrics": {"window_size": 3, "impl": "shadow"}, "no_observables": {"impl": "shadow"}}
    built = build_callbacks({"callbacks": section}, run_dir=tmp_path, env={})
    fit(parity_config(cycles=2, checkpoint_dir=str(tmp_path / "ck")), built.callbacks, logger=False)
    assert built.monitor.verdicts() == {"metrics": "proven", "no_observables": "unchecked"}
    summary = built.monitor.summary()
    assert summary.startswith("shadow mode: 1/2 proven, 1 unchecked, 0 failing (unchecked: no_observables)")
    assert "no_observables unchecked (no per-cycle observables registered)" in summary
