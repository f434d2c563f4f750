"""Shadow mode: the native port runs for real and its legacy counterpart runs beside it as a control.

The control (a :class:`ShadowAdapter` around the legacy callback) is sandboxed: its files go under
the shadow directory, its W&B run is disabled, its Optuna reports go to a recording stand-in, and
its stop, prune and load requests are recorded, never obeyed; an exception from it is recorded and
switches the control off instead of failing the run. After every cycle the :class:`ShadowMonitor`
reads each pair's registered observables from both and compares them; mismatches (and the
control's decisions) are streamed to ``<shadow_dir>/mismatches.jsonl`` and summarized at the end.
With ``strict=True`` the first mismatch fails the run. The same monitor backs
``fxai_compat.parity.check_port_parity``: one comparison mechanism for both.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .adapter import LegacyCallbackAdapter, LightningTrainerView, _SharedRunState
from .parity.compare import first_mismatch, normalize

__all__ = ["ShadowAdapter", "ShadowMonitor", "ShadowMismatchError", "sandbox_options", "RecordingTrial"]

log = logging.getLogger("fxai_compat.shadow")

#: Options that name a place on disk: the control writes under the shadow directory instead.
_PATH_OPTIONS = ("save_dir", "checkpoint_dir", "dir")


class ShadowMismatchError(AssertionError):
    """A native port disagreed with its legacy control in shadow mode with ``--shadow-strict``."""


class RecordingTrial:
    """Stands in for an Optuna trial given to a shadow control: reports are recorded, not sent (the native
    port reports to the real trial); ``should_prune`` asks the real trial, which has the native's report."""

    def __init__(self, trial: Any):
        self._trial = trial
        self.reports: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((int(step), float(value)))
        # Not forwarded: the native port (built first) has reported this step to the real trial already.

    def should_prune(self) -> bool:
        return bool(self._trial.should_prune()) if self._trial is not None else False

    def __getattr__(self, name: str) -> Any:  # number, params, user_attrs ... read from the real trial
        return getattr(self._trial, name)


def sandbox_options(name: str, options: Mapping[str, Any], shadow_dir: Path) -> dict[str, Any]:
    """The control's options: paths moved under ``shadow_dir/<name>``, W&B disabled, trial recorded."""
    out = dict(options)
    for key in _PATH_OPTIONS:
        if out.get(key) is not None:
            out[key] = str(Path(shadow_dir) / name / key)
    if "mode" in out or name == "wandb":
        out["mode"] = "disabled"
    if "trial" in out:
        out["trial"] = RecordingTrial(out["trial"])
    return out


class _ShadowView(LightningTrainerView):
    """The control's trainer surface: it may read everything, but not move the real run."""

    def load_checkpoint(self, path) -> None:
        self._adapter.record("load_checkpoint", str(path))

    def save_checkpoint(self, path) -> str:
        from .checkpoints import write_atomic

        trainer = self._trainer
        write_atomic(trainer._checkpoint_connector.dump_checkpoint(weights_only=False), str(path))
        # Only the control hears about its own save: the real callbacks must not react to a shadow file.
        self._adapter._fire("on_checkpoint_saved", "shadow save_checkpoint", checkpoint_path=str(path))
        return str(path)


class ShadowAdapter(LegacyCallbackAdapter):
    """A legacy callback run as a shadow-mode control: same events as under ``LegacyCallbackAdapter``,
    but its stop / prune / load requests and its errors are recorded in ``decisions``, not obeyed."""

    view_class = _ShadowView
    steers_training = False

    def __init__(self, callback: Any, *, name: str, **options: Any):
        super().__init__(callback, **options)
        self.name = name
        self.decisions: list[dict[str, Any]] = []
        self._own_state: _SharedRunState | None = None
        self._own_trainer = None

    def _shared_for(self, trainer: "pl.Trainer") -> _SharedRunState:
        # Its own stop flag and context (one per trainer): a stop it asks for is recorded at cycle end, not shared.
        if self._own_state is None or self._own_trainer is not trainer:
            self._own_state, self._own_trainer = _SharedRunState(), trainer
        return self._own_state

    def record(self, decision: str, detail: Any = None) -> None:
        trainer = self._trainer
        core = getattr(getattr(trainer, "lightning_module", None), "core", None)
        self.decisions.append({"callback": self.name, "decision": decision, "detail": detail,
                               "cycle": core.cycle if core is not None else None})

    def _fire(self, event: str, hook: str, **payload: Any) -> None:
        if not self._active:
            return
        try:
            super()._fire(event, hook, **payload)
        except BaseException as exc:  # the control must never end the real run
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if type(exc).__name__ == "TrialPruned":
                self.record("prune", str(exc))
                return
            self.record("error", f"{type(exc).__name__}: {exc} (during {event})")
            self._active = False
            log.warning("Shadow control %s raised %r during %s; it is switched off for the rest of the run.",
                        self.name, exc, event)

    def _note_stop(self) -> None:
        state = self._own_state
        if state is not None and state.stop_requested():
            self.record("stop")
            state.stop, state.returned_stop = False, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._dispatch_hook("on_train_epoch_end")
        self._note_stop()

    def _on_file_saved(self, path: str) -> None:
        self._fire("on_checkpoint_saved", "CheckpointIO.save_checkpoint (after the write)", checkpoint_path=path)
        self._note_stop()


