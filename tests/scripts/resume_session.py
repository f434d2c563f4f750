"""One session of a resume path (``fxai_compat.parity.continuous_check.PATHS``) that SIGKILLs its own process at
the start of the cycle after N cycles: ``python resume_session.py PATH ROOT N`` (tests/test_resume_cycles.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import tiny  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)  # as the test suite: the tiny models gain nothing from threads on a shared machine

from fxai_compat.parity.continuous_check import Interrupt, run_session  # noqa: E402

path, root, after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
run_session(path, tiny(root, cycles=12, checkpoint_every=3, eval_every=0), root, interrupt=Interrupt(after, kill=True))
print("not killed")  # reached only if the kill did not happen
