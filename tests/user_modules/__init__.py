"""LightningModules written the way users write them, WITHOUT any fxai_compat code.

They are what the "bring your own module" tests (levels 1-3 of issue 19) train with the legacy
callbacks. Nothing here may import ``fxai_compat``: a Level-2 test passes an env already wrapped by
fxai_compat as the ``env`` argument, and that is the only contact.

* :class:`PPOModule`: on-policy PPO in the style of Lightning's RL templates: ``train_dataloader``
  is a ``DataLoader`` over an ``IterableDataset`` that collects a fresh rollout and yields its
  samples for ``nb_optim_iters`` passes; automatic optimization; logs ``avg_ep_reward`` and ``loss``.
* :class:`DQNModule`: off-policy, step-based (DQN) with a replay buffer: one (vector) env step per
  ``training_step``, an update once the buffer holds ``warm_start`` transitions.
* :class:`ManualPPOModule`: manual optimization, a whole rollout per ``training_step`` and several
  ``opt.step()`` calls in it (optionally two optimizers, actor and critic).

Constructor API (stable: other work builds on it): ``Module(env, val_env=None, *, ...)`` where ``env``
and ``val_env`` are a ``gymnasium.Env``, a ``gymnasium.vector.VectorEnv``, or a zero-argument callable
returning one. With ``val_env`` the module has a validation loop (greedy episodes on ``val_env``, logs
``val_reward``); without it, none. Each module keeps ``episode_log``: ``(env_index, return, length)``
of every training episode it saw end, in order (its own bookkeeping, for tests to compare with).
"""

from .dqn import DQNModule
from .envs import make_cartpole
from .manual import ManualPPOModule
from .ppo_iterable import PPOModule

__all__ = ["PPOModule", "DQNModule", "ManualPPOModule", "make_cartpole", "MODULE_CLASSES"]

#: Style name -> class, for tests parametrized over the three styles.
MODULE_CLASSES = {"iterable_ppo": PPOModule, "dqn": DQNModule, "manual_ppo": ManualPPOModule}
