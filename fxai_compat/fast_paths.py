"""Shortcuts past Lightning's fixed per-call costs that change nothing a user can observe.

``log_value``: ``LightningModule.log`` for a value logged again and again, without its fixed per-call cost.

An RL cycle logs a dozen scalars, the same names with the same options every cycle. ``self.log`` costs
about 0.8 ms per value on this stack (pytorch_lightning 2.6.6), almost all of it fixed work that gives
the same answer every time: checking the arguments, building a ``_Metadata`` and comparing it with the
stored one, and ``_ResultMetric.to(device)``, which rebuilds the metric's ``__dict__`` through
``apply_to_collection`` and so deep-copies its metadata on every call (measured by cProfile: ~75 % of
the call). ``log_value`` calls ``self.log`` the first time a name is logged from a hook into a result
collection (so every check runs and the metric is registered exactly as usual), and afterwards hands
the value straight to the registered metric (``_ResultCollection.update_metrics``, the last step of
``self.log``): the same tensor, the same update, the same ``callback_metrics``, logger rows and
monitor values (the body of ``update_metrics`` is called directly: its ``torch.compiler.disable`` wrapper
costs ~10 % of what is left; measured per value: ~10x cheaper than ``self.log``). Whenever the shortcut's
conditions do not hold (another result collection, a dataloader index, a metric moved to another device, an
option changed, Lightning Fabric, a tensor value) it goes through ``self.log``.

``plain_steps_suffice`` / ``plain_step``: ``manual_backward`` and ``LightningOptimizer.step`` cost ~0.2 ms and
~0.1 ms per call around the backward pass and the optimizer step (strategy, precision plugin, a closure, and
three hook dispatches through ``_call_callback_hooks``, each in a profiler context), once per PPO minibatch:
20 times a cycle in the CartPole config, 80 at the production scale. When the strategy is a single device,
the precision full fp32, the profiler the pass-through one, and neither the module nor any callback listens
to ``on_before_backward``, ``on_after_backward`` or ``on_before_optimizer_step`` (nor overrides the module's
``backward``), those wrappers call only empty hooks (gradient clipping is refused in manual optimization), and
the host calls ``loss.backward()`` and the optimizer's ``step()`` between the manual loop's own bookkeeping.
Otherwise (DDP, bf16-mixed, a callback listening) it goes through ``manual_backward`` and ``step()``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["log_value", "plain_steps_suffice", "plain_step", "FAST_PATHS"]

#: Set to False to take Lightning's own path everywhere (the tests compare both paths).
FAST_PATHS = True

#: Per module: result key -> (result collection, its registered metric, the options it was logged with). Weak, so
#: that a module's copies and pickles do not carry Lightning's result collections along.
_REGISTERED: "weakref.WeakKeyDictionary[pl.LightningModule, dict[str, tuple]]" = weakref.WeakKeyDictionary()


def _default_dtype() -> torch.dtype:
    # As Lightning's ``_get_default_dtype``: the default dtype, but no lower than float32.
    dtype = torch.get_default_dtype()
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def log_value(module: "pl.LightningModule", name: str, value: float, *, on_step: bool, on_epoch: bool,
              prog_bar: bool = False, batch_size: int = 1) -> None:
    """``module.log(name, float(value), on_step=..., on_epoch=..., prog_bar=..., batch_size=..., sync_dist=False)``,
    the same in every observable way, at a fraction of the cost from the second call on."""
    if isinstance(value, torch.Tensor):  # a tensor keeps its dtype in self.log: no shortcut
        module.log(name, value, on_step=on_step, on_epoch=on_epoch, prog_bar=prog_bar, batch_size=batch_size,
                   sync_dist=False)
        return
    value = float(value)
    options = (on_step, on_epoch, prog_bar, batch_size)
    trainer = module._trainer
    fx = module._current_fx_name
    results = trainer._results if trainer is not None and not trainer.barebones else None
    cache = _REGISTERED.get(module)
    if FAST_PATHS and results is not None and fx is not None and cache is not None and module._fabric is None:
        key = f"{fx}.{name}"
        known = cache.get(key)
        if known is not None and results.dataloader_idx is None:
            known_results, metric, known_options = known
            connector = trainer._logger_connector
            if (known_results is results and known_options == options and results.get(key) is metric
                    and metric.value.device == module.device):
                if connector.should_reset_tensors(fx):
                    # The hook's first value of a new epoch: self.log resets the hook's tensors first, so do we.
                    results.reset(metrics=False, fx=fx)
                tensor = torch.tensor(value, device=module.device, dtype=_default_dtype())
                # = results.update_metrics(key, tensor, batch_size), without its torch.compiler.disable wrapper
                metric.forward(tensor, batch_size)
                metric.has_reset = False
                connector._current_fx = fx
                return
    module.log(name, value, on_step=on_step, on_epoch=on_epoch, prog_bar=prog_bar, batch_size=batch_size,
               sync_dist=False)
    if results is None or fx is None or results.dataloader_idx is not None:
        return
    key = f"{fx}.{name}"
    metric = results.get(key)
    if metric is not None and metric.is_tensor:
        if cache is None:
            cache = _REGISTERED[module] = {}
        cache[key] = (results, metric, options)


def _listens(obj: Any, hook: str, base: type) -> bool:
    """Whether Lightning's hook dispatch would run code of ``obj`` for ``hook`` (a hook set to None is skipped)."""
    fn = getattr(obj, hook, None)
    return callable(fn) and getattr(fn, "__func__", None) is not getattr(base, hook)


def plain_steps_suffice(trainer: "pl.Trainer", module: "pl.LightningModule") -> bool:
    """True when ``module.manual_backward(loss)`` amounts to ``loss.backward()`` and a ``LightningOptimizer.step()``
    to its progress and profiler bookkeeping around ``optimizer.step()`` (see the module docstring)."""
    from pytorch_lightning.plugins.precision import Precision
    from pytorch_lightning.profilers import PassThroughProfiler
    from pytorch_lightning.strategies import SingleDeviceStrategy

    if not FAST_PATHS or module._fabric is not None or module.automatic_optimization:
        return False
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.strategy.precision_plugin) is not Precision:
        return False
    if not isinstance(trainer.profiler, PassThroughProfiler):
        return False
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    if any(_listens(module, hook, pl.LightningModule) for hook in ("backward", *hooks)):
        return False
    return not any(_listens(cb, hook, pl.Callback) for cb in trainer.callbacks for hook in hooks)


def plain_step(optimizer: Any) -> Callable[[], None]:
    """``optimizer.step()`` of a ``LightningOptimizer`` in manual optimization, without the strategy and precision
    plugin's closure wrapping and its two empty hook dispatches: the manual loop's bookkeeping (the optimizer step
    progress behind ``trainer.global_step``, the profiler's ``optimizer_step`` span) runs as in ``step()``."""
    raw = optimizer.optimizer

    def step() -> None:
        optimizer._on_before_step()
        raw.step()
        optimizer._on_after_step()

    return step
