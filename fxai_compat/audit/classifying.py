"""Classifying for ``fxai-compat audit``: each legacy callback class's events (checked with the adapter's own
``bind_event``), trainer uses, registered ports, the impl run files select, and its verdict; :func:`audit` runs
the whole audit (scanning, then classifying) and returns an :class:`~.reporting.AuditReport`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..events import route_for
from .reporting import (CANNOT_ADAPT, NEEDS_ATTENTION, AuditReport, ClassReport, EventReport, FileReport,
                        describe_source)
from .scanning import (_EVENTS, _LIGHTNING_PACKAGES, _error_text, _import, _import_map, _resolve_target,
                       _scan_classes, _SourceFile, _StaticClass, _StaticMethod, _trainer_uses)

class _Source:
    """Shows a default value or annotation as it is written in the source."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _stub_function(node: ast.AST, name: str, qualname: str):
    """A function with the parameters of ``node`` (a def or lambda that could not be imported)."""
    args: ast.arguments = node.args
    namespace: dict[str, Any] = {}
    annotations: dict[str, Any] = {}

    def param(arg: ast.arg, default: ast.expr | None, prefix: str = "") -> str:
        if getattr(arg, "annotation", None) is not None:
            annotations[arg.arg] = _Source(ast.unparse(arg.annotation))
        if default is None:
            return f"{prefix}{arg.arg}"
        key = f"__fxai_default_{len(namespace)}"
        namespace[key] = _Source(ast.unparse(default))
        return f"{arg.arg}={key}"

    positional = list(args.posonlyargs) + list(args.args)
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts = []
    for index, arg in enumerate(positional):
        parts.append(param(arg, defaults[index]))
        if args.posonlyargs and index == len(args.posonlyargs) - 1:
            parts.append("/")
    if args.vararg is not None:
        parts.append(param(args.vararg, None, "*"))
    elif args.kwonlyargs:
        parts.append("*")
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        parts.append(param(arg, default))
    if args.kwarg is not None:
        parts.append(param(args.kwarg, None, "**"))
    exec(f"def {name}({', '.join(parts)}):\n    pass\n", namespace)  # noqa: S102 - parameters only, no user code
    func = namespace[name]
    func.__annotations__ = annotations
    func.__qualname__ = qualname
    return func


# -- checking one event ------------------------------------------------------------------------------

def _bind(qualname: str, module: str | None, event: str, raw: Any):
    """``bind_event`` on a stand-in object whose class holds only ``raw`` under ``event`` (no instance of
    the user's class is created). Returns (binding or None, error message or None)."""
    from legacy_callbacks import CallbackSignatureError, bind_event

    name = qualname.rsplit(".", 1)[-1]
    stand_in = type(name, (), {event: raw, "__qualname__": qualname, "__module__": module or "__main__"})
    try:
        return bind_event(object.__new__(stand_in), event), None
    except CallbackSignatureError as exc:
        return None, str(exc)
    except TypeError as exc:  # the event attribute is not callable
        return None, str(exc)
    except Exception as exc:  # a descriptor that fails on access, etc.
        return None, f"Cannot check {qualname}.{event}: {type(exc).__name__}: {exc}"


def _signature_text(binding: Any) -> str | None:
    if binding is None:
        return None
    func = binding.func
    target = getattr(func, "__func__", None) or func
    try:
        return str(inspect.signature(target))
    except (TypeError, ValueError):
        return None


def _raw_signature(raw: Any) -> str | None:
    func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    if not callable(func):
        return None
    try:
        return str(inspect.signature(func))
    except (TypeError, ValueError):
        return None


_TREES: dict[tuple[str, int], ast.Module | None] = {}


def _tree_of(filename: str) -> ast.Module | None:
    try:
        key = (filename, os.stat(filename).st_mtime_ns)
    except OSError:
        return None
    if key not in _TREES:
        try:
            _TREES[key] = ast.parse(Path(filename).read_text(encoding="utf-8"), filename)
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            _TREES[key] = None
    return _TREES[key]


