"""neurosurgeon (Kang et al., ASPLOS 2017): pick where to run the DNN from a latency prediction.

Neurosurgeon profiles each layer once, then for the current bandwidth estimate chooses the
partition with the lowest predicted end-to-end latency; it does not touch clocks (max clocks) and
cuts whole layers, so here the choice is xi = 0 (all on the device) or xi = 1 (all channels at the
split go to the cloud). Its layer-latency predictor is the twin's model (Neurosurgeon's regression
models play that role on a board), fed with the bandwidth/RTT *estimate* from the state, not the
true coming network the oracle sees.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.mdp import ActionSpace, feature_value



@register("neurosurgeon")
class NeurosurgeonPolicy(Policy):
    needs_env = True
    not_live = "neurosurgeon predicts latency with the device twin's model; it cannot act on a robot"

    def __init__(self, action_space: ActionSpace, env: Any = None, objective: str = "latency") -> None:
        super().__init__(action_space)
        if env is None or not hasattr(env, "predict"):
            raise ValueError("policy 'neurosurgeon' needs a latency model: pass the twin env (env=SimEnv)")
        if objective not in ("latency", "energy"):
            raise ValueError("neurosurgeon objective must be 'latency' or 'energy'")
        self.env = env
        self.objective = objective
        self._cands = [action_space.max_action(0.0), action_space.max_action(1.0)]

    def act(self, state: np.ndarray) -> np.ndarray:
        bw = max(feature_value(state, "bandwidth_mbps"), 0.05)
        rtt = max(feature_value(state, "rtt_ms"), 0.0)
        col = 1 if self.objective == "latency" else 0
        scores = [self.env.predict(a, bw, rtt)[col] for a in self._cands]
        return self._cands[int(np.argmin(scores))].copy()
