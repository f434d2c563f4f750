"""The README's command synopsis, generated from the ``fxai-compat`` parsers so that it cannot miss an option.

``python -m fxai_compat.synopsis`` rewrites the block between ``<!-- synopsis:start -->`` and
``<!-- synopsis:end -->`` in README.md; ``tests/test_synopsis.py`` fails when the README differs from the parsers.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

__all__ = ["render_synopsis", "sync_readme", "START", "END"]

START, END = "<!-- synopsis:start -->", "<!-- synopsis:end -->"
WIDTH = 118


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render_synopsis() -> str:
    """One usage line per subcommand (``-h`` left out), wrapped at a fixed width, as a fenced block."""
    from .cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH + 2)  # argparse wraps at the terminal width: fixed here, whatever the terminal
    try:
        lines = []
        for name, sub in _subparsers(build_parser()).items():
            usage = sub.format_usage().strip()
            usage = re.sub(r"^usage: ", "", usage).replace(" [-h]", "")
            lines.append(re.sub(r"\n\s+", "\n    ", usage))
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
    return "```\n" + "\n".join(lines) + "\n```"


def sync_readme(path: str | os.PathLike = "README.md") -> bool:
    """Rewrite the synopsis block of ``path``; True if it changed."""
    path = Path(path)
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} block.")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    new = f"{before}{START}\n{render_synopsis()}\n{END}{after}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    print("README.md " + ("updated" if sync_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md") else "unchanged"))
