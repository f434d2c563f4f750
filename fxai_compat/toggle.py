"""Per-callback ``legacy`` / ``native`` / ``shadow`` switch: the port registry and ``build_callbacks``.

A run config's ``callbacks:`` section has one entry per callback: the options the legacy factory
reads, plus ``impl: legacy | native | shadow``. Overrides, highest first: the command line
(``--impl checkpoint=native``, ``--impl all=legacy``), the environment
(``FXAI_CALLBACK_IMPL=checkpoint=native,metrics=legacy``), the config file; the default is ``legacy``.

Each registered :class:`PortPair` says how to build the legacy callback and its native port from
the same options, and which *observables* must agree between them (checked after every cycle in
shadow mode and by ``fxai_compat.parity.check_port_parity``). Register your own pair in one line::

    register_port("my_metric", legacy=MyLegacyCallback, native=MyNativeCallback,
                  observables={"best": (lambda cb: cb.best, lambda cb: cb.best)})
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["IMPLS", "Observable", "PortPair", "REGISTRY", "register_port", "resolve_impls", "parse_impl_overrides",
           "validate_callbacks", "build_callbacks", "BuiltCallbacks", "ENV_VAR"]

IMPLS = ("legacy", "native", "shadow")
ENV_VAR = "FXAI_CALLBACK_IMPL"


@dataclass(frozen=True)
class Observable:
    """A value both implementations expose, read after each cycle and compared within ``tolerance``."""

    name: str
    legacy: Callable[[Any], Any]
    native: Callable[[Any], Any]
    tolerance: float = 1e-6


@dataclass
class PortPair:
    """A legacy callback and its native Lightning port, built from the same options."""

    name: str
    legacy: Callable[..., Any]
    native: Callable[..., Any] | str | None = None
    """A class/factory taking the same options, or ``"module:attr"`` (imported when first used)."""
    observables: tuple[Observable, ...] = ()
    native_options: tuple[str, ...] | None = None
    """Options the native side accepts (default: read from its signature)."""
    prepare: Callable[[dict[str, Any], "BuildContext"], dict[str, Any]] | None = None
    """Adjusts options before building (e.g. turns a study name into a trial); both sides get the result."""
    prepare_options: tuple[str, ...] = ()
    """Options ``prepare`` consumes, accepted whichever side is built."""
    check: Callable[..., Any] | None = None
    """A port whose observables are not per-cycle values (files a run leaves, what a resumed run does) is proven
    by a scenario: ``check(pair, config, options, workdir, trainer_kwargs) -> ParityResult`` runs each side
    on its own and compares what they left. ``check_port_parity`` then calls it instead of shadow mode."""

    def native_factory(self) -> Callable[..., Any] | None:
        if isinstance(self.native, str):
            module, _, attr = self.native.partition(":")
            self.native = getattr(importlib.import_module(module), attr)
        return self.native

    def scenario_check(self) -> Callable[..., Any] | None:
        """``check``, imported when first used if given as ``"module:attr"``."""
        if isinstance(self.check, str):
            module, _, attr = self.check.partition(":")
            self.check = getattr(importlib.import_module(module), attr)
        return self.check

    def accepted(self, impl: str) -> tuple[str, ...]:
        if impl == "native" and self.native_options is not None:
            return self.native_options
        factory = self.legacy if impl == "legacy" else self.native_factory()
        params = inspect.signature(factory).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return ("*",)
        return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def required(self, impl: str) -> tuple[str, ...]:
        """Options without a default on that side (none when ``prepare`` may supply them)."""
        factory = self.legacy if impl == "legacy" else self.native_factory()
        if self.prepare is not None or factory is None:
            return ()
        try:
            params = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):
            return ()
        return tuple(p.name for p in params
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty)


REGISTRY: dict[str, PortPair] = {}


_DECORATE = object()  # register_port's "native not given" marker: used as a decorator


def register_port(name: str, legacy: Callable[..., Any] | None = None,
                  native: Callable[..., Any] | str | None = _DECORATE,  # type: ignore[assignment]
                  *, observables: Mapping[str, Any] | Iterable[Observable] = (), replace: bool = False,
                  native_options: Iterable[str] | None = None, prepare=None, prepare_options: Iterable[str] = (),
                  check: Callable[..., Any] | None = None):
    """Register a legacy/native pair under ``name``. As a decorator on the native class:
    ``@register_port("mine", legacy=MyLegacy, observables={...})``. ``native=None`` registers a
    callback that has no native port yet (``impl: legacy`` only).

    ``observables`` maps a name to ``(legacy_getter, native_getter)`` or
    ``(legacy_getter, native_getter, tolerance)``, or is a list of :class:`Observable`. ``check`` proves a
    pair by a scenario instead (see :attr:`PortPair.check`).
    """
    def build(native_obj):
        if not replace and name in REGISTRY:
            raise ValueError(f"A port named {name!r} is already registered; pass replace=True to override it.")
        if legacy is None:
            raise ValueError(f"register_port({name!r}) needs the legacy callback class (legacy=...).")
        obs = []
        items = observables.items() if isinstance(observables, Mapping) else ((o.name, o) for o in observables)
        for obs_name, spec in items:
            obs.append(spec if isinstance(spec, Observable) else Observable(obs_name, *spec))
        REGISTRY[name] = PortPair(name, legacy, native_obj, tuple(obs),
                                  tuple(native_options) if native_options is not None else None, prepare,
                                  tuple(prepare_options), check)
        return native_obj

    # Why a marker and not ``native is None``: with None meaning "decorator", register_port("x", legacy=X,
    # native=None) (a callback without a port yet) silently registered nothing.
    if native is _DECORATE:
        return build
    build(native)
    return REGISTRY[name]


# -- choosing implementations ----------------------------------------------------------------------

def parse_impl_overrides(items: Iterable[str] | str | None, *, source: str) -> dict[str, str]:
    """``["checkpoint=native", "all=legacy"]`` or ``"checkpoint=native,metrics=legacy"`` -> dict."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [part for part in items.split(",") if part.strip()]
    out: dict[str, str] = {}
    for item in items:
        for part in str(item).split(","):
            name, sep, impl = part.strip().partition("=")
            name, impl = name.strip(), impl.strip()  # "checkpoint = native" means checkpoint=native
            if not sep or not name or not impl:
                raise ConfigError(f"{source}: expected NAME=IMPL (e.g. checkpoint=native or all=legacy), got {part!r}.")
            if impl not in IMPLS:
                raise ConfigError(f"{source}: unknown implementation {impl!r} for {name!r}; choose one of {', '.join(IMPLS)}.")
            out[name] = impl
    return out


