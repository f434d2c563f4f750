"""``examples/own_module.py`` and ``examples/own_module_offpolicy.py``, run small: a user's own module trains
with the six legacy callbacks unchanged (``make test`` runs them through this file)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name, tmp_path):
    main = runpy.run_path(str(EXAMPLES / name))["main"]
    return main(["--small", "--out", str(tmp_path / "out")])


def test_examples_import_nothing_of_fxai_compat_but_the_wrapper_and_the_adapter():
    for name in ("own_module.py", "own_module_offpolicy.py"):
        lines = [line for line in (EXAMPLES / name).read_text().splitlines() if "fxai_compat" in line
                 and line.lstrip().startswith(("import", "from"))]
        assert lines == ["from fxai_compat import LegacyCallbackAdapter, wrap_env"], (name, lines)


def test_own_module_on_policy_trains_with_the_six_legacy_callbacks(tmp_path):
    out = _run("own_module.py", tmp_path)
    metrics_cb, checkpoint_cb, wandb_cb, _, continuous_cb, optuna_cb = out["callbacks"]
    history = out["history"]
    assert [h["cycle"] for h in history] == [0, 1, 2]
    # 3 epochs x 32 vector steps x 4 envs, less the NEXT_STEP calls that only reset a finished env
    ended = len(metrics_cb.rewards)
    assert 0 < ended <= 20 and 384 - ended <= history[-1]["timesteps_total"] < 384
    assert checkpoint_cb.best_cycle is not None and (tmp_path / "out" / "best" / "best_model.pt").exists()
    assert len(continuous_cb.copies) == 3 and wandb_cb.run is not None
    assert [v for _, v in optuna_cb.reports] == [h["episode_reward_mean"] for h in history
                                                  if not math.isnan(h["episode_reward_mean"])]


def test_own_module_off_policy_trains_with_the_six_legacy_callbacks(tmp_path):
    out = _run("own_module_offpolicy.py", tmp_path)
    metrics_cb, _, _, evaluation_cb, continuous_cb, _ = out["callbacks"]
    history = out["history"]
    assert [h["timesteps_total"] for h in history] == [60, 120, 180]  # one single-env step per training_step
    assert len(metrics_cb.rewards) >= 3
    assert evaluation_cb.num_evaluations == 3 and len(evaluation_cb.history) == 3
    assert all(r["episodes"] == 3 for r in evaluation_cb.history)  # the eval env's episodes, not training ones
    assert len(continuous_cb.copies) == 3


def test_running_an_example_again_continues_from_the_newest_version(tmp_path):
    """The continuous-training callback loads the last run's newest checkpoint into the user's module:
    its weights and, through the wrapped env, the counters (the contract's trainer.load_checkpoint)."""
    first = _run("own_module_offpolicy.py", tmp_path)
    second = _run("own_module_offpolicy.py", tmp_path)
    continuous_cb = second["callbacks"][4]
    assert continuous_cb.resumed_from.endswith("version_0003.ckpt")
    assert [h["timesteps_total"] for h in second["history"]] == [240, 300, 360]
    assert first["history"][-1]["timesteps_total"] == 180