def _node_of_function(raw: Any) -> tuple[ast.AST | None, str | None, int | None, bool]:
    """(def node, file, line, is_async) of the Python function behind a class attribute, when it has source."""
    func = raw
    if isinstance(func, (staticmethod, classmethod)):
        func = func.__func__
    if isinstance(func, functools.partial):
        func = func.func
    try:
        func = inspect.unwrap(func)
    except (ValueError, TypeError):
        pass
    code = getattr(func, "__code__", None)
    if code is None:
        return None, None, None, False
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    tree = _tree_of(code.co_filename)
    if tree is None:
        return None, code.co_filename, code.co_firstlineno, is_async
    first = code.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name:
            lines = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first in lines:
                return node, code.co_filename, node.lineno, is_async
        elif isinstance(node, ast.Lambda) and code.co_name == "<lambda>" and node.lineno == first:
            return node, code.co_filename, node.lineno, is_async
    return None, code.co_filename, first, is_async


# -- building the class reports ------------------------------------------------------------------------

@dataclass
class _EventSource:
    """What a class runs for one event: the raw class attribute, or a static method found in the source."""

    event: str
    owner: str                     # module.Qualname defining it
    raw: Any = None                # runtime attribute (imported classes)
    static: _StaticMethod | None = None
    owner_qualname: str = ""
    owner_module: str | None = None


_BASE = object()        # marker: legacy_callbacks.BaseCallback
_LIGHTNING = object()   # marker: a Lightning callback class


