"""Continuous training, proven by resuming: the same run started again on every resume path, session by session.

A *path* is one way a run is started again (``TrainConfig.cycles`` and :mod:`fxai_compat.resume_cycles` give the rule
all of them follow):

* ``legacy-callback/legacy-host``: the legacy ``ContinuousTrainingCallback`` (it loads the newest version in
  ``on_training_start``) on ``LegacyTrainer``;
* ``legacy-callback/lightning``: the same callback through ``LegacyCallbackAdapter`` on Lightning;
* ``resume_from/legacy-host``: ``LegacyTrainer.train(resume_from=<newest cycle checkpoint>)``;
* ``ckpt_path/lightning``: ``fit(..., ckpt_path=<newest cycle checkpoint>)``;
* ``native``: the native port's ``continue_training`` (Lightning's ``ckpt_path`` with planned ``max_epochs``).

:func:`run_session` runs one session of a path (optionally interrupted: an exception, or a real ``SIGKILL``
of the process, at the start of a given cycle) and returns what it did. :func:`check_continuous_port` is the
port parity of ``continuous_training``: three sessions per side (interrupted, finished by the rerun, continued
by the next rerun), compared per session on ``resumed_from`` (cycles in the state each session loaded),
``cycles_trained``, ``cycles_total``, ``newest_version`` (cycles in the newest version file: what the next run
loads) and ``weights`` (the final parameters, to 1e-6). Version numbers differ by design (legacy: one per saved
checkpoint; native: one per session): they are recorded beside each comparison, not compared.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from .compare import first_mismatch, normalize
from .trace import ParityResult

__all__ = ["PATHS", "Interrupt", "SimulatedInterruption", "run_session", "killed_session", "check_continuous_port",
           "OBSERVABLES"]

PATHS = ("legacy-callback/legacy-host", "legacy-callback/lightning", "resume_from/legacy-host", "ckpt_path/lightning",
         "native")
OBSERVABLES = ("resumed_from", "cycles_trained", "cycles_total", "newest_version", "weights")
_VERSION = re.compile(r"version_(\d+)\.ckpt")


class SimulatedInterruption(RuntimeError):
    """Raised by :class:`Interrupt` to end a session the way a crash would."""


class Interrupt:
    """A legacy callback that ends the run at the start of the cycle after ``after_cycles`` cycles (counted over
    the whole run): with an exception, or ``kill=True`` with a real ``SIGKILL`` of this process."""

    def __init__(self, after_cycles: int, kill: bool = False):
        self.after_cycles, self.kill = after_cycles, kill

    def on_rollout_start(self, trainer):
        if trainer.total_timesteps >= self.after_cycles * int(trainer.config["n_steps"]) * int(trainer.config["n_envs"]):
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise SimulatedInterruption(f"interrupted after {self.after_cycles} cycles")


def _newest(directory: Path, pattern: str) -> str | None:
    found = sorted(directory.glob(pattern)) if directory.is_dir() else []
    return str(found[-1]) if found else None


def _cycles_in(path: str | None) -> int | None:
    if path is None:
        return None
    from ..checkpoints import read_training_checkpoint

    return int(read_training_checkpoint(path).rl_state["cycles_completed"])


def _version_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if _VERSION.fullmatch(p.name))


def run_session(path: str, config: TrainConfig, root: str | os.PathLike, *, interrupt: Interrupt | None = None,
                legacy_factory: Any = None, native_factory: Any = None, keep_versions: int | None = None,
                trainer_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One session of ``path`` (see :data:`PATHS`) in ``root``; its record: ``resumed_from`` (cycles in the loaded
    state, ``None`` for a fresh start), ``cycles_trained``, ``cycles_total``, ``newest_version`` (cycles in the newest
    version file), ``weights`` (the policy's parameters) and ``versions`` (the version files). An interrupted
    session's record has ``interrupted`` set (its other fields come from the files it left).
    ``legacy_factory``/``native_factory``: the continuous-training classes (default: the built-in ones)."""
    from legacy_callbacks import ContinuousTrainingCallback as LegacyContinuous

    from ..adapter import LegacyCallbackAdapter
    from ..callbacks.continuous_training import ContinuousTrainingCallback, continue_training
    from ..legacy_host import LegacyTrainer
    from ..lightning_host import fit

    root = Path(root)
    cfg = config.replace(checkpoint_dir=str(root / "checkpoints"))
    versions = root / "versions"
    extra = [interrupt] if interrupt is not None else []
    kwargs = {"logger": False, "enable_progress_bar": False, **dict(trainer_kwargs or {})}
    holder: dict[str, Any] = {}
    keep = {"keep_versions": keep_versions} if keep_versions is not None else {}
    legacy_factory = legacy_factory or LegacyContinuous
    record: dict[str, Any] = {"path": path, "interrupted": None}
    periodic = _newest(Path(cfg.checkpoint_dir), "cycle-*.ckpt")
    # What this session will load, read before it runs (a session may overwrite or prune that file).
    candidate = periodic if path.startswith(("resume_from", "ckpt_path")) else \
        (os.path.realpath(versions / "last.ckpt") if (versions / "last.ckpt").exists() else None) if path == "native" \
        else _newest(versions, "version_*.ckpt")
    loaded_cycles = _cycles_in(candidate)
    try:
        if path == "legacy-callback/legacy-host":
            holder["cb"] = legacy_factory(checkpoint_dir=str(versions), **keep)
            holder["trainer"] = LegacyTrainer(cfg, [holder["cb"], *extra])
            holder["trainer"].train()
        elif path == "legacy-callback/lightning":
            holder["cb"] = legacy_factory(checkpoint_dir=str(versions), **keep)
            holder["trainer"] = fit(cfg, [LegacyCallbackAdapter(cb) for cb in [holder["cb"], *extra]], **kwargs)
        elif path == "resume_from/legacy-host":
            holder["resumed"] = periodic
            holder["trainer"] = LegacyTrainer(cfg, extra)
            holder["trainer"].train(resume_from=periodic)
        elif path == "ckpt_path/lightning":
            holder["resumed"] = periodic
            holder["trainer"] = fit(cfg, [LegacyCallbackAdapter(cb) for cb in extra], ckpt_path=periodic, **kwargs)
        elif path == "native":
            factory = native_factory or ContinuousTrainingCallback
            holder["cb"] = factory(checkpoint_dir=str(versions), **keep)
            callbacks = [holder["cb"], *(LegacyCallbackAdapter(cb) for cb in extra)]
            kwargs.pop("logger")
            holder["trainer"] = continue_training(cfg, callbacks, logger=False,
                                                  **{k: v for k, v in kwargs.items() if k != "default_root_dir"})
        else:
            raise ValueError(f"Unknown resume path {path!r}; choose one of {', '.join(PATHS)}.")
    except SimulatedInterruption as exc:
        record["interrupted"] = str(exc)
    cb = holder.get("cb")
    resumed = getattr(cb, "resumed_from", None) if cb is not None else holder.get("resumed")
    record["resumed_from"] = loaded_cycles if resumed is not None else None
    newest = (os.path.realpath(versions / "last.ckpt") if (versions / "last.ckpt").exists() else
              _newest(versions, "version_*.ckpt")) if path.startswith(("legacy-callback", "native")) else \
        _newest(Path(cfg.checkpoint_dir), "cycle-*.ckpt")
    record["newest_version"] = _cycles_in(newest)
    record["versions"] = _version_files(versions)
    trainer = holder.get("trainer")
    core = getattr(trainer, "core", None) or getattr(getattr(trainer, "lightning_module", None), "core", None)
    if record["interrupted"] is None and core is not None:
        record["cycles_total"] = int(core.cycles_completed)
        record["weights"] = torch.cat([p.detach().reshape(-1) for p in core.policy.parameters()]).tolist()
    else:  # a crashed session: what it left on disk is what counts
        record["cycles_total"] = record["newest_version"]
        record["weights"] = None
    before = record["resumed_from"] or 0
    record["cycles_trained"] = None if record["cycles_total"] is None else record["cycles_total"] - before
    return record


