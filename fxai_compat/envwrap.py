"""Level 2 of bringing your own module: ``wrap_env``, a gymnasium wrapper that announces the environment's
RL events to the Lightning run it is stepped in.

One line in a user's LightningModule (``self.env = wrap_env(env)``) and the legacy callbacks of the run get
exact ``on_step_start`` / ``on_step_end`` / ``on_episode_start`` / ``on_episode_end`` (true episode returns
and lengths, ``env_index``), ``on_rollout_start`` / ``on_rollout_end`` around the environment steps of a
cycle, the trainer counters ``total_timesteps`` / ``num_episodes``, and the legacy metric keys
``timesteps_total``, ``episodes_total``, ``episode_reward_mean``, ``episode_length_mean`` (over the episodes
that ended in the cycle). An ``role="eval"`` wrapper's episodes are kept apart: they never reach
``on_episode_end`` or the counters, and give the ``eval_results`` of the validation loop they ran in.

How a wrapper finds its run (no help from the module):

* ``LegacyCallbackAdapter.setup`` calls :func:`attach`, which gives the trainer one :class:`EnvEventHub`
  (a Lightning callback placed first in ``trainer.callbacks``) and binds every wrapped env it finds on the
  module and its datamodule, searching their attributes (and lists, tuples, dicts) a few levels down, so an
  env held by the module's env runner or dataset is found too.
* A wrapped env held elsewhere binds at its first ``reset``/``step`` inside ``fit``: the wrapper looks up
  the ``Trainer._run`` frame on the call stack (once per fit), else ``rl_events.active_trainer()``. The
  hub connects to the run's shared ``RLEventBus`` at that first use, once every callback is set up (a
  ``reset`` in a DataModule's ``setup``, before the adapters', is announced at the next use).
* At the end of ``fit`` (``teardown``, or an exception) the hub unbinds every wrapper. Stepping a wrapped
  env outside ``fit`` passes through to the env and warns once (:class:`OutsideFitWarning`); so does stepping
  it in a ``DataLoader`` worker process (events cannot cross processes: use ``num_workers=0``).

Event moments: ``on_episode_start`` at ``reset`` (and, for a vector env that resets itself, right after the
episode's ``on_episode_end``, as the contract orders it); episodes begun before ``fit`` are announced at the
env's first use inside ``fit``. ``on_rollout_start`` comes before the first env step of a cycle;
``on_rollout_end`` before the next optimizer update (before Level 1's ``on_update_start``; at the latest at
``on_before_backward`` / ``on_before_optimizer_step``) or at the epoch's end, whichever is first; a module that steps the env between updates (off-policy, one
env step per ``training_step``) therefore has one short rollout per update. A ``reset`` in the middle of
an episode abandons it without an ``on_episode_end`` (it did not end).

Counting: a vector env in ``AutoresetMode.NEXT_STEP`` (gymnasium's default) spends one ``step`` call on
resetting each finished sub-env; that call is not a transition, so it adds nothing to ``total_timesteps``
nor to the next episode's length. ``SAME_STEP`` resets inside the ending step; ``DISABLED`` leaves the reset
to the caller (``reset(options={"reset_mask": ...})``), which announces the new episodes.

Under DDP each process binds its own wrapped envs: ``env_index`` and the counters are that rank's (see the
README's "Your own LightningModule" for what ``ranks="zero"`` then sees).

Cost (``python -m fxai_compat.bench_envwrap``, CartPole ``SyncVectorEnv`` of 8, ~80 us per vector step):
without listeners and adapters on the trainer a bound wrapper only forwards (ratio ~1.00); with a legacy
adapter it keeps the counters and the episodes' sums, ~2-4 us per vector step (one numpy add, two byte
comparisons, a few attribute updates; more on steps where episodes end). Each RL payload is built only
when a callback listens to its event; counters nobody reads as payloads are fed to the bus directly.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import gymnasium
import numpy as np

from .env_hub import ENV_RL_EVENTS, EnvEventHub, hub_of, with_eval_episodes
from .rl_events import active_trainer

__all__ = ["wrap_env", "RLEnvWrapper", "RLVectorEnvWrapper", "EnvEventHub", "OutsideFitWarning", "attach",
           "hub_of", "with_eval_episodes", "ROLES"]

#: What a wrapped env is for: training episodes (events, counters, metrics) or evaluation episodes (kept apart).
ROLES = ("train", "eval")


class OutsideFitWarning(UserWarning):
    """A wrapped env was stepped where no Lightning ``fit`` can hear it (issued once per wrapper)."""


def wrap_env(env: Any, *, role: str = "train") -> "RLEnvWrapper | RLVectorEnvWrapper":
    """Wrap a ``gymnasium.Env`` or ``gymnasium.vector.VectorEnv`` so that the Lightning run stepping it
    announces its RL events to legacy callbacks (see the module docstring). ``role="eval"`` for an
    evaluation env. An env that is already wrapped is returned as it is (its role must agree)."""
    if role not in ROLES:
        raise ValueError(f"wrap_env role must be one of {', '.join(map(repr, ROLES))}; got {role!r}.")
    if isinstance(env, (RLEnvWrapper, RLVectorEnvWrapper)):
        if env.role != role:
            raise ValueError(f"This env is already wrapped with role={env.role!r}; wrap the inner env "
                             f"(env.env) again for role={role!r}.")
        return env
    if isinstance(env, gymnasium.vector.VectorEnv):
        return RLVectorEnvWrapper(env, role=role)
    if isinstance(env, gymnasium.Env):
        return RLEnvWrapper(env, role=role)
    raise TypeError(f"wrap_env needs a gymnasium.Env or gymnasium.vector.VectorEnv; got {type(env).__module__}."
                    f"{type(env).__qualname__}. Wrap the env object your module steps (for a gym or other API, "
                    f"convert it to gymnasium first, e.g. with shimmy).")


# -- finding the run ------------------------------------------------------------------------------
def attach(trainer: Any, pl_module: Any) -> "EnvEventHub | None":
    """Bind the wrapped envs reachable from ``pl_module`` (and the trainer's datamodule) to ``trainer``.

    Called by ``LegacyCallbackAdapter.setup``; idempotent. Returns the hub, or None if no wrapped env is
    reachable (one may still bind at its first use inside ``fit``).
    """
    found = _reachable_wrappers(pl_module) + _reachable_wrappers(getattr(trainer, "datamodule", None))
    hub = hub_of(trainer)
    if not found:
        return hub
    hub = hub or EnvEventHub(trainer, pl_module)
    for wrapper in found:
        hub.bind(wrapper)
    return hub


def _reachable_wrappers(root: Any) -> list:
    if root is None:
        return []
    out: list = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, (RLEnvWrapper, RLVectorEnvWrapper)):
            out.append(obj)
            return
        if isinstance(obj, (list, tuple)):
            children = obj
        elif isinstance(obj, dict):
            children = obj.values()
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            children = [v for k, v in vars(obj).items() if k not in _NOT_SEARCHED]
        else:
            return
        for child in children:
            if child is not None and not isinstance(child, (str, bytes, int, float, type)) and not (
                    type(child).__module__ or "").startswith(("torch", "numpy", "pytorch_lightning")):
                visit(child, depth + 1)

    visit(root, 0)
    return out


#: Attributes of a LightningModule (and of anything) not searched for wrapped envs.
_NOT_SEARCHED = frozenset({"_trainer", "_modules", "_parameters", "_buffers", "_hparams", "_hparams_initial"})


def _running_fit() -> Any:
    """The ``pl.Trainer`` whose ``fit`` is running on this thread's call stack, or None."""
    import pytorch_lightning as pl

    code = pl.Trainer._run.__code__
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            trainer = frame.f_locals.get("self")
            fn = getattr(getattr(trainer, "state", None), "fn", None)
            return trainer if getattr(fn, "value", fn) == "fit" else None
        frame = frame.f_back
    return None


def _callbacks_set_up(trainer: Any) -> bool:
    """Whether every legacy adapter of ``trainer`` is set up (a DataModule's ``setup`` runs before theirs)."""
    from .adapter import LegacyCallbackAdapter

    return all(getattr(cb, "_trainer", None) is trainer and getattr(cb, "_shared", None) is not None
               for cb in trainer.callbacks if isinstance(cb, LegacyCallbackAdapter))


# -- the hub: one per trainer ------------------------------------------------------------------------
def _fx_stats(info: Any, i: int | None) -> tuple[float, int, float]:
    """``pnl``, ``trades``, ``win_rate`` of a finished episode from the env's info (FX envs report
    ``pnl``, ``trades``, ``wins``, ``closed_trades``); the contract's 0, 0, NaN for other envs."""
    if not isinstance(info, dict) or "pnl" not in info or "trades" not in info:
        return 0.0, 0, math.nan
    pick = (lambda key: info[key]) if i is None else (lambda key: info[key][i])
    closed = int(pick("closed_trades")) if "closed_trades" in info else 0
    win_rate = float(pick("wins")) / closed if closed and "wins" in info else math.nan
    return float(pick("pnl")), int(pick("trades")), win_rate


# -- the two wrappers ------------------------------------------------------------------------------
class _Binding:
    """What both wrappers share: the role, the hub, binding on first use and the outside-fit warning."""

    role: str
    _n: int

    @property
    def fxai_rl_provides(self) -> tuple[str, ...]:
        """The RL events this wrapper announces (read by ``fxai_compat.rl_events.provided_events``)."""
        return ENV_RL_EVENTS if self.role == "train" else ()

    def _init_binding(self, role: str, n: int) -> None:
        self.role = role
        self._eval = role == "eval"
        self._n = n
        self._hub: EnvEventHub | None = None
        self._fast: EnvEventHub | None = None  # the hub, when bound, live, not quiet, nothing pending
        self._env_base = 0
        self._warned = False
        self._unannounced = np.zeros(n, dtype=bool)  # episodes begun (reset) but not yet announced
        self._began = False  # reset at least once: its episodes run on into a later fit (see EnvEventHub.unbind)

    def _resolve(self, what: str) -> EnvEventHub | None:
        """The live, non-quiet hub to report to, binding first if needed; None = just forward."""
        hub = self._hub
        if hub is None or not hub.live:
            trainer = _running_fit() or active_trainer()
            if trainer is None:
                self._warn_outside(what)
                return None
            hub = hub_of(trainer) or EnvEventHub(trainer, trainer.lightning_module)
            hub.bind(self)
        if not _callbacks_set_up(hub.trainer):
            return None  # e.g. a reset in a DataModule's setup: announced at the first use after on_training_start
        hub.connect()
        if hub.quiet:
            return None
        if self.role == "train" and self._unannounced.any():
            for i in np.flatnonzero(self._unannounced):
                self._start_episode(hub, int(i))
            self._unannounced[:] = False
        self._fast = hub
        return hub

    def _warn_outside(self, what: str) -> None:
        if self._warned:
            return
        self._warned = True
        import torch.utils.data

        if torch.utils.data.get_worker_info() is not None:
            where = ("in a DataLoader worker process, where no legacy callback can hear it; create the "
                     "DataLoader with num_workers=0 so the env is stepped in the training process")
        else:
            where = ("outside Trainer.fit, so no legacy callback hears it; these steps and episodes are not "
                     "counted (step self.env.env instead of the wrapper to silence this warning)")
        warnings.warn(f"A wrap_env({type(self.env).__name__}, role={self.role!r}) env was {what} {where}.",
                      OutsideFitWarning, stacklevel=4)

    def _start_episode(self, hub: EnvEventHub, i: int) -> None:
        self._episode_index[i] = hub.new_episode_index()
        if hub.want_episode_start:
            hub.emit("episode_start", {"env_index": self._env_base + i, "episode_index": self._episode_index[i]})


class RLVectorEnvWrapper(_Binding, gymnasium.vector.VectorWrapper):
    """``wrap_env`` for a ``gymnasium.vector.VectorEnv`` (any autoreset mode)."""

    def __init__(self, env: gymnasium.vector.VectorEnv, *, role: str = "train"):
        gymnasium.vector.VectorWrapper.__init__(self, env)
        n = env.num_envs
        self._init_binding(role, n)
        mode = env.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
        self.autoreset_mode = mode if isinstance(mode, gymnasium.vector.AutoresetMode) else \
            gymnasium.vector.AutoresetMode(mode)
        self._next_step = self.autoreset_mode is gymnasium.vector.AutoresetMode.NEXT_STEP
        self._same_step = self.autoreset_mode is gymnasium.vector.AutoresetMode.SAME_STEP
        self._returns = np.zeros(n, dtype=np.float64)
        # Lengths by subtraction: _calls counts step() calls; an episode's first transition is call _start + 1.
        self._calls = 0
        self._start = [0] * n
        self._resetting: set[int] = set()  # NEXT_STEP: sub-envs whose next step() is a reset
        self._no_done: bytes | None = None  # the bytes of an all-False done array (the cheap "any done?" test)
        self._episode_index = [0] * n

    def reset(self, *, seed=None, options=None):
        mask = options.get("reset_mask") if isinstance(options, dict) else None
        which = np.ones(self._n, dtype=bool) if mask is None else np.array(mask, dtype=bool)
        out = self.env.reset(seed=seed, options=options)
        self._began = True
        self._returns[which] = 0.0
        indices = np.flatnonzero(which).tolist()
        for i in indices:
            self._start[i] = self._calls
        self._resetting.difference_update(indices)
        hub = self._fast or self._resolve_quietly()
        if hub is None or self.role != "train":
            self._unannounced |= which
        else:
            for i in indices:
                self._start_episode(hub, i)
        return out

    def _resolve_quietly(self) -> EnvEventHub | None:
        # A reset outside fit (e.g. in the module's __init__) is normal: no warning; announced at first use.
        hub = self._hub
        if (hub is None or not hub.live) and (_running_fit() or active_trainer()) is None:
            return None
        return self._resolve("reset")

    def _any_done(self, terminations, truncations) -> bool:
        no_done = self._no_done
        if no_done is None or type(terminations) is not np.ndarray or type(truncations) is not np.ndarray:
            terminations, truncations = np.asarray(terminations), np.asarray(truncations)
            self._no_done = no_done = bytes(terminations.nbytes)
        return terminations.tobytes() != no_done or truncations.tobytes() != no_done

    def step(self, actions):
        # The per-step path when no callback listens to steps: a few attribute operations, one numpy add
        # and two byte comparisons (see bench_envwrap). _fast is None unless bound to a live, non-quiet hub.
        hub = self._fast
        if hub is None:
            hub = self._resolve("stepped")
            if hub is None:
                return self.env.step(actions)
        if self._eval:
            return self._eval_step(hub, actions)
        if not hub.rollout_open:
            hub.open_rollout()
        if hub.want_step_start:
            hub.emit("step_start", hub.vector_steps)
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        self._returns += rewards
        self._calls += 1
        if self._resetting:  # NEXT_STEP: those calls reset a finished sub-env; not transitions
            total = hub.total_timesteps + self._n - len(self._resetting)
            self._resetting.clear()
        else:
            total = hub.total_timesteps + self._n
        hub.total_timesteps = total
        no_done = self._no_done
        if no_done is None or type(terminations) is not np.ndarray or type(truncations) is not np.ndarray:
            ended = self._any_done(terminations, truncations)
        else:  # ~0.3 us; ndarray.any() costs ~2.5 us each on this stack
            ended = terminations.tobytes() != no_done or truncations.tobytes() != no_done
        if hub.want_step_end:
            hub.emit("step_end", {"step": hub.vector_steps, "total_timesteps": total,
                                  "rewards": np.asarray(rewards, dtype=np.float64).tolist(),
                                  "dones": np.logical_or(terminations, truncations).tolist(),
                                  "actions": np.asarray(actions).tolist()})
        elif hub.counters is not None:  # only the bus's counters learn the new total (seen_step_end: open_rollout)
            hub.counters.total_timesteps = total
        hub.vector_steps += 1
        if ended:
            self._episodes_end(hub, terminations, truncations, infos)
        return obs, rewards, terminations, truncations, infos

    def _finished(self, terminations, truncations, infos: dict) -> list:
        """(index, return, length, info) of each sub-env that finished an episode in this step; resets its sums.
        Plain lists: numpy's per-element calls cost more than the whole loop for a few sub-envs."""
        final = infos.get("final_info") if self._same_step else None
        info = final if isinstance(final, dict) else infos
        returns, calls, start = self._returns, self._calls, self._start
        sums = returns.tolist()
        out = []
        for i, (term, trunc) in enumerate(zip(np.asarray(terminations).tolist(), np.asarray(truncations).tolist())):
            if term or trunc:
                out.append((i, sums[i], calls - start[i], info))
                returns[i] = 0.0
                if self._next_step:  # the next call resets it: the next episode counts from the call after
                    start[i] = calls + 1
                    self._resetting.add(i)
                else:
                    start[i] = calls
        return out

    def _episodes_end(self, hub: EnvEventHub, terminations, truncations, infos: dict) -> None:
        want_end, counters = hub.want_episode_end, hub.counters
        restart = self._next_step or self._same_step
        for i, ret, length, info in self._finished(terminations, truncations, infos):
            hub.num_episodes += 1
            hub._rollout_returns.append(ret)
            if want_end:
                pnl, trades, win_rate = _fx_stats(info, i)
                hub.emit("episode_end", {"env_index": self._env_base + i, "episode_index": self._episode_index[i],
                                         "reward": ret, "length": length, "pnl": pnl, "trades": trades,
                                         "win_rate": win_rate})
            elif counters is not None:  # nobody listens: only the bus's counters learn of it
                counters.on_episode_end(hub.trainer, hub.pl_module, {"reward": ret, "length": length})
            if restart:
                self._episode_index[i] = hub.new_episode_index()
                if hub.want_episode_start:
                    hub.emit("episode_start", {"env_index": self._env_base + i,
                                               "episode_index": self._episode_index[i]})

    def _eval_step(self, hub: EnvEventHub, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        self._returns += rewards
        self._calls += 1
        if self._resetting:
            self._resetting.clear()
        if self._any_done(terminations, truncations):
            for i, ret, length, info in self._finished(terminations, truncations, infos):
                hub.eval_episode_ended(ret, length, _fx_stats(info, i)[2])
        return obs, rewards, terminations, truncations, infos


class RLEnvWrapper(_Binding, gymnasium.Wrapper):
    """``wrap_env`` for a single ``gymnasium.Env`` (``env_index`` 0; the caller resets it after an episode)."""

    def __init__(self, env: gymnasium.Env, *, role: str = "train"):
        gymnasium.Wrapper.__init__(self, env)
        self._init_binding(role, 1)
        self._return = 0.0
        self._length = 0
        self._episode_index = [0]

    def reset(self, *, seed=None, options=None):
        out = self.env.reset(seed=seed, options=options)
        self._began = True
        self._return, self._length = 0.0, 0
        hub = self._fast
        if hub is None or not hub.live:
            hub = self._resolve("reset") if (_running_fit() or active_trainer()) is not None or (
                self._hub is not None and self._hub.live) else None
        if hub is None or self.role != "train":
            self._unannounced[0] = True
        else:
            self._start_episode(hub, 0)
        return out

    def step(self, action):
        hub = self._fast
        if hub is None or not hub.live:
            hub = self._resolve("stepped")
            if hub is None:
                return self.env.step(action)
        train = self.role == "train"
        if train:
            if not hub.rollout_open:
                hub.open_rollout()
            if hub.want_step_start:
                hub.emit("step_start", hub.vector_steps)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        done = bool(terminated or truncated)
        if not train:
            if done:
                hub.eval_episode_ended(self._return, self._length, _fx_stats(info, None)[2])
                self._return, self._length = 0.0, 0
            return obs, reward, terminated, truncated, info
        hub.total_timesteps += 1
        if hub.want_step_end:
            hub.emit("step_end", {"step": hub.vector_steps, "total_timesteps": hub.total_timesteps,
                                  "rewards": [float(reward)], "dones": [done], "actions": [_plain(action)]})
        else:
            hub.steps_counted()
        hub.vector_steps += 1
        if done:
            ret, length = self._return, self._length
            hub.episode_ended(ret, length)
            if hub.want_episode_end:
                pnl, trades, win_rate = _fx_stats(info, None)
                hub.emit("episode_end", {"env_index": self._env_base, "episode_index": self._episode_index[0],
                                         "reward": ret, "length": length, "pnl": pnl, "trades": trades,
                                         "win_rate": win_rate})
            elif hub.counters is not None:
                hub.counters.on_episode_end(hub.trainer, hub.pl_module, {"reward": ret, "length": length})
            self._return, self._length = 0.0, 0
        return obs, reward, terminated, truncated, info


def _plain(action: Any) -> Any:
    return action.tolist() if hasattr(action, "tolist") else action
