"""The RL core both training hosts share: policy, rollout collection, GAE, PPO updates, evaluation.

``PPOCore`` does every piece of numeric work of a cycle and announces the environment-level
moments (episode start/end, env step, rollout, update) through an :class:`EventSink` that the host
supplies. ``LegacyTrainer`` and ``PPOLightningModule`` are thin drivers around it, which is why the
two hosts compute the same numbers: there is only one copy of the maths. All randomness is drawn
from generators the core owns (never the global RNGs Lightning may touch), so host bookkeeping
cannot shift the numbers.

Devices: the environments run on the CPU (numpy); the policy, the rollout buffers, the observations and
GAE live on the core's ``device`` (``to_device``; the Lightning host moves the core to its module's device
at the start of training). Random draws stay on the CPU generator whatever the device (actions are sampled
from probabilities copied to the CPU, which the environment needs there anyway; minibatch orders are drawn
on the CPU and copied), so the random streams do not depend on the device. Checkpointed RL state is always
on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .envs import FXTradingEnv, make_vector_env

__all__ = ["Policy", "PPOCore", "EventSink", "RL_EVENTS", "compute_gae", "METRIC_KEYS", "EVAL_KEYS"]

#: Environment-level moments the core announces, in the order they can occur within a cycle.
RL_EVENTS = ("episode_start", "rollout_start", "step_start", "step_end", "episode_end", "rollout_end",
             "update_start", "update_end")

#: Keys of the per-cycle metrics every host reports (eval keys only on evaluation cycles).
METRIC_KEYS = ("timesteps_total", "episodes_total", "cycle", "episode_reward_mean", "episode_length_mean",
               "loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
EVAL_KEYS = ("episode_reward_mean", "episode_reward_std", "episode_length_mean", "episodes", "win_rate")
_LOSS_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


class EventSink(Protocol):
    """Where the core announces RL events. ``wants`` lets it skip building payloads nobody reads."""

    def wants(self, event: str) -> bool: ...
    def emit(self, event: str, payload: Any) -> None: ...


def _layer(n_in: int, n_out: int, std: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class Policy(nn.Module):
    """Separate actor and critic MLPs with tanh activations and orthogonal init (CleanRL's PPO)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: tuple[int, ...] = (64, 64)):
        super().__init__()

        def mlp(out_dim: int, out_std: float) -> nn.Sequential:
            layers: list[nn.Module] = []
            last = obs_dim
            for width in hidden_sizes:
                layers += [_layer(last, width, math.sqrt(2)), nn.Tanh()]
                last = width
            layers.append(_layer(last, out_dim, out_std))
            return nn.Sequential(*layers)

        self.critic = mlp(1, 1.0)
        self.actor = mlp(n_actions, 0.01)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Action logits."""
        return self.actor(obs)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        logits = self.actor(obs)
        log_probs = torch.log_softmax(logits, dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_probs.gather(1, actions.unsqueeze(1)).squeeze(1), entropy, self.value(obs)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
                next_done: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a ``(n_steps, n_envs)`` rollout (CleanRL's convention:
    ``dones[t]`` says whether ``obs[t]`` starts a new episode). Returns ``(advantages, returns)``."""
    n_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(n_steps)):
        if t == n_steps - 1:
            not_done, next_values = 1.0 - next_done, next_value
        else:
            not_done, next_values = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