def _interruption_point(cfg: TrainConfig) -> tuple[TrainConfig, int]:
    """A config with periodic checkpoints and the cycle after which to interrupt its first session (the last
    due checkpoint before the end, so a version exists and the run still had cycles to do)."""
    if cfg.cycles < 2:
        cfg = cfg.replace(cycles=2)
    every = cfg.checkpoint_every
    due = [c for c in range(1, cfg.cycles) if every and c % every == 0]
    if not due:
        cfg = cfg.replace(checkpoint_every=1)
        due = list(range(1, cfg.cycles))
    return cfg, due[-1]


def check_continuous_port(pair: Any, config: TrainConfig, options: Mapping[str, Any], workdir: Path,
                          trainer_kwargs: Mapping[str, Any]) -> ParityResult:
    """Three sessions of the legacy callback (on the legacy loop) and of the native port: interrupted after the
    last due checkpoint before ``cycles``, finished by a rerun, continued by another; compared per session."""
    from .port import result_from_history

    cfg, stop = _interruption_point(config)
    factories = {"legacy_factory": pair.legacy, "native_factory": pair.native_factory(),
                 "keep_versions": options.get("keep_versions")}
    sessions: dict[str, list[dict[str, Any]]] = {}
    for side, path in (("legacy", "legacy-callback/legacy-host"), ("native", "native")):
        root = Path(workdir) / side
        # The first session dies by SIGKILL in a child process (when the pair's classes can be imported there),
        # else by an exception; the next two run here, from the files it left.
        first = killed_session(path, cfg, root, stop, trainer_kwargs=trainer_kwargs, **factories) or \
            run_session(path, cfg, root, interrupt=Interrupt(stop), trainer_kwargs=trainer_kwargs, **factories)
        sessions[side] = [first] + [run_session(path, cfg, root, trainer_kwargs=trainer_kwargs, **factories)
                                    for _ in range(2)]
    history, counts = [], dict.fromkeys(OBSERVABLES, 0)
    for n, (a, b) in enumerate(zip(sessions["legacy"], sessions["native"])):
        info = {"session": n, "interrupted": a["interrupted"], "versions": {"legacy": a["versions"],
                                                                             "native": b["versions"]}}
        for obs in OBSERVABLES:
            left, right = normalize(a[obs]), normalize(b[obs])
            if obs == "weights":
                detail = None if left == right or (left is not None and right is not None and torch.allclose(
                    torch.tensor(left), torch.tensor(right), atol=1e-6)) else "final parameters differ (> 1e-6)"
                shown = [_summary(left), _summary(right)]
            else:
                detail, shown = first_mismatch(left, right), [left, right]
            counts[obs] += 1
            history.append({"cycle": n, "observable": obs, "legacy": shown[0], "native": shown[1],
                            "ok": detail is None, "info": info, **({"detail": f"session {n}: {detail}"} if detail else {})})
    return result_from_history(pair.name, history, counts)


