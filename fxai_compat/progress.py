"""One progress display for a whole run, on either host: cycle i/N, env steps, steps/s, ETA, latest reward.

:class:`RunProgress` does the showing and is host-independent: on a terminal a single tqdm bar for the run (not one
bar per Lightning epoch), elsewhere (a log file, a pipe, CI) one plain line per cycle::

    cycle 12/80 | env steps 12,288 | 2,410 steps/s | ETA 0:00:29 | reward -0.153

Cycle numbers are the run's own: after a resume (a ``ckpt_path``, or a continuous-training callback that loaded
the newest version) the count starts where the run stands, and N is that plus the cycles still planned.
:class:`fxai_compat.progress_bar.RunProgressBar` is the Lightning side (a ``TQDMProgressBar`` subclass, which
``build_trainer`` adds when ``enable_progress_bar`` is true); ``LegacyTrainer(progress=RunProgress())`` is the legacy
loop's. This module imports neither torch nor Lightning.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["RunProgress", "format_progress"]


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_progress(cycle: int, total: int | None, env_steps: int | None, rate: float | None, eta: float | None,
                    reward: float | None) -> str:
    """The plain line (and the bar's text): ``cycle 12/80 | env steps 12,288 | 2,410 steps/s | ETA 0:00:29 | ...``."""
    parts = [f"cycle {cycle}/{total if total is not None else '?'}"]
    if env_steps is not None:
        parts.append(f"env steps {env_steps:,}")
    if rate is not None:
        parts.append(f"{rate:,.0f} steps/s")
    if eta is not None:
        parts.append(f"ETA {_clock(eta)}")
    if reward is not None:
        parts.append(f"reward {reward:.3f}" if reward == reward else "reward nan (no episode ended)")
    return " | ".join(parts)


class RunProgress:
    """The progress of one run. ``start`` once the run stands where it resumes, ``cycle_done`` after each cycle,
    ``close`` at the end. ``plain``: None chooses by the stream (a bar on a terminal, lines elsewhere)."""

    def __init__(self, stream: TextIO | None = None, plain: bool | None = None):
        self._stream, self._plain = stream, plain
        self.bar = None
        self.started = False
        self.lines: list[str] = []

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout  # read late: pytest swaps sys.stdout

    def start(self, cycles_done: int, total: int | None, env_steps: int | None) -> None:
        self.started = True
        self.first, self.total = cycles_done, total
        self.first_steps, self.t0 = env_steps, time.perf_counter()
        self.plain = self._plain if self._plain is not None else not _isatty(self.stream)
        if not self.plain:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=cycles_done, file=self.stream, dynamic_ncols=True, leave=True,
                            smoothing=0, bar_format="{l_bar}{bar}| [{elapsed}] {postfix}", desc="run")
            self.bar.set_postfix_str(format_progress(cycles_done, total, env_steps, None, None, None))

    def cycle_done(self, cycle: int, env_steps: int | None, reward: float | None) -> str:
        """Show the run after its ``cycle``-th cycle (counted over the whole run); returns the text shown."""
        elapsed = time.perf_counter() - self.t0
        done_here = cycle - self.first
        rate = ((env_steps - self.first_steps) / elapsed if env_steps is not None and self.first_steps is not None
                and elapsed > 0 else None)
        eta = (elapsed / done_here * max(0, self.total - cycle)) if self.total is not None and done_here > 0 else None
        text = format_progress(cycle, self.total, env_steps, rate, eta, reward)
        self.lines.append(text)
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(cycle - self.bar.n)
        else:
            print(text, file=self.stream, flush=True)
        return text

    def write(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
