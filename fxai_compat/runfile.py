"""Run files: load a YAML run config (sections ``train``, ``trainer``, ``callbacks``, ``tune``) and apply ``--set``
overrides.

Bad input raises :class:`~fxai_compat.config.ConfigError` with one actionable sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import ConfigError, TrainConfig, load_yaml

__all__ = ["RunConfig", "load_run_config"]

_SECTIONS = ("train", "trainer", "callbacks", "tune")


class RunConfig:
    """A run file: ``train`` (TrainConfig fields), ``trainer`` (pl.Trainer options), ``callbacks`` (one section each),
    ``tune`` (the search space of ``fxai-compat tune``, see :mod:`fxai_compat.tune_space`)."""

    def __init__(self, train: TrainConfig, trainer: dict[str, Any], callbacks: dict[str, Any], source: str,
                 tune_space: tuple = ()):
        self.train, self.trainer, self.callbacks, self.source = train, trainer, callbacks, source
        self.tune_space = tune_space


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
        except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
            raise ConfigError(f"--set {key.strip()}: {str(exc).split(';')[0]}; no setting takes a value that "
                              f"large.") from None
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
    for name in _SECTIONS:  # checked before copying: dict() of a list would fail with a traceback
        if not isinstance(data.get(name) or {}, Mapping):
            raise ConfigError(f"Section {name!r} of {source} must be a mapping, got {type(data.get(name)).__name__}.")
    sections = {name: dict(data.get(name) or {}) for name in _SECTIONS}
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
    from .loggers import check_logger_spec
    from .tune_space import parse_tune_section

    if "logger" in sections["trainer"]:  # checked here: a bad logger must fail before anything is built or written
        check_logger_spec(sections["trainer"]["logger"], f"{source} [trainer] logger")
    space = parse_tune_section(sections["tune"] or None, train, f"{source} [tune]")
    return RunConfig(train, sections["trainer"], sections["callbacks"], source, space)
