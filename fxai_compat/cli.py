"""The ``fxai-compat`` command line: argument parsers and thin command functions (``train``, ``tune``; ``parity``
and ``audit`` add their own parsers). The work is done below it: :mod:`fxai_compat.runfile` (run files),
:mod:`fxai_compat.runner` (``train``), :mod:`fxai_compat.tune` (``tune``). The README's command synopsis is
rendered from these parsers (:func:`render_synopsis`).

User errors (bad flags, files, values) exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import runner
from . import tune as tuning
from .checkpoints import CheckpointError
from .config import ConfigError
from .runfile import RunConfig, load_run_config
from .tune import HEARTBEAT_GRACE, HEARTBEAT_INTERVAL

__all__ = ["main", "load_run_config", "RunConfig"]


def _cmd_train(args: argparse.Namespace) -> int:
    return runner.train(args)


def _cmd_tune(args: argparse.Namespace) -> int:
    return tuning.tune(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxai-compat", description="FxAI legacy callbacks on PyTorch Lightning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train PPO from a run config",
                           description="Train PPO from a run config (sections: train, trainer, callbacks).")
    tune = sub.add_parser("tune", help="an Optuna study over PPO hyperparameters, with pruning",
                          description="Run Optuna trials of a run config over its tune section (default: lr, ent_coef, "
                                      "clip, gae_lambda); several "
                                      "processes may share one storage. Resumable: finished trials count. The trial "
                                      "of a killed worker is marked FAIL rather than left RUNNING and, on an RDB "
                                      "storage, retried once with the same parameters.")
    for cmd in (train, tune):
        cmd.add_argument("--config", metavar="FILE", help="YAML run config (default: built-in defaults)")
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a value: n_envs=4 (train section) or callbacks.metrics.window_size=50")
        cmd.add_argument("--impl", action="append", default=[], metavar="NAME=IMPL",
                         help="choose legacy|native|shadow per callback (checkpoint=native, all=legacy); "
                              "beats the FXAI_CALLBACK_IMPL environment variable and the config")
    train.add_argument("--host", choices=("lightning", "legacy"), default="lightning",
                       help="run under Lightning (default) or the legacy FxAI loop (legacy callbacks only)")
    train.add_argument("--shadow-strict", action="store_true",
                       help="a shadow-mode mismatch between a legacy callback and its native port fails the run")
    train.add_argument("--resume-from", metavar="PATH",
                       help="continue from this training checkpoint (loaded weights-only; refused if unsafe or damaged)")
    train.add_argument("--fresh", action="store_true",
                       help="start over: ignore the interrupted run in checkpoint_dir (by default train resumes from "
                            "its last.ckpt under Lightning, from its newest cycle-NNNN.ckpt under --host legacy)")
    train.set_defaults(func=_cmd_train)
    tune.add_argument("--storage", metavar="URL", help="sqlite:///study.db, journal:///study.log or an RDB URL (default: in memory)")
    tune.add_argument("--study", required=True, metavar="NAME", help="study name (an existing study is continued)")
    tune.add_argument("--n-trials", type=int, required=True, metavar="N", help="finished trials the study should have in all")
    tune.add_argument("--heartbeat-interval", type=int, metavar="SECONDS",
                      help=f"RDB storages: a running trial records a heartbeat every SECONDS (default "
                           f"{HEARTBEAT_INTERVAL})")
    tune.add_argument("--heartbeat-grace", type=int, metavar="SECONDS",
                      help=f"RDB storages: a running trial without a heartbeat for SECONDS (default {HEARTBEAT_GRACE}; "
                           f"longer than the interval) is failed and retried once; a dead worker's trial on the same "
                           f"host is failed and retried at once")
    tune.set_defaults(func=_cmd_tune)
    from .parity.report import add_parity_parser

    add_parity_parser(sub)  # fxai-compat parity: trace and port parity table, JSON and plots
    from .audit import add_parser as add_audit_parser

    add_audit_parser(sub)  # fxai-compat audit: find legacy callbacks, say what migrating each one takes
    return parser


# -- the README's synopsis, from these parsers ---------------------------------------------------------------------

START, END = "<!-- synopsis:start -->", "<!-- synopsis:end -->"
WIDTH = 118


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render_synopsis() -> str:
    """README.md's command synopsis: one usage line per subcommand (``-h`` left out), wrapped at a fixed width, as
    a fenced block. ``tests/test_synopsis.py`` fails when README.md differs; ``sync_readme_synopsis()`` rewrites it."""
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


def sync_readme_synopsis(path: str | os.PathLike = "README.md") -> bool:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as exc:
        # One line, as promised: a wrapped library message may span several.
        print(f"fxai-compat: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fxai-compat: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
