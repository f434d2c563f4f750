"""The benchmark's smoke run: it runs every variant and writes a complete results file (no timing is checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from fxai_compat.bench import RATIOS, TARGETS


def test_quick_run_writes_every_ratio_and_variant(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "fxai_compat.bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    variants = {name for pair in RATIOS.values() for name in pair}
    assert set(results["variants"]) == variants
    for info in results["variants"].values():
        assert len(info["runs"]) == 1 and info["seconds_median"] > 0 and info["env_steps_per_second"] > 0
    assert set(results["ratios"]) == set(RATIOS)
    for name, info in results["ratios"].items():
        assert info["target"] == TARGETS[name] and math.isfinite(info["median"]) and info["median"] > 0
        assert info["meets_target"] == (info["median"] <= info["target"])
    assert results["memory"] == {}  # --quick skips the memory runs
    assert all(math.isfinite(v) for v in results["dispatch_cost"].values())
    assert "| native |" in done.stdout and f"written: {out}" in done.stdout


def test_bad_arguments_are_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fxai_compat.bench", "--cycles", "0", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--cycles and --repeats must be positive" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r.json").exists()


def test_memory_is_measured_over_the_run_itself():
    from fxai_compat.bench import _memory_mb, _peak_rss_mb

    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: 200 MB resident
    del block
    resident, peak = _memory_mb()
    assert peak > resident + 150  # the freed block still counts in the peak...
    resident, peak = _memory_mb(reset_peak=True)
    assert peak < resident + 20  # ...until the peak is reset

    before, peak = _peak_rss_mb("legacy_none", 1)  # a fresh process, measured after its warm-up run
    assert 50 < before <= peak < before + 100
