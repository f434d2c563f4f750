"""``python -m fxai_compat.audit TARGET ...``: the same as ``fxai-compat audit``."""

import sys

from .command import main

sys.exit(main())
