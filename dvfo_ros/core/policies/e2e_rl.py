"""e2e_rl (RL-based offloading with DL model selection in end-edge-cloud systems, ACM TECS 2022): online
tabular Q-learning of where a request runs and which model version answers it.

What the paper states (its abstract): an online RL agent chooses, per request, the execution place (the end
device, an edge server, the cloud) and the DL model version, to minimise the response time at sufficient
accuracy; 35 % lower average response time than prior work at < 0.9 % accuracy loss, over settings that vary
the network, the number of users and the accuracy requirement.

Ours, part by part:

- **Actions** (``choices``): target ``gpu`` (the end device runs it), ``edge`` (the LAN edge server) or
  ``cloud``, times the model version: the served model or one of ``variants`` (zoo models; their accuracy is
  torchvision's published ImageNet top-1, ``twin.published_accuracy``). A remote target gets the image
  (``split_index`` 0). E2E-RL does not scale clocks: every choice runs at the board's top clocks.
- **State** (discretised, a Q-table): the bandwidth estimate (4 buckets), the other robots on the edge server
  (``edge_server_users``: 0, 1-2, 3-5, 6+) and the accuracy requirement (``accuracy_requirement``, an
  accuracy-loss bound: <= 0.5 %, <= 2 %, <= 5 %, more): 64 states.
- **Reward** (its own): ``r = -T / T_ref - accuracy_penalty * (1 + (loss - bound) / bound) * [loss > bound]``,
  the response time T read from the next state (``last_latency_ms``), T_ref the device's edge-only latency
  (``latency_ref_ms``), ``loss`` the chosen version's top-1 loss against the served model and ``bound`` the
  requirement in the state. Energy has no weight: response time is what E2E-RL minimises.
- **Algorithm**: one-step Q-learning, epsilon-greedy with epsilon decaying linearly over
  ``exploration_steps``; the learning rate is 1/n, the sample mean of a choice's rewards (``alpha`` > 0
  puts a floor under it, to forget on a robot whose conditions drift), and the discount 0 (a request's
  response time is its own): our choices, the abstract gives neither. A fixed rate (0.1, or a floor of
  0.02) let one upload caught by a link drop (the state's bandwidth is a frame old: 1.3 s instead of 30 ms)
  keep the cloud's value below the device's for hundreds of frames. A choice never tried in a state is
  never chosen greedily there (its 0 would beat every negative reward); a state never met runs the served
  model on the device.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from dvfo_ros.core.mdp import ActionExtras, ActionSpace, feature_value
from dvfo_ros.core.policies.base import register
from dvfo_ros.core.policies.tabular import Choice, TabularQPolicy

_BW_EDGES = np.array([1.0, 4.0, 16.0])           # Mbps
_USER_EDGES = np.array([0.5, 2.5, 5.5])          # other robots on the edge server: 0 | 1-2 | 3-5 | 6+
_REQ_EDGES = np.array([0.005, 0.02, 0.05])       # accuracy-loss bound in force
PLACES = ("gpu", "edge", "cloud")


@register("e2e_rl")
class E2ERLPolicy(TabularQPolicy):
    reads_reward = True        # built with T_ref and the accuracy penalty (twin_options / the node's reward)
    uses_variants = True       # built with the served model and its variants (twin_options / the node's params)
    extras = ("split_index", "model_variant", "target")
    default_choice = 0         # a state never met: the served model on the device

    def __init__(self, action_space: ActionSpace, seed: int = 0, alpha: float = 0.0, discount: float = 0.0,
                 eps_start: float = 1.0, eps_end: float = 0.02, exploration_steps: int = 3000,
                 model: str = "resnet18", variants: Sequence[str] = (), latency_ref_ms: float = 10.0,
                 accuracy_penalty: float = 1.0, **_: Any) -> None:
        # ``**_``: the deep agents' options (lr, gamma, batch_size, ...) and the reward's other terms
        if latency_ref_ms <= 0:
            raise ValueError("e2e_rl: latency_ref_ms must be > 0")
        from dvfo_ros.core.twin import published_accuracy
        own = published_accuracy(model)
        versions = [""] + [v for v in variants if v and v != model]
        self.loss: Dict[str, float] = {v: max(0.0, own - published_accuracy(v)) if v else 0.0 for v in versions}
        top = action_space.max_action(0.0)
        choices: List[Choice] = [
            (top, ActionExtras(split_index=-1 if place == "gpu" else 0, model_variant=v, target=place))
            for v in versions for place in PLACES]
        n_states = (len(_BW_EDGES) + 1) * (len(_USER_EDGES) + 1) * (len(_REQ_EDGES) + 1)
        super().__init__(action_space, choices, n_states,
                         dict(seed=seed, alpha=alpha, discount=discount, eps_start=eps_start, eps_end=eps_end,
                              exploration_steps=exploration_steps, model=model, variants=list(versions[1:]),
                              latency_ref_ms=float(latency_ref_ms), accuracy_penalty=float(accuracy_penalty)))

    def bucket(self, state: np.ndarray) -> int:
        bw = int(np.searchsorted(_BW_EDGES, feature_value(state, "bandwidth_mbps")))
        users = int(np.searchsorted(_USER_EDGES, feature_value(state, "edge_server_users")))
        req = int(np.searchsorted(_REQ_EDGES, feature_value(state, "accuracy_requirement") - 1e-9))
        return (bw * (len(_USER_EDGES) + 1) + users) * (len(_REQ_EDGES) + 1) + req

    def own_reward(self, state: np.ndarray, choice: int, next_state: np.ndarray) -> float:
        """E2E-RL's reward of ``choice`` taken in ``state``: response time, and the accuracy requirement."""
        latency = feature_value(next_state, "last_latency_ms")
        bound = max(feature_value(state, "accuracy_requirement"), 1e-6)
        loss = self.loss[self.choices[choice][1].model_variant]
        short = self.hp["accuracy_penalty"] * (1.0 + (loss - bound) / bound) if loss > bound + 1e-9 else 0.0
        return -latency / self.hp["latency_ref_ms"] - short

    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        """Learns from its own reward; ``r`` (the bench's common reward) is ignored."""
        i, j = self.last_decision(s)
        if j < 0:
            return
        target = self.own_reward(s, j, s2) + self.hp["discount"] * (0.0 if done else self.best_value(s2))
        # the sample mean of the choice's rewards, then the floor alpha
        self.update(i, j, target, max(1.0 / (self.visits[i, j] + 1), self.hp["alpha"]))
