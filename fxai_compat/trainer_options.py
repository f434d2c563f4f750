"""Check a run's ``trainer:`` section against ``pl.Trainer`` itself, before anything is built or written.

No hand-kept list: the keys and their types come from the signature of ``pl.Trainer.__init__`` (so a
Lightning upgrade that adds or renames an option is followed), and the values are then judged by
Lightning's own validators, by constructing the very ``pl.Trainer`` the run would construct (same
defaults, same ``strategy`` translation) and throwing it away. Lightning refuses an unknown strategy,
accelerator or precision, an accelerator this machine does not have (``accelerator: gpu`` without a
GPU), impossible batch limits and the like in its constructor; building a trainer writes no file.
What the constructor does not check (``max_epochs: abc`` fails only inside ``fit``) the annotations do.

>>> check_trainer_options({"max_epochs": 3, "enable_progress_bar": False}) is None
True
>>> check_trainer_options({"max_epoch": 2})
Traceback (most recent call last):
...
fxai_compat.config.ConfigError: [trainer]: unknown pl.Trainer option max_epoch (did you mean max_epochs?).
"""

from __future__ import annotations

import collections.abc
import datetime
import difflib
import functools
import inspect
import logging
import os
import typing
import warnings
from collections.abc import Mapping
from typing import Any

from .config import ConfigError, TrainConfig

__all__ = ["check_trainer_options", "trainer_option_names", "FIT_OPTIONS"]

#: Keys of the ``trainer:`` section that go to ``fit`` rather than ``pl.Trainer`` (the host's ``fit`` takes them).
FIT_OPTIONS = ("ckpt_path",)
#: Options the host sets itself from the run (callbacks, plugins): a run file cannot give them as plain values.
_HOST_OPTIONS = ("callbacks", "plugins")


@functools.lru_cache(maxsize=1)
def _signature() -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    import pytorch_lightning as pl

    parameters = {name: p for name, p in inspect.signature(pl.Trainer.__init__).parameters.items() if name != "self"}
    try:
        hints = typing.get_type_hints(inspect.unwrap(pl.Trainer.__init__))
    except Exception:  # pragma: no cover - an annotation this Python cannot evaluate: keys are still checked
        hints = {}
    return parameters, hints


def trainer_option_names() -> list[str]:
    """Every option ``pl.Trainer`` takes, as its signature says (plus ``ckpt_path``, which ``fit`` takes)."""
    return sorted([*_signature()[0], *FIT_OPTIONS])


def check_trainer_options(options: Mapping[str, Any], config: TrainConfig | None = None, *,
                          source: str = "") -> None:
    """Raise a one-line ``ConfigError`` for an unknown key, a value of the wrong type, or a value Lightning's
    constructor refuses; return None when the trainer the run would build can be built."""
    where = f"{source} [trainer]" if source else "[trainer]"
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} must be a mapping of pl.Trainer options, got {type(options).__name__}.")
    parameters, hints = _signature()
    for key, value in options.items():
        if key in FIT_OPTIONS:
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{where}: ckpt_path must be a checkpoint path, \"last\" or null, got {value!r}.")
            continue
        if key not in parameters:
            close = difflib.get_close_matches(str(key), [*parameters, *FIT_OPTIONS], n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; pl.Trainer takes: {', '.join(sorted(parameters))}"
            raise ConfigError(f"{where}: unknown pl.Trainer option {key}{hint}.")
        if key == "logger":  # the run file's forms (csv, tensorboard, wandb, lists, class_path): fxai_compat.loggers
            continue
        if key in _HOST_OPTIONS and value is not None:
            raise ConfigError(f"{where}: {key} cannot be set in a run file (the run builds its own {key}); "
                              f"choose callbacks in the callbacks section.")
        hint = hints.get(key)
        if hint is not None and _fits(value, hint) is False:
            raise ConfigError(f"{where}: {key} must be {_describe(hint)} (pl.Trainer's annotation), got "
                              f"{_show(value)} ({type(value).__name__}).")
    _construct(options, config, where)


def _construct(options: Mapping[str, Any], config: TrainConfig | None, where: str) -> None:
    """Build (and drop) the trainer the host would build: Lightning's constructor runs every check it has."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from .lightning_host import build_trainer

    kwargs = {k: v for k, v in options.items() if k not in FIT_OPTIONS and k not in _HOST_OPTIONS}
    kwargs["logger"] = False  # a logger is the runner's business; constructing one here would be wasted work
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # "GPU available: False, used: False" would be printed twice
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = build_trainer(config or TrainConfig(), [], **kwargs)
        del trainer
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as exc:
        hint = ""
        said = _first_sentence(exc).lower()
        if options.get("accelerator") not in (None, "cpu", "auto") and any(
                word in said for word in ("backend", "not available", "can not run", "accelerator")):
            hint = (f"; accelerator {options['accelerator']!r} is not available on this machine: use accelerator: cpu "
                    f"(or auto)")
        raise ConfigError(f"{where}: pl.Trainer refuses these options: {_first_sentence(exc)}{hint}.") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether a plain (YAML) value fits an annotation; None when the annotation is not one a plain value can be
    judged against (a class of Lightning objects: the constructor decides)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Union:
        results = [_fits(value, arm) for arm in typing.get_args(hint)]
        return True if any(r is True for r in results) else (None if any(r is None for r in results) else False)
    if origin is typing.Literal:
        return value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (os.PathLike,) or (inspect.isclass(hint) and issubclass(hint, os.PathLike)):
        return isinstance(value, (str, os.PathLike))
    if hint is datetime.timedelta:
        return isinstance(value, datetime.timedelta)
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False if isinstance(value, (str, int, float, bool, dict)) or value is None else None
        args = typing.get_args(hint)
        results = [_fits(item, args[0]) for item in value] if args else []
        return False if any(r is False for r in results) else (True if all(r is True for r in results) else None)
    if origin is dict:
        return isinstance(value, dict)
    if inspect.isclass(hint):
        if isinstance(value, hint):
            return True
        # A YAML value (number, text, list, mapping, bool) is never one of Lightning's objects.
        return False if isinstance(value, (str, int, float, bool, list, dict)) or value is None else None
    return None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        arms = [_describe(arm) for arm in typing.get_args(hint)]
        return " or ".join(dict.fromkeys(arms))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             datetime.timedelta: "a timedelta"}
    if hint in names:
        return names[hint]
    if origin is not None:
        return {list: "a list", dict: "a mapping"}.get(origin, "a list")
    return f"a {getattr(hint, '__name__', str(hint))}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "..."


def _first_sentence(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (" ".join(lines) or type(exc).__name__)[:300].rstrip(".!")
