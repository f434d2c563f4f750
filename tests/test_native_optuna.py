"""OptunaPruningCallback on real studies: the same reports and prune decision as the legacy OptunaCallback."""

from __future__ import annotations

import optuna
import pytest

from fxai_compat import LegacyTrainer, fit
from fxai_compat.callbacks import EvaluationCallback, MissingMetricError, OptunaPruningCallback
from legacy_callbacks import OptunaCallback


from conftest import tiny

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trial(tmp_path, name, pruner):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'studies.db'}", study_name=name,
                                direction="maximize", pruner=pruner)
    return study, study.ask()


def _stored(study, trial):
    return optuna.load_study(storage=study._storage, study_name=study.study_name).trials[trial.number]


def test_reports_equal_legacy_for_a_whole_run(tmp_path):
    cfg = tiny(tmp_path, cycles=4, episode_length=40, checkpoint_every=0)  # cycle 0 has no episode: NaN, not reported
    legacy_study, legacy_trial = _trial(tmp_path, "legacy", optuna.pruners.NopPruner())
    legacy = OptunaCallback(legacy_trial)
    LegacyTrainer(cfg, [legacy]).train()
    study, trial = _trial(tmp_path, "native", optuna.pruners.NopPruner())
    native = OptunaPruningCallback(trial)
    fit(cfg, [native])
    study.tell(trial, 1.0)

    assert [step for step, _ in legacy.reports] == [1, 2, 3]
    assert native.reports == legacy.reports  # exact values, cycle index as step
    stored = _stored(study, trial)
    assert stored.state.name == "COMPLETE"
    assert stored.intermediate_values == dict(legacy.reports)
    assert not native.pruned
    native.check_pruned()  # no-op when not pruned


def test_prune_decision_equals_legacy(tmp_path):
    cfg = tiny(tmp_path, cycles=4, checkpoint_every=1)
    pruner = optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=1)  # prunes at the report of cycle 1
    legacy_study, legacy_trial = _trial(tmp_path, "legacy", pruner)
    with pytest.raises(optuna.TrialPruned) as legacy_pruned:
        LegacyTrainer(cfg.replace(checkpoint_dir=str(tmp_path / "legacy")), [OptunaCallback(legacy_trial)]).train()
    legacy_study.tell(legacy_trial, state=optuna.trial.TrialState.PRUNED)

    study, trial = _trial(tmp_path, "native", pruner)
    native = OptunaPruningCallback(trial)
    with pytest.raises(optuna.TrialPruned, match="pruned at cycle 1") as native_pruned:
        fit(cfg, [native])
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    assert "step 1" in str(legacy_pruned.value) and "cycle 1" in str(native_pruned.value)
    assert (native.pruned, native.pruned_at) == (True, 1)
    legacy_stored, native_stored = _stored(legacy_study, legacy_trial), _stored(study, trial)
    assert native_stored.state.name == legacy_stored.state.name == "PRUNED"
    assert native_stored.intermediate_values == legacy_stored.intermediate_values
    assert sorted(native_stored.intermediate_values) == [0, 1]
    # Training ended inside the pruned cycle on both hosts: only cycle 0's checkpoint exists.
    assert sorted(p.name for p in (tmp_path / "legacy").iterdir()) == ["cycle-0000.ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["cycle-0000.ckpt", "last.ckpt"]


def test_validation_metric_is_reported_on_evaluation_cycles_only(tmp_path):
    cfg = tiny(tmp_path, cycles=4, checkpoint_every=0)
    study, trial = _trial(tmp_path, "val", optuna.pruners.NopPruner())
    native, evaluation = OptunaPruningCallback(trial, monitor="val/episode_reward_mean"), EvaluationCallback()
    fit(cfg, [evaluation, native])
    assert native.reports == [(r["cycle"], r["episode_reward_mean"]) for r in evaluation.history]
    assert [step for step, _ in native.reports] == [1, 3]


def test_missing_metric_and_missing_trial_are_clear_errors(tmp_path):
    cfg = tiny(tmp_path, cycles=1, checkpoint_every=0, eval_every=0)
    study, trial = _trial(tmp_path, "missing", optuna.pruners.NopPruner())
    with pytest.raises(MissingMetricError, match="'train/reward_mean', which was not logged.*train/episode_reward_mean"):
        fit(cfg, [OptunaPruningCallback(trial, monitor="train/reward_mean")])
    with pytest.raises(ValueError, match="trial=None on global rank 0"):
        fit(cfg, [OptunaPruningCallback(None)])
