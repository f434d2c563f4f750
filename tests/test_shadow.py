"""Shadow mode and port parity: the native port counts, the legacy control is sandboxed and compared."""

from __future__ import annotations

import glob
import json
import os

import pytest

from fxai_compat import fit
from fxai_compat.callbacks.metrics import MetricsCallback as NativeMetrics
from fxai_compat.parity import check_port_parity, parity_config
from fxai_compat.shadow import ShadowMismatchError
from fxai_compat.toggle import REGISTRY, build_callbacks, register_port
from legacy_callbacks import BaseCallback

from conftest import tiny




def run_shadow(tmp_path, section, *, strict=False, cycles=4):
    built = build_callbacks({"callbacks": section}, run_dir=tmp_path, env={}, shadow_strict=strict)
    try:
        fit(tiny(tmp_path, cycles=cycles), built.callbacks, logger=built.loggers or False)
    finally:
        for logger in built.loggers:  # a WandbLogger leaves its run open for the next test in this process
            logger.experiment.finish()
    return built


def test_shadow_mode_for_the_builtin_ports_agrees_and_sandboxes_the_control(tmp_path):
    section = {"metrics": {"window_size": 3, "impl": "shadow"},
               "checkpoint": {"save_dir": str(tmp_path / "best"), "save_freq": 2, "impl": "shadow"},
               "evaluation": {"impl": "shadow"},
               "wandb": {"project": "shadow", "mode": "offline", "dir": str(tmp_path / "wb"), "impl": "shadow"},
               "optuna": {"study_name": "s", "storage": f"sqlite:///{tmp_path}/o.db", "impl": "shadow"}}
    built = run_shadow(tmp_path, section)
    monitor = built.monitor
    assert monitor.mismatches == 0, monitor.summary()
    assert monitor.compared["metrics.window_stats"] == 4 and monitor.compared["optuna.reports"] == 4
    # The real files are where the config says; the control's went under the shadow directory.
    assert os.path.isdir(tmp_path / "best") and os.path.isdir(tmp_path / "shadow" / "checkpoint" / "save_dir")
    # One W&B run: the native one (offline); the control's run is disabled.
    assert len(glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))) == 1
    # The control reported nothing to the real study: only the native reports are stored.
    study_trial = built.extras["optuna_trial"]
    assert built.legacy["optuna"].trial.reports == [tuple(r) for r in built.native["optuna"].reports]
    assert study_trial.study.trials[0].intermediate_values == {s: v for s, v in built.native["optuna"].reports}
    assert os.path.getsize(monitor.mismatch_file) == 0


def test_a_broken_port_is_caught_with_the_first_divergence(tmp_path, broken_pair):
    built = run_shadow(tmp_path, {"metrics_broken": {"window_size": 2, "impl": "shadow"}}, cycles=5)
    monitor = built.monitor
    assert monitor.mismatches > 0
    first = monitor.first_divergence
    assert first["observable"] == "window_stats" and first["callback"] == "metrics_broken"
    assert first["legacy"] != first["native"]
    lines = [json.loads(line) for line in open(monitor.mismatch_file)]
    assert lines[0]["kind"] == "mismatch" and lines[0]["cycle"] == first["cycle"]
    summary = monitor.summary()
    assert f"first divergence: cycle {first['cycle']}, metrics_broken.window_stats" in summary


def test_shadow_strict_fails_the_run(tmp_path, broken_pair):
    with pytest.raises(ShadowMismatchError, match="metrics_broken native port disagrees"):
        run_shadow(tmp_path, {"metrics_broken": {"window_size": 2, "impl": "shadow"}}, strict=True, cycles=5)


def test_control_stop_and_errors_are_recorded_not_obeyed(tmp_path):
    class StopsAndFails(BaseCallback):
        def __init__(self, flavour="x"):
            self.cycles = 0

        def on_cycle_complete(self, trainer, metrics):
            self.cycles += 1
            if self.cycles == 3:
                raise RuntimeError("control broke")
            return False  # asks to stop every cycle

    class NativeNoop(NativeMetrics):
        def __init__(self, flavour="x"):
            super().__init__(window_size=5)

    register_port("stopper", StopsAndFails, NativeNoop)
    try:
        built = run_shadow(tmp_path, {"stopper": {"impl": "shadow"}}, cycles=4)
    finally:
        REGISTRY.pop("stopper")
    control = next(cb for cb in built.callbacks if getattr(cb, "name", None) == "stopper")
    assert [d["decision"] for d in control.decisions] == ["stop", "stop", "error"]
    assert built.legacy["stopper"].cycles == 3  # switched off after the error; the run went on
    lines = [json.loads(line) for line in open(built.monitor.mismatch_file)]
    assert [line["decision"] for line in lines if line["kind"] == "decision"] == ["stop", "stop", "error"]


@pytest.mark.parametrize("name", ["metrics", "checkpoint", "evaluation", "optuna"])
def test_port_parity_of_the_builtin_pairs(name, tmp_path):
    result = check_port_parity(name, parity_config(), workdir=tmp_path)
    assert result.ok, result.summary()
    per_cycle = {k: n for k, (n, _) in result.counts.items() if k not in ("pruned_at", "prune_reports")}
    assert result.compared >= 4 and set(per_cycle.values()) == {4}
    if name == "optuna":  # and a run that Optuna prunes, on each side
        assert result.counts["pruned_at"] == (1, 1) and result.history[-2]["legacy"] == 1.0


def test_port_parity_reports_an_off_by_one_window(tmp_path, broken_pair):
    result = check_port_parity("metrics_broken", parity_config(cycles=5), workdir=tmp_path,
                               options={"window_size": 2})
    assert not result.ok
    assert "window_stats" in result.diff and "cycle" in result.diff


def test_continuous_training_in_shadow_mode_keeps_the_controls_copies_apart(tmp_path):
    built = run_shadow(tmp_path, {"continuous_training": {"checkpoint_dir": str(tmp_path / "versions"),
                                                          "impl": "shadow"}})
    real = sorted(os.listdir(tmp_path / "versions"))
    control = sorted(os.listdir(tmp_path / "shadow" / "continuous_training" / "checkpoint_dir"))
    assert any(name.startswith("version_") for name in real)  # the native port's session checkpoints
    # The legacy control copied every checkpoint written in the run (2 native session saves, at the periodic
    # checkpoints' cadence, + 2 periodic), into the shadow directory only.
    assert control == [f"version_{n:04d}.ckpt" for n in range(1, 5)]
    assert built.legacy["continuous_training"].resumed_from is None
    assert built.monitor.mismatches == 0
