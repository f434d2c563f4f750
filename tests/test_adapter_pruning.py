"""``optuna.TrialPruned`` from the unchanged legacy ``OptunaCallback`` under ``LegacyCallbackAdapter`` ends the trial
PRUNED in a real study (a journal file), in one process and under 2-process CPU DDP.

Under DDP a rank that raised inside a hook would leave the others waiting in the next collective; the adapter holds
the exception until every rank has agreed to stop at the cycle's end, then raises it out of ``fit``. The DDP runs
are subprocesses (``tests/scripts/ddp_adapter_prune.py``) with a hard timeout: a regression fails, never hangs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from conftest import tiny
from optuna.storages.journal import JournalFileBackend, JournalStorage

from fxai_compat import fit
from fxai_compat.adapter import LegacyCallbackAdapter, _shared_state
from fxai_compat.checkpoints import read_training_checkpoint
from fxai_compat.shadow import ShadowAdapter
from legacy_callbacks import OptunaCallback

SCRIPT = Path(__file__).parent / "scripts" / "ddp_adapter_prune.py"
TIMEOUT = 120  # a two-cycle DDP run takes ~12 s; the collective timeout of a hang is 30 min

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readable_checkpoints(ckpt_dir: Path) -> list[str]:
    names = sorted(p.name for p in ckpt_dir.iterdir())
    for name in names:
        read_training_checkpoint(ckpt_dir / name)  # raises CheckpointError on a damaged file
    assert not [n for n in names if n.endswith(".tmp")], names  # no write left half done
    return names


HELD_NOTE = "held on rank"


def test_single_process_prune_is_recorded_pruned_once(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=1))
    raised = []

    def objective(trial):
        try:
            fit(tiny(tmp_path, cycles=4, eval_every=0, checkpoint_every=1),
                [LegacyCallbackAdapter(OptunaCallback(trial))], logger=False)
        except BaseException as exc:
            raised.append(exc)
            raise
        return 0.0

    study.optimize(objective, n_trials=1)  # optuna records TrialPruned as PRUNED and does not re-raise it

    (exc,) = raised
    assert type(exc) is optuna.TrialPruned and "pruned at step 1" in str(exc)
    assert exc.__notes__ == ["Raised in legacy callback OptunaCallback during event on_metrics_computed "
                             "(Lightning hook on_train_epoch_end, epoch 1)"]
    (stored,) = optuna.load_study(storage=storage, study_name="prune").trials
    assert stored.state == optuna.trial.TrialState.PRUNED
    assert sorted(stored.intermediate_values) == [0, 1]
    # Raised inside cycle 1's epoch end, before its checkpoint: only cycle 0's (complete) file exists.
    assert _readable_checkpoints(tmp_path / "ckpt") == ["cycle-0000.ckpt", "last.ckpt"]


def _run_ddp(tmp_path: Path, mode: str, linger: float = 0.0) -> tuple[dict, dict, str]:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GLOBAL_RANK", "FXAI_CALLBACK_IMPL"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), mode, str(linger)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path),
                            start_new_session=True)  # its own process group: rank 1 is its child
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # a hang: a rank waits in a collective the other never joins
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the DDP job hung after the prune ({mode}):\n{output[-3000:]}")
    assert proc.returncode == 0, output[-4000:]
    assert "Connection closed by peer" not in output, output[-4000:]  # no rank was left in a collective
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks[0], ranks[1], output


def _assert_pruned_once(zero: dict) -> None:
    (trial,) = zero["trials"]
    assert trial["state"] == "PRUNED"
    assert sorted(trial["intermediate"]) == ["0", "1"]  # reported at cycles 0 and 1, pruned at 1


def test_ddp_prune_on_rank_zero_stops_both_ranks_and_ends_the_trial_pruned(tmp_path):
    # The documented pattern: the trial and study.optimize on rank 0, ranks="zero", rank 1 passes trial=None.
    # Rank 0 then stays alive (a tuning loop's next trial): rank 1 must not depend on rank 0 exiting.
    zero, one, _ = _run_ddp(tmp_path, "zero", linger=3.0)
    raised = zero["raised"]
    assert raised["type"] == "TrialPruned" and "pruned at step 1" in raised["message"]
    assert raised["notes"][0] == ("Raised in legacy callback OptunaCallback during event on_metrics_computed "
                                  "(Lightning hook on_train_epoch_end, epoch 1)")
    assert HELD_NOTE in raised["notes"][1] and len(raised["notes"]) == 2
    _assert_pruned_once(zero)
    # Rank 1 runs no legacy callback: it stopped at the same cycle and its fit returned normally ...
    assert one["raised"] is None and one["cycles_run"] == 2
    # ... by itself, while rank 0 was still alive (before the fix it waited in the epoch-end collective until
    # rank 0's process exited, then failed with gloo's "Connection closed by peer").
    assert one["fit_end"] < zero["linger_end"] - 1.0
    # After the prune the legacy callbacks got no further events (no on_checkpoint_saved, no on_training_end).
    assert zero["recorder_cycles"] == [0]
    assert zero["recorder_events"] == [["on_checkpoint_saved", "cycle-0000.ckpt"]]
    # Both ranks finished cycle 1 in step, so its checkpoint was written whole, by rank 0 alone.
    assert _readable_checkpoints(tmp_path / "ckpt") == ["cycle-0000.ckpt", "cycle-0001.ckpt", "last.ckpt"]


def test_ddp_prune_reported_on_every_rank(tmp_path):
    # ranks="all": both ranks report to the same trial and both decide to prune at cycle 1.
    zero, one, _ = _run_ddp(tmp_path, "all")
    for rank, result in enumerate((zero, one)):
        raised = result["raised"]
        assert raised["type"] == "TrialPruned", result
        assert "OptunaCallback during event on_metrics_computed" in raised["notes"][0]
        assert f"held on rank {rank} from cycle 1" in raised["notes"][1]
        assert result["recorder_cycles"] == [0]
    _assert_pruned_once(zero)
    _readable_checkpoints(tmp_path / "ckpt")


def test_ddp_prune_raised_on_rank_one_only_reaches_rank_zero(tmp_path):
    # A decision the ranks do not share: a ranks="all" legacy callback raises TrialPruned on rank 1 only.
    # Before the fix rank 0 waited in a collective until rank 1 exited, and the trial ended FAIL.
    zero, one, _ = _run_ddp(tmp_path, "rank1")
    assert one["raised"]["type"] == "TrialPruned" and len(one["raised"]["notes"]) == 2
    assert "held on rank 1 from cycle 1" in one["raised"]["notes"][1]
    raised = zero["raised"]  # rank 0 runs legacy callbacks too: it raises the same exception, marked as rank 1's
    assert raised["type"] == "TrialPruned" and raised["message"] == "rank 1 prunes at cycle 1"
    assert "PruneOnRankOne during event on_metrics_computed" in raised["notes"][0]
    assert "Raised by a legacy callback on rank 1 of 2" in raised["notes"][2]
    assert zero["recorder_cycles"] == [0, 1]  # rank 0 learnt of it at cycle 1's end, with its callbacks done
    _assert_pruned_once(zero)
    _readable_checkpoints(tmp_path / "ckpt")


class _Pruned(optuna.TrialPruned):
    pass


@pytest.mark.parametrize(("exc", "held"), [
    (optuna.TrialPruned("x"), True), (_Pruned("x"), True), (SystemExit(3), True),
    (KeyboardInterrupt(), False), (ValueError("x"), False), (RuntimeError("x"), False),
], ids=["TrialPruned", "subclass", "SystemExit", "KeyboardInterrupt", "ValueError", "RuntimeError"])
def test_which_exceptions_are_held_under_ddp(exc, held):
    # Held: what the legacy manager always lets through (control flow), except a Ctrl+C, which reaches every rank
    # by itself. Errors propagate at once (Lightning's process observer ends the other ranks).
    callback = OptunaCallback(None)
    adapter, shadow = LegacyCallbackAdapter(callback), ShadowAdapter(OptunaCallback(None), name="optuna")
    trainer = SimpleNamespace(world_size=2, callbacks=[adapter, shadow])
    adapter._trainer = shadow._trainer = trainer
    assert adapter._defers(exc) is held
    assert shadow._defers(exc) is False  # a shadow control records a prune, it never ends the run
    _shared_state(trainer).nested = 1  # raised inside a legacy callback's trainer.load_checkpoint: its caller holds it
    assert adapter._defers(exc) is False
    _shared_state(trainer).nested, trainer.world_size = 0, 1  # one process: raised at once, as the legacy loop does
    assert adapter._defers(exc) is False


class _PruneOnSecondUpdate:
    def __init__(self):
        self.calls = 0

    def on_update_end(self, update_info):
        self.calls += 1
        if self.calls == 2:
            raise optuna.TrialPruned("pruned mid-cycle")


def test_a_mid_cycle_prune_is_held_and_silences_the_legacy_callbacks():
    # The per-update hot path (an RL event inside training_step), on a stand-in for rank 0 of 2: the exception is
    # held with its notes, and no legacy callback of the trainer gets another event, while training goes on.
    pruner, other = _PruneOnSecondUpdate(), _PruneOnSecondUpdate()
    adapters = [LegacyCallbackAdapter(pruner), LegacyCallbackAdapter(other)]
    trainer = SimpleNamespace(world_size=2, global_rank=0, current_epoch=1, callbacks=adapters,
                              lightning_module=SimpleNamespace(core=SimpleNamespace(cycle=1)),
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=0)))
    for adapter in adapters:
        adapter._trainer, adapter._shared, adapter._view = trainer, _shared_state(trainer), None
    for _ in range(4):
        for adapter in adapters:
            adapter.on_rl_update_end(trainer, None, {"loss": 0.0})
    held = _shared_state(trainer).deferred
    assert type(held) is optuna.TrialPruned and str(held) == "pruned mid-cycle"
    assert held.__notes__ == [
        "Raised in legacy callback _PruneOnSecondUpdate during event on_update_end "
        "(Lightning hook training_step (RL event update_end), epoch 1, batch 0)",
        "Under DDP (2 processes) it was held on rank 0 from cycle 1 until every rank had stopped with it, "
        "then raised at the end of fit."]
    assert (pruner.calls, other.calls) == (2, 1)  # nothing after the raise, as after a raise in the legacy loop


def test_the_last_collective_waits_until_the_worker_let_go_of_its_tensor_and_no_longer():
    # The race behind a rank aborting at exit ("terminate called without an active exception"): a gloo worker
    # drops a collective's Python-made tensor after the collective returned. fit's last collective waits for it.
    import time
    import weakref

    import torch

    from fxai_compat.adapter.ddp import _wait_until_released

    tensor = torch.zeros(2)
    held = [tensor]  # a holder that lets go later, like the worker thread
    released = weakref.ref(tensor)
    del tensor
    start = time.monotonic()
    _wait_until_released(released, timeout=0.2)  # still held: waits, bounded by the timeout
    assert released() is not None and 0.2 <= time.monotonic() - start < 2.0
    held.clear()
    start = time.monotonic()
    _wait_until_released(released, timeout=5.0)  # let go: returns at once
    assert released() is None and time.monotonic() - start < 0.5