def resolve_impls(callbacks: Mapping[str, Any], cli: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """name -> (impl, where it came from), applying command line > environment > config file > default."""
    env = os.environ if env is None else env
    env_overrides = parse_impl_overrides(env.get(ENV_VAR), source=f"environment variable {ENV_VAR}")
    cli = dict(cli or {})
    names = list(callbacks)
    for layer, where in ((env_overrides, ENV_VAR), (cli, "--impl")):
        for name in layer:  # naming a callback the config does not have is a mistake worth a clear error
            if name != "all" and name not in names:
                known = ", ".join(names) or "none"
                raise ConfigError(f"{where} names callback {name!r}, which the config does not have "
                                  f"(its callbacks: {known}; registered ports: {', '.join(REGISTRY)}).")
    out = {}
    for name in names:
        options = _entry_options(name, callbacks[name])
        impl, where = options.get("impl", "legacy"), "config"
        if impl not in IMPLS:
            raise ConfigError(f"callbacks.{name}.impl is {impl!r}; choose one of {', '.join(IMPLS)}.")
        if "impl" not in options:
            where = "default"
        for layer, source in ((env_overrides, ENV_VAR), (cli, "--impl")):
            if "all" in layer:
                impl, where = layer["all"], source
            if name in layer:
                impl, where = layer[name], source
        out[name] = (impl, where)
    return out


# -- building --------------------------------------------------------------------------------------

@dataclass
class BuildContext:
    """What a pair's ``prepare`` may need: the run's directories and optional shared objects."""

    run_dir: Path
    shadow_dir: Path
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuiltCallbacks:
    """The Lightning callbacks of a run, which implementation each one uses, and the shadow monitor."""

    callbacks: list[Any]
    impls: dict[str, str]
    sources: dict[str, str]
    legacy: dict[str, Any] = field(default_factory=dict)
    native: dict[str, Any] = field(default_factory=dict)
    loggers: list[Any] = field(default_factory=list)
    monitor: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    """Objects made while building (e.g. ``optuna_study``/``optuna_trial``), for the caller to finish."""

    def describe(self) -> str:
        return ", ".join(f"{name}={impl} ({self.sources[name]})" for name, impl in self.impls.items())


def _entry_options(name: str, options: Any) -> Mapping[str, Any]:
    """One entry's options; a scalar or list there (``metrics: 5``) is a user error, not an AttributeError."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"callbacks.{name} must be a mapping of options (or empty); "
                          f"got {type(options).__name__} {options!r}.")
    return options


def _impl_overrides(impl: Mapping[str, str] | str | Iterable[str] | None) -> dict[str, str]:
    """``impl`` of ``build_callbacks``: a mapping, NAME=IMPL strings, or a bare mode meaning ``all=<mode>``.
    A mapping is checked like the command line: an unchecked ``{"all": "nativ"}`` silently dropped every
    callback (no branch of the builder matched the unknown mode)."""
    if isinstance(impl, str) and impl.strip() in IMPLS:
        return {"all": impl.strip()}
    if isinstance(impl, Mapping):
        impl = [f"{name}={value}" for name, value in impl.items()]
    return parse_impl_overrides([impl] if isinstance(impl, str) else impl, source="--impl")


def _section_of(config: Any) -> Mapping[str, Any]:
    section = getattr(config, "callbacks", None)
    if section is None:
        section = config.get("callbacks", config) if isinstance(config, Mapping) else {}
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"The callbacks section must be a mapping of name to options; got {type(section).__name__}.")
    return section


def validate_callbacks(config: Any, impl: Mapping[str, str] | str | Iterable[str] | None = None, *,
                       env: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Check a callbacks section without building anything: known names, modes, a native port where one is
    asked for, options the chosen side(s) accept. Returns name -> (impl, where it came from)."""
    section = _section_of(config)
    unknown = [name for name in section if name not in REGISTRY]
    if unknown:
        raise ConfigError(f"Unknown callback(s) {', '.join(map(repr, unknown))} in the callbacks section; "
                          f"known callbacks: {', '.join(REGISTRY)}.")
    choices = resolve_impls(section, _impl_overrides(impl), env)
    for name, options in section.items():
        options = dict(_entry_options(name, options))
        options.pop("impl", None)
        if not options.pop("enabled", True):
            continue
        chosen = choices[name][0]
        pair = REGISTRY[name]
        if chosen in ("native", "shadow") and pair.native_factory() is None:
            raise ConfigError(f"callbacks.{name}: impl {chosen!r} asked for, but {name} has no native port yet; "
                              f"use impl: legacy.")
        for side in ("legacy",) if chosen == "legacy" else ("native",) if chosen == "native" else ("legacy", "native"):
            _check_options(pair, side, options)
    return choices


def _check_options(pair: PortPair, impl: str, options: Mapping[str, Any]) -> None:
    accepted = pair.accepted(impl) + pair.prepare_options
    if "*" in accepted:
        return
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ConfigError(f"callbacks.{pair.name}: the {impl} implementation does not accept option(s) "
                          f"{', '.join(unknown)}; it accepts: {', '.join(accepted) or 'none'}.")
    # Named here rather than as a TypeError about a private factory (e.g. "_native_checkpoint() missing ...").
    missing = [name for name in pair.required(impl) if name not in options]
    if missing:
        raise ConfigError(f"callbacks.{pair.name}: the {impl} implementation needs option(s) {', '.join(missing)}.")


def build_callbacks(config: Any, impl: Mapping[str, str] | str | Iterable[str] | None = None, *,
                    env: Mapping[str, str] | None = None, run_dir: str | os.PathLike | None = None,
                    shadow_strict: bool = False, extras: dict[str, Any] | None = None,
                    keep_history: bool = False) -> BuiltCallbacks:
    """Lightning callbacks for a run config's ``callbacks`` section, in config order.

    ``config`` is a ``RunConfig``, a mapping with a ``callbacks`` key, or the section itself.
    ``impl`` overrides choices like the command line does (``{"all": "legacy"}``,
    ``["checkpoint=native"]``, or a bare ``"native"`` for all of them). Legacy entries are wrapped in ``LegacyCallbackAdapter``; native ones
    are built directly; shadow entries build both, the legacy one sandboxed as a control.
    """
    from .adapter import LegacyCallbackAdapter

    section = _section_of(config)
    train = getattr(config, "train", None)
    if run_dir is None:
        run_dir = Path(train.checkpoint_dir).parent if train is not None else Path("runs")
    ctx = BuildContext(Path(run_dir), Path(run_dir) / "shadow", extras if extras is not None else {})
    # Every entry is checked before any is built: a bad last entry must not leave an Optuna trial asked, a
    # W&B directory made or a study created by the entries before it.
    choices = validate_callbacks(section, impl, env=env)
    built = BuiltCallbacks([], {}, {}, extras=ctx.extras)
    shadow_pairs: dict[str, Any] = {}
    for name, options in section.items():
        options = dict(_entry_options(name, options))
        options.pop("impl", None)
        if not options.pop("enabled", True):
            continue
        chosen, where = choices[name]
        pair = REGISTRY[name]
        options = pair.prepare(options, ctx) if pair.prepare else options
        built.impls[name], built.sources[name] = chosen, where
        if chosen in ("native", "shadow"):
            native = _build(pair, "native", pair.native_factory(), options)
            if isinstance(native, tuple):  # a factory may return (callback, logger)
                native, logger = native
                built.loggers.append(logger)
            built.native[name] = native
            built.callbacks.append(native)
        if chosen == "legacy":
            legacy = _build_legacy(pair, options)
            built.legacy[name] = legacy
            built.callbacks.append(LegacyCallbackAdapter(legacy))
        elif chosen == "shadow":
            from .shadow import ShadowAdapter, sandbox_options

            legacy = _build_legacy(pair, sandbox_options(pair.name, options, ctx.shadow_dir))
            built.legacy[name] = legacy
            shadow_pairs[name] = ShadowAdapter(legacy, name=name)
            built.callbacks.append(shadow_pairs[name])
    if shadow_pairs:
        from .shadow import ShadowMonitor

        built.monitor = ShadowMonitor({n: (REGISTRY[n], built.legacy[n], built.native[n]) for n in shadow_pairs},
                                      ctx.shadow_dir, strict=shadow_strict, keep_history=keep_history,
                                      controls=shadow_pairs)
        built.callbacks.append(built.monitor)
    return built


def _build_legacy(pair: PortPair, options: Mapping[str, Any]) -> Any:
    return _build(pair, "legacy", pair.legacy, options)


def _build(pair: PortPair, side: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    # ValueError too (a bad value such as window_size: 0), and the native side as well: both are user errors
    # that the command line must report in one line, not as a traceback.
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        what = getattr(factory, "__name__", type(factory).__name__)
        what = f"{pair.name} port" if what.startswith("_") else what  # not a private factory's name
        raise ConfigError(f"callbacks.{pair.name}: cannot build the {side} {what}: {exc}".rstrip(".") + ".") from None


# -- the six built-in pairs --------------------------------------------------------------------------

BUILTIN_PORTS = ("metrics", "checkpoint", "wandb", "evaluation", "continuous_training", "optuna")


def _native_checkpoint(save_dir, save_freq: int = 10, monitor: str = "episode_reward_mean"):
    from .callbacks.checkpoint import create_checkpoint_callback

    return create_checkpoint_callback({"save_dir": save_dir, "save_freq": save_freq, "monitor": monitor})


def _native_wandb(project: str = "fxai", mode: str = "offline", dir=None, name=None, config=None,
                  log_episodes: bool = True, metric_names: str = "legacy"):
    """W&B natively is two parts: Lightning's ``WandbLogger`` (the run, metrics) and ``RLWandbCallback``
    (episodes, histograms, the legacy-named metrics); the logger goes to the trainer's loggers.
    ``metric_names: lightning`` (native only) logs Lightning's names instead of the legacy ones."""
    from .callbacks.wandb import RLWandbCallback, create_wandb_logger

    # One mapping: create_wandb_logger's first parameter is named config (its options), so config= would not
    # reach the run config.
    logger = create_wandb_logger({"project": project, "mode": mode, "dir": dir, "name": name, "config": config,
                                  "metric_names": metric_names})
    return RLWandbCallback(log_episodes=log_episodes, metric_names=metric_names), logger


def _prepare_optuna(options: dict[str, Any], ctx: BuildContext) -> dict[str, Any]:
    """``study_name``/``storage``/``direction`` become a trial asked from that study (kept in ``ctx.extras``
    so the caller can tell the study the outcome); an explicit ``trial`` is used as is."""
    options = dict(options)
    study_keys = {k: options.pop(k) for k in ("study_name", "storage", "direction") if k in options}
    if "trial" in options:
        return options
    # The tune command's opener: optuna.create_study(storage="journal:///...") fails with a sqlalchemy
    # NoSuchModuleError traceback, and an unreachable RDB URL must be a one-line error without its password.
    from .studies import open_study

    study = open_study(study_keys.get("storage"), study_keys.get("study_name", "fxai"),
                       direction=study_keys.get("direction", "maximize"), heartbeat=False)  # ask/tell: no beats
    ctx.extras["optuna_study"] = study
    ctx.extras["optuna_trial"] = options["trial"] = study.ask()
    return options


def _register_builtin_ports() -> None:
    from legacy_callbacks import (CheckpointCallback, ContinuousTrainingCallback, EvaluationCallback,
                                  MetricsCallback, OptunaCallback, WandbCallback)

    register_port("metrics", MetricsCallback, "fxai_compat.callbacks.metrics:MetricsCallback",
                  observables={"window_stats": (lambda cb: cb.window_stats(), lambda cb: cb.window_stats())},
                  native_options=("window_size",))
    register_port("checkpoint", CheckpointCallback, _native_checkpoint,
                  observables={"best_cycle": (lambda cb: cb.best_cycle, lambda cb: cb.best_cycle),
                               "best_reward": (lambda cb: cb.best_reward, lambda cb: cb.best_reward)})
    # No per-cycle observables: each side writes an offline run, and the scenario reads both back (names, steps,
    # values, config, summary).
    register_port("wandb", WandbCallback, _native_wandb, check="fxai_compat.parity.wandb_check:check_wandb_port")
    register_port("evaluation", EvaluationCallback, "fxai_compat.callbacks.evaluation:EvaluationCallback",
                  observables={"history": (lambda cb: cb.history, lambda cb: cb.history),
                               "best_cycle": (lambda cb: cb.best_cycle, lambda cb: cb.best_cycle)},
                  native_options=("reward_threshold",))
    # No per-cycle observable: what continuous training does shows across runs. The scenario interrupts a run,
    # reruns it twice on each side and compares what each session loaded, trained, kept and ended with.
    register_port("continuous_training", ContinuousTrainingCallback,
                  "fxai_compat.callbacks.continuous_training:ContinuousTrainingCallback",
                  native_options=("checkpoint_dir", "keep_versions"),
                  check="fxai_compat.parity.continuous_check:check_continuous_port")
    register_port("optuna", OptunaCallback, "fxai_compat.callbacks.optuna:OptunaPruningCallback",
                  observables={"reports": (lambda cb: [list(r) for r in cb.reports],
                                           lambda cb: [list(r) for r in cb.reports])},
                  native_options=("trial", "monitor"), prepare=_prepare_optuna,
                  prepare_options=("study_name", "storage", "direction"),
                  check="fxai_compat.parity.optuna_check:check_optuna_port")


_register_builtin_ports()
