"""The package asks for version ranges, not this machine's builds: no exact pin in pyproject.toml, an upper bound
on every dependency whose private API the code uses, the exact torch in constraints.txt (which make install uses),
the optional parts as extras; and what is installed here satisfies all of it."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: A private API of a dependency, as the code spells it -> the distribution it belongs to.
PRIVATE_APIS = {r"\._checkpoint_connector\b": "pytorch_lightning", r"optuna\.storages\._\w+": "optuna"}


def _requirements(items):
    return {Requirement(item).name.lower().replace("-", "_"): Requirement(item) for item in items}


def test_dependencies_are_ranges_and_what_is_installed_satisfies_them():
    deps = _requirements(PROJECT["dependencies"])
    for name, req in deps.items():
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: an exact pin in the package"
        assert req.specifier.contains(version(name), prereleases=True), f"installed {name} {version(name)} not in {req}"
    assert deps["torch"].specifier.contains("2.13.0") and deps["torch"].specifier.contains("2.1.0")


def test_private_apis_used_have_an_upper_bound():
    deps = _requirements(PROJECT["dependencies"])
    sources = "\n".join(p.read_text() for p in (ROOT / "fxai_compat").rglob("*.py"))
    for pattern, dist in PRIVATE_APIS.items():
        assert re.search(pattern, sources), f"{pattern} no longer used: drop it from PRIVATE_APIS (and maybe the bound)"
        assert any(s.operator in ("<", "<=") for s in deps[dist].specifier), f"{dist} needs an upper bound"


def test_extras_and_the_constraints_file_the_makefile_uses():
    extras = PROJECT["optional-dependencies"]
    assert {"tensorboard", "plots", "test"} <= set(extras)
    assert any(Requirement(r).name == "tensorboard" for r in extras["tensorboard"])
    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert "torch==2.13.0" in pins and version("torch").split("+")[0] == "2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[test,plots,tensorboard\]'", makefile)
    assert not re.search(r"^\t.*pip install.*torch==", makefile, re.M)  # the pin lives in constraints.txt only
