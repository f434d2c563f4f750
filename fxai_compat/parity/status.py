"""The verdict rules of every parity check: ``proven`` only when something was compared and all of it agreed.

A check that compared nothing (a port with no observables, an observable compared zero times, a trace
with no events) is ``unchecked``, never ``ok``; one divergence or error makes a callback ``failing``.
The report, ``parity.json``, the pytest fixture and shadow mode all use these rules and this summary line:

>>> summary_line({"metrics": PROVEN, "wandb": UNCHECKED, "optuna": FAILING})
'1/3 proven, 1 unchecked, 1 failing (unchecked: wandb; failing: optuna)'
>>> exit_code({"metrics": PROVEN, "wandb": UNCHECKED}), exit_code({"metrics": PROVEN, "wandb": UNCHECKED}, require_all=True)
(0, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["PROVEN", "UNCHECKED", "FAILING", "verdict", "summary_line", "exit_code"]

PROVEN, UNCHECKED, FAILING = "proven", "unchecked", "failing"
_FAILED = ("FAILED", "error")


def verdict(statuses: Iterable[str]) -> str:
    """One callback's verdict from its checks' statuses (``ok``, ``FAILED``, ``error``, ``unchecked``, or a
    reason a check did not apply, such as ``no native port``): failing if any failed, proven if at least one
    check compared and agreed and none is unchecked, unchecked otherwise."""
    statuses = list(statuses)
    if any(s in _FAILED for s in statuses):
        return FAILING
    if "unchecked" in statuses or "ok" not in statuses:
        return UNCHECKED
    return PROVEN


def summary_line(verdicts: Mapping[str, str]) -> str:
    """``N/T proven, M unchecked, K failing``, naming the unchecked and failing callbacks."""
    by = {kind: [name for name, v in verdicts.items() if v == kind] for kind in (PROVEN, UNCHECKED, FAILING)}
    line = (f"{len(by[PROVEN])}/{len(verdicts)} proven, {len(by[UNCHECKED])} unchecked, "
            f"{len(by[FAILING])} failing")
    named = [f"{kind}: {', '.join(names)}" for kind, names in ((UNCHECKED, by[UNCHECKED]), (FAILING, by[FAILING]))
             if names]
    return f"{line} ({'; '.join(named)})" if named else line


def exit_code(verdicts: Mapping[str, str], require_all: bool = False) -> int:
    """1 if any callback is failing, or (with ``require_all``) any is unchecked; 0 otherwise."""
    values = set(verdicts.values())
    if FAILING in values or (require_all and UNCHECKED in values):
        return 1
    return 0
