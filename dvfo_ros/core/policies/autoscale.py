"""autoscale (Kim & Wu, MICRO 2020): tabular Q-learning of the most energy-efficient execution target.

What the paper states (its abstract and summaries; the full text's constants are not reproduced here):
a lightweight RL engine continuously learns which *execution target* runs an inference most
energy-efficiently (the mobile CPU, a co-processor, the cloud, a locally connected device) from the
network's characteristics and the runtime variance: wireless signal strength and co-running
interference, while meeting the QoS (latency) and accuracy requirement. 9.8x / 1.6x energy efficiency
over the mobile CPU / cloud offloading.

Ours, part by part:

- **Actions** (``choices``): the board's CPU at each CPU level (the GPU at its lowest clock, memory at
  its top); the board's GPU at each GPU level (CPU and memory at their top: AutoScale's DVFS of the
  co-processor); the LAN edge server (its "connected device"); the cloud. The two remote targets send
  the image (``split_index`` 0) with the board's CPU at its top for the upload and GPU and memory at
  their lowest, since the board only waits.
- **State** (discretised, a Q-table as in the paper): the bandwidth estimate (our stand-in for signal
  strength) in 4 buckets, and the co-runners' CPU and GPU share (``corunner_*_util``) in 3 buckets
  each: 36 states. The network's characteristics (its layer mix) are constant for one policy
  instance, which serves one model, so they are not in the state: one table per model.
- **Reward** (its own, not DVFO's): energy efficiency within the constraints,
  ``r = -E / E_ref - slo_penalty * (1 + (T - QoS) / QoS) * [T > QoS]``, with E and T the frame's energy
  and latency read from the next state (``last_energy_j``, ``last_latency_ms``), QoS the latency
  SLO and E_ref the device's edge-only energy (``qos_ms`` / ``energy_ref_j``, from the env or the
  node's reward parameters). No target here loses accuracy (each runs the whole network), so the
  accuracy requirement is always met; latency has no weight of its own below the QoS.
- **Algorithm**: one-step Q-learning, epsilon-greedy with epsilon decaying linearly over
  ``exploration_steps``; learning rate ``alpha`` 0.1 and ``discount`` 0.1 are our choices (the twin's noise wants
  a small rate; conditions are exogenous, so the discount barely matters).
"""
from __future__ import annotations

from typing import Any, List

import numpy as np

from dvfo_ros.core.mdp import ActionExtras, ActionSpace, feature_value
from dvfo_ros.core.policies.base import register
from dvfo_ros.core.policies.tabular import Choice, TabularQPolicy

_BW_EDGES = np.array([1.0, 4.0, 16.0])         # Mbps: 4 signal-strength buckets
_CO_EDGES = np.array([0.2, 0.5])               # co-runner share: 3 buckets per domain


@register("autoscale")
class AutoScalePolicy(TabularQPolicy):
    reads_reward = True        # built with the QoS target and E_ref (twin_options / the node's reward)
    extras = ("split_index", "target")

    def __init__(self, action_space: ActionSpace, seed: int = 0, alpha: float = 0.1, discount: float = 0.1,
                 eps_start: float = 1.0, eps_end: float = 0.02, exploration_steps: int = 3000,
                 qos_ms: float = 100.0, energy_ref_j: float = 0.1, slo_penalty: float = 1.0, **_: Any) -> None:
        # ``**_``: the deep agents' options (lr, gamma, batch_size, ...) that benches pass every learnt policy
        if qos_ms <= 0 or energy_ref_j <= 0:
            raise ValueError("autoscale: qos_ms and energy_ref_j must be > 0")
        b = action_space.branches
        top_cpu, top_emc = b[0] - 1, b[2] - 1
        choices: List[Choice] = [(np.array([c, 0, top_emc, 0]), ActionExtras(target="cpu")) for c in range(b[0])]
        choices += [(np.array([top_cpu, g, top_emc, 0]), ActionExtras(target="gpu")) for g in range(b[1])]
        choices += [(np.array([top_cpu, 0, 0, 0]), ActionExtras(split_index=0, target=t)) for t in ("edge", "cloud")]
        self.default_choice = len(choices) - 3          # a state never met: the GPU at its top clock
        super().__init__(action_space, choices, (len(_BW_EDGES) + 1) * (len(_CO_EDGES) + 1) ** 2,
                         dict(seed=seed, alpha=alpha, discount=discount, eps_start=eps_start, eps_end=eps_end,
                              exploration_steps=exploration_steps, qos_ms=float(qos_ms),
                              energy_ref_j=float(energy_ref_j), slo_penalty=float(slo_penalty)))

    def bucket(self, state: np.ndarray) -> int:
        """The discretised state: bandwidth bucket x co-runner CPU bucket x co-runner GPU bucket."""
        bw = int(np.searchsorted(_BW_EDGES, feature_value(state, "bandwidth_mbps")))
        cpu = int(np.searchsorted(_CO_EDGES, feature_value(state, "corunner_cpu_util")))
        gpu = int(np.searchsorted(_CO_EDGES, feature_value(state, "corunner_gpu_util")))
        n = len(_CO_EDGES) + 1
        return (bw * n + cpu) * n + gpu

    def own_reward(self, next_state: np.ndarray) -> float:
        """AutoScale's reward of the frame just run, from what the next state reports of it."""
        energy = feature_value(next_state, "last_energy_j")
        latency = feature_value(next_state, "last_latency_ms")
        qos = self.hp["qos_ms"]
        over = self.hp["slo_penalty"] * (1.0 + (latency - qos) / qos) if latency > qos else 0.0
        return -energy / self.hp["energy_ref_j"] - over

    def target_of(self, state: np.ndarray) -> str:
        """The target the greedy policy picks in this state (for tests and tables)."""
        return self.choice_of(state).target

    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        """Learns from its own reward; ``r`` (the bench's common reward) is ignored."""
        i, j = self.last_decision(s)
        if j < 0:
            return
        target = self.own_reward(s2) + self.hp["discount"] * (0.0 if done else self.best_value(s2))
        # the first visit takes the sample whole, so the rate does not drag Q from the arbitrary 0 start
        self.update(i, j, target, 1.0 if self.visits[i, j] == 0 else self.hp["alpha"])
