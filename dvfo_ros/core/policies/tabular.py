"""The Q-table the tabular seed systems share (autoscale, e2e_rl): discretised states x a fixed list of choices.

Each choice is (levels [cpu, gpu, emc, xi], ActionExtras). Epsilon decays linearly from ``eps_start`` to
``eps_end`` over ``exploration_steps`` learning steps. Greedy acting takes the best choice *tried* in the state
(an untried one's 0 would beat every negative reward); a state never met takes ``default_choice``. The policy
files say what their states, choices, rewards and learning rates are; this file only holds the table.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from dvfo_ros.core.mdp import ActionExtras, ActionSpace
from dvfo_ros.core.policies.base import Policy

Choice = Tuple[np.ndarray, ActionExtras]


class TabularQPolicy(Policy):
    learns = True
    reads_importance = False
    default_choice = 0                 # what a state never met runs

    def __init__(self, action_space: ActionSpace, choices: List[Choice], n_states: int, hp: Dict[str, Any]) -> None:
        super().__init__(action_space)
        self.choices = choices
        self.n_states = int(n_states)
        self.q = np.zeros((self.n_states, len(choices)))
        self.visits = np.zeros((self.n_states, len(choices)), dtype=np.int64)
        self.hp = dict(hp)
        self._rng = np.random.default_rng(hp.get("seed", 0))
        self.steps = 0
        self.training = True
        self._last: Tuple[int, int] = (-1, -1)       # (state bucket, choice) of the last decision

    def bucket(self, state: np.ndarray) -> int:
        raise NotImplementedError

    def decide(self, state: np.ndarray) -> Tuple[np.ndarray, ActionExtras]:
        s = self.bucket(state)
        frac = min(1.0, self.steps / max(self.hp["exploration_steps"], 1))
        eps = self.hp["eps_start"] + frac * (self.hp["eps_end"] - self.hp["eps_start"])
        if self.training and self._rng.random() < eps:
            c = int(self._rng.integers(len(self.choices)))
        else:
            c = self.greedy(s)
        self._last = (s, c)
        levels, extras = self.choices[c]
        return levels.copy(), extras

    def act(self, state: np.ndarray) -> np.ndarray:
        return self.decide(state)[0]

    def greedy(self, s: int) -> int:
        """The best choice tried in state bucket ``s`` (``default_choice`` if none was)."""
        tried = self.visits[s] > 0
        if not tried.any():
            return self.default_choice
        return int(np.argmax(np.where(tried, self.q[s], -np.inf)))

    def choice_of(self, state: np.ndarray) -> ActionExtras:
        """What the greedy policy picks in this state (for tests and tables)."""
        return self.choices[self.greedy(self.bucket(state))][1]

    def last_decision(self, s: np.ndarray) -> Tuple[int, int]:
        """(bucket, choice) of the decision made in state ``s``, or (-1, -1) when not learning from it."""
        i, j = self._last
        return (i, j) if self.training and j >= 0 and i == self.bucket(s) else (-1, -1)

    def update(self, i: int, j: int, target: float, rate: float) -> None:
        self.q[i, j] += rate * (target - self.q[i, j])
        self.visits[i, j] += 1
        self.steps += 1

    def best_value(self, state: np.ndarray) -> float:
        return float(np.max(self.q[self.bucket(state)]))

    def train(self, mode: bool = True) -> "TabularQPolicy":
        self.training = bool(mode)
        return self

    def config(self) -> Dict[str, Any]:
        return dict(self.hp)

    def state_dict(self) -> Dict[str, Any]:
        return {"q": torch.as_tensor(self.q), "visits": torch.as_tensor(self.visits), "steps": int(self.steps)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        q = state["q"].numpy()
        if q.shape != self.q.shape:
            raise ValueError(f"Q-table shape {q.shape} != {self.q.shape}")
        self.q = q.copy()
        self.visits = state["visits"].numpy().copy() if "visits" in state else np.ones_like(self.visits)
        self.steps = int(state.get("steps", 0))
