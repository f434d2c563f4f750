"""The benchmark's smoke run: it runs every scale and variant and writes a complete results file (no timing is checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from fxai_compat.bench import FIXED_OVERHEAD_TARGET_MS, RATIOS, SCALES, TARGETS


def test_quick_run_writes_every_scale_ratio_variant_and_overhead(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "fxai_compat.bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["scales"]) == set(SCALES) == {"cartpole", "demo", "production"}
    for scale, res in results["scales"].items():
        spec = SCALES[scale]
        assert res["config"] == f"examples/{spec.config}" and res["cycles"] == 2 and res["repeats"] == 1
        assert set(res["variants"]) == set(spec.variants)
        for info in res["variants"].values():
            assert len(info["runs"]) == 1 and info["seconds_median"] > 0 and info["env_steps_per_second"] > 0
        expected = {r for r, (num, den) in RATIOS.items() if num in spec.variants and den in spec.variants}
        assert set(res["ratios"]) == expected and "host" in expected and "native" in expected
        for name, info in res["ratios"].items():
            assert info["target"] == TARGETS[scale].get(name) and math.isfinite(info["median"]) and info["median"] > 0
            assert info["meets_target"] == (None if info["target"] is None else info["median"] <= info["target"])
        host = res["fixed_overhead"]["host"]
        for key in ("per_cycle_ms", "per_run_rest_ms", "amortized_per_cycle_ms", "outside_ppo_work_per_cycle_ms"):
            assert math.isfinite(host[key]["median"]) and len(host[key]["per_round"]) == 1
        # The whole difference spread over the cycles is the per-cycle part plus the rest per run, per cycle.
        assert math.isclose(host["amortized_per_cycle_ms"]["median"] * 2,
                            host["per_cycle_ms"]["median"] * 2 + host["per_run_rest_ms"]["median"], abs_tol=1e-6)
        assert host["meets_target"] == (host["per_cycle_ms"]["median"] <= FIXED_OVERHEAD_TARGET_MS)
    # 2 cycles: 6 callbacks x (2 episode starts at the start + events of 2 cycles) were delivered and counted.
    assert results["scales"]["demo"]["adapted_event_us"]["events_per_run"] > 6 * 2 * 256
    assert results["scales"]["production"]["work_per_cycle"] == {
        "n_envs": 16, "n_steps": 256, "update_epochs": 10, "minibatch_size": 512, "hidden_sizes": [256, 256],
        "optimizer_steps": 80}
    slow = results["slow_env"]
    assert slow["env"] == "fxai_compat/SlowCartPole-v1" and slow["cycles"] == 2 and slow["repeats"] == 1
    assert slow["speedup_whole_run"]["median"] > 0 and "vector_env async / sync speed-up" in done.stdout
    assert results["memory"] == {}  # --quick skips the memory runs
    assert all(math.isfinite(v) for v in results["dispatch_cost"].values())
    for scale in SCALES:
        assert f"| {scale} | host |" in done.stdout
    assert "| demo | native |" in done.stdout and f"written: {out}" in done.stdout


def test_bad_arguments_are_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fxai_compat.bench", "--cycles", "1", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--cycles must be at least 2" in done.stderr
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
