"""The DVFO MDP in one module: state features, action space, reward, and the twin as an env.

The live policy node and the simulated training env both build states with ``build_state`` and
price actions with ``reward``, so a checkpoint trained in the twin means the same thing on a robot.

State (``STATE_NAMES``, each divided by a fixed scale in ``STATE_SCALES`` so the network sees
numbers near [0, 1]): network estimate, clock levels, utilisations, temperature, last frame's
latency/energy, the frame's channel-importance summary (share of attention mass held by the
least important 25/50/75 % of channels: ``importance_low25/50/75``), and the thinking-while-moving
features (previous action, time since the last action was chosen, action-selection latency).

Action: one discrete level per branch ``[cpu, gpu, emc, xi]`` (factorised, so a branching Q-net
learns four small heads instead of one head over thousands of joint combinations).

Reward: ``-(eta*E/E_ref + (1-eta)*T/T_ref)`` minus a penalty when T exceeds the latency SLO and
when the frame's expected accuracy loss exceeds its bound. E is the board's energy over the whole
camera period (busy energy + idle power at the chosen clocks until the next frame), T the frame's
end-to-end latency; E_ref/T_ref are edge-only inference at max clocks counted the same way.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

STATE_NAMES: List[str] = [
    "bandwidth_mbps", "rtt_ms",
    "cpu_level", "gpu_level", "emc_level",                 # current clocks, 0 = lowest level, 1 = highest
    "cpu_util", "gpu_util", "emc_util",
    "temperature_c",
    "last_latency_ms", "last_energy_j",
    "importance_low25", "importance_low50", "importance_low75",
    "prev_cpu_level", "prev_gpu_level", "prev_emc_level", "prev_offload_ratio",
    "time_since_action_ms", "decision_ms",
]

# Fixed divisors (not learnt statistics) so a state means the same on every device and in every run.
STATE_SCALES: Dict[str, float] = {
    "bandwidth_mbps": 10.0, "rtt_ms": 100.0, "temperature_c": 100.0,
    "last_latency_ms": 100.0, "last_energy_j": 0.5, "time_since_action_ms": 100.0, "decision_ms": 100.0,
}
STATE_DIM = len(STATE_NAMES)
_STATE_CLIP = 10.0

BRANCH_NAMES = ("cpu", "gpu", "emc", "xi")


def build_state(obs: Dict[str, float], action_space: Optional["ActionSpace"] = None) -> np.ndarray:
    """Named features -> float32 vector in STATE_NAMES order (missing names read as 0).

    With ``action_space``, ``*_level`` features missing from ``obs`` are derived from
    ``cpu_freq_hz``/``prev_cpu_freq_hz``-style entries (what the executor and governor report).
    """
    feats = dict(obs)
    if action_space is not None:
        for d, table in zip(BRANCH_NAMES[:3], action_space.tables()[:3]):
            for prefix in ("", "prev_"):
                key, hz_key = f"{prefix}{d}_level", f"{prefix}{d}_freq_hz"
                if key not in feats and feats.get(hz_key):
                    feats[key] = action_space.level_fraction(int(np.argmin(np.abs(
                        np.asarray(table, dtype=float) - float(feats[hz_key])))), d)
    vec = np.zeros(STATE_DIM, dtype=np.float32)
    for i, name in enumerate(STATE_NAMES):
        value = feats.get(name, 0.0)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = 0.0
        if not np.isfinite(value):
            value = 0.0
        vec[i] = value / STATE_SCALES.get(name, 1.0)
    return np.clip(vec, -_STATE_CLIP, _STATE_CLIP)


def _subsample(table: Sequence[int], n: Optional[int]) -> List[int]:
    """n levels spread evenly over an ascending table, always keeping its min and max."""
    table = [int(f) for f in table]
    if n is None or n >= len(table):
        return table
    if n < 1:
        raise ValueError("a branch needs at least one level")
    if n == 1:
        return [table[-1]]
    idx = sorted(set(int(round(i)) for i in np.linspace(0, len(table) - 1, n)))
    return [table[i] for i in idx]


@dataclass
class ActionSpace:
    """The discrete levels each branch can pick: clocks in Hz (ascending), offload ratio xi in [0, 1]."""

    cpu_hz: List[int]
    gpu_hz: List[int]
    emc_hz: List[int]
    offload_ratios: List[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])

    def __post_init__(self) -> None:
        for name in ("cpu_hz", "gpu_hz", "emc_hz"):
            table = [int(f) for f in getattr(self, name)]
            if not table or any(b <= a for a, b in zip(table, table[1:])) or table[0] <= 0:
                raise ValueError(f"ActionSpace.{name} must be positive, ascending and non-empty")
            setattr(self, name, table)
        xis = [float(x) for x in self.offload_ratios]
        if not xis or any(b <= a for a, b in zip(xis, xis[1:])) or xis[0] < 0 or xis[-1] > 1:
            raise ValueError("ActionSpace.offload_ratios must be ascending values in [0, 1]")
        self.offload_ratios = xis

    @classmethod
    def from_profile(cls, profile: Any, cpu_levels: Optional[int] = 5, gpu_levels: Optional[int] = 8,
                     emc_levels: Optional[int] = 4, offload_levels: int = 11) -> "ActionSpace":
        """Sub-sample a device's big tables (25 CPU levels x ...) into a learnable grid; None keeps all."""
        xis = [round(float(x), 4) for x in np.linspace(0.0, 1.0, max(offload_levels, 1))] \
            if offload_levels > 1 else [0.0]
        return cls(_subsample(profile.cpu_hz, cpu_levels), _subsample(profile.gpu_hz, gpu_levels),
                   _subsample(profile.emc_hz, emc_levels), xis)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ActionSpace":
        return cls(list(d["cpu_hz"]), list(d["gpu_hz"]), list(d["emc_hz"]), list(d["offload_ratios"]))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def tables(self) -> Tuple[List[int], List[int], List[int], List[float]]:
        return self.cpu_hz, self.gpu_hz, self.emc_hz, self.offload_ratios

    @property
    def branches(self) -> Tuple[int, int, int, int]:
        """Number of levels per branch (cpu, gpu, emc, xi)."""
        return tuple(len(t) for t in self.tables())  # type: ignore[return-value]

    @property
    def size(self) -> int:
        """Joint action count: what a flat Q-head would have to cover."""
        return int(np.prod(self.branches))

    def level_fraction(self, level: int, branch: str) -> float:
        """Level index -> [0, 1] position in that branch's table (what the state carries)."""
        n = self.branches[BRANCH_NAMES.index(branch)]
        return level / (n - 1) if n > 1 else 1.0

    def validate(self, action: Sequence[int]) -> np.ndarray:
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.shape != (4,) or np.any(a < 0) or np.any(a >= np.asarray(self.branches)):
            raise ValueError(f"action {list(a)} outside the action space {self.branches}")
        return a

    def to_command(self, action: Sequence[int]) -> Dict[str, Union[int, float]]:
        """Discrete levels -> the command the governor and executor apply."""
        a = self.validate(action)
        return {"cpu_freq_hz": self.cpu_hz[a[0]], "gpu_freq_hz": self.gpu_hz[a[1]],
                "emc_freq_hz": self.emc_hz[a[2]], "offload_ratio": self.offload_ratios[a[3]]}

    def from_command(self, cmd: Dict[str, float]) -> np.ndarray:
        """A command (any Hz / xi values) -> the nearest levels; missing keys pick the top level / xi=0."""
        out = []
        for key, table, default in (("cpu_freq_hz", self.cpu_hz, self.cpu_hz[-1]),
                                    ("gpu_freq_hz", self.gpu_hz, self.gpu_hz[-1]),
                                    ("emc_freq_hz", self.emc_hz, self.emc_hz[-1]),
                                    ("offload_ratio", self.offload_ratios, 0.0)):
            value = float(cmd.get(key, default) if cmd.get(key) is not None else default)
            out.append(int(np.argmin(np.abs(np.asarray(table, dtype=float) - value))))
        return np.asarray(out, dtype=np.int64)

    def max_action(self, offload_ratio: float = 0.0) -> np.ndarray:
        """All clocks at the top level (jetson_clocks) with the given xi."""
        b = self.branches
        return np.asarray([b[0] - 1, b[1] - 1, b[2] - 1,
                           self.from_command({"offload_ratio": offload_ratio})[3]], dtype=np.int64)

    def all_actions(self) -> np.ndarray:
        """Every joint action, shape [size, 4] (the oracle's search space)."""
        grids = np.meshgrid(*[np.arange(n) for n in self.branches], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray([rng.integers(n) for n in self.branches], dtype=np.int64)


@dataclass
class RewardConfig:
    """Weights and bounds of the reward; all of them are ROS parameters of the policy node.

    eta trades energy (1.0) against latency (0.0). E_ref/T_ref put both terms on one scale
    (SimEnv sets them to the device's edge-only cost at max clocks unless given).
    """

    eta: float = 0.5
    latency_slo_ms: float = 100.0
    accuracy_loss_bound: float = 0.01
    energy_ref_j: float = 0.1
    latency_ref_ms: float = 10.0
    slo_penalty: float = 1.0
    accuracy_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.energy_ref_j <= 0 or self.latency_ref_ms <= 0 or self.latency_slo_ms <= 0:
            raise ValueError("energy_ref_j, latency_ref_ms and latency_slo_ms must be > 0")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def cost(energy_j: Any, latency_ms: Any, cfg: RewardConfig) -> Any:
    """The weighted, normalised energy-latency cost (lower is better; no penalties). Works on arrays."""
    return cfg.eta * np.asarray(energy_j) / cfg.energy_ref_j \
        + (1.0 - cfg.eta) * np.asarray(latency_ms) / cfg.latency_ref_ms


def penalty(latency_ms: Any, accuracy_loss: Any, cfg: RewardConfig) -> Any:
    """Constraint terms: a step plus the relative excess, so a violation is both felt and graded."""
    lat = np.asarray(latency_ms, dtype=float)
    acc = np.asarray(accuracy_loss, dtype=float)
    slo = cfg.latency_slo_ms
    bound = max(cfg.accuracy_loss_bound, 1e-6)
    p_slo = np.where(lat > slo, cfg.slo_penalty * (1.0 + (lat - slo) / slo), 0.0)
    p_acc = np.where(acc > cfg.accuracy_loss_bound,
                     cfg.accuracy_penalty * (1.0 + (acc - cfg.accuracy_loss_bound) / bound), 0.0)
    return p_slo + p_acc


def reward_array(energy_j: Any, latency_ms: Any, accuracy_loss: Any, cfg: RewardConfig) -> np.ndarray:
    """``reward`` over arrays of candidate outcomes (the oracle scores every action at once)."""
    return -cost(energy_j, latency_ms, cfg) - penalty(latency_ms, accuracy_loss, cfg)


def reward(energy_j: float, latency_ms: float, accuracy_loss: float, cfg: RewardConfig) -> float:
    """-(eta*E/E_ref + (1-eta)*T/T_ref) - penalties (SLO exceeded, accuracy loss over its bound)."""
    return float(reward_array(energy_j, latency_ms, accuracy_loss, cfg))


# Default accuracy loss per xi when no trained artifact's table is given: quantising and fusing the
# offloaded (least important) channels costs little at small xi and ~1.5 points at xi = 1. This is
# an assumption for the twin (shape of DVFO's Fig. on accuracy vs offload ratio), not a measurement;
# pass a measured table (dvfo-accuracy's xi -> accuracy_loss) to replace it.
DEFAULT_ACCURACY_TABLE: Dict[float, float] = {round(0.1 * i, 1): round(0.015 * (0.1 * i) ** 1.5, 5)
                                              for i in range(11)}


def accuracy_loss_at(xi: float, table: Dict[float, float]) -> float:
    """Linear interpolation of an xi -> accuracy-loss table."""
    keys = sorted(table)
    return float(np.interp(xi, keys, [table[k] for k in keys]))


def _importance_summary(rng: np.random.Generator, channels: int, concentration: float) -> Tuple[float, float, float]:
    """Share of attention mass in the least important 25/50/75 % of ``channels`` for one frame.

    The twin has no images, so a frame's channel importances are drawn as Gamma(k) weights with a
    per-frame concentration k (small k: a few channels carry the frame, so offloading the rest is
    nearly free; large k: importance is flat). At run time the executor reports the real summary.
    """
    w = np.sort(rng.gamma(concentration, size=channels))
    cum = np.cumsum(w) / max(float(w.sum()), 1e-12)
    return tuple(float(cum[max(0, channels * q // 100 - 1)]) for q in (25, 50, 75))  # type: ignore


def _offloaded_mass(xi: Any, summary: Sequence[float]) -> Any:
    """Attention mass in the least important share xi, interpolated from the 25/50/75 % summary."""
    return np.interp(xi, [0.0, 0.25, 0.5, 0.75, 1.0], [0.0, *summary, 1.0])


class SimEnv:
    """The device twin as a gym-like env: one step = one camera frame.

    Frames arrive on a fixed camera clock (``fps``), so which network conditions a frame meets does
    not depend on the actions taken: every policy run with the same seed sees the same frames, and
    the per-frame oracle is a true bound. Temperature follows the twin's RC model (it does not feed
    back into cost in the current twin). The frame's accuracy loss is the table's loss at xi scaled
    by how much attention mass the offloaded channels carry relative to an average frame.
    """

    def __init__(self, profile: Any = "xavier_nx", model: str = "resnet18", trace: Any = "dvfo",
                 seed: int = 0, reward_cfg: Optional[RewardConfig] = None,
                 accuracy_table: Optional[Dict[float, float]] = None, *,
                 action_space: Optional[ActionSpace] = None, split: Optional[int] = None,
                 fps: float = 30.0, episode_frames: int = 300, noise: float = 0.0,
                 cloud_gflops: float = 30000.0, bytes_per_channel_elem: Optional[float] = None,
                 concentration_range: Tuple[float, float] = (0.3, 3.0)) -> None:
        from dvfo_ros.core.traces import NetworkTrace, load_trace
        from dvfo_ros.core.twin import DeviceTwin, load_profile, model_workload

        self.profile = load_profile(profile)
        self.model = model
        self.workload = model_workload(model, split)
        self.trace = trace if isinstance(trace, NetworkTrace) else load_trace(str(trace))
        self.seed = int(seed)
        self.twin = DeviceTwin(self.profile, seed=seed, noise=noise)
        self._exact_twin = DeviceTwin(self.profile, seed=seed, noise=0.0)   # what the oracle knows
        self.action_space = action_space or ActionSpace.from_profile(self.profile)
        self.accuracy_table = dict(accuracy_table or DEFAULT_ACCURACY_TABLE)
        if fps <= 0 or episode_frames < 1:
            raise ValueError("fps must be > 0 and episode_frames >= 1")
        self.fps = float(fps)
        self.period_ms = 1000.0 / self.fps
        self.episode_frames = int(episode_frames)
        self.cloud_gflops = float(cloud_gflops)
        # None: the codec's measured wire bytes per value at each xi (twin.COMPRESSION_BY_XI)
        self.bytes_per_channel_elem = None if bytes_per_channel_elem is None else float(bytes_per_channel_elem)
        self.concentration_range = (float(concentration_range[0]), float(concentration_range[1]))
        self.channels = int(self.workload.feature_shape[0])
        self._mean_mass = self._mean_offloaded_mass()
        self._table_cache: Dict[Tuple[float, float], Tuple[np.ndarray, np.ndarray]] = {}
        if reward_cfg is None:
            e_ref, t_ref = self.reference_cost()
            reward_cfg = RewardConfig(energy_ref_j=e_ref, latency_ref_ms=t_ref,
                                      latency_slo_ms=1000.0 / self.fps)
        self.reward_cfg = reward_cfg
        self.reset(seed)

    # ---- helpers ---------------------------------------------------------------------------
    def reference_cost(self) -> Tuple[float, float]:
        """(energy J per frame period, latency ms) of edge-only inference at max clocks: the
        reward's E_ref/T_ref (energy counted the same way as ``step``: over the frame period)."""
        cmd = self.action_space.to_command(self.action_space.max_action(0.0))
        fc = self._exact_twin.frame_cost(self.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"],
                                         cmd["emc_freq_hz"], 0.0, 8.0, 20.0, frame_period_ms=self.period_ms)
        return float(fc.energy_j), float(fc.total_ms)

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

    def network_now(self) -> Tuple[float, float]:
        """(bandwidth_mbps, rtt_ms) the coming frame will meet (the policy only sees an estimate)."""
        return self.trace.at(self.t_s)

    def predict(self, action: Sequence[int], bandwidth_mbps: float, rtt_ms: float) -> Tuple[float, float]:
        """Noise-free (energy J, latency ms) of one action under a given network (a latency model)."""
        cmd = self.action_space.to_command(action)
        fc = self._exact_twin.frame_cost(self.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"],
                                         cmd["offload_ratio"], bandwidth_mbps, rtt_ms,
                                         bytes_per_channel_elem=self.bytes_per_channel_elem,
                                         cloud_gflops=self.cloud_gflops, frame_period_ms=self.period_ms)
        return float(fc.energy_j), float(fc.total_ms)

    def outcome_table(self, bandwidth_mbps: float, rtt_ms: float) -> Tuple[np.ndarray, np.ndarray]:
        """(energy J, latency ms) of every joint action (``action_space.all_actions()`` order), cached."""
        key = (round(float(bandwidth_mbps), 6), round(float(rtt_ms), 6))
        if key not in self._table_cache:
            if len(self._table_cache) > 4096:
                self._table_cache.clear()
            s = self.action_space
            energy = np.empty(s.size)
            latency = np.empty(s.size)
            for i, a in enumerate(s.all_actions()):
                fc = self._exact_twin.frame_cost(self.workload, s.cpu_hz[a[0]], s.gpu_hz[a[1]], s.emc_hz[a[2]],
                                                 s.offload_ratios[a[3]], key[0], key[1],
                                                 bytes_per_channel_elem=self.bytes_per_channel_elem,
                                                 cloud_gflops=self.cloud_gflops, frame_period_ms=self.period_ms)
                energy[i], latency[i] = fc.energy_j, fc.total_ms
            self._table_cache[key] = (energy, latency)
        return self._table_cache[key]

    def _state(self) -> np.ndarray:
        return build_state(self._obs)

    # ---- gym-like API ----------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """Start an episode at a random point of the trace, device cool, clocks at max."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.twin.rng = np.random.default_rng(seed + 1)
        elif not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(self.seed)
        self.t_s = float(self._rng.uniform(0.0, self.trace.duration_s))
        self.frames = 0
        self.twin.temperature_c = float(self.profile.thermal.get("ambient_c", 25.0))
        self.importance = _importance_summary(self._rng, self.channels, self._draw_concentration(self._rng))
        bw, rtt = self.trace.at(self.t_s)
        top = self.action_space.max_action(0.0)
        self._obs: Dict[str, float] = {
            "bandwidth_mbps": bw, "rtt_ms": rtt, "temperature_c": self.twin.temperature_c,
            **{f"{d}_level": self.action_space.level_fraction(int(top[i]), d) for i, d in enumerate(BRANCH_NAMES[:3])},
            **{f"prev_{d}_level": self.action_space.level_fraction(int(top[i]), d)
               for i, d in enumerate(BRANCH_NAMES[:3])},
            "importance_low25": self.importance[0], "importance_low50": self.importance[1],
            "importance_low75": self.importance[2],
        }
        return self._state()

    def step(self, action: Sequence[int], decision_ms: float = 0.0,
             decision_on_path: bool = True) -> Tuple[np.ndarray, float, bool, Dict[str, Any]]:
        """Run one frame with ``action``; ``decision_ms`` is the time taken to choose it, which adds
        to the frame's latency (and idle energy) unless the choice overlapped the previous frame."""
        a = self.action_space.validate(action)
        cmd = self.action_space.to_command(a)
        bw, rtt = self.trace.at(self.t_s)
        fc = self.twin.frame_cost(self.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"],
                                  cmd["offload_ratio"], bw, rtt, bytes_per_channel_elem=self.bytes_per_channel_elem,
                                  cloud_gflops=self.cloud_gflops)
        on_path_ms = max(float(decision_ms), 0.0) if decision_on_path else 0.0
        idle_w = self.twin.idle_power_w(cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"])
        latency_ms = fc.total_ms + on_path_ms
        # Energy per frame = busy energy + idle power at these clocks for the rest of the camera
        # period (a decision on the critical path is idle time too): what the board's power rail
        # integrates from one frame to the next. Every policy is charged the same way.
        interval_ms = max(self.period_ms, latency_ms)
        energy_j = fc.energy_j + idle_w * (interval_ms - fc.total_ms) / 1e3
        # The share no clock setting changes (carrier, DRAM refresh, regulators: the profile's
        # static_w) over the interval; what is left is the CPU/GPU/SoC rails' energy, the part DVFS
        # can act on (tegrastats' VDD_CPU_GPU_CV + VDD_SOC on a Xavier NX).
        soc_energy_j = energy_j - self.profile.static_w * interval_ms / 1e3
        acc_loss = float(self.accuracy_loss(cmd["offload_ratio"]))
        c = float(cost(energy_j, latency_ms, self.reward_cfg))
        pen = float(penalty(latency_ms, acc_loss, self.reward_cfg))
        r = -c - pen
        avg_w = energy_j / (interval_ms / 1e3)
        self.twin.step_thermal(interval_ms / 1e3, avg_w)
        self.t_s += 1.0 / self.fps
        self.frames += 1
        self.importance = _importance_summary(self._rng, self.channels, self._draw_concentration(self._rng))
        levels = {f"{d}_level": self.action_space.level_fraction(int(a[i]), d) for i, d in enumerate(BRANCH_NAMES[:3])}
        self._obs = {
            "bandwidth_mbps": bw, "rtt_ms": rtt, **levels,        # estimate = what the last frame measured
            "cpu_util": fc.cpu_util, "gpu_util": fc.gpu_util, "emc_util": fc.emc_util,
            "temperature_c": self.twin.temperature_c, "last_latency_ms": latency_ms, "last_energy_j": energy_j,
            "importance_low25": self.importance[0], "importance_low50": self.importance[1],
            "importance_low75": self.importance[2],
            **{f"prev_{k}": v for k, v in levels.items()}, "prev_offload_ratio": cmd["offload_ratio"],
            "time_since_action_ms": interval_ms, "decision_ms": float(decision_ms),
        }
        done = self.frames >= self.episode_frames
        info = {"energy_j": energy_j, "soc_energy_j": soc_energy_j, "latency_ms": latency_ms,
                "accuracy_loss": acc_loss,
                "slo_violation": latency_ms > self.reward_cfg.latency_slo_ms, "cost": c, "penalty": pen,
                "command": cmd, "bandwidth_mbps": bw, "rtt_ms": rtt, "edge_ms": fc.edge_ms,
                "transfer_ms": fc.transfer_ms, "bytes_sent": fc.bytes_sent, "power_w": fc.power_w,
                "temperature_c": self.twin.temperature_c, "interval_ms": interval_ms}
        return self._state(), r, done, info

    def rewards_of_all_actions(self) -> np.ndarray:
        """Reward every joint action would earn on the coming frame (noise-free): the oracle's view."""
        bw, rtt = self.network_now()
        energy, latency = self.outcome_table(bw, rtt)
        xis = np.asarray(self.action_space.offload_ratios)[self.action_space.all_actions()[:, 3]]
        return reward_array(energy, latency, self.accuracy_loss(xis), self.reward_cfg)

    def clone(self) -> "SimEnv":
        """An independent copy (same frame, same RNG state) for look-ahead search."""
        return copy.deepcopy(self)
