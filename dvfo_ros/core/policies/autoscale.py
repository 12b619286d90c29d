"""autoscale (Kim & Wu, MICRO 2020): tabular Q-learning over execution target and DVFS level.

AutoScale discretises what it observes (here: bandwidth estimate and GPU utilisation, 4 x 3
buckets) and learns a Q-table over a small set of (target, frequency) choices: run on the device
at one of the GPU levels with CPU/EMC at max, or offload everything at max clocks. It learns
online with epsilon-greedy exploration and a per-frame reward (the same reward as DVFO).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.mdp import ActionSpace, feature_value

_BW_EDGES = np.array([1.0, 2.5, 5.0])          # Mbps
_UTIL_EDGES = np.array([0.4, 0.8])


@register("autoscale")
class AutoScalePolicy(Policy):
    learns = True

    def __init__(self, action_space: ActionSpace, seed: int = 0, lr: float = 0.1, gamma: float = 0.0,
                 eps_start: float = 1.0, eps_end: float = 0.02, exploration_steps: int = 3000, **_: Any) -> None:
        super().__init__(action_space)
        b = action_space.branches
        self.choices: List[np.ndarray] = [np.array([b[0] - 1, g, b[2] - 1, 0]) for g in range(b[1])]
        self.choices.append(action_space.max_action(1.0))
        self.n_states = (len(_BW_EDGES) + 1) * (len(_UTIL_EDGES) + 1)
        self.q = np.zeros((self.n_states, len(self.choices)))
        self.hp: Dict[str, Any] = dict(seed=seed, lr=lr, gamma=gamma, eps_start=eps_start, eps_end=eps_end,
                                       exploration_steps=exploration_steps)
        self._rng = np.random.default_rng(seed)
        self.steps = 0
        self.training = True
        self._last_choice = 0

    def _bucket(self, state: np.ndarray) -> int:
        bw = feature_value(state, "bandwidth_mbps")
        util = feature_value(state, "gpu_util")
        return int(np.searchsorted(_BW_EDGES, bw)) * (len(_UTIL_EDGES) + 1) + int(np.searchsorted(_UTIL_EDGES, util))

    def act(self, state: np.ndarray) -> np.ndarray:
        s = self._bucket(state)
        frac = min(1.0, self.steps / max(self.hp["exploration_steps"], 1))
        eps = self.hp["eps_start"] + frac * (self.hp["eps_end"] - self.hp["eps_start"])
        if self.training and self._rng.random() < eps:
            c = int(self._rng.integers(len(self.choices)))
        else:
            c = int(np.argmax(self.q[s]))
        return self.choices[c].copy()

    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        if not self.training:
            return
        matches = [i for i, c in enumerate(self.choices) if np.array_equal(c, a)]
        if not matches:
            return
        i, j = self._bucket(s), matches[0]
        target = r + self.hp["gamma"] * (0.0 if done else float(np.max(self.q[self._bucket(s2)])))
        self.q[i, j] += self.hp["lr"] * (target - self.q[i, j])
        self.steps += 1

    def train(self, mode: bool = True) -> "AutoScalePolicy":
        self.training = bool(mode)
        return self

    def config(self) -> Dict[str, Any]:
        return dict(self.hp)

    def state_dict(self) -> Dict[str, Any]:
        return {"q": torch.as_tensor(self.q), "steps": int(self.steps)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        q = state["q"].numpy()
        if q.shape != self.q.shape:
            raise ValueError(f"Q-table shape {q.shape} != {self.q.shape}")
        self.q = q.copy()
        self.steps = int(state.get("steps", 0))
