"""``fxai-compat audit``: find a code base's legacy callbacks and say what migrating each one takes.

Usage::

    fxai-compat audit TARGET [--config FILE ...] [--json]

``TARGET`` is a module or package name (``legacy_callbacks``, ``mypkg.callbacks``), a folder, or a
``.py`` file: a user's own callback code. Every ``.py`` file under it is read with ``ast``; every
file is also imported (its module name follows its package folders), each one separately, so a file
that fails to import is reported with its error and still checked statically. While importing, the
folder that holds the top package is put on ``sys.path`` and the code's own output goes to stderr.

A *legacy callback class* is a subclass of ``legacy_callbacks.BaseCallback`` or any class with one of
the 16 legacy event methods (``on_`` + event), inherited or its own. ``BaseCallback`` itself is left
out. One report per class:

- **events**: the events the class defines (its own or inherited from its bases; ``BaseCallback``'s
  no-ops and methods set to ``None`` do not count, as for the adapter), each with the Lightning hook
  or RL-protocol event that delivers it (``fxai_compat.events.EVENT_MAP``);
- **signature problems**: ``legacy_callbacks.bind_event`` run on a stand-in object that carries only
  the class's function (no instance is created, ``__init__`` never runs): the very check, and the
  very ``CallbackSignatureError`` message, that ``LegacyCallbackAdapter`` gives at wrap time. A file
  that does not import is checked the same way, with a function rebuilt from the ``def`` line;
- **trainer uses**: ``trainer.<attr>`` (also ``kwargs["trainer"].<attr>`` and
  ``getattr(trainer, "<attr>")``) inside the event methods, found with ``ast``, against the
  contract's trainer surface (``legacy_callbacks.TRAINER_SURFACE``);
- **port**: the ``fxai_compat.toggle.REGISTRY`` entries whose ``legacy`` is this class (ports that the
  target registers when imported count too);
- **impl**: with ``--config`` (repeatable), what each run file selects for the class: its
  ``callbacks`` entries resolved with ``toggle.resolve_impls`` (so ``FXAI_CALLBACK_IMPL`` applies,
  as for ``fxai-compat train``);
- **verdict**: ``ready``, ``needs attention: <reasons>`` (adapts, but something needs a look:
  trainer attributes outside the surface, an ``async`` event method, a file that did not import,
  no events at all) or ``cannot adapt: <reasons>`` (the adapter would refuse it: a signature no
  event can fill, an event attribute that is not callable, a Lightning callback).

Exit status: 0 when every class can be adapted, 1 when at least one cannot, 2 for a user error (a
target that is no file, folder or importable module; an unreadable run file), with one line on
stderr.

JSON (``--json``; one object on stdout; ``schema`` is 1)::

    {
      "schema": 1,
      "target": str,                    # as given
      "kind": "module" | "package" | "folder" | "file",
      "configs": [str],                 # the --config files, in order
      "files": [{
          "path": str, "module": str | null,
          "imported": bool,             # false: import failed, classes checked statically only
          "error": str | null,          # "ModuleNotFoundError: No module named 'x'" or a SyntaxError
          "error_line": int | null,     # the line of this file the error came from, when known
          "classes": int                # legacy callback classes found in the file
      }],
      "classes": [{
          "name": str, "qualname": str, "module": str | null, "file": str, "line": int | null,
          "kind": "subclass" | "duck-typed",   # subclass of legacy_callbacks.BaseCallback, or not
          "analysis": "imported" | "static",
          "bases": [str],
          "events": [{
              "event": str,                     # on_episode_end
              "defined_in": str,                # module.Qualname of the class that defines it
              "line": int | null,
              "source_kind": "rl" | "lightning" | "checkpoint_io",   # EVENT_MAP row
              "source": str,                    # episode_end / on_train_epoch_end / save
              "maps_to": str,                   # "RL event episode_end", "Lightning on_train_epoch_end", ...
              "signature": str | null,          # (self, trainer, metrics)
              "receives": [str],                # offered arguments passed to it
              "wants_all": bool,                # it takes **kwargs: receives every offered argument
              "error": str | null               # the CallbackSignatureError / TypeError message
          }],
          "signature_problems": [str],
          "trainer_uses": [{"attr": str, "event": str, "line": int | null, "in_surface": bool}],
          "outside_surface": [str],             # sorted attribute names
          "port": {"name": str, "native": str | null} | null,   # native: "module:attr", or null (no port yet)
          "ports": [{"name": str, "native": str | null}],       # every registered pair with this legacy class
          "selected_by": [{"config": str, "entry": str, "impl": "legacy" | "native" | "shadow",
                           "source": "default" | "config" | "FXAI_CALLBACK_IMPL", "enabled": bool}],
          "legacy_selected": bool | null,       # some enabled entry runs the legacy class (legacy or shadow);
                                                # null without --config
          "verdict": "ready" | "needs attention" | "cannot adapt",
          "reasons": [str],
          "verdict_text": str,                  # "needs attention: ..." as printed
          "notes": [str]
      }],
      "warnings": [str],                        # e.g. a config entry that names no registered port
      "summary": {"files": int, "import_errors": int, "classes": int, "ready": int,
                  "needs_attention": int, "cannot_adapt": int},
      "exit_code": 0 | 1
    }

The event-mapping table of ``migration_guide.md`` is generated here too
(:func:`render_event_map_markdown`, :func:`render_departures_markdown`; :func:`sync_guide` rewrites
the guide's generated blocks).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError
from .events import CHECKPOINT_IO_SOURCE, EVENT_MAP, LIGHTNING_SOURCE, RL_SOURCE, EventRoute, route_for

__all__ = ["audit", "AuditReport", "ClassReport", "EventReport", "FileReport", "render_text", "render_json",
           "render_event_map_markdown", "render_departures_markdown", "sync_guide", "add_parser", "main",
           "READY", "NEEDS_ATTENTION", "CANNOT_ADAPT", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
READY, NEEDS_ATTENTION, CANNOT_ADAPT = "ready", "needs attention", "cannot adapt"

_EVENTS: tuple[str, ...] = tuple(route.event for route in EVENT_MAP)
_EVENT_SET = frozenset(_EVENTS)
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "node_modules"})
_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning")


# -- the event map, for people ---------------------------------------------------------------------

def describe_source(route: EventRoute, *, markdown: bool = False) -> str:
    """Where an event comes from: ``RL event episode_end``, ``Lightning on_train_epoch_end``, ..."""
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)
    if route.kind == RL_SOURCE:
        return f"RL event {code(route.source)}"
    if route.kind == LIGHTNING_SOURCE:
        return f"Lightning {code(route.source)}"
    if route.kind == CHECKPOINT_IO_SOURCE:
        return f"{code('NotifyingCheckpointIO')}, after the file is written"
    return f"{route.kind} {code(route.source)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_event_map_markdown() -> str:
    """The guide's event-mapping table, generated from ``EVENT_MAP`` and ``legacy_callbacks.EVENT_ARGS``."""
    from legacy_callbacks.base import EVENT_ARGS

    lines = ["| legacy event | offered arguments | delivered by | when | original guide (3.1) |",
             "|---|---|---|---|---|"]
    for route in EVENT_MAP:
        offered = ", ".join(f"`{name}`" for name in EVENT_ARGS[route.event])
        departs = " (departs)" if route.departure else ""
        lines.append(f"| `{route.event}` | {offered} | {describe_source(route, markdown=True)} | "
                     f"{_cell(route.condition)} | `{route.seed_hook}`{departs} |")
    return "\n".join(lines)