class _Auditor:
    def __init__(self, files: list[_SourceFile]):
        from legacy_callbacks import BaseCallback
        from legacy_callbacks.context import TRAINER_SURFACE

        self.files = files
        self.BaseCallback = BaseCallback
        self.surface = frozenset(TRAINER_SURFACE)
        self.by_full: dict[str, _StaticClass] = {}
        for source in files:
            for sc in source.classes:
                self.by_full[f"{source.module}.{sc.qualname}"] = sc
        self.scanned_modules = {source.module for source in files}

    # runtime --------------------------------------------------------------------------------------
    def runtime_events(self, cls: type) -> dict[str, _EventSource]:
        events = {}
        for event in _EVENTS:
            for klass in cls.__mro__:
                if event in klass.__dict__:
                    raw = klass.__dict__[event]
                    if raw is None or raw is self.BaseCallback.__dict__.get(event):
                        break
                    events[event] = _EventSource(event, f"{klass.__module__}.{klass.__qualname__}", raw=raw,
                                                 owner_qualname=klass.__qualname__, owner_module=klass.__module__)
                    break
        return events

    @staticmethod
    def is_lightning(cls: type) -> bool:
        # Only when Lightning is loaded already: a class cannot derive from a module nobody imported.
        for module in (sys.modules.get("pytorch_lightning"), sys.modules.get("lightning.pytorch")):
            base = getattr(module, "Callback", None) if module is not None else None
            if isinstance(base, type) and issubclass(cls, base):
                return True
        return False

    def runtime_classes(self, source: _SourceFile) -> list[tuple[type, int | None]]:
        module = source.loaded
        found: dict[str, type] = {}
        lines = {sc.qualname: sc.line for sc in source.classes}
        for sc in source.classes:
            obj: Any = module
            for part in sc.qualname.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                found[sc.qualname] = obj
        for obj in list(vars(module).values()):
            if (isinstance(obj, type) and obj.__module__ == module.__name__ and "<locals>" not in obj.__qualname__):
                found.setdefault(obj.__qualname__, obj)
        out = []
        for qualname, cls in found.items():
            if cls is self.BaseCallback:
                continue
            try:
                legacy = issubclass(cls, self.BaseCallback) or bool(self.runtime_events(cls))
            except TypeError:
                continue
            if legacy:
                out.append((cls, lines.get(qualname)))
        return sorted(out, key=lambda item: (item[1] is None, item[1] or 0, item[0].__qualname__))

    # static ---------------------------------------------------------------------------------------
    def resolve_base(self, sc: _StaticClass, text: str) -> Any:
        head, _, rest = text.partition(".")
        imports = sc.file.imports
        full = imports[head] + (f".{rest}" if rest else "") if head in imports else text
        last = full.rsplit(".", 1)[-1]
        if full.startswith(_LIGHTNING_PACKAGES) and last.endswith("Callback"):
            return _LIGHTNING
        if full in self.by_full:
            return self.by_full[full]
        local = f"{sc.file.module}.{text}"
        if local in self.by_full and self.by_full[local] is not sc:
            return self.by_full[local]
        if "." in full:
            module_name, attr = full.rsplit(".", 1)
            module = sys.modules.get(module_name)
            if module is None and module_name not in self.scanned_modules:
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        module = importlib.import_module(module_name)
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    module = None
            obj = getattr(module, attr, None) if module is not None else None
            if obj is self.BaseCallback:
                return _BASE
            if isinstance(obj, type):
                return obj
        if last == "BaseCallback":
            return _BASE
        return None

    def static_info(self, sc: _StaticClass, seen: frozenset = frozenset()) -> tuple[dict[str, _EventSource], bool, bool]:
        """(events, subclass of BaseCallback, Lightning callback) of a class known only from its source."""
        events: dict[str, _EventSource] = {}
        subclass = lightning = False
        for text in reversed(sc.bases):
            base = self.resolve_base(sc, text)
            if base is _BASE:
                subclass = True
            elif base is _LIGHTNING:
                lightning = True
            elif isinstance(base, _StaticClass) and id(base) not in seen:
                base_events, base_sub, base_light = self.static_info(base, seen | {id(sc)})
                events.update(base_events)
                subclass, lightning = subclass or base_sub, lightning or base_light
            elif isinstance(base, type):
                events.update(self.runtime_events(base))
                subclass = subclass or issubclass(base, self.BaseCallback)
                lightning = lightning or self.is_lightning(base)
        owner = f"{sc.file.module}.{sc.qualname}"
        for event, method in sc.methods.items():
            if method.off:
                events.pop(event, None)
            else:
                events[event] = _EventSource(event, owner, static=method, owner_qualname=sc.qualname,
                                             owner_module=sc.file.module)
        return events, subclass, lightning

    # one class --------------------------------------------------------------------------------------
    def report(self, source: _SourceFile, qualname: str, line: int | None, events: dict[str, _EventSource],
               subclass: bool, lightning: bool, bases: list[str], analysis: str, cls: type | None) -> ClassReport:
        report = ClassReport(name=qualname.rsplit(".", 1)[-1], qualname=qualname, module=source.module,
                             file=_shown_path(source.path), line=line,
                             kind="subclass" if subclass else "duck-typed", analysis=analysis, bases=bases)
        cannot, attention = [], []
        async_events = []
        for event in _EVENTS:
            if event not in events:
                continue
            found = events[event]
            route = route_for(event)
            entry = EventReport(event, found.owner, None, route.kind, route.source, describe_source(route))
            node, is_async = None, False
            raw_for_display = found.raw
            if found.raw is not None:
                binding, error = _bind(qualname, source.module, event, found.raw)
                node, _file, entry.line, is_async = _node_of_function(found.raw)
            else:
                method = found.static
                entry.line = method.line
                node, is_async = method.node, method.is_async
                if method.node is None:
                    binding, error = None, None
                    report.notes.append(f"{event} is assigned ({method.assigned}); its signature is checked only "
                                        f"when the file imports.")
                else:
                    raw = _stub_function(method.node, event, f"{found.owner_qualname}.{event}")
                    if method.wrapper == "staticmethod":
                        raw = staticmethod(raw)
                    elif method.wrapper == "classmethod":
                        raw = classmethod(raw)
                    binding, error = _bind(qualname, source.module, event, raw)
                    raw_for_display = raw
            entry.signature = _signature_text(binding) if binding is not None else _raw_signature(raw_for_display)
            if binding is not None:
                entry.receives = list(binding.names)
                entry.wants_all = bool(binding.wants_all)
            if error is not None:
                entry.error = error
                report.signature_problems.append(error)
                cannot.append(_short_signature_reason(error, qualname))
            if is_async:
                async_events.append(event)
            for attr, use_line in _trainer_uses(node):
                report.trainer_uses.append({"attr": attr, "event": event, "line": use_line,
                                            "in_surface": attr in self.surface})
            if node is None and found.raw is not None and error is None:
                report.notes.append(f"{event}: no Python source to scan for trainer uses.")
            report.events.append(entry)
        # What the class is, before what its methods do.
        if lightning:
            cannot.insert(0, "it is a Lightning callback, which LegacyCallbackAdapter refuses (pass it to the "
                             "Trainer directly); its legacy event methods are never called")
        if not report.events:
            attention.append("it defines none of the 16 events, so it receives nothing")
        if async_events:
            attention.append(f"{', '.join(async_events)} {'is' if len(async_events) == 1 else 'are'} async: legacy "
                             f"events call methods synchronously, so the body never runs")
        outside: dict[str, list[str]] = {}
        for use in report.trainer_uses:
            if not use["in_surface"]:
                where = f"line {use['line']}" if use["line"] else use["event"]
                outside.setdefault(use["attr"], []).append(f"{use['event']}, {where}")
        report.outside_surface = sorted(outside)
        for attr in report.outside_surface:
            extra = (" (it exists only under Lightning, on the adapter's trainer view)"
                     if attr == "lightning_trainer" else "")
            attention.append(f"trainer.{attr} ({'; '.join(outside[attr])}) is outside the trainer surface{extra}")
        for use in report.trainer_uses:
            if use["attr"] == "load_checkpoint" and use["event"] != "on_training_start":
                report.notes.append(
                    f"trainer.load_checkpoint in {use['event']} (line {use['line']}): under DDP a legacy callback "
                    f"runs on rank 0 only and may load only in on_training_start; anywhere else the adapter raises "
                    f"RuntimeError.")
                break
        if source.error is not None:
            attention.append(f"its file did not import ({source.error}), so it was checked statically only")
        state = {"state_dict", "load_state_dict"} & (set(dir(cls)) if cls is not None else _static_names(self, source, qualname))
        if len(state) == 1:
            report.notes.append(f"defines {state.pop()} without its counterpart: its state is not saved in checkpoints "
                                f"(define both state_dict and load_state_dict).")
        report.reasons = cannot + attention
        if cannot:
            report.verdict = CANNOT_ADAPT
        elif attention:
            report.verdict = NEEDS_ATTENTION
        report.verdict_text = report.verdict + (": " + "; ".join(report.reasons) if report.reasons else "")
        return report


