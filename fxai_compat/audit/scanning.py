"""Scanning for ``fxai-compat audit``: resolve the target to its ``.py`` files, read each one with ``ast`` (its
imports, its classes and their event methods, ``trainer.<attr>`` uses), and import each one separately.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import itertools
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..events import EVENT_MAP

_EVENTS: tuple[str, ...] = tuple(route.event for route in EVENT_MAP)
_EVENT_SET = frozenset(_EVENTS)
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "node_modules"})
_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning")


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
