"""What every action would cost on the coming frame, noise-free: the twin's view that the oracle searches
(and neurosurgeon's tests score against). A mixin of ``SimEnv``: it reads the env's exact twin, workload,
action space, network, conditions and reward, and keeps nothing of its own but caches.

The tables: ``outcome_table`` (DVFO's space [cpu, gpu, emc, xi]), ``partition_rewards`` (every whole-layer cut
to the cloud), ``target_rewards`` (the board's CPU, cuts to the LAN edge server, and the model variants).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from dvfo_ros.core.mdp.actions import ActionExtras
from dvfo_ros.core.mdp.reward import reward_array

if TYPE_CHECKING:
    from dvfo_ros.core.twin.workload import Workload

Priced = Tuple[np.ndarray, np.ndarray]      # (energy J, latency ms) of a set of actions


class OracleTables:
    """The noise-free tables of ``SimEnv`` (see the module docstring)."""

    _table_cache: Dict[Tuple[float, ...], Tuple[np.ndarray, np.ndarray, np.ndarray]]
    _busy_cache: Dict[Tuple[float, ...], Tuple[np.ndarray, np.ndarray, np.ndarray]]
    _partition_cache: Dict[Tuple[float, ...], Priced]
    _target_cache: Dict[Tuple[Any, ...], List[Tuple[ActionExtras, np.ndarray, Priced]]]
    action_space: Any
    workload: Any
    variants: Dict[str, float]
    conditions: Any
    context: Dict[str, float]
    cloud_gflops: float
    bytes_per_channel_elem: Optional[float]
    period_ms: Optional[float]
    cloud_deadline_ms: Optional[float]
    _exact_twin: Any
    switch_cost: Any                          # twin.switching.SwitchCost
    levels: Tuple[int, ...]                   # the clock levels in force (what a switch moves from)

    if TYPE_CHECKING:       # SimEnv's own
        @property
        def corunner(self) -> Tuple[float, float]: ...

        @property
        def episode_reward_cfg(self) -> Any: ...

        def accuracy_loss(self, xi: Any, summary: Any = None) -> Any: ...

        def frame_accuracy_loss(self, xi: Any, fallback: Any) -> Any: ...

        def network_now(self) -> Tuple[float, float]: ...

        def workload_at(self, split: int, variant: str = "") -> "Workload": ...

    def outcome_table(self, bandwidth_mbps: float, rtt_ms: float) -> Tuple[np.ndarray, np.ndarray]:
        """(energy J, latency ms) of every joint action (``action_space.all_actions()`` order), cached."""
        return self._outcomes(bandwidth_mbps, rtt_ms)[:2]

    def _outcomes(self, bandwidth_mbps: float, rtt_ms: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``outcome_table`` and whether each action's answer misses the deadline (``fallback``)."""
        key = (round(float(bandwidth_mbps), 6), round(float(rtt_ms), 6), *self.corunner)
        if key not in self._table_cache:
            if len(self._table_cache) > 4096:
                self._table_cache.clear()
            fallback = np.zeros(len(self.action_space.all_actions()), dtype=bool)
            self._table_cache[key] = (*self._price(self.workload, self.action_space.all_actions(), None, key[:2],
                                                   fallback=fallback), fallback)
        return self._table_cache[key]

    def _price(self, work: "Workload", actions: np.ndarray, xi: Optional[float],
               network: Tuple[float, float], cloud_gflops: Optional[float] = None,
               on_cpu: bool = False, fallback: Optional[np.ndarray] = None,
               busy: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Noise-free (energy J, latency ms) of each action on ``work`` under ``network`` (bandwidth, RTT) and
        this episode's co-runners; ``xi`` None: each action's own offload ratio. ``fallback``: filled with
        whether each action's answer would miss the executor's deadline. ``busy``: the busy energy only (no
        camera period's idle tail)."""
        s = self.action_space
        energy = np.empty(len(actions))
        latency = np.empty(len(actions))
        gflops = self.cloud_gflops if cloud_gflops is None else cloud_gflops
        for i, a in enumerate(actions):
            fc = self._exact_twin.frame_cost(work, s.cpu_hz[a[0]], s.gpu_hz[a[1]], s.emc_hz[a[2]],
                                             s.offload_ratios[a[3]] if xi is None else xi, network[0], network[1],
                                             bytes_per_channel_elem=self.bytes_per_channel_elem,
                                             cloud_gflops=gflops, frame_period_ms=None if busy else self.period_ms,
                                             on_cpu=on_cpu,
                                             corunner=self.corunner, deadline_ms=self.cloud_deadline_ms)
            energy[i], latency[i] = fc.energy_j, fc.total_ms
            if fallback is not None:
                fallback[i] = fc.fallback
        return energy, latency

    def rewards_of_all_actions(self) -> np.ndarray:
        """Reward every joint action would earn on the coming frame (noise-free): the oracle's view."""
        bw, rtt = self.network_now()
        energy, latency, fallback = self._outcomes(bw, rtt)
        if not self.switch_cost.free:
            energy, latency = self._switched_outcomes(bw, rtt)
        xis = np.asarray(self.action_space.offload_ratios)[self.action_space.all_actions()[:, 3]]
        return reward_array(energy, latency, self.frame_accuracy_loss(xis, fallback), self.episode_reward_cfg)

    def _switched_outcomes(self, bandwidth_mbps: float, rtt_ms: float) -> Tuple[np.ndarray, np.ndarray]:
        """``outcome_table`` after a switch from the clock levels in force (``twin.switching``): the busy
        tables switched, then the camera period's idle tail at each action's clocks."""
        from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms
        from dvfo_ros.core.twin.switching import switched_tables
        key = (round(float(bandwidth_mbps), 6), round(float(rtt_ms), 6), *self.corunner)
        if key not in self._busy_cache:
            if len(self._busy_cache) > 4096:
                self._busy_cache.clear()
            acts = self.action_space.all_actions()
            energy, latency = self._price(self.workload, acts, None, key[:2], busy=True)
            s = self.action_space
            idle = np.array([self._exact_twin.idle_power_w(s.cpu_hz[a[0]], s.gpu_hz[a[1]], s.emc_hz[a[2]])
                             for a in acts])
            self._busy_cache[key] = (energy, latency, idle)
        energy, latency, idle = self._busy_cache[key]
        shape = tuple(self.action_space.branches)
        t, e = switched_tables(self.switch_cost, self.levels, latency.reshape(shape), energy.reshape(shape),
                               idle.reshape(shape))
        t, e = t.reshape(-1), e.reshape(-1)
        return frame_energy_j(e, t, idle, frame_interval_ms(self.period_ms, t)), t

    def partition_actions(self) -> np.ndarray:
        """The clock levels a whole-layer cut can run at: every joint action with xi at its top level."""
        acts = self.action_space.all_actions()
        return acts[acts[:, 3] == self.action_space.branches[3] - 1]

    def partition_rewards(self) -> np.ndarray:
        """Reward of every (cut k, clock levels) on the coming frame, noise-free: shape [S, len(partition_actions)]
        for k = 0..S-1, the whole map at k to the server (k = S, all local, is the main table's xi = 0 part)."""
        bw, rtt = self.network_now()
        key = (round(float(bw), 6), round(float(rtt), 6), *self.corunner)
        if key not in self._partition_cache:
            if len(self._partition_cache) > 1024:
                self._partition_cache.clear()
            acts = self.partition_actions()
            priced = [self._price(self.workload_at(k), acts, 1.0, key[:2]) for k in range(len(self.workload.layers))]
            self._partition_cache[key] = (np.stack([e for e, _ in priced]), np.stack([t for _, t in priced]))
        energy, latency = self._partition_cache[key]
        return reward_array(energy, latency, np.zeros_like(energy), self.episode_reward_cfg)

    def target_rewards(self) -> List[Tuple[ActionExtras, np.ndarray, np.ndarray]]:
        """(extras, clock levels [n, 4], reward [n]) of every target choice beyond ``partition_rewards``, on the
        coming frame, noise-free: the board's CPU at every clock setting, and each cut k = 0..S-1 sent to the
        LAN edge server, if there is one, at ``partition_actions`` (its link does not follow the trace: cached
        per episode); then each model variant on the board's GPU, its image to the edge server and to the cloud."""
        users = int(self.context["edge_server_users"])
        bw, rtt = self.network_now()
        key = (users, *self.corunner) + ((round(float(bw), 6), round(float(rtt), 6)) if self.variants else ())
        if key not in self._target_cache:
            if len(self._target_cache) > 256:
                self._target_cache.clear()
            local = self.action_space.all_actions()
            local = local[local[:, 3] == 0]
            acts = self.partition_actions()
            priced = [(ActionExtras(target="cpu"), local, self._price(self.workload_at(len(self.workload.layers)),
                                                                      local, 0.0, (1.0, 0.0), on_cpu=True))]
            if self.conditions.edge_server is not None:
                mbps, rtt_lan, gflops = self.conditions.edge_server.share(users)
                priced += [(ActionExtras(split_index=k, target="edge"), acts,
                            self._price(self.workload_at(k), acts, 1.0, (mbps, rtt_lan), cloud_gflops=gflops))
                           for k in range(len(self.workload.layers))]
            for v in self.variants:
                priced.append((ActionExtras(model_variant=v, target="gpu"), local,
                               self._price(self.workload_at(-1, v), local, 0.0, (1.0, 0.0))))
                priced.append((ActionExtras(model_variant=v, split_index=0, target="cloud"), acts,
                               self._price(self.workload_at(0, v), acts, 1.0, (bw, rtt))))
                if self.conditions.edge_server is not None:
                    priced.append((ActionExtras(model_variant=v, split_index=0, target="edge"), acts,
                                   self._price(self.workload_at(0, v), acts, 1.0, (mbps, rtt_lan),
                                               cloud_gflops=gflops)))
            self._target_cache[key] = priced
        cfg = self.episode_reward_cfg
        return [(ex, acts, reward_array(e, t, np.full_like(e, self.variants.get(ex.model_variant, 0.0)), cfg))
                for ex, acts, (e, t) in self._target_cache[key]]