def _static_names(auditor: _Auditor, source: _SourceFile, qualname: str) -> set[str]:
    sc = auditor.by_full.get(f"{source.module}.{qualname}")
    return set(sc.names) if sc is not None else set()


def _short_signature_reason(error: str, qualname: str) -> str:
    prefix = f"Cannot register legacy callback {qualname}: "
    text = error[len(prefix):] if error.startswith(prefix) else error
    return text.split(". To fix it", 1)[0]


def _shown_path(path: Path) -> str:
    try:
        shown = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if shown.startswith("..") else shown


# -- ports and configs -------------------------------------------------------------------------------

def _native_text(native: Any) -> str | None:
    if native is None:
        return None
    if isinstance(native, str):
        return native
    return f"{getattr(native, '__module__', '?')}:{getattr(native, '__qualname__', type(native).__name__)}"


def _port_names(report: ClassReport, cls: type | None) -> list[str]:
    from ..toggle import REGISTRY

    names = []
    for name, pair in REGISTRY.items():
        legacy = pair.legacy
        if cls is not None:
            if legacy is cls:
                names.append(name)
        elif (getattr(legacy, "__module__", None) == report.module
              and getattr(legacy, "__qualname__", None) == report.qualname):
            names.append(name)
    return names


def _load_configs(paths: list[str]) -> list[tuple[str, str, str, str, bool]]:
    """(config, entry, impl, source, enabled) for every callbacks entry of the run files."""
    from ..runfile import load_run_config
    from ..toggle import resolve_impls

    rows = []
    for path in paths:
        try:
            run = load_run_config(path)
            choices = resolve_impls(run.callbacks)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if path in message else f"--config {path}: {message}") from None
        for name, (impl, where) in choices.items():
            options = run.callbacks.get(name)
            enabled = not (isinstance(options, Mapping) and options.get("enabled", True) is False)
            rows.append((path, name, impl, where, enabled))
    return rows


