"""The parity report behind ``fxai-compat parity``: trace parity for every selected legacy callback, port
parity for every selected registered pair, one table row per callback, a JSON summary and plots.

    fxai-compat parity --config examples/demo.yaml --set cycles=4 --callbacks metrics,optuna --out runs/parity

Each callback is built from its entry in the config's ``callbacks`` section (the legacy factory's options),
with everything it would write moved under a per-callback working folder: two hosts (trace parity) or a
port and its control (port parity) must not share files, and a parity run must not touch the real run's
files. W&B runs are offline under ``--out`` (disabled without it); Optuna trials come from an in-memory study.

With ``--out DIR``: ``parity.json`` (the table plus every count, comparison and divergence),
``port-<callback>-<observable>.png`` (legacy solid, native dashed, per cycle; beside it the residual
native - legacy with the tolerance band) and
``trace-<callback>-events.png`` (events delivered per event, legacy vs Lightning), and the working
folders under ``DIR/work`` (legacy traces, shadow mismatch files, offline W&B runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, TrainConfig
from .coverage import describe, reached
from .plots import observable_series, write_plots
from .status import FAILING, PROVEN, UNCHECKED, exit_code, summary_line, verdict
from .trace import ParityResult

__all__ = ["CallbackReport", "ParityReport", "TABLE_COLUMNS", "known_callbacks", "select_callbacks",
           "run_parity_report", "write_plots", "observable_series", "add_parity_parser"]

#: (JSON key, printed header) of the table's columns, in order.
TABLE_COLUMNS = (("callback", "callback"), ("events_compared", "events compared"), ("trace_parity", "trace parity"),
                 ("observables_compared", "observables compared"), ("port_parity", "port parity"),
                 ("reached", "rare paths reached"), ("status", "status"), ("first_divergence", "first divergence"))

NO_NATIVE = "no native port"
NOT_REGISTERED = "no port registered"

_PATH_OPTIONS = ("save_dir", "checkpoint_dir", "dir")
_STUDY_OPTIONS = ("study_name", "storage", "direction")


# -- choosing callbacks and their options -----------------------------------------------------------

def known_callbacks() -> list[str]:
    """Callbacks the report can check: the legacy stock callbacks and every registered port."""
    from legacy_callbacks import CALLBACK_CLASSES

    from ..toggle import REGISTRY

    return list(dict.fromkeys([*CALLBACK_CLASSES, *REGISTRY]))


def select_callbacks(spec: str | Sequence[str] | None, section: Mapping[str, Any]) -> list[str]:
    """``--callbacks``: comma-separated names, or ``all`` (the default): every enabled entry of the config's
    callbacks section, or every known callback when the config has none. Unknown names: ``ConfigError``."""
    known = known_callbacks()
    if isinstance(spec, str):
        spec = [spec]
    names = [part.strip() for item in (spec or ["all"]) for part in str(item).split(",") if part.strip()]
    if not names or names == ["all"]:
        enabled = [name for name, opts in section.items()
                   if not (isinstance(opts, Mapping) and opts.get("enabled", True) is False)]
        names, where = (enabled, "the callbacks section") if section else (known, "")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"Unknown callback(s) {', '.join(map(repr, unknown))} in {where}; "
                              f"known callbacks: {', '.join(known)}.")
        return names
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--callbacks names unknown callback(s) {', '.join(map(repr, unknown))}; "
                          f"known callbacks: {', '.join(known)} (or all).")
    return list(dict.fromkeys(names))


def _legacy_class(name: str) -> Callable[..., Any]:
    from legacy_callbacks import CALLBACK_CLASSES

    from ..toggle import REGISTRY

    return REGISTRY[name].legacy if name in REGISTRY else CALLBACK_CLASSES[name]


def _accepts(factory: Callable[..., Any], option: str) -> bool:
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == option or p.kind is p.VAR_KEYWORD for p in params)


def callback_options(name: str, entry: Any, workdir: Path, *, wandb_mode: str = "disabled") -> dict[str, Any]:
    """A callback's options for a parity run: ``default_port_options`` under the config's entry, with every
    path moved under ``workdir``, W&B ``wandb_mode`` (never online), and an in-memory Optuna study."""
    from .port import default_port_options

    options = default_port_options(name, workdir)
    options.update({k: v for k, v in dict(entry or {}).items() if k not in ("impl", "enabled")})
    for key in _PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = str(workdir / key)
    if name == "wandb" or "mode" in options:
        options["dir"] = str(workdir / "dir")
        options["mode"] = "disabled" if options.get("mode") == "disabled" else wandb_mode
    if any(key in options for key in _STUDY_OPTIONS):
        options.update(study_name="parity", storage=None)
    return options


def _trace_factory(name: str, options: Mapping[str, Any]) -> Callable[[Path], Any]:
    """A factory for ``check_trace_parity``: each host gets its own folder for the callback's files, and a
    callback that needs an Optuna trial gets a fresh trial of one in-memory study each time it is built."""
    cls = _legacy_class(name)
    options = dict(options)
    study_options = {k: options.pop(k) for k in _STUDY_OPTIONS if k in options}
    trial_of = None
    if "trial" not in options and _accepts(cls, "trial"):
        import optuna

        study = optuna.create_study(direction=study_options.get("direction") or "maximize",
                                    pruner=optuna.pruners.NopPruner())
        trial_of = study.ask
    if not _accepts(cls, "dir"):
        options.pop("dir", None)

    def factory(workdir: Path) -> Any:
        opts = {k: (str(workdir / k) if k in _PATH_OPTIONS and v is not None else v) for k, v in options.items()}
        if trial_of is not None:
            opts["trial"] = trial_of()
        try:
            return cls(**opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"callbacks.{name}: cannot build the legacy {cls.__name__}: {exc}") from None

    factory.__name__ = name
    return factory


# -- running ---------------------------------------------------------------------------------------

@dataclass
class CallbackReport:
    """One row: the trace parity and port parity of one callback (either may be missing or have failed)."""

    name: str
    trace: ParityResult | None = None
    trace_error: str | None = None
    port: ParityResult | None = None
    port_status: str = "n/a"
    """ok, FAILED, error, unchecked, or why there is no port to compare (no native port / not registered)."""
    port_error: str | None = None
    observables: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def trace_status(self) -> str:
        if self.trace_error is not None:
            return "error"
        return "n/a" if self.trace is None else self.trace.status

    @property
    def status(self) -> str:
        """``proven``, ``unchecked`` or ``failing`` (see :mod:`fxai_compat.parity.status`)."""
        return verdict([self.trace_status, self.port_status])

    @property
    def ok(self) -> bool:
        """Proven: every check compared something and agreed (an unchecked port is not ok)."""
        return self.status == PROVEN

    def first_divergence(self) -> str:
        parts = []
        if self.trace_error is not None:
            parts.append(f"trace error: {self.trace_error}")
        elif self.trace is not None and self.trace.divergence is not None:
            parts.append(f"trace: event #{self.trace.divergence.index}: {self.trace.divergence.what}")
        elif self.trace is not None and self.trace.unchecked:
            parts.append(f"trace unchecked: {', '.join(self.trace.unchecked)}")
        if self.port_error is not None:
            parts.append(f"port error: {self.port_error}")
        elif self.port is not None and self.port.divergence is not None:
            parts.append(f"port: {self.port.divergence.what}")
        elif self.port is not None and self.port.unchecked:
            parts.append(f"port unchecked: {', '.join(self.port.unchecked)}")
        return "; ".join(parts)

    def comparisons(self) -> str:
        """``8 (best_cycle 4, best_reward 4)``: the port's comparisons, named per observable."""
        if self.port is None:
            return self.port_status if self.port_status in (NO_NATIVE, NOT_REGISTERED) else "-"
        named = ", ".join(f"{name} {counts[0]}" for name, counts in self.port.counts.items())
        return f"{self.port.compared} ({named})" if named else str(self.port.compared)

    def row(self) -> dict[str, str]:
        port = "n/a" if self.port_status in (NO_NATIVE, NOT_REGISTERED) else self.port_status
        return {"callback": self.name,
                "events_compared": str(self.trace.compared) if self.trace is not None else "-",
                "trace_parity": self.trace_status, "observables_compared": self.comparisons(), "port_parity": port,
                "reached": describe(self.reached()), "status": self.status, "first_divergence": self.first_divergence()}

    def reached(self) -> dict[str, int]:
        """The rare paths the port check went through (see :mod:`fxai_compat.parity.coverage`)."""
        return reached(getattr(self.port, "history", None) or []) if self.port is not None else {}

    def to_dict(self) -> dict[str, Any]:
        trace = dict(self.trace.to_dict(), status=self.trace_status) if self.trace is not None else \
            {"status": self.trace_status}
        trace["error"] = self.trace_error
        port: dict[str, Any] = {"status": self.port_status, "error": self.port_error,
                                "observables": list(self.observables)}
        if self.port is not None:
            port.update(self.port.to_dict(), status=self.port_status,
                        history=list(getattr(self.port, "history", None) or []))
        return {"name": self.name, "ok": self.ok, "status": self.status, "reached": self.reached(),
                "trace": trace, "port": port,
                "seconds": self.seconds}


