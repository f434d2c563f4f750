"""pytest plugin (registered through the ``pytest11`` entry point): the ``fxai_parity`` fixture.

    def test_my_callback(fxai_parity):
        fxai_parity.assert_trace(MyCallback)

fails with the first divergence, rendered as a diff, as the assertion message.

    def test_my_port(fxai_parity):
        fxai_parity.assert_port("my_metric")

fails on a divergence and also when the check compared nothing (``unchecked``: no observables registered,
or an observable never compared): an unchecked port is never a passing test.

``fxai_parity.assert_grammar(make_my_module)`` fits any LightningModule and checks the contract's event
grammar on what a legacy callback receives from it (see ``fxai_compat.parity.grammar``).
"""

from __future__ import annotations

from typing import Any

import pytest


class ParityFixture:
    """Parity assertions for a test; files go under the test's ``tmp_path``."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self._runs = 0

    def _workdir(self):
        self._runs += 1
        return self.tmp_path / f"fxai-parity-{self._runs}"

    def check_trace(self, callback_factory, config=None, **options: Any):
        from . import check_trace_parity, parity_config

        return check_trace_parity(callback_factory, config if config is not None else parity_config(),
                                  workdir=self._workdir(), **options)

    def assert_trace(self, callback_factory, config=None, **options: Any):
        """Assert trace parity of ``callback_factory()`` on ``config`` (a small default config if omitted)."""
        result = self.check_trace(callback_factory, config, **options)
        if not result.ok:
            pytest.fail(result.summary(), pytrace=False)
        return result

    def check_grammar(self, module_factory, **options: Any):
        from .grammar import check_module_grammar

        return check_module_grammar(module_factory, default_root_dir=str(self._workdir()), **options)

    def assert_grammar(self, module_factory, **options: Any):
        """Fit ``module_factory()`` (any LightningModule; ``max_epochs=3`` unless given) with a recorder of all
        16 legacy events and assert the contract's event grammar on its trace."""
        result = self.check_grammar(module_factory, **options)
        if not result.ok:
            pytest.fail(result.summary(), pytrace=False)
        return result

    def check_port(self, name_or_pair, config=None, **options: Any):
        from . import check_port_parity, parity_config

        return check_port_parity(name_or_pair, config if config is not None else parity_config(),
                                 workdir=self._workdir(), **options)

    def assert_port(self, name_or_pair, config=None, **options: Any):
        """Assert port parity of a registered pair (or a ``PortPair``): it fails when the port diverges and
        when it is unchecked (nothing compared)."""
        result = self.check_port(name_or_pair, config, **options)
        if not result.ok:
            pytest.fail(result.summary(), pytrace=False)
        return result


@pytest.fixture
def fxai_parity(tmp_path):
    """Trace (and, where registered, port) parity assertions: ``fxai_parity.assert_trace(MyCallback)``."""
    return ParityFixture(tmp_path)