def _reference(obj: Any) -> str | None:
    """``module:qualname`` of a class or function a child process can import, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"


def _resolve(reference: str) -> Any:
    import importlib

    module, _, qualname = reference.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def killed_session(path: str, config: TrainConfig, root: Path, after_cycles: int, *, legacy_factory: Any = None,
                   native_factory: Any = None, keep_versions: int | None = None,
                   trainer_kwargs: Mapping[str, Any] | None = None, timeout: float = 600) -> dict[str, Any] | None:
    """A first session of ``path`` that a real ``SIGKILL`` ends after ``after_cycles`` cycles, in a child process;
    its record, read from the files it left. ``None`` when the classes or options cannot reach a child process."""
    import json
    import subprocess
    import sys

    refs = {"legacy": _reference(legacy_factory) if legacy_factory is not None else None,
            "native": _reference(native_factory) if native_factory is not None else None}
    if (legacy_factory is not None and refs["legacy"] is None) or (native_factory is not None and refs["native"] is None):
        return None
    try:
        spec = json.dumps({"path": path, "config": config.to_dict(), "root": str(root), "after": after_cycles,
                           "refs": refs, "keep_versions": keep_versions, "trainer_kwargs": dict(trainer_kwargs or {})})
    except (TypeError, ValueError):
        return None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "fxai_compat.parity.continuous_check", spec], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"The first {path} session was to be killed after {after_cycles} cycles, but it exited "
                           f"with {proc.returncode}: {proc.stderr.strip()[-800:]}")
    versions = Path(root) / "versions"
    newest = (os.path.realpath(versions / "last.ckpt") if (versions / "last.ckpt").exists() else
              _newest(versions, "version_*.ckpt"))
    done = _cycles_in(newest)
    return {"path": path, "interrupted": f"SIGKILL after {after_cycles} cycles", "resumed_from": None,
            "newest_version": done, "versions": _version_files(versions), "cycles_total": done,
            "weights": None, "cycles_trained": done}


def _killed_child(spec: Mapping[str, Any]) -> None:
    """The child of :func:`killed_session`: runs the session until its own SIGKILL."""
    refs = spec["refs"]
    run_session(spec["path"], TrainConfig.from_mapping(spec["config"]), spec["root"],
                interrupt=Interrupt(int(spec["after"]), kill=True),
                legacy_factory=_resolve(refs["legacy"]) if refs["legacy"] else None,
                native_factory=_resolve(refs["native"]) if refs["native"] else None,
                keep_versions=spec["keep_versions"], trainer_kwargs=spec["trainer_kwargs"])
    raise SystemExit("the session ended without being killed")


def _summary(weights: Sequence[float] | None) -> dict[str, float] | None:
    if weights is None:
        return None
    t = torch.tensor(weights, dtype=torch.float64)
    return {"sum": float(t.sum()), "norm": float(t.norm())}


if __name__ == "__main__":
    import json
    import sys

    _killed_child(json.loads(sys.argv[1]))