@dataclass
class ParityReport:
    """Every row of a parity run, the config it ran on, and where its files went."""

    rows: list[CallbackReport]
    config: dict[str, Any] = field(default_factory=dict)
    source: str = "defaults"
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every row proven (an unchecked row is not ok)."""
        return all(row.ok for row in self.rows)

    def verdicts(self) -> dict[str, str]:
        return {row.name: row.status for row in self.rows}

    def summary(self) -> str:
        """``N/T proven, M unchecked, K failing`` (naming the unchecked and failing callbacks)."""
        return summary_line(self.verdicts())

    def table(self) -> str:
        rows = [row.row() for row in self.rows]
        headers = [title for _, title in TABLE_COLUMNS]
        widths = [max([len(title)] + [len(r[key]) for r in rows]) for key, title in TABLE_COLUMNS[:-1]]
        lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " | " + headers[-1]]
        lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * len(headers[-1]))
        for r in rows:
            cells = [r[key] for key, _ in TABLE_COLUMNS]
            lines.append((" | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " | " + cells[-1]).rstrip())
        return "\n".join(lines)

    def details(self) -> str:
        """The rendered first divergences (with context) of the failed checks."""
        out = []
        for row in self.rows:
            for result in (row.trace, row.port):
                if result is not None and result.divergence is not None:
                    text = result.summary()
                    bad = next((h for h in getattr(result, "history", None) or [] if not h["ok"]), None)
                    if bad is not None:  # the context lines above are cut short: the whole values
                        text += (f"\n    at cycle {bad['cycle']}, {bad['observable']}:"
                                 f"\n      legacy: {json.dumps(bad['legacy'], sort_keys=True, default=str)}"
                                 f"\n      native: {json.dumps(bad['native'], sort_keys=True, default=str)}")
                    out.append(text)
        return "\n\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        verdicts = list(self.verdicts().values())
        return {"ok": self.ok, "summary": self.summary(),
                "counts": {kind: verdicts.count(kind) for kind in (PROVEN, UNCHECKED, FAILING)},
                "config": self.source, "train": self.config, "columns": [k for k, _ in TABLE_COLUMNS],
                "table": [row.row() for row in self.rows], "callbacks": [row.to_dict() for row in self.rows],
                "files": list(self.files)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_parity_report(config: TrainConfig, section: Mapping[str, Any], names: Sequence[str], workdir: str | Path, *,
                      trainer_kwargs: Mapping[str, Any] | None = None, wandb_mode: str = "disabled",
                      trace: bool = True, port: bool = True,
                      progress: Callable[[str], None] | None = None) -> ParityReport:
    """Trace parity (legacy host vs Lightning through the adapter) and port parity (native port vs its legacy
    control) of each callback in ``names``, built from ``section`` (a run config's callbacks section).

    A check that raises is reported as an ``error`` row, and the others still run."""
    from ..toggle import REGISTRY
    from .port import check_port_parity
    from .trace import check_trace_parity

    say = progress or (lambda text: None)
    root = Path(workdir)
    kwargs = {k: v for k, v in dict(trainer_kwargs or {}).items() if k not in ("logger", "default_root_dir")}
    kwargs["enable_progress_bar"] = False
    rows = []
    for name in names:
        row = CallbackReport(name)
        entry = section.get(name)
        if trace:
            start = time.perf_counter()
            try:
                options = callback_options(name, entry, root / name / "trace", wandb_mode=wandb_mode)
                row.trace = check_trace_parity(_trace_factory(name, options), config, workdir=root / name / "trace",
                                               name=name, trainer_kwargs=kwargs)
            except Exception as exc:  # one broken callback must not hide the others' results
                row.trace_error = _one_line(exc)
                say("".join(traceback.format_exception(exc)).rstrip())
            row.seconds["trace"] = round(time.perf_counter() - start, 2)
            say(f"{name}: trace parity {row.trace_status} ({row.seconds['trace']:.1f} s)")
        pair = REGISTRY.get(name)
        if not port:
            pass
        elif pair is None:
            row.port_status = NOT_REGISTERED
        elif pair.native_factory() is None:
            row.port_status = NO_NATIVE
        else:
            row.observables = tuple(obs.name for obs in pair.observables)
            start = time.perf_counter()
            workdir_port = root / name / "port"
            try:  # run even without observables: the port must at least run beside its control
                options = callback_options(name, entry, workdir_port / "callback", wandb_mode=wandb_mode)
                row.port = check_port_parity(name, config, options=options, workdir=workdir_port,
                                             trainer_kwargs=kwargs)
                row.port_status = row.port.status
                row.observables = tuple(row.port.counts) or row.observables  # a scenario names its own
            except Exception as exc:
                row.port_status, row.port_error = "error", _one_line(exc)
                say("".join(traceback.format_exception(exc)).rstrip())
            row.seconds["port"] = round(time.perf_counter() - start, 2)
            say(f"{name}: port parity {row.port_status} ({row.seconds['port']:.1f} s)")
        rows.append(row)
    return ParityReport(rows, config.to_dict())


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: ParityReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False, default=str) + "\n")
    return path


# -- the command -----------------------------------------------------------------------------------

def _default_train_overrides() -> list[str]:
    """Without --config: the small parity config that reaches the rare paths (``parity_config(**RARE_PATHS)``),
    as overrides the user's --set beat."""
    from . import RARE_PATHS, parity_config

    return [f"train.{key}={json.dumps(value)}" for key, value in parity_config(**RARE_PATHS).to_dict().items()]


def _cmd_parity(args: argparse.Namespace) -> int:
    import os

    if getattr(args, "module", None):  # the event grammar of a user's own LightningModule
        from .grammar import cmd_module_grammar

        return cmd_module_grammar(args.module, args.epochs)

    from ..runfile import load_run_config

    overrides = list(args.set) if args.config else _default_train_overrides() + list(args.set)
    run = load_run_config(args.config, overrides)
    names = select_callbacks(args.callbacks, run.callbacks)
    out = Path(args.out) if args.out else None
    os.environ.setdefault("WANDB_SILENT", "true")
    progress = (lambda text: print(f"parity: {text}", file=sys.stderr, flush=True))
    print(f"parity of {len(names)} callback(s) on {run.source}: {', '.join(names)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="fxai-parity-") as tmp:
        workdir = out / "work" if out is not None else Path(tmp)
        report = run_parity_report(run.train, run.callbacks, names, workdir, trainer_kwargs=run.trainer,
                                   wandb_mode="offline" if out is not None else "disabled", progress=progress)
    report.source = run.source
    if out is not None:
        report.files = [p.name for p in write_plots(report, out)] + ["parity.json"]
    print(report.table())
    details = report.details()
    if details:
        print()
        print(details)
    if out is not None:
        write_json(report, out / "parity.json")
        print(f"\nwrote {out / 'parity.json'} and {len(report.files) - 1} plot(s) to {out}")
    code = exit_code(report.verdicts(), require_all=args.require_all)
    print(f"parity: {report.summary()}" + (" (--require-all: unchecked fails)" if code and args.require_all
                                               and not any(v == FAILING for v in report.verdicts().values()) else ""))
    return code


def add_parity_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``parity`` on the ``fxai-compat`` subcommands."""
    parity = sub.add_parser(
        "parity", help="trace and port parity of the legacy callbacks, as a table, JSON and plots",
        description="Trace parity (each legacy callback sees the same events under the legacy loop and under "
                    "Lightning) and port parity (each native port agrees with its legacy callback, cycle by "
                    "cycle) for the selected callbacks. A check that compared nothing is 'unchecked', never ok. "
                    "Exits 1 if any check fails (and, with --require-all, if any is unchecked).")
    parity.add_argument("--config", help="YAML run config: its train section and its callbacks' options "
                                         "(default: a small parity config and every callback with defaults)")
    parity.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value: cycles=4 (train section) or callbacks.metrics.window_size=5")
    parity.add_argument("--callbacks", default="all", metavar="NAMES|all",
                        help="comma-separated callbacks to check (default: all of the config's callbacks)")
    parity.add_argument("--require-all", action="store_true",
                        help="fail (exit 1) when any callback is unchecked, not only when one fails (CI uses it)")
    parity.add_argument("--out", metavar="DIR", help="write parity.json and PNG plots (and the working files) here")
    parity.add_argument("--module", metavar="PKG.MOD:FACTORY",
                        help="instead: fit the LightningModule FACTORY() returns and check the contract's event "
                             "grammar on the events a legacy callback receives from it")
    parity.add_argument("--epochs", type=int, default=3, help="epochs to fit with --module (default 3)")
    parity.set_defaults(func=_cmd_parity)
    return parity
