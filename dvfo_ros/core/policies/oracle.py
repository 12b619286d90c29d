"""oracle: exhaustive search of the whole discrete action space on every frame, in the twin.

It reads the coming frame's true network conditions and importance from the env and scores
every joint action with the twin's noise-free model, so it is the bound no policy can beat on
the same frames (frames arrive on a fixed camera clock, so its choices do not change what the
next frames meet). Not deployable: it needs the twin and it knows the future frame.

``partitions=True`` extends the search to every whole-layer cut (``split_index``) at every clock
setting: the bound over the extended action space, for comparisons with policies that cut whole
layers (neurosurgeon). ``targets=True`` adds the board's CPU and every cut sent to the LAN edge server
(``SimEnv.target_rewards``): the bound for policies that choose a target (autoscale). Without either,
the bound over DVFO's own space [cpu, gpu, emc, xi].
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.mdp import NO_EXTRAS, ActionExtras, ActionSpace


@register("oracle")
class OraclePolicy(Policy):
    concurrent = True      # idealised: its search time is not charged to the frame
    needs_env = True
    extras = ("split_index", "target")   # with partitions=True / targets=True
    not_live = "oracle needs the device twin's future frames; it cannot act on a robot"

    def __init__(self, action_space: ActionSpace, env: Any = None, partitions: bool = False,
                 targets: bool = False) -> None:
        super().__init__(action_space)
        if env is None or not hasattr(env, "rewards_of_all_actions"):
            raise ValueError("policy 'oracle' needs the simulated env (env=SimEnv); it cannot run live")
        if env.action_space != action_space:
            raise ValueError("oracle: env and policy action spaces differ")
        self.env = env
        self.partitions = bool(partitions)
        self.targets = bool(targets)
        self._actions = action_space.all_actions()
        self._cut_actions = env.partition_actions() if self.partitions or self.targets else None

    def decide(self, state: np.ndarray) -> Tuple[np.ndarray, ActionExtras]:
        rewards = self.env.rewards_of_all_actions()
        best = int(np.argmax(rewards))
        choice: Tuple[float, np.ndarray, ActionExtras] = (float(rewards[best]), self._actions[best], NO_EXTRAS)
        if self._cut_actions is not None:
            cuts = self.env.partition_rewards()
            k, j = np.unravel_index(int(np.argmax(cuts)), cuts.shape)
            if cuts[k, j] > choice[0]:
                choice = (float(cuts[k, j]), self._cut_actions[j], ActionExtras(split_index=int(k)))
        if self.targets:
            for extras, acts, r in self.env.target_rewards():
                best = int(np.argmax(r))
                if r[best] > choice[0]:
                    choice = (float(r[best]), acts[best], extras)
        return choice[1].copy(), choice[2]

    def act(self, state: np.ndarray) -> np.ndarray:
        return self.decide(state)[0]

    def config(self) -> Dict[str, Any]:
        return {"partitions": self.partitions, "targets": self.targets}
