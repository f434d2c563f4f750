"""The run file's ``trainer.logger``: which Lightning loggers a run writes to, checked before anything runs.

Accepted values::

    logger: csv                     # the default: <run dir>/lightning_logs/version_N/metrics.csv
    logger: tensorboard             # <run dir>/tensorboard/version_N/events.out.tfevents.* (extra: fxai-compat[tensorboard])
    logger: wandb                   # an offline W&B run under <run dir>/wandb (wandb sync uploads it)
    logger: [csv, tensorboard]      # several
    logger: false                   # none
    logger:                         # Lightning's own form (as in LightningCLI): any Logger class and its arguments
      class_path: pytorch_lightning.loggers.TensorBoardLogger
      init_args: {save_dir: runs/tb, name: ppo}

``--set trainer.logger=tensorboard`` and ``--set 'trainer.logger=[csv,tensorboard]'`` work the same. A bad value
is one line (exit code 2 from the command line) at load time, not a traceback after the run started.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["LOGGER_NAMES", "check_logger_spec", "build_loggers"]

LOGGER_NAMES = ("csv", "tensorboard", "wandb")
_FORMS = ("csv, tensorboard, wandb, a list of them, false, or {class_path: ..., init_args: {...}}")
_SHORT_CLASSES = {"CSVLogger": "csv", "TensorBoardLogger": "tensorboard", "WandbLogger": "wandb"}


def _items(value: Any, where: str) -> list[Any]:
    if value is None or value is True:
        return ["csv"]
    if value is False:
        return []
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        return [value]
    if any(isinstance(item, (list, tuple, bool)) or item is None for item in value):
        raise ConfigError(f"{where}: a list of loggers holds names or class_path mappings, got {list(value)!r}; "
                          f"use {_FORMS}.")
    return list(value)


def _tensorboard_missing() -> bool:
    return importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None


def _resolve_class(path: Any, where: str):
    from pytorch_lightning.loggers import Logger

    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}.class_path must be a class name such as pytorch_lightning.loggers.CSVLogger, "
                          f"got {path!r}.")
    module, _, name = path.strip().rpartition(".")
    module = module or "pytorch_lightning.loggers"  # LightningCLI's short form: TensorBoardLogger
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(f"{where}.class_path {path}: cannot import {module} ({exc}).") from None
    except AttributeError:
        raise ConfigError(f"{where}.class_path {path}: {module} has no {name}.") from None
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"{where}.class_path {path} is not a Lightning Logger class.")
    return cls


def _check_item(item: Any, where: str) -> None:
    if isinstance(item, str):
        if item not in LOGGER_NAMES:
            raise ConfigError(f"{where}: unknown logger {item!r}; use {_FORMS}.")
        if item == "tensorboard" and _tensorboard_missing():
            raise ConfigError(f"{where}: tensorboard needs the tensorboard package: "
                              f"pip install 'fxai-compat[tensorboard]'.")
        return
    if isinstance(item, Mapping):
        unknown = sorted(set(map(str, item)) - {"class_path", "init_args"})
        if unknown or "class_path" not in item:
            raise ConfigError(f"{where}: a logger mapping takes class_path and init_args (Lightning's form), got "
                              f"keys {', '.join(map(str, item)) or 'none'}.")
        if not isinstance(item.get("init_args") or {}, Mapping):
            raise ConfigError(f"{where}.init_args must be a mapping of the logger's arguments, got "
                              f"{type(item.get('init_args')).__name__}.")
        cls = _resolve_class(item["class_path"], where)
        if cls.__name__ == "TensorBoardLogger" and _tensorboard_missing():
            raise ConfigError(f"{where}: TensorBoardLogger needs the tensorboard package: "
                              f"pip install 'fxai-compat[tensorboard]'.")
        import inspect

        try:
            inspect.signature(cls).bind_partial(**dict(item.get("init_args") or {}))
        except TypeError as exc:
            raise ConfigError(f"{where}: {cls.__name__}: {exc}.") from None
        return
    from pytorch_lightning.loggers import Logger

    if not isinstance(item, Logger):  # a Logger object passed from Python is used as is
        raise ConfigError(f"{where}: {item!r} is not a logger; use {_FORMS}.")


def check_logger_spec(value: Any, where: str = "trainer.logger") -> None:
    """Raise ``ConfigError`` (one line) unless ``value`` is an accepted ``trainer.logger``; builds nothing."""
    for item in _items(value, where):
        _check_item(item, where)


def build_loggers(value: Any, run_dir: str | Path, where: str = "trainer.logger") -> list[Any]:
    """The Lightning loggers ``value`` names, writing under ``run_dir`` (checked first)."""
    check_logger_spec(value, where)
    run_dir = str(run_dir)
    out = []
    for item in _items(value, where):
        if isinstance(item, str):
            out.append(_named(item, run_dir))
        elif isinstance(item, Mapping):
            cls = _resolve_class(item["class_path"], where)
            args = dict(item.get("init_args") or {})
            if cls.__name__ in _SHORT_CLASSES and "save_dir" not in args and cls.__name__ != "WandbLogger":
                args["save_dir"] = run_dir
            try:
                out.append(cls(**args))
            except (TypeError, ValueError, ImportError, ModuleNotFoundError) as exc:
                raise ConfigError(f"{where}: cannot build {cls.__name__}: {exc}") from None
        else:
            out.append(item)
    return out


def _named(name: str, run_dir: str):
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=run_dir, name="lightning_logs")
    if name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=run_dir, name="tensorboard", default_hp_metric=False)
    from .callbacks.wandb import create_wandb_logger

    return create_wandb_logger(project="fxai", mode="offline", dir=run_dir)
