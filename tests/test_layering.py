"""Imports run downward: no module of ``fxai_compat`` below the command line imports ``fxai_compat.cli``.

Every module of the package is read with ``ast`` (nothing is imported), and every import form is resolved to the
module it names: ``import fxai_compat.cli``, ``from fxai_compat import cli``, ``from .cli import main``,
``from . import cli``, ``from ..cli import ...``, and ``importlib.import_module("fxai_compat.cli")``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fxai_compat

PACKAGE = Path(fxai_compat.__file__).resolve().parent
CLI = "fxai_compat.cli"
#: The console-script entry is the one module allowed to be the CLI.
ALLOWED = {"fxai_compat/cli.py"}


def _module_name(path: Path, root: Path) -> tuple[str, list[str]]:
    """(dotted name, package parts) of ``path``, a file of the package under ``root`` (the folder above it)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), parts
    return ".".join(parts), parts[:-1]


def imported_modules(path: Path, root: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute dotted names, relative forms resolved), with its line."""
    _, package = _module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                base_name = ".".join(base)
            else:
                base_name = node.module or ""
            found.append((base_name, node.lineno))
            found.extend((f"{base_name}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return found


def cli_importers(package: Path) -> list[str]:
    """``file:line`` of every import of ``fxai_compat.cli`` outside the allowed modules of ``package``."""
    root = package.parent
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in ALLOWED:
            continue
        for name, line in imported_modules(path, root):
            if name == CLI or name.startswith(CLI + "."):
                bad.append(f"{rel}:{line}")
    return sorted(set(bad))


def test_no_module_below_the_cli_imports_it():
    bad = cli_importers(PACKAGE)
    assert not bad, (f"these modules import {CLI}, which only parses arguments: import the library module instead "
                     f"(runfile, runner, tune): {', '.join(bad)}")


@pytest.mark.parametrize("where, source", [
    ("toggle.py", "from .cli import open_study\n"),
    ("toggle.py", "from . import cli\n"),
    ("toggle.py", "import fxai_compat.cli as c\n"),
    ("toggle.py", "from fxai_compat import cli\n"),
    ("toggle.py", "from fxai_compat.cli import load_run_config\n"),
    ("toggle.py", "def f():\n    from .cli import open_study\n"),
    ("toggle.py", "import importlib\nimportlib.import_module('fxai_compat.cli')\n"),
    ("parity/report.py", "def f():\n    from ..cli import load_run_config\n"),
    ("parity/report.py", "from .. import cli\n"),
    ("audit/__init__.py", "from ..cli import main\n"),
])
def test_every_import_form_is_caught(tmp_path, where, source):
    package = tmp_path / "fxai_compat"
    for rel in ("__init__.py", "cli.py", "runfile.py", "parity/__init__.py", "audit/__init__.py", where):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).touch()
    (package / "cli.py").write_text("from .runfile import load_run_config\n")  # the CLI may import anything
    assert cli_importers(package) == []
    (package / where).write_text(source)
    assert cli_importers(package) == [f"fxai_compat/{where}:{source.count(chr(10))}"]


def test_lookalikes_are_not_caught(tmp_path):
    package = tmp_path / "fxai_compat"
    (package / "parity").mkdir(parents=True)
    (package / "__init__.py").touch()
    (package / "parity" / "__init__.py").write_text("from . import cli\nfrom .cli_tools import x\n")  # parity.cli
    (package / "runner.py").write_text("import fxai_compat.client\nfrom .runfile import cli\n")
    assert cli_importers(package) == []
