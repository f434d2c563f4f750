"""The run's progress display (one bar for the whole run, plain lines off a terminal) on both hosts, and logged
epoch/step that continue after a resume. Real runs through the command line, read back from their output."""

from __future__ import annotations

import csv
import io
import re

import pytest
import yaml

from fxai_compat.cli import main

LINE = re.compile(r"^cycle (\d+)/(\d+) \| env steps ([\d,]+) \| ([\d,]+) steps/s \| ETA \d+:\d\d:\d\d \| reward (\S+)")


def _config(tmp_path, callbacks=None, **train):
    data = {"train": {"n_envs": 2, "n_steps": 32, "episode_length": 24, "cycles": 3, "update_epochs": 1,
                      "minibatch_size": 32, "eval_every": 2, "eval_episodes": 1, "checkpoint_every": 1,
                      "checkpoint_dir": str(tmp_path / "run" / "checkpoints"), "hidden_sizes": [8],
                      "data_length": 1000, **train},
            "callbacks": callbacks or {}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _progress(out: str) -> list[tuple[int, int, int]]:
    found = [LINE.match(line) for line in out.splitlines()]
    return [(int(m[1]), int(m[2]), int(m[3].replace(",", ""))) for m in found if m]


def _metrics_rows(version_dir) -> list[dict[str, str]]:
    with open(version_dir / "metrics.csv", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("train/cycle")]


@pytest.mark.parametrize("host", ["lightning", "legacy"])
def test_one_line_per_cycle_and_true_cycle_numbers_after_a_resume(tmp_path, capsys, host):
    path = _config(tmp_path)
    assert main(["train", "--config", str(path), "--host", host]) == 0
    first = capsys.readouterr().out
    assert _progress(first) == [(1, 3, 64), (2, 3, 128), (3, 3, 192)]
    assert "Epoch " not in first  # not Lightning's per-epoch bar
    # Resumed (Lightning: from last.ckpt; legacy: from its newest cycle checkpoint) for 5 cycles in all.
    assert main(["train", "--config", str(path), "--host", host, "--set", "cycles=5"]) == 0
    again = capsys.readouterr().out
    assert "resumed from" in again
    assert _progress(again) == [(4, 5, 256), (5, 5, 320)]
    if host == "lightning":  # the resumed session's logged epoch/step continue (Lightning restores them)
        rows = _metrics_rows(tmp_path / "run" / "lightning_logs" / "version_1")
        assert [(int(r["epoch"]), int(r["step"]), float(r["train/cycle"])) for r in rows] == [(3, 3, 3.0), (4, 4, 4.0)]


def test_legacy_continuous_training_resume_continues_cycles_and_logged_steps(tmp_path, capsys):
    """The demo's case: the legacy continuous-training callback restores the run itself; Lightning's own epoch
    count starts at 0 (it used to show 'Epoch 0' and log epoch/step from 0 while the run was at cycle 2)."""
    path = _config(tmp_path, {"continuous_training": {"checkpoint_dir": str(tmp_path / "run" / "versions")}},
                   cycles=2)
    assert main(["train", "--config", str(path)]) == 0
    assert _progress(capsys.readouterr().out) == [(1, 2, 64), (2, 2, 128)]
    assert main(["train", "--config", str(path)]) == 0
    assert _progress(capsys.readouterr().out) == [(3, 4, 192), (4, 4, 256)]
    rows = _metrics_rows(tmp_path / "run" / "lightning_logs" / "version_1")
    assert [(int(r["epoch"]), int(r["step"]), float(r["train/cycle"])) for r in rows] == [(2, 2, 2.0), (3, 3, 3.0)]


@pytest.mark.parametrize("host", ["lightning", "legacy"])
def test_enable_progress_bar_false_shows_nothing(tmp_path, capsys, host):
    path = _config(tmp_path, cycles=2)
    assert main(["train", "--config", str(path), "--host", host, "--set", "trainer.enable_progress_bar=false"]) == 0
    assert _progress(capsys.readouterr().out) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_bar_for_the_whole_run(tmp_path):
    from fxai_compat import fit
    from fxai_compat.progress_bar import RunProgressBar
    from tests.conftest import tiny

    screen = _Terminal()
    fit(tiny(tmp_path), [RunProgressBar(stream=screen)], enable_progress_bar=True)
    text = screen.getvalue()
    assert "\r" in text and "cycle 4/4 | env steps 256" in text and "steps/s" in text
    assert "Epoch" not in text and "Validation" not in text
    assert text.count("\n") == 1  # one bar, left on screen once at the end
