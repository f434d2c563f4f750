"""Devices and precision: the RL core follows the module's device; bf16-mixed trains and resumes on the CPU.

The environments stay on the CPU; the policy, rollout buffers, observations and GAE live on the module's
device. Parity with the legacy loop to 1e-6 holds in fp32 (``test_lightning_host.py``); bf16-mixed runs the
forward passes in bfloat16 (autocast), so its numbers differ from fp32 and are only checked for
resumability and sanity here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import tiny
from fxai_compat import fit
from fxai_compat.ppo import PPOCore


def _tensor_attributes(core: PPOCore) -> dict[str, torch.Tensor]:
    """Every tensor the core holds as an attribute (found generically, so a buffer added later is covered)."""
    return {name: value for name, value in vars(core).items() if isinstance(value, torch.Tensor)}


class DeviceProbe(pl.Callback):
    """At each cycle's end: the device of every core tensor and policy parameter, and the module's device."""

    def __init__(self):
        self.seen: list[tuple[torch.device, dict[str, torch.device]]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        devices = {name: t.device for name, t in _tensor_attributes(pl_module.core).items()}
        devices.update({f"policy.{name}": p.device for name, p in pl_module.policy.named_parameters()})
        self.seen.append((pl_module.device, devices))


@pytest.mark.parametrize("accelerator", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine: the GPU case runs where one exists")),
])
def test_every_core_buffer_lives_on_the_module_device(tmp_path, accelerator):
    probe = DeviceProbe()
    cfg = tiny(tmp_path, cycles=2, eval_every=1, checkpoint_every=1)
    trainer = fit(cfg, [probe], logger=False, accelerator="gpu" if accelerator == "cuda" else "cpu")
    assert len(probe.seen) == 2
    for module_device, devices in probe.seen:
        assert module_device.type == accelerator
        assert len(devices) >= 8 + 4  # 8 buffers and observations, the actor's and critic's parameters
        assert {name: d for name, d in devices.items() if d != module_device} == {}
    assert trainer.lightning_module.core.device == trainer.lightning_module.device
    # Checkpointed RL state is on the CPU, whatever the device.
    saved = torch.load(Path(cfg.checkpoint_dir) / "cycle-0001.ckpt", weights_only=True)["fxai_rl_state"]
    assert all(t.device.type == "cpu" for t in saved.values() if isinstance(t, torch.Tensor))


def test_to_device_moves_every_tensor_the_core_holds(tmp_path):
    core = PPOCore(tiny(tmp_path))
    tensors = _tensor_attributes(core)
    assert len(tensors) >= 8
    core.to_device("meta")  # a device without data: only where each tensor lives is checked
    assert core.device == torch.device("meta")
    assert {name: t.device.type for name, t in _tensor_attributes(core).items() if t.device.type != "meta"} == {}


class StopAfter(pl.Callback):
    def __init__(self, cycles: int):
        self.cycles = cycles

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.cycles:
            trainer.should_stop = True


class Losses(pl.Callback):
    def __init__(self):
        self.metrics: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.metrics.append(dict(pl_module.cycle_metrics()))


def test_bf16_mixed_trains_and_resumes_on_cpu(tmp_path):
    cfg = tiny(tmp_path / "bf16", cycles=4, eval_every=2, checkpoint_every=2)
    whole = Losses()
    uninterrupted = fit(cfg, [whole], logger=False, precision="bf16-mixed")
    assert len(whole.metrics) == 4
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in whole.metrics)
    # bf16 is really in use: the same run in fp32 computes other numbers.
    fp32 = Losses()
    fit(tiny(tmp_path / "fp32", cycles=4, eval_every=2, checkpoint_every=2), [fp32], logger=False)
    assert [m["loss"] for m in fp32.metrics] != [m["loss"] for m in whole.metrics]

    resumed_cfg = tiny(tmp_path / "resumed", cycles=4, eval_every=2, checkpoint_every=2)
    fit(resumed_cfg, [StopAfter(2)], logger=False, precision="bf16-mixed")
    rest = Losses()
    resumed = fit(resumed_cfg, [rest], logger=False, precision="bf16-mixed", ckpt_path="last")
    assert [m["cycle"] for m in rest.metrics] == [2, 3]
    # On the CPU bf16 autocast is deterministic: the resumed run continues exactly as the uninterrupted one.
    assert rest.metrics == whole.metrics[2:]
    for a, b in zip(resumed.lightning_module.parameters(), uninterrupted.lightning_module.parameters()):
        assert a.dtype == torch.float32 and torch.equal(a, b)