def render_departures_markdown() -> str:
    """One item per row of ``EVENT_MAP`` that differs from the original guide, with its reason."""
    lines = []
    kept = []
    for route in EVENT_MAP:
        if not route.departure:
            kept.append(route)
            continue
        where = describe_source(route, markdown=True)
        why = _cell(route.departure)
        why = why[0].upper() + why[1:]
        if route.source == route.seed_hook:
            lines.append(f"- **`{route.event}`**: the same hook as the guide ({where}). Difference: {why}.")
        else:
            lines.append(f"- **`{route.event}`**: the guide says `{route.seed_hook}`; fxai-compat uses {where}. "
                         f"Why: {why}.")
    if kept:
        lines.append("- As in the guide: " + ", ".join(
            f"`{route.event}` ({describe_source(route, markdown=True)})" for route in kept) + ".")
    return "\n".join(lines)


_GENERATED = {"event-map": render_event_map_markdown, "departures": render_departures_markdown}


def generated_block(text: str, name: str) -> str | None:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (stripped), or None."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def sync_guide(path: str | os.PathLike = "migration_guide.md") -> bool:
    """Rewrite the generated blocks of the guide from ``EVENT_MAP``; True if the file changed."""
    path = Path(path)
    text = original = path.read_text(encoding="utf-8")
    for name, render in _GENERATED.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            after = rest.split(end, 1)[1]
            text = f"{before}{start}\n{render()}\n{end}{after}"
    if text != original:
        path.write_text(text, encoding="utf-8")
    return text != original


