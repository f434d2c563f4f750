"""The small networks and the PPO math the user-style modules share (plain PyTorch)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mlp(n_in: int, n_out: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, valid: np.ndarray, last_values: np.ndarray,
        gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of a ``[T, N]`` rollout (invalid steps carry nothing across)."""
    T = rewards.shape[0]
    adv = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1])
    next_values = last_values
    for t in reversed(range(T)):
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * nonterminal - values[t]
        running = delta + gamma * lam * nonterminal * running
        running = np.where(valid[t], running, 0.0)
        adv[t] = running
        next_values = np.where(valid[t], values[t], next_values)
    return adv, adv + values


def ppo_losses(actor: nn.Module, critic: nn.Module, obs, actions, logp_old, adv, ret, clip: float):
    """(policy loss, value loss, entropy) of one minibatch."""
    dist = torch.distributions.Categorical(logits=actor(obs))
    logp = dist.log_prob(actions)
    ratio = torch.exp(logp - logp_old)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.numel() > 1 else adv
    policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv).mean()
    value_loss = 0.5 * (critic(obs).squeeze(-1) - ret).pow(2).mean()
    return policy_loss, value_loss, dist.entropy().mean()
