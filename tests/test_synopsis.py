"""README.md's command synopsis is the parsers' own (it missed --resume-from, --fresh, --set on tune and parity and
the heartbeat options when it was written by hand), and every option of every command's --help is in it."""

from __future__ import annotations

import re
from pathlib import Path

from fxai_compat.cli import END, START, _subparsers, build_parser, render_synopsis

README = Path(__file__).resolve().parents[1] / "README.md"


def _block() -> str:
    text = README.read_text()
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_readme_synopsis_is_generated_from_the_parsers():
    assert _block() == render_synopsis(), ("README.md's synopsis is stale: run "
                                           "python -c 'import fxai_compat.cli as c; c.sync_readme_synopsis()'")


def test_every_option_of_every_command_help_is_in_the_readme():
    block = _block()
    for name, sub in _subparsers(build_parser()).items():
        line = re.search(rf"^fxai-compat {name} .*?(?=^fxai-compat |\Z)", block, re.M | re.S)
        assert line, f"no synopsis line for fxai-compat {name}"
        options = set(re.findall(r"(--[a-z][a-z-]*)", sub.format_help())) - {"--help"}
        missing = sorted(o for o in options if o not in line[0])
        assert not missing, f"fxai-compat {name}: {missing} missing from README.md's synopsis"
