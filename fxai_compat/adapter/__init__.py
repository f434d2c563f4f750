"""``fxai_compat.adapter``: run unchanged legacy FxAI callbacks inside a Lightning ``Trainer``.

The package's modules: :mod:`.core` (``LegacyCallbackAdapter``: routing and dispatch; ``wrap``),
:mod:`.trainer_view` (the legacy trainer surface, checkpoint restore), :mod:`.ddp` (holding, gathering,
delivering, exceptions across ranks), :mod:`.plain_module` (modules without the RL protocol) and
:mod:`.shared` (the per-trainer run state all of them share). The names below stay importable from here.
"""

from __future__ import annotations

from .core import SUPPORTED_HOOKS, AdapterConfigError, LegacyCallbackAdapter, wrap
from .shared import _adapters_of, _fresh, _shared_state, _SharedRunState
from .trainer_view import RL_RANK_STATES_KEY, LightningTrainerView, _restore_training_state

__all__ = ["LegacyCallbackAdapter", "LightningTrainerView", "wrap", "SUPPORTED_HOOKS", "AdapterConfigError"]