# -- reports ---------------------------------------------------------------------------------------

@dataclass
class EventReport:
    event: str
    defined_in: str
    line: int | None
    source_kind: str
    source: str
    maps_to: str
    signature: str | None = None
    receives: list[str] = field(default_factory=list)
    wants_all: bool = False
    error: str | None = None


@dataclass
class ClassReport:
    name: str
    qualname: str
    module: str | None
    file: str
    line: int | None
    kind: str
    analysis: str
    bases: list[str]
    events: list[EventReport] = field(default_factory=list)
    signature_problems: list[str] = field(default_factory=list)
    trainer_uses: list[dict[str, Any]] = field(default_factory=list)
    outside_surface: list[str] = field(default_factory=list)
    port: dict[str, Any] | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)
    selected_by: list[dict[str, Any]] = field(default_factory=list)
    legacy_selected: bool | None = None
    verdict: str = READY
    reasons: list[str] = field(default_factory=list)
    verdict_text: str = READY
    notes: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.module}.{self.qualname}" if self.module else self.qualname


@dataclass
class FileReport:
    path: str
    module: str | None
    imported: bool
    error: str | None = None
    error_line: int | None = None
    classes: int = 0


@dataclass
class AuditReport:
    target: str
    kind: str
    configs: list[str]
    files: list[FileReport]
    classes: list[ClassReport]
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.verdict == CANNOT_ADAPT for c in self.classes) else 0

    def summary(self) -> dict[str, int]:
        return {"files": len(self.files), "import_errors": sum(1 for f in self.files if f.error),
                "classes": len(self.classes),
                "ready": sum(1 for c in self.classes if c.verdict == READY),
                "needs_attention": sum(1 for c in self.classes if c.verdict == NEEDS_ATTENTION),
                "cannot_adapt": sum(1 for c in self.classes if c.verdict == CANNOT_ADAPT)}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "target": self.target, "kind": self.kind, "configs": list(self.configs),
                "files": [asdict(f) for f in self.files], "classes": [asdict(c) for c in self.classes],
                "warnings": list(self.warnings), "summary": self.summary(), "exit_code": self.exit_code}


# -- finding the files -------------------------------------------------------------------------------

@dataclass
class _SourceFile:
    path: Path
    module: str
    root: Path | None  # folder to put on sys.path to import ``module`` (None: importable as is)
    is_package: bool = False
    tree: ast.Module | None = None
    imports: dict[str, str] = field(default_factory=dict)
    classes: list["_StaticClass"] = field(default_factory=list)
    loaded: Any = None  # the imported module
    error: str | None = None
    error_line: int | None = None


def _walk(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        found.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(".py"))
    return found


