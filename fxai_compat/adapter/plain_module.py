"""The adapter with a plain ``LightningModule`` (no RL event protocol): step and episode events derived from the
``done``/``dones`` found in each training batch or its outputs.

:class:`_PlainModuleSupport` is a mixin of :class:`~fxai_compat.adapter.core.LegacyCallbackAdapter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import RL_SOURCE


class _PlainModuleSupport:
    """Batch-derived events for modules without ``rl_events``; counters in ``_fallback_steps``/``_fallback_episodes``."""

    def _fallback_from_batch(self, outputs: Any, batch: Any) -> None:
        """Derive step and episode events from ``done``/``dones``, ``episode_rewards``, ``episode_lengths``
        found in the step's outputs or batch (the seed guide's approach). Lost in fidelity: per-step
        timing (one step per batch), ``pnl``/``trades``/``win_rate`` (0, 0, NaN), env indices
        (positions in the batch), and rollout/update events (not derivable)."""
        source = outputs if isinstance(outputs, Mapping) and any(k in outputs for k in ("done", "dones")) else batch
        if not isinstance(source, Mapping):
            return
        dones = source.get("dones", source.get("done"))
        if dones is None:
            return
        dones = [bool(d) for d in (dones.tolist() if hasattr(dones, "tolist") else dones)]
        rewards = source.get("episode_rewards")
        lengths = source.get("episode_lengths")
        rewards = rewards.tolist() if hasattr(rewards, "tolist") else rewards
        lengths = lengths.tolist() if hasattr(lengths, "tolist") else lengths
        self._fallback_steps += len(dones)
        hook = "on_train_batch_end (derived from batch)"
        if "on_step_end" in self.routes and self.routes["on_step_end"].kind == RL_SOURCE:
            self._fire("on_step_end", hook, step_info={"step": self._fallback_steps // max(len(dones), 1) - 1,
                                                       "total_timesteps": self._fallback_steps, "rewards": [],
                                                       "dones": dones, "actions": []})
        for i, done in enumerate(dones):
            if not done:
                continue
            self._fallback_episodes += 1
            info = {"env_index": i, "episode_index": self._fallback_episodes - 1,
                    "reward": float(rewards[i]) if rewards is not None else float("nan"),
                    "length": int(lengths[i]) if lengths is not None else 0,
                    "pnl": 0.0, "trades": 0, "win_rate": float("nan")}
            if "on_episode_end" in self.routes and self.routes["on_episode_end"].kind == RL_SOURCE:
                self._fire("on_episode_end", hook, episode_info=info)
