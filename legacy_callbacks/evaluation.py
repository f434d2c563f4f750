"""Records evaluation results, tracks the best one, and stops training once a reward threshold is reached."""

import math

from .base import BaseCallback


class EvaluationCallback(BaseCallback):
    def __init__(self, reward_threshold=None):
        self.reward_threshold = reward_threshold
        self.num_evaluations = 0
        self.history = []
        self.best_reward = -math.inf
        self.best_cycle = None
        self.stopped_at_cycle = None

    def on_evaluation_start(self, trainer):
        self.num_evaluations += 1

    def on_evaluation_end(self, trainer, eval_results):
        self.history.append(dict(eval_results, cycle=trainer.cycle))
        reward = eval_results["episode_reward_mean"]
        if not math.isnan(reward) and reward > self.best_reward:
            self.best_reward = float(reward)
            self.best_cycle = trainer.cycle
        if self.reward_threshold is not None and reward >= self.reward_threshold:
            trainer.stop_training = True
            if self.stopped_at_cycle is None:
                self.stopped_at_cycle = trainer.cycle

    def state_dict(self):
        return {
            "num_evaluations": self.num_evaluations,
            "history": [dict(record) for record in self.history],
            "best_reward": self.best_reward,
            "best_cycle": self.best_cycle,
            "stopped_at_cycle": self.stopped_at_cycle,
        }

    def load_state_dict(self, state):
        self.num_evaluations = state["num_evaluations"]
        self.history = [dict(record) for record in state["history"]]
        self.best_reward = state["best_reward"]
        self.best_cycle = state["best_cycle"]
        self.stopped_at_cycle = state["stopped_at_cycle"]
