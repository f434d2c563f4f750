"""Ports from outside this process: the ``fxai_compat.ports`` entry-point group, and ``port: module:attr`` in a
run file, both registered into ``fxai_compat.toggle.REGISTRY`` with a note of where each came from.

A package declares its ports in its own ``pyproject.toml``::

    [project.entry-points."fxai_compat.ports"]
    my_metric = "my_team.ports:MY_METRIC_PAIR"

The value is a :class:`~fxai_compat.toggle.PortPair` (registered under the entry point's name), or a callable
taking no argument that returns one (or registers it with ``register_port`` under that name). Once installed, the
command line, the toggle (``callbacks: {my_metric: {impl: native}}``), ``parity`` and ``audit`` know it. A run file
may also name a port directly, without installing anything: ``callbacks: {my_metric: {port: "my_team.ports:PAIR",
impl: shadow}}`` (the module must be importable, e.g. on ``PYTHONPATH``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from .config import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PORT_SOURCES", "DISCOVERY_ERRORS", "load_entry_point_ports", "load_port",
           "resolve_section_ports", "port_sources"]

ENTRY_POINT_GROUP = "fxai_compat.ports"
#: Port name -> where it was registered from (entry point and distribution, a run file's ``module:attr``).
PORT_SOURCES: dict[str, str] = {}
#: Entry points that could not be loaded: one line each (shown by ``audit``, and with an unknown-port error).
DISCOVERY_ERRORS: list[str] = []
_loaded = False


def _as_pair(obj: Any, name: str, where: str):
    """The PortPair ``obj`` declares under ``name`` (registered as a side effect when ``obj`` is a function)."""
    from .toggle import REGISTRY, PortPair

    if not isinstance(obj, PortPair):
        if not callable(obj):
            raise ConfigError(f"{where} is a {type(obj).__name__}, not a fxai_compat.toggle.PortPair (or a function "
                              f"returning one).")
        before = REGISTRY.get(name)
        try:
            result = obj()
        except Exception as exc:
            raise ConfigError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        if isinstance(result, PortPair):
            obj = result
        elif REGISTRY.get(name) is not None and REGISTRY.get(name) is not before:
            obj = REGISTRY[name]  # it called register_port(name, ...) itself
        else:
            raise ConfigError(f"{where} returned {type(result).__name__}, not a fxai_compat.toggle.PortPair, and "
                              f"registered no port named {name!r}.")
    return obj if obj.name == name else dataclasses.replace(obj, name=name)


def load_entry_point_ports(*, reload: bool = False) -> dict[str, str]:
    """Register the ports installed packages declare (once per process unless ``reload``); name -> source.
    A port registered in this process by ``register_port`` keeps its place (it is not replaced)."""
    global _loaded
    from importlib.metadata import entry_points

    from .toggle import REGISTRY

    if _loaded and not reload:
        return {n: s for n, s in PORT_SOURCES.items() if s.startswith("entry point")}
    _loaded = True
    DISCOVERY_ERRORS.clear()
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
        where = f"entry point {ep.name} = {ep.value} ({origin})"
        if ep.name in REGISTRY and not PORT_SOURCES.get(ep.name, "").startswith("entry point"):
            DISCOVERY_ERRORS.append(f"{where}: not used, a port named {ep.name!r} is already registered "
                                    f"({PORT_SOURCES.get(ep.name, 'in this process')}).")
            continue
        try:
            pair = _as_pair(ep.load(), ep.name, where)
        except ConfigError as exc:
            DISCOVERY_ERRORS.append(str(exc))
            continue
        except Exception as exc:  # an import error in someone's package must not stop every run
            DISCOVERY_ERRORS.append(f"{where}: cannot import: {type(exc).__name__}: {exc}")
            continue
        REGISTRY[ep.name] = pair
        PORT_SOURCES[ep.name] = found[ep.name] = where
    return found


def load_port(name: str, spec: Any, source: str = "run file"):
    """Register the port ``spec`` (``"module:attr"``) names under ``name``; returns it."""
    from .toggle import REGISTRY

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"callbacks.{name}.port must be 'module:attr' (e.g. my_team.ports:MY_PAIR), got {spec!r}.")
    module, attr = spec.split(":")
    where = f"callbacks.{name}.port {spec} ({source})"
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module}: {exc}.") from None
    except AttributeError:
        raise ConfigError(f"{where}: module {module} has no attribute {attr}.") from None
    pair = _as_pair(obj, name, where)
    held = REGISTRY.get(name)
    if held is not None and held is not pair and PORT_SOURCES.get(name) != where:
        if held.legacy is not pair.legacy or held.native != pair.native:
            raise ConfigError(f"{where}: a different port named {name!r} is already registered "
                              f"({PORT_SOURCES.get(name, 'built in or by register_port')}); give the entry another name.")
    REGISTRY[name] = pair
    PORT_SOURCES[name] = where
    return pair


def resolve_section_ports(section: Mapping[str, Any], source: str = "run file") -> dict[str, Any]:
    """A callbacks section with its ``port: module:attr`` entries registered (the key removed), and the installed
    entry-point ports loaded when it names a port this process does not know yet."""
    from .toggle import REGISTRY

    out: dict[str, Any] = {}
    for name, options in section.items():
        if isinstance(options, Mapping) and "port" in options:
            load_port(name, options["port"], source)
            options = {k: v for k, v in options.items() if k != "port"}
        out[name] = options
    if any(name not in REGISTRY for name in out):
        load_entry_point_ports()
    return out


def port_sources() -> dict[str, str]:
    """Every registered port -> where it came from (built in, an entry point, a run file, ``register_port``)."""
    from .toggle import BUILTIN_PORTS, REGISTRY

    load_entry_point_ports()
    return {name: PORT_SOURCES.get(name) or ("built in (fxai_compat.toggle)" if name in BUILTIN_PORTS
                                             else "register_port in this process") for name in REGISTRY}
