"""The env wrapper's cost benchmark (``python -m fxai_compat.bench_envwrap``, in ``make bench``) runs and
writes every setting's ratio; bad arguments are refused before anything runs."""

from __future__ import annotations

import json

import pytest

from fxai_compat.bench_envwrap import SETTINGS, TARGET, main


def test_quick_run_writes_every_setting(tmp_path):
    out = tmp_path / "envwrap.json"
    assert main(["--quick", "--n-envs", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results["settings"]) == list(SETTINGS) and results["target"] == TARGET
    for found in results["settings"].values():
        assert len(found["ratios"]) == 2 and found["ratio_min"] <= found["ratio_median"] <= found["ratio_max"]
        assert found["wrapped_steps_per_s_median"] > 0 and found["unwrapped_steps_per_s_median"] > 0
    assert isinstance(results["meets_target"], bool)


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--rounds", "0"])
    assert exc.value.code == 2 and "--rounds must be a positive integer; got 0" in capsys.readouterr().err
