"""The ``fxai-compat audit`` command: its argument parser, running it, and ``python -m fxai_compat.audit``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import ConfigError
from .classifying import audit
from .reporting import render_json, render_text

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
