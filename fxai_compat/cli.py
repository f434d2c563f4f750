"""The ``fxai-compat`` command line: ``train`` a config under Lightning (default) or the legacy loop.

User errors (bad flags, files, values) exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig, load_yaml

__all__ = ["main", "load_run_config", "RunConfig"]

_SECTIONS = ("train", "trainer", "callbacks")


class RunConfig:
    """A run file: ``train`` (TrainConfig fields), ``trainer`` (pl.Trainer options), ``callbacks`` (one section each)."""

    def __init__(self, train: TrainConfig, trainer: dict[str, Any], callbacks: dict[str, Any], source: str):
        self.train, self.trainer, self.callbacks, self.source = train, trainer, callbacks, source


def _parse_set(items: list[str]) -> list[tuple[list[str], Any]]:
    import yaml

    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. --set n_envs=4 or --set callbacks.metrics.window_size=50), got {item!r}.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        path = key.strip().split(".")
        if path[0] not in _SECTIONS:
            path = ["train", *path]
        out.append((path, value))
    return out


def load_run_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    data: Any = load_yaml(path) if path else {}
    source = path or "defaults"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must hold a mapping with sections {', '.join(_SECTIONS)}; got {type(data).__name__}.")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"Unknown section(s) in {source}: {', '.join(map(str, unknown))}. "
                          f"Valid sections are: {', '.join(_SECTIONS)}.")
    sections = {name: dict(data.get(name) or {}) for name in _SECTIONS}
    for name in _SECTIONS:
        if not isinstance(data.get(name) or {}, Mapping):
            raise ConfigError(f"Section {name!r} of {source} must be a mapping.")
    for path_keys, value in _parse_set(list(overrides)):
        target = sections[path_keys[0]]
        for key in path_keys[1:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {'.'.join(path_keys)}: {key} is not a section.")
        if len(path_keys) < 2:
            raise ConfigError(f"--set {path_keys[0]}=... must name a key inside the section.")
        target[path_keys[-1]] = value
    train = TrainConfig.from_mapping(sections["train"], source=f"{source} [train]")
    return RunConfig(train, sections["trainer"], sections["callbacks"], source)


def _make_callbacks(run: RunConfig, run_dir: Path):
    """Legacy callbacks from the ``callbacks`` section; an ``optuna`` section gets a trial from its study."""
    from legacy_callbacks import create_callbacks

    sections = {name: dict(opts or {}) for name, opts in run.callbacks.items()}
    study = trial = None
    optuna_opts = sections.get("optuna")
    if optuna_opts is not None and optuna_opts.get("enabled", True) and "trial" not in optuna_opts:
        import optuna

        storage = optuna_opts.pop("storage", None)
        name = optuna_opts.pop("study_name", "fxai")
        direction = optuna_opts.pop("direction", "maximize")
        if storage and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
        trial = study.ask()
        optuna_opts["trial"] = trial
    try:
        return create_callbacks(sections), study, trial
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{run.source} [callbacks]: {exc}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    run = load_run_config(args.config, args.set)
    run_dir = Path(run.train.checkpoint_dir).parent
    callbacks, study, trial = _make_callbacks(run, run_dir)
    final: dict[str, Any] = {}
    state = "COMPLETE"
    try:
        if args.host == "legacy":
            from .legacy_host import LegacyTrainer

            trainer = LegacyTrainer(run.train, callbacks)
            trainer.train()
            final = {"cycles": trainer.core.cycles_completed, "timesteps": trainer.total_timesteps,
                     "episodes": trainer.num_episodes}
            checkpoints = trainer.checkpoint_paths
            metrics = trainer.core.cycle_metrics(None)
        else:
            from .adapter import wrap
            from .lightning_host import fit

            options = {"enable_progress_bar": True, **run.trainer}
            pl_trainer = fit(run.train, wrap(callbacks), **options)
            module = pl_trainer.lightning_module
            final = {"cycles": module.core.cycles_completed, "timesteps": module.core.total_timesteps,
                     "episodes": module.core.num_episodes}
            checkpoints = sorted(str(p) for p in Path(run.train.checkpoint_dir).glob("cycle-*.ckpt"))
            metrics = module.cycle_metrics()
            if pl_trainer.logger is not None and getattr(pl_trainer.logger, "log_dir", None):
                print(f"lightning logs: {pl_trainer.logger.log_dir}")
    except BaseException as exc:
        if study is not None and type(exc).__name__ == "TrialPruned":
            state = "PRUNED"
            metrics = {}
        else:
            if study is not None:
                import optuna

                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    if study is not None:
        import optuna

        if state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, metrics.get("episode_reward_mean", float("nan")))
        print(f"optuna: trial {trial.number} of study {study.study_name!r} {state.lower()}")
    print(f"host: {args.host}; trained {final.get('cycles', '?')} cycles, {final.get('timesteps', '?')} env steps, "
          f"{final.get('episodes', '?')} episodes; last episode_reward_mean "
          f"{metrics.get('episode_reward_mean', float('nan')):.3f}")
    print(f"checkpoints: {run.train.checkpoint_dir} ({len(checkpoints)} periodic)")
    for cb in callbacks:
        where = (getattr(cb, "save_dir", None) or getattr(cb, "checkpoint_dir", None)
                 or getattr(getattr(cb, "run", None), "dir", None))
        if where:
            print(f"{type(cb).__name__}: {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxai-compat", description="FxAI legacy callbacks on PyTorch Lightning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train PPO from a run config",
                           description="Train PPO from a run config (sections: train, trainer, callbacks).")
    train.add_argument("--config", help="YAML run config (default: built-in defaults)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value: n_envs=4 (train section) or callbacks.metrics.window_size=50")
    train.add_argument("--host", choices=("lightning", "legacy"), default="lightning",
                       help="run under Lightning (default) or the legacy FxAI loop")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fxai-compat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fxai-compat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