class ShadowMonitor(pl.Callback):
    """Compares each shadow pair's observables after every cycle; streams mismatches to a JSON-lines file.

    ``pairs`` maps a name to ``(PortPair, legacy_callback, native_callback)``. With ``keep_history``
    every comparison is kept (for reports and plots); otherwise only counts and the first divergence.
    """

    def __init__(self, pairs: Mapping[str, tuple[Any, Any, Any]], shadow_dir: str | Path, *, strict: bool = False,
                 keep_history: bool = False, controls: Mapping[str, ShadowAdapter] | None = None):
        super().__init__()
        self.pairs = dict(pairs)
        self.shadow_dir = Path(shadow_dir)
        self.strict = strict
        self.keep_history = keep_history
        self.controls = dict(controls or {})
        self.compared: dict[str, int] = {}
        self.mismatches = 0
        self.first_divergence: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self._mismatched: dict[str, int] = {}
        self._last_cycle: int | None = None
        self._file = None
        self._decisions_written = 0

    @property
    def mismatch_file(self) -> Path:
        return self.shadow_dir / "mismatches.jsonl"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero and self._file is None:
            self.shadow_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.mismatch_file, "w", encoding="utf-8")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_train_start(self, trainer, pl_module) -> None:
        core = getattr(pl_module, "core", None)
        # Only cycles that run in this fit are compared (not those a resumed run restored).
        self._last_cycle = (core.cycles_completed - 1) if core is not None else -1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.compare(trainer, pl_module)  # the previous cycle: every callback has finished with it by now

    def on_train_end(self, trainer, pl_module) -> None:
        self.compare(trainer, pl_module)
        if trainer.is_global_zero:
            log.info(self.summary())

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

    def compare(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Compare every observable for the cycle just finished (once per cycle)."""
        if not trainer.is_global_zero:
            return
        core = getattr(pl_module, "core", None)
        cycle = core.cycles_completed - 1 if core is not None else trainer.current_epoch - 1
        if cycle < 0 or cycle == self._last_cycle:
            return
        self._last_cycle = cycle
        self._write_decisions()
        for name, (pair, legacy_cb, native_cb) in self.pairs.items():
            control = self.controls.get(name)
            if control is not None and not control._active:
                continue  # the control was switched off after an error (recorded as a decision)
            for obs in pair.observables:
                legacy_value = normalize(obs.legacy(legacy_cb))
                native_value = normalize(obs.native(native_cb))
                what = first_mismatch(legacy_value, native_value, obs.tolerance)
                key = f"{name}.{obs.name}"
                self.compared[key] = self.compared.get(key, 0) + 1
                record = {"cycle": cycle, "callback": name, "observable": obs.name,
                          "legacy": legacy_value, "native": native_value}
                if self.keep_history:
                    self.history.append(dict(record, ok=what is None))
                if what is None:
                    continue
                self.mismatches += 1
                self._mismatched[name] = self._mismatched.get(name, 0) + 1
                record["detail"] = what
                self._write(dict(record, kind="mismatch"))
                if self.first_divergence is None:
                    self.first_divergence = record
                    if self.strict:
                        raise ShadowMismatchError(
                            f"Shadow mode: {name} native port disagrees with its legacy control at cycle {cycle} "
                            f"on {obs.name}: {what}. (--shadow-strict turns mismatches into failures; see "
                            f"{self.mismatch_file}.)")

    def _write_decisions(self) -> None:
        for control in self.controls.values():
            for decision in control.decisions[getattr(control, "_written", 0):]:
                self._write(dict(decision, kind="decision"))
            control._written = len(control.decisions)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, default=_json_default, allow_nan=True) + "\n")
            self._file.flush()

    def unchecked(self) -> dict[str, list[str]]:
        """Pairs this run did not prove: no per-cycle observables, or observables compared zero times."""
        out = {}
        for name, (pair, _, _) in self.pairs.items():
            if not pair.observables:
                out[name] = ["no per-cycle observables registered" + (
                    "; fxai-compat parity proves it by a scenario" if getattr(pair, "check", None) else "")]
            else:
                never = [obs.name for obs in pair.observables if not self.compared.get(f"{name}.{obs.name}")]
                if never:
                    out[name] = [f"{obs} compared 0 times" for obs in never]
        return out

    def verdicts(self) -> dict[str, str]:
        """Per pair: ``failing`` (a mismatch), ``unchecked`` (nothing compared) or ``proven``."""
        from .parity.status import FAILING, PROVEN, UNCHECKED

        failing = {d["callback"] for d in ([self.first_divergence] if self.first_divergence else [])}
        failing |= {name for name in self.pairs if self._mismatched.get(name)}
        unchecked = self.unchecked()
        return {name: FAILING if name in failing else UNCHECKED if name in unchecked else PROVEN
                for name in self.pairs}

    def summary(self) -> str:
        from .parity.status import summary_line

        compared = sum(self.compared.values())
        decisions = [d for c in self.controls.values() for d in c.decisions]
        unchecked = self.unchecked()
        head = (f"shadow mode: {summary_line(self.verdicts())}; {len(self.pairs)} pair(s), {compared} comparisons, "
                f"{self.mismatches} mismatch(es)"
                + (f", {len(decisions)} control decision(s) recorded" if decisions else "")
                + "".join(f"; {name} unchecked ({', '.join(why)})" for name, why in unchecked.items())
                + f"; details in {self.mismatch_file}")
        if self.first_divergence is None:
            return head
        d = self.first_divergence
        return (f"{head}\nfirst divergence: cycle {d['cycle']}, {d['callback']}.{d['observable']}: "
                f"legacy {d['legacy']!r} vs native {d['native']!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return repr(value)