def _module_for_path(path: Path) -> tuple[str, Path]:
    """Import name of ``path`` (following its package folders) and the folder that holds the top package."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def _resolve_target(target: str) -> tuple[str, list[_SourceFile]]:
    if not target.strip():
        raise ConfigError("audit needs a TARGET: a module or package name, a folder, or a .py file.")
    path = Path(target)
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".py":
                raise ConfigError(f"audit target {target} is not a Python file (.py), a folder or a module name.")
            files, kind = [path], "file"
        else:
            files = _walk(path)
            kind = "package" if (path / "__init__.py").is_file() else "folder"
            if not files:
                raise ConfigError(f"audit target {target} is a folder without any .py file.")
        out = []
        for file in files:
            module, root = _module_for_path(file)
            out.append(_SourceFile(file, module, root, file.name == "__init__.py"))
        return kind, out
    if os.sep in target or "/" in target or target.endswith(".py"):
        raise ConfigError(f"audit target {target} does not exist.")
    try:
        spec = importlib.util.find_spec(target)
    except Exception as exc:  # a parent package that does not exist or fails to import
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"audit target {target!r} cannot be located ({type(exc).__name__}: {first}).") from None
    if spec is None:
        raise ConfigError(f"audit target {target!r} is not a file, a folder or an importable module.")
    if spec.submodule_search_locations:
        out = []
        for location in spec.submodule_search_locations:
            for file in _walk(Path(location)):
                rel = file.relative_to(location).with_suffix("").parts
                parts = rel[:-1] if rel[-1] == "__init__" else rel
                out.append(_SourceFile(file.resolve(), ".".join((target, *parts)), None, rel[-1] == "__init__"))
        if not out:
            raise ConfigError(f"audit target {target!r} is a package without any .py file.")
        return "package", out
    if spec.origin and spec.origin.endswith(".py"):
        return "module", [_SourceFile(Path(spec.origin).resolve(), target, None)]
    raise ConfigError(f"audit target {target!r} has no Python source ({spec.origin or 'built-in'}); "
                      f"audit reads .py files.")


# -- static view of a file ---------------------------------------------------------------------------

@dataclass
class _StaticMethod:
    event: str
    line: int
    node: ast.AST | None       # FunctionDef / AsyncFunctionDef / Lambda giving signature and body
    wrapper: str | None = None  # "staticmethod" / "classmethod"
    assigned: str | None = None  # source text of ``on_x = <value>``
    off: bool = False           # ``on_x = None``: the event is turned off
    is_async: bool = False


@dataclass
class _StaticClass:
    file: _SourceFile
    qualname: str
    line: int
    bases: list[str]
    methods: dict[str, _StaticMethod]
    names: set[str]


def _import_map(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    names: dict[str, str] = {}
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    names[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if node.level - 1 > len(package):
                    continue
                parent = package[:len(package) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name
    return names


def _wrapper_of(node: ast.AST) -> str | None:
    for decorator in getattr(node, "decorator_list", ()):
        text = ast.unparse(decorator)
        if text in ("staticmethod", "classmethod"):
            return text
    return None


def _scan_classes(source: _SourceFile) -> list[_StaticClass]:
    tree = source.tree
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found: list[_StaticClass] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or type(node).__name__ == "TryStar":
                # Classes defined under ``if``/``try``/``with`` (e.g. a fallback when an import fails).
                for name in ("body", "orelse", "finalbody"):
                    visit(getattr(node, name, []), prefix)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body, prefix)
                continue
            if not isinstance(node, ast.ClassDef):
                continue
            qualname = f"{prefix}{node.name}"
            methods: dict[str, _StaticMethod] = {}
            names: set[str] = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                    if item.name in _EVENT_SET:
                        methods[item.name] = _StaticMethod(item.name, item.lineno, item, _wrapper_of(item),
                                                           is_async=isinstance(item, ast.AsyncFunctionDef))
                elif isinstance(item, (ast.Assign, ast.AnnAssign)) and item.value is not None:
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    for target in targets:
                        if not isinstance(target, ast.Name):
                            continue
                        names.add(target.id)
                        if target.id not in _EVENT_SET:
                            continue
                        value = item.value
                        if isinstance(value, ast.Constant) and value.value is None:
                            methods[target.id] = _StaticMethod(target.id, item.lineno, None, off=True)
                            continue
                        func = value if isinstance(value, ast.Lambda) else (
                            functions.get(value.id) if isinstance(value, ast.Name) else None)
                        methods[target.id] = _StaticMethod(
                            target.id, item.lineno, func, assigned=ast.unparse(value),
                            is_async=isinstance(func, ast.AsyncFunctionDef))
            found.append(_StaticClass(source, qualname, node.lineno, [ast.unparse(b) for b in node.bases],
                                      methods, names))
            visit(node.body, f"{qualname}.")

    visit(tree.body, "")
    return found


def _trainer_uses(node: ast.AST | None) -> list[tuple[str, int]]:
    """``trainer.<attr>`` (and ``kwargs["trainer"].<attr>``, ``getattr(trainer, "<attr>")``) inside ``node``."""
    if node is None:
        return []

    def is_trainer(expr: ast.AST) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id == "trainer"
        if isinstance(expr, ast.Subscript):  # kwargs["trainer"]
            return isinstance(expr.slice, ast.Constant) and expr.slice.value == "trainer"
        if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get"
                and expr.args and isinstance(expr.args[0], ast.Constant) and expr.args[0].value == "trainer"):
            return True  # kwargs.get("trainer")
        return False

    uses = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and is_trainer(sub.value):
            uses.append((sub.attr, sub.lineno))
        elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("getattr", "setattr",
                                                                                               "hasattr")
              and len(sub.args) >= 2 and is_trainer(sub.args[0]) and isinstance(sub.args[1], ast.Constant)
              and isinstance(sub.args[1].value, str)):
            uses.append((sub.args[1].value, sub.lineno))
    return sorted(set(uses), key=lambda use: (use[1], use[0]))


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


# -- importing ---------------------------------------------------------------------------------------

_private_loads = itertools.count(1)


def _same_file(module: Any, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    try:
        return file is not None and Path(file).resolve() == path
    except OSError:
        return False


def _error_text(exc: BaseException, path: Path) -> tuple[str, int | None]:
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    line = None
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == path:
        line = exc.lineno
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            if Path(frame.filename).resolve() == path:
                line = frame.lineno
        except OSError:
            pass
    return text[:300], line


def _import(source: _SourceFile) -> None:
    path, name = source.path, source.module
    existing = sys.modules.get(name) if name else None
    if existing is not None and _same_file(existing, path):
        source.loaded = existing
        return
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if existing is not None or not name or ("." not in name and _shadowed(name, path)):
                source.loaded = _load_private(source)
            else:
                module = importlib.import_module(name)
                source.loaded = module if _same_file(module, path) else _load_private(source)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: the user's code may call sys.exit at import
        source.error, source.error_line = _error_text(exc, path)


def _shadowed(name: str, path: Path) -> bool:
    """True if importing ``name`` would load something else than ``path`` (a built-in, an earlier path entry)."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        return True
    return spec is None or spec.origin is None or Path(spec.origin).resolve() != path


