"""``fxai-compat train`` with a test-only slow-down, for the crash tests of tests/test_reliability.py.

RELIABILITY_SLOW=cycle: each cycle's end sleeps RELIABILITY_SLEEP seconds (a kill lands mid-cycle).
RELIABILITY_SLOW=write: every checkpoint write after the first sleeps RELIABILITY_SLEEP seconds between
writing the temp file and renaming it (a kill lands mid-write, with the ``.cycle-*.tmp`` file on disk).
Otherwise it is exactly ``fxai-compat train`` (arguments passed through).
"""

import os
import sys
import time

slow = os.environ.get("RELIABILITY_SLOW")
pause = float(os.environ.get("RELIABILITY_SLEEP", "1"))
if slow == "cycle":
    from fxai_compat.ppo import PPOCore

    real_end_cycle = PPOCore.end_cycle

    def end_cycle(self, *args, **kwargs):
        time.sleep(pause)
        return real_end_cycle(self, *args, **kwargs)

    PPOCore.end_cycle = end_cycle
elif slow == "write":
    real_fsync, writes = os.fsync, []

    def fsync(fd):
        real_fsync(fd)
        writes.append(fd)
        if len(writes) > 1:
            time.sleep(pause)

    os.fsync = fsync

from fxai_compat.cli import main  # noqa: E402

sys.exit(main(["train", *sys.argv[1:]]))