class PPOCore:
    """One PPO learner with its environments, counters and random state.

    Counters follow the legacy contract: ``total_timesteps`` (transitions, all envs), ``num_episodes``
    (completed), ``cycle`` (index of the current cycle, from 0), plus ``num_updates`` (optimizer steps).
    Under several processes each rank owns ``n_envs`` environments seeded by rank; ``env_index`` in
    payloads is global (``rank * n_envs + local``).
    """

    def __init__(self, config: TrainConfig, *, rank: int = 0, world_size: int = 1):
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.env = make_vector_env(config, config.n_envs, seed=self._env_seed())
        self.obs_dim = int(np.prod(self.env.single_observation_space.shape))
        self.n_actions = int(self.env.single_action_space.n)
        # The init draws from the global torch RNG; fork it so model creation has no side effects.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.policy = Policy(self.obs_dim, self.n_actions, tuple(config.hidden_sizes))
        self.generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 7919 * rank + 17)
        self.total_timesteps = 0
        self.num_episodes = 0
        self.cycle = 0
        self.cycles_completed = 0
        self.num_updates = 0
        self.vector_steps = 0
        self.started = False
        self.device = torch.device("cpu")
        n, s = config.n_envs, config.n_steps
        self._next_obs = torch.zeros(n, self.obs_dim)
        self._next_done = torch.zeros(n)
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._ep_index = np.zeros(n, dtype=np.int64)
        self._episodes_started = 0
        self._buf_obs = torch.zeros(s, n, self.obs_dim)
        self._buf_actions = torch.zeros(s, n, dtype=torch.long)
        self._buf_logprobs = torch.zeros(s, n)
        self._buf_rewards = torch.zeros(s, n)
        self._buf_dones = torch.zeros(s, n)
        self._buf_values = torch.zeros(s, n)
        self._cycle_returns: list[float] = []
        self._cycle_lengths: list[int] = []
        self._cycle_losses: dict[str, list[float]] = {k: [] for k in _LOSS_KEYS}
        self._global_env_base = rank * n

    #: The core's tensors that follow its device (the policy follows the module that holds it).
    _DEVICE_TENSORS = ("_next_obs", "_next_done", "_buf_obs", "_buf_actions", "_buf_logprobs", "_buf_rewards",
                       "_buf_dones", "_buf_values")

    def to_device(self, device: torch.device | str) -> "PPOCore":
        """Keep the rollout buffers and observations on ``device`` (the device of the policy's parameters)."""
        device = torch.device(device)
        if device != self.device:
            for name in self._DEVICE_TENSORS:
                setattr(self, name, getattr(self, name).to(device))
            self.device = device
        return self

    def _env_seed(self) -> int:
        return self.config.seed * 10_007 + 101 * self.rank + 1

    def make_optimizer(self, params=None) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.policy.parameters() if params is None else params, lr=self.config.lr, eps=1e-5)

    # -- the moments of a run -------------------------------------------------------------------
    def start(self, sink: EventSink) -> None:
        """Reset the environments at the start of training and announce the first episodes.

        A core restored from a checkpoint is already running: its environments continue where
        they were and no episode starts are announced again.
        """
        if self.started:
            return
        # A core restored without its environments (gymnasium ids cannot be serialized) restarts them on a
        # fresh seed, so a resumed run does not replay the first episodes; partial episode sums are dropped.
        seed = self._env_seed() + 7919 * self.cycles_completed
        obs, _ = self.env.reset(seed=seed)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._next_obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        self._next_done = torch.zeros(self.config.n_envs, device=self.device)
        self.started = True
        for i in range(self.config.n_envs):
            self._ep_index[i] = self._new_episode_index()
        if sink.wants("episode_start"):
            for i in range(self.config.n_envs):
                sink.emit("episode_start", {"env_index": self._global_env_base + i, "episode_index": int(self._ep_index[i])})

    def begin_cycle(self) -> None:
        """``cycle`` becomes the index of the cycle starting now and stays so until the next one begins."""
        self.cycle = self.cycles_completed

    def end_cycle(self) -> None:
        """Count the cycle as completed (after its updates): a checkpoint written now resumes at the next one."""
        self.cycles_completed = self.cycle + 1

    def _new_episode_index(self) -> int:
        # Globally unique without communication: rank r numbers its episodes r, r + W, r + 2W, ...
        index = self._episodes_started * self.world_size + self.rank
        self._episodes_started += 1
        return index

    def collect_rollout(self, sink: EventSink) -> dict[str, Any]:
        """Step all environments ``n_steps`` times, filling the rollout buffer. Returns ``rollout_info``."""
        cfg = self.config
        want_step_start, want_step_end = sink.wants("step_start"), sink.wants("step_end")
        want_ep_end, want_ep_start = sink.wants("episode_end"), sink.wants("episode_start")
        self._cycle_returns, self._cycle_lengths = [], []
        for k in _LOSS_KEYS:
            self._cycle_losses[k] = []
        policy, gen, env, device = self.policy, self.generator, self.env, self.device
        fx = isinstance(env, FXTradingEnv)
        if sink.wants("rollout_start"):
            sink.emit("rollout_start", None)
        for step in range(cfg.n_steps):
            if want_step_start:
                sink.emit("step_start", self.vector_steps)
            obs = self._next_obs
            self._buf_obs[step] = obs
            self._buf_dones[step] = self._next_done
            with torch.no_grad():
                logits = policy(obs)
                log_probs = torch.log_softmax(logits, dim=-1)
                # Sampled on the CPU generator (a no-op copy on the CPU): the same stream on every device.
                actions_cpu = torch.multinomial(log_probs.exp().cpu(), 1, generator=gen).squeeze(1)
                actions = actions_cpu.to(device)
                self._buf_values[step] = policy.value(obs)
            self._buf_actions[step] = actions
            self._buf_logprobs[step] = log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)
            actions_np = actions_cpu.numpy()
            next_obs, rewards, terminations, truncations, infos = env.step(actions_np)
            dones = np.logical_or(terminations, truncations)
            self._buf_rewards[step] = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=device)
            self._next_obs = torch.as_tensor(np.asarray(next_obs, dtype=np.float32), device=device)
            self._next_done = torch.as_tensor(dones, dtype=torch.float32, device=device)
            self._ep_return += rewards
            self._ep_length += 1
            self.total_timesteps += cfg.n_envs
            if want_step_end:
                sink.emit("step_end", {"step": self.vector_steps, "total_timesteps": self.total_timesteps,
                                       "rewards": np.asarray(rewards, dtype=np.float64).tolist(),
                                       "dones": dones.tolist(), "actions": actions_np.tolist()})
            self.vector_steps += 1
            if dones.any():
                for i in np.flatnonzero(dones):
                    i = int(i)
                    ret, length = float(self._ep_return[i]), int(self._ep_length[i])
                    self.num_episodes += 1
                    self._cycle_returns.append(ret)
                    self._cycle_lengths.append(length)
                    if want_ep_end:
                        sink.emit("episode_end", self._episode_info(i, ret, length, infos, fx))
                    self._ep_return[i] = 0.0
                    self._ep_length[i] = 0
                    self._ep_index[i] = self._new_episode_index()
                    if want_ep_start:
                        sink.emit("episode_start", {"env_index": self._global_env_base + i,
                                                    "episode_index": int(self._ep_index[i])})
        rollout_info = {"steps": cfg.rollout_size, "episodes": len(self._cycle_returns),
                        "reward_mean": _mean(self._cycle_returns)}
        if sink.wants("rollout_end"):
            sink.emit("rollout_end", dict(rollout_info))
        return rollout_info

    def _episode_info(self, i: int, ret: float, length: int, infos: dict, fx: bool) -> dict[str, Any]:
        if fx:
            closed = int(infos["closed_trades"][i])
            pnl, trades = float(infos["pnl"][i]), int(infos["trades"][i])
            win_rate = float(infos["wins"][i]) / closed if closed else float("nan")
        else:
            pnl, trades, win_rate = 0.0, 0, float("nan")
        return {"env_index": self._global_env_base + i, "episode_index": int(self._ep_index[i]), "reward": ret,
                "length": length, "pnl": pnl, "trades": trades, "win_rate": win_rate}

    def update(self, optimizer, sink: EventSink, *, backward: Callable[[torch.Tensor], None] | None = None,
               step: Callable[[], None] | None = None,
               sync_gradients: Callable[[list[torch.Tensor]], None] | None = None) -> None:
        """``update_epochs`` passes of minibatch PPO over the rollout, one optimizer step per minibatch.

        Hosts may supply ``backward`` (e.g. Lightning's ``manual_backward``), ``step`` (e.g. a
        ``LightningOptimizer.step``) and ``sync_gradients`` (averaging gradients across processes).
        """
        cfg = self.config
        with torch.no_grad():
            next_value = self.policy.value(self._next_obs)
        advantages, returns = compute_gae(self._buf_rewards, self._buf_values, self._buf_dones, next_value,
                                          self._next_done, cfg.gamma, cfg.gae_lambda)
        b_obs = self._buf_obs.reshape(-1, self.obs_dim)
        b_actions = self._buf_actions.reshape(-1)
        b_logprobs = self._buf_logprobs.reshape(-1)
        b_adv = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        want_start, want_end = sink.wants("update_start"), sink.wants("update_end")
        params = [p for p in self.policy.parameters()]
        n = cfg.rollout_size
        for epoch in range(cfg.update_epochs):
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for minibatch, begin in enumerate(range(0, n, cfg.minibatch_size)):
                idx = order[begin:begin + cfg.minibatch_size]
                info = {"update_index": self.num_updates, "epoch": epoch, "minibatch": minibatch}
                if want_start:
                    sink.emit("update_start", dict(info))
                stats = self._minibatch_step(optimizer, params, b_obs[idx], b_actions[idx], b_logprobs[idx],
                                             b_adv[idx], b_returns[idx], backward, step, sync_gradients)
                self.num_updates += 1
                for key, value in stats.items():
                    self._cycle_losses[key].append(value)
                if want_end:
                    info.update(stats)
                    sink.emit("update_end", info)

    def _minibatch_step(self, optimizer, params, obs, actions, old_logprobs, adv, returns, backward, step,
                        sync_gradients) -> dict[str, float]:
        cfg = self.config
        new_logprobs, entropy, new_values = self.policy.evaluate_actions(obs, actions)
        log_ratio = new_logprobs - old_logprobs
        ratio = log_ratio.exp()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > cfg.clip).float().mean()
        if cfg.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip)).mean()
        value_loss = 0.5 * ((new_values - returns) ** 2).mean()
        entropy_mean = entropy.mean()
        loss = policy_loss - cfg.ent_coef * entropy_mean + cfg.vf_coef * value_loss
        optimizer.zero_grad()
        (backward or torch.Tensor.backward)(loss)
        if sync_gradients is not None:
            sync_gradients(params)
        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        (step or optimizer.step)()
        return {"loss": loss.item(), "policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                "entropy": entropy_mean.item(), "approx_kl": approx_kl.item(), "clip_fraction": clip_fraction.item()}

    def evaluate(self) -> dict[str, Any]:
        """Run ``eval_episodes`` greedy episodes on fresh environments seeded by the cycle.

        Greedy actions and a seed derived from (seed, cycle) make evaluation deterministic and
        independent of the training RNG, so evaluating (or not) never shifts the training numbers.
        """
        cfg = self.config
        seed = int(np.random.SeedSequence([cfg.seed, 0xE7A1, self.cycle]).generate_state(1)[0])
        env = make_vector_env(cfg, cfg.eval_episodes, seed=seed, mode="sync")  # short-lived: no worker processes
        obs, _ = env.reset(seed=seed)
        n = cfg.eval_episodes
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        finished = np.zeros(n, dtype=bool)
        win_rates = np.full(n, np.nan)
        fx = isinstance(env, FXTradingEnv)
        while not finished.all():
            with torch.no_grad():
                obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
                actions = self.policy(obs_t).argmax(-1).cpu().numpy()
            obs, rewards, terminations, truncations, infos = env.step(actions)
            live = ~finished
            returns[live] += rewards[live]
            lengths[live] += 1
            done = np.logical_or(terminations, truncations) & live
            if fx:
                closed = infos["closed_trades"]
                win_rates[done & (closed > 0)] = (infos["wins"] / np.maximum(closed, 1))[done & (closed > 0)]
            finished |= done
        env.close()
        with np.errstate(all="ignore"):
            win_rate = float(np.nanmean(win_rates)) if np.isfinite(win_rates).any() else float("nan")
        return {"episode_reward_mean": float(returns.mean()), "episode_reward_std": float(returns.std()),
                "episode_length_mean": float(lengths.mean()), "episodes": n, "win_rate": win_rate}

    def rollout_values(self) -> torch.Tensor:
        """The critic's values of the last rollout, ``(n_steps, n_envs)``, on the CPU (read-only use: histograms)."""
        return self._buf_values.cpu()

    def cycle_metrics(self, eval_results: dict[str, Any] | None) -> dict[str, Any]:
        """The contract's ``metrics`` for the cycle just finished (plain Python numbers)."""
        metrics: dict[str, Any] = {"timesteps_total": self.total_timesteps, "episodes_total": self.num_episodes,
                                   "cycle": self.cycle, "episode_reward_mean": _mean(self._cycle_returns),
                                   "episode_length_mean": _mean(self._cycle_lengths)}
        for key in _LOSS_KEYS:
            metrics[key] = _mean(self._cycle_losses[key])
        if eval_results is not None:
            metrics["eval_episode_reward_mean"] = eval_results["episode_reward_mean"]
            metrics["eval_win_rate"] = eval_results["win_rate"]
        return metrics

    # -- checkpoint state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters, environment and RNG state (the model and optimizer are saved by the host)."""
        state = {"total_timesteps": self.total_timesteps, "num_episodes": self.num_episodes,
                 "cycles_completed": self.cycles_completed,
                 "num_updates": self.num_updates, "vector_steps": self.vector_steps, "started": self.started,
                 "episodes_started": self._episodes_started, "generator": self.generator.get_state(),
                 "next_obs": self._next_obs.cpu().clone(), "next_done": self._next_done.cpu().clone(),
                 "ep_return": torch.from_numpy(self._ep_return.copy()), "ep_length": torch.from_numpy(self._ep_length.copy()),
                 "ep_index": torch.from_numpy(self._ep_index.copy()), "env_id": self.config.env,
                 "n_envs": self.config.n_envs}
        if isinstance(self.env, FXTradingEnv):
            state["env"] = _to_checkpointable(self.env.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.config.env or state.get("n_envs") != self.config.n_envs:
            raise ValueError(f"Checkpoint was written for env={state.get('env_id')!r} with n_envs={state.get('n_envs')}, "
                             f"but this run has env={self.config.env!r} with n_envs={self.config.n_envs}; "
                             f"resume with the configuration that wrote it.")
        for key in ("total_timesteps", "num_episodes", "cycles_completed", "num_updates", "vector_steps"):
            setattr(self, key, int(state[key]))
        self.cycle = self.cycles_completed
        self._episodes_started = int(state["episodes_started"])
        self.generator.set_state(state["generator"])
        self._next_obs = state["next_obs"].to(self.device, copy=True)
        self._next_done = state["next_done"].to(self.device, copy=True)
        self._ep_return = state["ep_return"].numpy().copy()
        self._ep_length = state["ep_length"].numpy().copy()
        self._ep_index = state["ep_index"].numpy().copy()
        if "env" in state and isinstance(self.env, FXTradingEnv):
            self.env.load_state_dict(_from_checkpointable(state["env"]))
            self.started = bool(state["started"])
        else:
            # Gymnasium environments cannot be serialized safely: they restart with fresh episodes.
            self.started = False


def _to_checkpointable(env_state: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays -> tensors and the PCG64 state as plain ints, so ``weights_only`` loading accepts it."""
    out = {}
    for key, value in env_state.items():
        out[key] = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
    return out


def _from_checkpointable(env_state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in env_state.items()}
