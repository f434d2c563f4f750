"""The ``tune:`` section of a run file: the search space of ``fxai-compat tune``, checked before a study is opened,
and where each trial's outputs go (its own folder, its own W&B run in the study's W&B group).

::

    tune:
      params:
        lr:            {low: 1.0e-4, high: 3.0e-3, log: true}     # float, log scale
        clip:          {low: 0.1, high: 0.3}                        # float, uniform
        gae_lambda:    {low: 0.9, high: 0.99, step: 0.01}           # float on a grid
        update_epochs: {type: int, low: 2, high: 8}                 # int (log: true and step work too)
        hidden_sizes:  {choices: [[32, 32], [64, 64]]}              # categorical

Each parameter is a field of the ``train`` section. Without a ``tune`` section the space is :data:`DEFAULT_SPACE`
(lr, ent_coef, clip, gae_lambda). Every bound and choice is checked as a value of its field, so a trial cannot
fail on a value the config would refuse.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigError, TrainConfig

__all__ = ["Distribution", "DEFAULT_SPACE", "parse_tune_section", "suggest", "trial_callbacks", "trial_wandb_group"]


@dataclass(frozen=True)
class Distribution:
    """One parameter's distribution: ``kind`` float | int | categorical."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"{self.name} {self.kind} [{self.low:g}, {self.high:g}{scale}]"


DEFAULT_SPACE = (Distribution("lr", "float", 1e-4, 3e-3, log=True),
                 Distribution("ent_coef", "float", 1e-4, 0.05, log=True),
                 Distribution("clip", "float", 0.1, 0.3),
                 Distribution("gae_lambda", "float", 0.9, 0.99))

_KEYS = {"type", "low", "high", "log", "step", "choices"}


def _number(value: Any, what: str, integer: bool) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{what} must be {'an integer' if integer else 'a finite number'}, got {value!r}.")
    return value


def _distribution(name: str, spec: Any, where: str) -> Distribution:
    what = f"{where}.params.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{what} must be a mapping such as {{low: 0.1, high: 0.3}} or {{choices: [...]}}, "
                          f"got {spec!r}.")
    unknown = sorted(set(map(str, spec)) - _KEYS)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(_KEYS))}.")
    if "choices" in spec:
        extra = sorted(set(map(str, spec)) - {"choices", "type"})
        choices = spec["choices"]
        if extra or spec.get("type", "categorical") != "categorical":
            raise ConfigError(f"{what}: choices make a categorical parameter; drop {', '.join(extra) or 'type'}.")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{what}.choices must be a non-empty list, got {choices!r}.")
        return Distribution(name, "categorical", choices=tuple(tuple(c) if isinstance(c, list) else c for c in choices))
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{what}.type must be float, int or categorical (with choices), got {kind!r}.")
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{what} needs low and high (or choices).")
    integer = kind == "int"
    low, high = (_number(spec[k], f"{what}.{k}", integer) for k in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{what}.log must be true or false, got {log!r}.")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{what}.step", integer)
        if step <= 0:
            raise ConfigError(f"{what}.step must be positive, got {step!r}.")
        if log:
            raise ConfigError(f"{what}: log and step exclude each other (Optuna samples a log scale without a step).")
    if not low < high:
        raise ConfigError(f"{what}: low ({low!r}) must be below high ({high!r}).")
    if log and low <= 0:
        raise ConfigError(f"{what}: a log scale needs low > 0, got {low!r}.")
    return Distribution(name, kind, low, high, log, step)


def parse_tune_section(section: Any, train: TrainConfig, where: str = "tune") -> tuple[Distribution, ...]:
    """The search space of a run file's ``tune`` section (None: :data:`DEFAULT_SPACE`), every bound checked."""
    if section is None:
        return DEFAULT_SPACE
    if not isinstance(section, Mapping):
        raise ConfigError(f"Section {where!r} must be a mapping with params: {{name: distribution}}, "
                          f"got {type(section).__name__}.")
    unknown = sorted(set(map(str, section)) - {"params"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; the section holds params: {{name: "
                          f"{{low, high, log, step, type}} or {{choices}}}}.")
    params = section.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{where}.params must map train fields to distributions, e.g. lr: {{low: 1.0e-4, "
                          f"high: 3.0e-3, log: true}}; got {params!r}.")
    fields = set(train.to_dict())
    out = []
    for name, spec in params.items():
        if name not in fields:
            raise ConfigError(f"{where}.params.{name} is not a field of the train section; tunable fields: "
                              f"{', '.join(sorted(fields))}.")
        dist = _distribution(str(name), spec, where)
        values = list(dist.choices) if dist.kind == "categorical" else [dist.low, dist.high]
        for value in values:  # each bound and choice must be a value the config accepts
            try:
                train.replace(**{name: list(value) if isinstance(value, tuple) else value})
            except ConfigError as exc:
                raise ConfigError(f"{where}.params.{name}: {value!r} is not a valid value "
                                  f"({str(exc).rstrip('.')}).") from None
        out.append(dist)
    return tuple(out)


def suggest(trial: Any, space: tuple[Distribution, ...]) -> dict[str, Any]:
    """One trial's parameters from ``space`` (Optuna's ``suggest_*``); categorical lists come back as lists."""
    params: dict[str, Any] = {}
    for d in space:
        if d.kind == "categorical":
            labels = [str(list(c)) if isinstance(c, tuple) else c for c in d.choices]
            picked = trial.suggest_categorical(d.name, labels)
            value = d.choices[labels.index(picked)]
            params[d.name] = list(value) if isinstance(value, tuple) else value
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return params


def trial_callbacks(callbacks: Mapping[str, Any], trial_dir: Any, study: str, number: int,
                    dir_options: tuple[str, ...] = ("save_dir", "checkpoint_dir")) -> dict[str, Any]:
    """A trial's callbacks section: options naming a directory point into the trial's folder (or the trials would
    overwrite each other's best model and resume from each other's versions), and the W&B run is the trial's own
    (``<trial dir>/wandb/<run>``, named ``<name or study>-trial-NNNN``)."""
    out: dict[str, Any] = {}
    for name, opts in callbacks.items():
        if isinstance(opts, Mapping):
            opts = {**opts, **{key: str(os.path.join(trial_dir, name)) for key in dir_options if opts.get(key)}}
            if name == "wandb":
                opts["dir"] = str(trial_dir)
                opts["name"] = f"{opts.get('name') or study}-trial-{number:04d}"
        out[name] = opts
    return out


@contextlib.contextmanager
def trial_wandb_group(study: str, enabled: bool = True):
    """W&B runs started inside (legacy ``WandbCallback`` and native ``WandbLogger`` alike) join the group ``study``,
    so a study's trials sit together in the W&B project. Set as a global W&B setting (``wandb.setup``): the legacy
    callback's ``wandb.init`` takes no group, and ``WANDB_RUN_GROUP`` is read only once per process."""
    if not enabled:
        yield
        return
    import wandb
    from wandb.sdk import wandb_setup

    before = wandb_setup.singleton().settings.run_group
    wandb.setup(settings=wandb.Settings(run_group=study))
    try:
        yield
    finally:
        wandb_setup.singleton().settings.run_group = before  # update_from_dict skips None: set it back directly
