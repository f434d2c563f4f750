"""The pytest plugin (``pytest11`` entry point ``fxai_parity``) is loaded by every pytest run of an environment with
this package installed, so importing it must not import torch or Lightning (that cost every test run ~2 s)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

HEAVY = ("torch", "pytorch_lightning", "lightning", "optuna", "wandb", "numpy")


def test_the_installed_entry_point_imports_no_heavy_module():
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "fxai_parity"]
    code = (f"import sys, importlib; importlib.import_module({ep.module!r}); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "", f"importing the pytest plugin imported {loaded.stdout.strip()}"


def test_the_fixture_still_loads_the_parity_tools(fxai_parity):
    from fxai_compat import parity

    assert callable(parity.check_trace_parity) and parity.DEFAULT_TOLERANCE == 1e-6
    assert fxai_parity.tmp_path.is_dir()
