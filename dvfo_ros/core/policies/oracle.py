"""oracle: exhaustive search of the whole discrete action space on every frame, in the twin.

It reads the coming frame's true network conditions and importance from the env and scores
every joint action with the twin's noise-free model, so it is the bound no policy can beat on
the same frames (frames arrive on a fixed camera clock, so its choices do not change what the
next frames meet). Not deployable: it needs the twin and it knows the future frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.mdp import ActionSpace


@register("oracle")
class OraclePolicy(Policy):
    concurrent = True      # idealised: its search time is not charged to the frame
    needs_env = True
    not_live = "oracle needs the device twin's future frames; it cannot act on a robot"

    def __init__(self, action_space: ActionSpace, env: Any = None) -> None:
        super().__init__(action_space)
        if env is None or not hasattr(env, "rewards_of_all_actions"):
            raise ValueError("policy 'oracle' needs the simulated env (env=SimEnv); it cannot run live")
        if env.action_space != action_space:
            raise ValueError("oracle: env and policy action spaces differ")
        self.env = env
        self._actions = action_space.all_actions()

    def act(self, state: np.ndarray) -> np.ndarray:
        return self._actions[int(np.argmax(self.env.rewards_of_all_actions()))].copy()