# -- the audit -----------------------------------------------------------------------------------------

def audit(target: str, configs: Iterable[str] = ()) -> AuditReport:
    """Audit ``target`` (module/package name, folder or .py file); see the module docstring."""
    configs = [str(c) for c in configs]
    kind, files = _resolve_target(target)
    selections = _load_configs(configs)  # a bad run file is a user error: before importing anything
    roots = [f.root for f in files if f.root is not None]
    added = []
    for root in dict.fromkeys(roots):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
            added.append(str(root))
    try:
        for source in files:
            try:
                text = source.path.read_text(encoding="utf-8")
                source.tree = ast.parse(text, str(source.path))
            except (SyntaxError, ValueError, UnicodeDecodeError, OSError) as exc:
                source.error, source.error_line = _error_text(exc, source.path)
                continue
            source.imports = _import_map(source.tree, source.module, source.is_package)
            source.classes = _scan_classes(source)
        for source in files:
            if source.tree is not None:
                _import(source)
        auditor = _Auditor(files)
        reports: list[ClassReport] = []
        file_reports: list[FileReport] = []
        for source in files:
            found: list[ClassReport] = []
            if source.loaded is not None:
                for cls, line in auditor.runtime_classes(source):
                    events = auditor.runtime_events(cls)
                    bases = [f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__ if b is not object]
                    rep = auditor.report(source, cls.__qualname__, line, events, issubclass(cls, auditor.BaseCallback),
                                         auditor.is_lightning(cls), bases, "imported", cls)
                    _add_ports(rep, cls)
                    found.append(rep)
            elif source.tree is not None:
                for sc in source.classes:
                    events, subclass, lightning = auditor.static_info(sc)
                    if not (subclass or events):
                        continue
                    rep = auditor.report(source, sc.qualname, sc.line, events, subclass, lightning, sc.bases,
                                         "static", None)
                    _add_ports(rep, None)
                    found.append(rep)
            file_reports.append(FileReport(_shown_path(source.path), source.module, source.loaded is not None,
                                           source.error, source.error_line, len(found)))
            reports.extend(found)
    finally:
        for root in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(root)
    warnings = _apply_configs(reports, selections, configs)
    return AuditReport(target, kind, configs, file_reports, reports, warnings)


def _add_ports(report: ClassReport, cls: type | None) -> None:
    from ..toggle import REGISTRY

    names = _port_names(report, cls)
    report.ports = [{"name": n, "native": _native_text(REGISTRY[n].native)} for n in names]
    report.port = report.ports[0] if report.ports else None
    if not names and cls is not None:
        for base in cls.__mro__[1:]:
            inherited = [n for n, pair in REGISTRY.items() if pair.legacy is base]
            if inherited:
                report.notes.append(f"subclass of {base.__module__}.{base.__qualname__}, whose port is "
                                    f"{inherited[0]!r}; the port is not this class's: register one for it "
                                    f"(register_port) to flip it.")
                break


def _apply_configs(reports: list[ClassReport], selections, configs: list[str]) -> list[str]:
    from ..toggle import REGISTRY

    warnings = []
    by_port: dict[str, list[ClassReport]] = {}
    for report in reports:
        for port in report.ports:
            by_port.setdefault(port["name"], []).append(report)
        if configs:
            report.legacy_selected = False
    for path, name, impl, where, enabled in selections:
        if name not in REGISTRY:
            warnings.append(f"{path}: callbacks.{name} names no registered port (registered: {', '.join(REGISTRY)}).")
            continue
        for report in by_port.get(name, []):
            report.selected_by.append({"config": path, "entry": name, "impl": impl, "source": where,
                                       "enabled": enabled})
            if enabled and impl in ("legacy", "shadow"):
                report.legacy_selected = True
    for report in reports:
        if configs and report.ports and not report.legacy_selected:
            if report.selected_by:
                report.notes.append("no given run file runs this legacy class any more (native everywhere, or "
                                    "disabled): it can be removed once no other config selects it.")
    return warnings
