"""Parity toolkit: prove that a legacy callback sees the same events under both hosts (trace parity),
and that a native port behaves like its legacy counterpart (port parity).

``check_trace_parity(factory, config)`` returns a :class:`ParityResult`; the pytest plugin's
``fxai_parity`` fixture turns it into an assertion whose message is the readable diff.
"""

from .compare import DEFAULT_TOLERANCE, first_mismatch, normalize
from .report import CallbackReport, ParityReport, run_parity_report, select_callbacks, write_plots
from .trace import Divergence, ParityResult, TraceRecorder, check_trace_parity, record_trace


def check_port_parity(name_or_pair, config, **options):
    """See :func:`fxai_compat.parity.port.check_port_parity` (imported lazily: it needs the toggle registry)."""
    from .port import check_port_parity as check

    return check(name_or_pair, config, **options)

__all__ = ["DEFAULT_TOLERANCE", "Divergence", "ParityResult", "TraceRecorder", "check_trace_parity",
           "first_mismatch", "normalize", "record_trace", "parity_config", "check_port_parity",
           "CallbackReport", "ParityReport", "run_parity_report", "select_callbacks", "write_plots", "RARE_PATHS"]


#: ``parity_config(**RARE_PATHS)`` is what ``fxai-compat parity`` runs without ``--config``: six cycles in which
#: the best model improves three times and evaluation runs three times (the Optuna check adds a pruned run, the
#: continuous-training check an interrupted run resumed twice). ``tests/test_parity_report.py`` holds it to that.
RARE_PATHS = {"cycles": 6, "seed": 2}


def parity_config(**changes):
    """A small config for parity checks (~1 s per host): evaluation and checkpoints due, uneven minibatches."""
    from ..config import TrainConfig

    base = dict(n_envs=2, n_steps=32, episode_length=24, cycles=4, update_epochs=2, minibatch_size=24,
                eval_every=2, eval_episodes=2, checkpoint_every=2, hidden_sizes=(16, 16), data_length=2000, seed=3)
    base.update(changes)
    return TrainConfig(**base)