def _load_private(source: _SourceFile) -> Any:
    """Load a file under a private module name (its plain name is taken by another module)."""
    name = f"_fxai_audit_{next(_private_loads)}_{source.path.stem}"
    spec = importlib.util.spec_from_file_location(name, source.path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


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
    from .toggle import REGISTRY

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
    from .cli import load_run_config
    from .toggle import resolve_impls

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
    from .toggle import REGISTRY

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
    from .toggle import REGISTRY

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


# -- output --------------------------------------------------------------------------------------------

def _impl_lines(report: ClassReport, configs: list[str]) -> list[str]:
    if not configs:
        return ["(no --config given)"]
    lines = []
    for entry in report.selected_by:
        state = "" if entry["enabled"] else ", enabled: false"
        lines.append(f"{entry['impl']} ({entry['source']}{state}) in {entry['config']} [callbacks.{entry['entry']}]")
    if not lines:
        why = "" if report.ports else " (no registered port: a run file cannot name it)"
        lines.append(f"not selected by {', '.join(configs)}{why}")
    return lines


def render_text(report: AuditReport) -> str:
    out = [f"fxai-compat audit of {report.target} ({report.kind}, {len(report.files)} file(s))"]
    errors = [f for f in report.files if f.error]
    if errors:
        out.append("")
        out.append("files that did not import (their classes were checked statically):")
        for f in errors:
            where = f", line {f.error_line}" if f.error_line else ""
            out.append(f"  {f.path}{where}: {f.error}")
    for c in report.classes:
        out.append("")
        kind = "subclass of BaseCallback" if c.kind == "subclass" else "duck-typed"
        analysis = "" if c.analysis == "imported" else ", static analysis only"
        out.append(f"{c.full_name}  ({c.file}:{c.line or '?'}, {kind}{analysis})")
        label = "events"
        if not c.events:
            out.append(f"  {label:<10}none")
        for e in c.events:
            inherited = "" if e.defined_in == c.full_name else f"  [from {e.defined_in}]"
            bad = "  [cannot be bound]" if e.error else ""
            out.append(f"  {label:<10}{e.event}{e.signature or ''} -> {e.maps_to}{inherited}{bad}")
            label = ""
        for problem in c.signature_problems:
            out.append(f"  {'signature':<10}{problem}")
        uses = sorted({u["attr"] for u in c.trainer_uses})
        if uses:
            shown = ", ".join(a if a not in c.outside_surface else f"{a} (OUTSIDE THE SURFACE)" for a in uses)
            out.append(f"  {'trainer':<10}{shown}")
        else:
            out.append(f"  {'trainer':<10}not used")
        if c.ports:
            for p in c.ports:
                native = p["native"] or "no native port yet (impl: legacy only)"
                out.append(f"  {'port':<10}{p['name']} -> {native}")
        else:
            out.append(f"  {'port':<10}none registered")
        for i, line in enumerate(_impl_lines(c, report.configs)):
            out.append(f"  {'impl' if i == 0 else '':<10}{line}")
        for note in c.notes:
            out.append(f"  {'note':<10}{note}")
        out.append(f"  {'verdict':<10}{c.verdict_text}")
    for warning in report.warnings:
        out.append("")
        out.append(f"warning: {warning}")
    s = report.summary()
    out.append("")
    out.append(f"{s['classes']} legacy callback class(es) in {s['files']} file(s): {s['ready']} ready, "
               f"{s['needs_attention']} need(s) attention, {s['cannot_adapt']} cannot be adapted"
               + (f"; {s['import_errors']} file(s) did not import" if s["import_errors"] else "") + ".")
    return "\n".join(out)


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)


# -- command line ---------------------------------------------------------------------------------------

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``audit`` on the ``fxai-compat`` subcommands."""
    parser = subparsers.add_parser(
        "audit", help="find legacy callbacks in your code and say what migrating each one takes",
        description="Find every legacy callback class in TARGET (a module or package name, a folder or a .py "
                    "file): its events and the Lightning hook / RL event delivering each, signature problems, "
                    "trainer attributes outside the contract's surface, its registered native port, the impl a "
                    "run file selects, and a verdict. Exit 1 if a class cannot be adapted.")
    parser.add_argument("target", metavar="TARGET", help="module or package name, folder, or .py file")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="run file whose callbacks section says which impl each class gets (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (schema in fxai_compat.audit)")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    report = audit(args.target, args.config)
    print(render_json(report) if args.json else render_text(report))
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """``python -m fxai_compat.audit TARGET ...`` (the same as ``fxai-compat audit``)."""
    parser = argparse.ArgumentParser(prog="fxai-compat")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fxai-compat: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
