"""The device twin as the DVFO MDP's environment: one step = one camera frame.

The contract it steps lives beside it and is shared with the robot: the state features
(``features``), the action space and its snapping rule (``actions``), frame energy (``energy``) and
the reward (``reward``). ``gym_env.DvfoTwinEnv`` wraps this class as a registered ``gymnasium.Env``.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.mdp.actions import NO_EXTRAS, ActionExtras, ActionLike, ActionSpace
from dvfo_ros.core.mdp.context import CLOUD_DEADLINE_MS, REMOTE_TARGETS, Conditions, check_target
from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms, soc_energy_j
from dvfo_ros.core.mdp.features import build_state, importance_summary, observe
from dvfo_ros.core.mdp.reward import DEFAULT_ACCURACY_TABLE, RewardConfig, cost, penalty
from dvfo_ros.core.mdp.tables import OracleTables, Priced

if TYPE_CHECKING:
    from dvfo_ros.core.twin.workload import Workload

# How frames arrive: a camera at ``fps`` (the robot's case), or back to back (the next frame starts when
# the previous one finishes: the papers' throughput setting).
ARRIVALS = ("camera", "back_to_back")


def _importance_summary(rng: np.random.Generator, channels: int, concentration: float) -> Tuple[float, float, float]:
    """Share of attention mass in the least important 25/50/75 % of ``channels`` for one frame.

    The twin has no images, so a frame's channel importances are drawn as Gamma(k) weights with a
    per-frame concentration k (small k: a few channels carry the frame, so offloading the rest is
    nearly free; large k: importance is flat). At run time the executor summarises the real
    attention scores with the same ``importance_summary``.
    """
    low25, low50, low75 = importance_summary(rng.gamma(concentration, size=channels)).values()
    return low25, low50, low75


def _offloaded_mass(xi: Any, summary: Sequence[float]) -> Any:
    """Attention mass in the least important share xi, interpolated from the 25/50/75 % summary."""
    return np.interp(xi, [0.0, 0.25, 0.5, 0.75, 1.0], [0.0, *summary, 1.0])


class SimEnv(OracleTables):
    """The device twin as a gym-like env: one step = one camera frame.

    Frames arrive on a fixed camera clock (``fps``, ``arrival="camera"``), so which network conditions
    a frame meets does not depend on the actions taken: every policy run with the same seed sees the
    same frames, and the per-frame oracle is a true bound.

    ``arrival="back_to_back"`` is inference as most papers measure it: the next frame starts when the
    previous one finishes, so a frame's interval is its latency (no idle tail: the energy is the busy
    energy plus any decision time on the critical path) and the trace's clock advances by that
    interval. There is no frame period to default the SLO to, so ``latency_slo_ms`` must be given
    (or a ``reward_cfg``). On a time-varying trace the actions then change which network later frames
    meet, and the per-frame oracle is a bound only frame by frame; on a constant trace it stays exact.

    ``switch_cost`` (``twin.switching``; None: the profile's own, which the shipped ones leave free; a name,
    ``kang2026``, or a ``SwitchCost``): a frame whose command moves a clock pays that domain's stall and runs
    at its old clock until it settles, so the last frame's clocks (in the state) shape this frame's cost.
    Temperature follows the twin's RC model (it does not feed back into cost in the current twin).
    The frame's accuracy loss is the table's loss at xi scaled by how much attention mass the
    offloaded channels (tokens, for a ViT) carry relative to an average frame.
    """

    def __init__(self, profile: Any = "xavier_nx", model: str = "resnet18", trace: Any = "dvfo",
                 seed: int = 0, reward_cfg: Optional[RewardConfig] = None,
                 accuracy_table: Optional[Dict[float, float]] = None, *,
                 action_space: Optional[ActionSpace] = None, split: Optional[int] = None,
                 fps: float = 30.0, episode_frames: int = 300, noise: float = 0.0,
                 cloud_gflops: float = 30000.0, bytes_per_channel_elem: Optional[float] = None,
                 concentration_range: Tuple[float, float] = (0.3, 3.0), input_size: int = 224,
                 num_classes: int = 1000, arrival: str = "camera",
                 latency_slo_ms: Optional[float] = None,
                 conditions: "Conditions | Dict[str, Any] | None" = None, variants: Sequence[str] = (),
                 cloud_deadline_ms: Optional[float] = CLOUD_DEADLINE_MS, switch_cost: Any = None) -> None:
        from dvfo_ros.core.io.traces import NetworkTrace, TraceMix, load_trace
        from dvfo_ros.core.twin import DeviceTwin, load_profile, model_workload

        self.profile = load_profile(profile)
        self.model = model
        self.workload = model_workload(model, split, int(input_size), int(num_classes))
        self._num_classes = int(num_classes)
        self._partitions: Dict[Tuple[str, int], "Workload"] = {}
        # model variants a policy may run instead (ActionExtras.model_variant): name -> accuracy loss against
        # this model, from torchvision's published top-1 (twin.published_accuracy); a better one loses nothing
        from dvfo_ros.core.twin import published_accuracy
        own = published_accuracy(model) if variants else 0.0
        self.variants: Dict[str, float] = {v: max(0.0, own - published_accuracy(v)) for v in variants}
        loaded = trace if isinstance(trace, (NetworkTrace, TraceMix)) else load_trace(str(trace))
        # a TraceMix draws a new trace every episode (training across network conditions)
        self.trace_mix: Optional[TraceMix] = loaded if isinstance(loaded, TraceMix) else None
        self.trace: NetworkTrace = loaded.sample(np.random.default_rng(seed)) if isinstance(loaded, TraceMix) \
            else loaded
        self.seed = int(seed)
        self.twin = DeviceTwin(self.profile, seed=seed, noise=noise)
        self._exact_twin = DeviceTwin(self.profile, seed=seed, noise=0.0)   # what the oracle knows
        self.action_space = action_space or ActionSpace.from_profile(self.profile)
        from dvfo_ros.core.twin.switching import SwitchCost, named
        self.switch_cost: SwitchCost = switch_cost if isinstance(switch_cost, SwitchCost) else \
            named(switch_cost) if isinstance(switch_cost, str) else SwitchCost.from_dict(self.profile.switch_cost)
        self.accuracy_table = dict(accuracy_table or DEFAULT_ACCURACY_TABLE)
        if arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got '{arrival}'")
        if fps <= 0 or episode_frames < 1:
            raise ValueError("fps must be > 0 and episode_frames >= 1")
        if arrival == "back_to_back" and reward_cfg is None and latency_slo_ms is None:
            raise ValueError("arrival 'back_to_back' has no frame period to default the SLO to: "
                             "give latency_slo_ms (or a reward_cfg)")
        self.arrival = arrival
        self.fps = float(fps)              # camera rate; unused by back_to_back
        # the camera period every frame's energy covers; None: back to back (interval = the latency)
        self.period_ms: Optional[float] = 1000.0 / self.fps if arrival == "camera" else None
        self.episode_frames = int(episode_frames)
        self.cloud_gflops = float(cloud_gflops)
        # the executor's wait for the cloud (None: forever); a frame whose answer comes later ends without it
        self.cloud_deadline_ms = None if cloud_deadline_ms is None else float(cloud_deadline_ms)
        # None: the codec's measured wire bytes per value at each xi (twin.COMPRESSION_BY_XI)
        self.bytes_per_channel_elem = None if bytes_per_channel_elem is None else float(bytes_per_channel_elem)
        self.concentration_range = (float(concentration_range[0]), float(concentration_range[1]))
        # offloadable units the importance is drawn over: channels of a CNN map, tokens of a ViT's
        self.channels = self.workload.units
        self._mean_mass = self._mean_offloaded_mass()
        self._table_cache: Dict[Tuple[float, ...], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._partition_cache: Dict[Tuple[float, ...], Tuple[np.ndarray, np.ndarray]] = {}
        self._busy_cache: Dict[Tuple[float, ...], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._target_cache: Dict[Tuple[float, ...], List[Tuple[ActionExtras, np.ndarray, Priced]]] = {}
        if reward_cfg is None:
            e_ref, t_ref = self.reference_cost()
            reward_cfg = RewardConfig(energy_ref_j=e_ref, latency_ref_ms=t_ref,
                                      latency_slo_ms=latency_slo_ms or 1000.0 / self.fps)
        self.reward_cfg = reward_cfg
        # co-runners, edge-server users, accuracy requirement: drawn per episode (context.Conditions)
        self.conditions = conditions if isinstance(conditions, Conditions) else Conditions.from_dict(conditions)
        self.reset(seed)

    # ---- helpers ---------------------------------------------------------------------------
    def reference_cost(self) -> Tuple[float, float]:
        """(energy J per frame period, latency ms) of edge-only inference at max clocks: the
        reward's E_ref/T_ref (energy counted the same way as ``step``: over the frame period, or over
        the frame itself back to back)."""
        cmd = self.action_space.to_command(self.action_space.max_action(0.0))
        fc = self._exact_twin.frame_cost(self.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"],
                                         cmd["emc_freq_hz"], 0.0, 8.0, 20.0, frame_period_ms=self.period_ms)
        return float(fc.energy_j), float(fc.total_ms)

    def soc_energy_j(self, energy_j: Any, interval_ms: Any) -> Any:
        """Board energy minus the share no clock setting changes (carrier, DRAM refresh, regulators:
        the profile's static_w) over the frame interval: the CPU/GPU/SoC rails' energy, the part DVFS
        can act on (tegrastats' VDD_CPU_GPU_CV + VDD_SOC on a Xavier NX). Works on arrays."""
        return soc_energy_j(energy_j, interval_ms, self.profile.static_w)

    def _mean_offloaded_mass(self) -> np.ndarray:
        rng = np.random.default_rng(12345)
        xis = np.asarray(self.action_space.offload_ratios)
        draws = [_offloaded_mass(xis, _importance_summary(rng, self.channels, self._draw_concentration(rng)))
                 for _ in range(500)]
        return np.maximum(np.mean(draws, axis=0), 1e-9)

    def _draw_concentration(self, rng: np.random.Generator) -> float:
        lo, hi = self.concentration_range
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def accuracy_loss(self, xi: Any, summary: Optional[Sequence[float]] = None) -> Any:
        """Expected accuracy loss of this frame at offload ratio(s) xi."""
        summary = self.importance if summary is None else summary
        xis = np.asarray(self.action_space.offload_ratios)
        base = np.interp(xi, sorted(self.accuracy_table), [self.accuracy_table[k] for k in sorted(self.accuracy_table)])
        rel = _offloaded_mass(xi, summary) / np.interp(xi, xis, self._mean_mass)
        return np.where(np.asarray(xi) > 0, base * rel, 0.0)

    def frame_accuracy_loss(self, xi: Any, fallback: Any) -> Any:
        """``accuracy_loss``, where a frame whose cloud answer missed the deadline (``fallback``) answers from
        the channels it kept (the executor's fusion weight 1 on the edge's part). That loss is not measured:
        our stand-in is the table's largest (its xi = 1 loss, 1.5 points by default, over the default bound,
        so such a frame is an accuracy violation too); at xi = 1 the executor ran the whole tail: no loss."""
        xi, fell = np.asarray(xi, dtype=float), np.asarray(fallback, dtype=bool)
        return np.where(fell, np.where(xi < 1.0, max(self.accuracy_table.values()), 0.0), self.accuracy_loss(xi))

    def network_now(self) -> Tuple[float, float]:
        """(bandwidth_mbps, rtt_ms) the coming frame will meet (the policy only sees an estimate)."""
        return self.trace.at(self.t_s)

    def probe(self) -> np.ndarray:
        """The state with its network estimate refreshed to the link the coming frame meets (a link probe just
        before deciding, as the fleet's robots get); everything else is what the last frame left."""
        bw, rtt = self.network_now()
        self._obs.update(bandwidth_mbps=float(bw), rtt_ms=float(rtt))
        return self._state()

    def predict(self, action: ActionLike, bandwidth_mbps: float, rtt_ms: float) -> Tuple[float, float]:
        """Noise-free (energy J, latency ms) of one action under a given network (a latency model)."""
        cmd = self.action_space.to_command(action)
        fc = self._exact_twin.frame_cost(self.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"],
                                         cmd["offload_ratio"], bandwidth_mbps, rtt_ms,
                                         bytes_per_channel_elem=self.bytes_per_channel_elem,
                                         cloud_gflops=self.cloud_gflops, frame_period_ms=self.period_ms,
                                         deadline_ms=self.cloud_deadline_ms)
        return float(fc.energy_j), float(fc.total_ms)

    @property
    def corunner(self) -> Tuple[float, float]:
        """The (CPU, GPU) share co-running processes hold this episode."""
        return self.context["corunner_cpu_util"], self.context["corunner_gpu_util"]

    @property
    def episode_reward_cfg(self) -> RewardConfig:
        """The reward this episode is scored with: ``reward_cfg`` at the episode's accuracy requirement."""
        bound = self.context.get("accuracy_requirement")
        if bound is None or bound == self.reward_cfg.accuracy_loss_bound:
            return self.reward_cfg
        return dataclasses.replace(self.reward_cfg, accuracy_loss_bound=bound)

    def _state(self) -> np.ndarray:
        return build_state({**self._obs, **self.context}, self.action_space, self.reward_cfg.accuracy_loss_bound)

    def _importance(self) -> Dict[str, float]:
        return dict(zip(("importance_low25", "importance_low50", "importance_low75"), self.importance))

    # ---- gym-like API ----------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """Start an episode at a random point of the trace, device cool, clocks at max."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.twin.rng = np.random.default_rng(seed + 1)
        elif not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(self.seed)
        if self.trace_mix is not None:
            self.trace = self.trace_mix.sample(self._rng)
        self.t_s = float(self._rng.uniform(0.0, self.trace.duration_s))
        self.frames = 0
        self.twin.temperature_c = float(self.profile.thermal.get("ambient_c", 25.0))
        self.importance = _importance_summary(self._rng, self.channels, self._draw_concentration(self._rng))
        self.context = self.conditions.draw(self._rng)
        bw, rtt = self.trace.at(self.t_s)
        top_action = self.action_space.max_action(0.0)
        top = self.action_space.to_command(top_action)
        clocks = (top["cpu_freq_hz"], top["gpu_freq_hz"], top["emc_freq_hz"])
        self.levels = tuple(int(x) for x in np.asarray(top_action)[:3])   # the clock levels in force
        # nothing ran yet: clocks at max (also what was "commanded"), no latency, no utilisation
        self._obs: Dict[str, float] = observe(
            bandwidth_mbps=bw, rtt_ms=rtt, clocks_hz=clocks, utils=(0.0, 0.0, 0.0),
            temperature_c=self.twin.temperature_c, latency_ms=0.0, energy_j=0.0, importance=self._importance(),
            command=dict(top, offload_ratio=0.0), interval_ms=0.0, decision_ms=0.0)
        return self._state()

    def workload_at(self, split: int, variant: str = "") -> "Workload":
        """The frame's work at a whole-layer partition point (``twin.partition_workload``) of this model or a
        ``variant``; -1 = the env's own split, where xi shares out the map's channels (S for a variant)."""
        if split < 0 and not variant:
            return self.workload
        name = variant or self.model
        key = (name, split)
        if key not in self._partitions:       # counted once per (model, cut): step calls this every frame
            from dvfo_ros.core.twin import model_workload, partition_workload
            stages = len(model_workload(name, None, self.workload.input_size, self._num_classes).layers)
            cut = stages if split < 0 else split
            if cut > stages:
                raise ValueError(f"split_index {split} out of range for {name}: 0..{stages} (or -1)")
            self._partitions[key] = partition_workload(name, cut, self.workload.input_size, self._num_classes)
        return self._partitions[key]

    def step(self, action: ActionLike, decision_ms: float = 0.0, decision_on_path: bool = True,
             extras: ActionExtras = NO_EXTRAS) -> Tuple[np.ndarray, float, bool, Dict[str, Any]]:
        """Run one frame with ``action``; ``decision_ms`` is the time taken to choose it, which adds
        to the frame's latency (and idle energy) unless the choice overlapped the previous frame.

        ``extras.split_index`` k >= 0 cuts the network at a whole-layer partition point instead (as the
        executor does): the device runs stages 0..k-1 and, when xi > 0, the WHOLE map at k goes to the
        server (xi counts as 1; k = 0 sends the image, k = S is local at any xi). The two sides run the
        xi = 0 network, so the frame loses no accuracy to the split (the int8 map's loss is not modelled).

        ``extras.target`` (``context.TARGETS``) says where: gpu / cpu run every stage on the board (xi and the
        split ignored), edge / cloud send the map at ``split_index`` (-1: the image) whatever xi says."""
        a = self.action_space.validate(action)
        cmd = self.action_space.to_command(a)
        variant = extras.model_variant if extras.model_variant != self.model else ""
        if variant and variant not in self.variants:
            raise ValueError(f"unknown model variant '{variant}'; this env has {', '.join(self.variants) or 'none'}")
        target = check_target(extras.target) or ("gpu" if variant else "")   # a variant runs at a target
        split, (bw, rtt), gflops = self._placement(target, int(extras.split_index), variant)
        work = self.workload_at(split, variant)
        if split >= 0:
            remote = target in REMOTE_TARGETS or (not target and cmd["offload_ratio"] > 0)
            cmd = dict(cmd, offload_ratio=1.0 if remote and split < len(work.layers) else 0.0)
        fc = self.twin.frame_cost(work, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"],
                                  cmd["offload_ratio"], bw, rtt, bytes_per_channel_elem=self.bytes_per_channel_elem,
                                  cloud_gflops=gflops, on_cpu=target == "cpu", corunner=self.corunner,
                                  deadline_ms=self.cloud_deadline_ms)
        on_path_ms = max(float(decision_ms), 0.0) if decision_on_path else 0.0
        idle_w = self.twin.idle_power_w(cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"])
        new_levels = tuple(int(x) for x in np.asarray(a)[:3])
        if not self.switch_cost.free and new_levels != self.levels:
            fc = self._switched(fc, new_levels, idle_w, work, cmd["offload_ratio"], (bw, rtt), gflops, target == "cpu")
        self.levels = new_levels
        latency_ms = fc.total_ms + on_path_ms
        # A decision on the critical path is idle time too: every policy is charged the same way.
        interval_ms = float(frame_interval_ms(self.period_ms, latency_ms))
        energy_j = float(frame_energy_j(fc.energy_j, fc.total_ms, idle_w, interval_ms))
        soc_j = float(self.soc_energy_j(energy_j, interval_ms))
        acc_loss = float(self.frame_accuracy_loss(cmd["offload_ratio"], fc.fallback)) if split < 0 \
            else self.variants.get(variant, 0.0)
        cfg = self.episode_reward_cfg
        c = float(cost(energy_j, latency_ms, cfg))
        pen = float(penalty(latency_ms, acc_loss, cfg))
        r = -c - pen
        avg_w = energy_j / (interval_ms / 1e3)
        self.twin.step_thermal(interval_ms / 1e3, avg_w)
        self.t_s += 1.0 / self.fps if self.period_ms is not None else interval_ms / 1e3
        self.frames += 1
        self.importance = _importance_summary(self._rng, self.channels, self._draw_concentration(self._rng))
        # the network estimate is what the last frame met; the clocks in force are the commanded ones
        self._obs = observe(
            bandwidth_mbps=bw, rtt_ms=rtt, clocks_hz=(cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"]),
            utils=(fc.cpu_util, fc.gpu_util, fc.emc_util), temperature_c=self.twin.temperature_c,
            latency_ms=latency_ms, energy_j=energy_j, importance=self._importance(), command=cmd,
            interval_ms=interval_ms, decision_ms=float(decision_ms))
        done = self.frames >= self.episode_frames
        info = {"energy_j": energy_j, "soc_energy_j": soc_j, "latency_ms": latency_ms,
                "accuracy_loss": acc_loss,
                "slo_violation": latency_ms > cfg.latency_slo_ms, "cost": c, "penalty": pen, "target": target,
                "accuracy_violation": acc_loss > cfg.accuracy_loss_bound + 1e-12,
                "command": cmd, "bandwidth_mbps": bw, "rtt_ms": rtt, "edge_ms": fc.edge_ms,
                "transfer_ms": fc.transfer_ms, "bytes_sent": fc.bytes_sent, "power_w": fc.power_w,
                "fallback": fc.fallback,
                "temperature_c": self.twin.temperature_c, "interval_ms": interval_ms,
                "cpu_util": fc.cpu_util, "gpu_util": fc.gpu_util, "emc_util": fc.emc_util,
                "split_index": split if split >= 0 else int(self.workload.split), "model_variant": variant}
        return self._state(), r, done, info

    def _switched(self, fc: Any, new_levels: Tuple[int, ...], idle_w: float, work: "Workload", xi: float,
                  network: Tuple[float, float], gflops: float, on_cpu: bool) -> Any:
        """``fc`` (the frame at its new clocks, with the twin's noise) after a clock switch from ``self.levels``:
        its busy time and energy scaled by the noise-free switched / unswitched ratio (``twin.switching``)."""
        from dvfo_ros.core.twin.switching import switched_cost
        s = self.action_space

        def price(levels: Sequence[int]) -> Tuple[float, float]:
            c = self._exact_twin.frame_cost(work, s.cpu_hz[levels[0]], s.gpu_hz[levels[1]], s.emc_hz[levels[2]], xi,
                                            network[0], network[1], bytes_per_channel_elem=self.bytes_per_channel_elem,
                                            cloud_gflops=gflops, on_cpu=on_cpu, corunner=self.corunner,
                                            deadline_ms=self.cloud_deadline_ms)
            return c.total_ms, c.energy_j
        t0, e0 = price(new_levels)
        t1, e1 = switched_cost(self.switch_cost, self.levels, new_levels, price, idle_w)
        return dataclasses.replace(fc, total_ms=fc.total_ms * t1 / t0, energy_j=fc.energy_j * e1 / max(e0, 1e-12))

    def _placement(self, target: str, split: int, variant: str = "") -> Tuple[int, Tuple[float, float], float]:
        """(split, (bandwidth, RTT), server GFLOPS) a frame for ``target`` runs at: local targets run every
        stage, remote ones cut at ``split`` (-1: the image goes up) over the trace or the shared LAN."""
        network, gflops = self.trace.at(self.t_s), self.cloud_gflops
        if target in ("gpu", "cpu"):
            split = len(self.workload_at(-1, variant).layers) if variant else len(self.workload.layers)
        elif target in REMOTE_TARGETS:
            split = max(split, 0)
            server = self.conditions.edge_server
            if target == "edge" and server is not None:
                mbps, rtt, gflops = server.share(int(self.context["edge_server_users"]))
                network = (mbps, rtt)
        return split, network, gflops

    def clone(self) -> "SimEnv":
        """An independent copy (same frame, same RNG state) for look-ahead search."""
        return copy.deepcopy(self)
