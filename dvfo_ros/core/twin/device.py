"""Device twin: what a frame costs (ms, J) on a Jetson at given CPU/GPU/EMC clocks and offload ratio.

The governor's ``sim`` backend, the simulated training environment and ``dvfo-bench`` all price
frames here, so a policy learns against the same physics it is judged by. The model is small
enough to read in one sitting:

latency, per backbone stage s (a roofline with a CPU launch floor)::

    t_s = max( flops_s / (gpu_hz * gpu_macs_per_cycle * gpu_efficiency),     # compute-bound
               bytes_s / (emc_hz * emc_bytes_per_cycle * emc_efficiency),    # memory-bound
               kernels_s * cpu_cycles_per_kernel / cpu_hz )                  # launch-bound
    frame = cpu_pre_cycles/cpu_hz + sum(head t_s) + max(edge tail, transfer + cloud)
            + [cpu_fuse_cycles/cpu_hz if offloading] + cpu_post_cycles/cpu_hz

power, per domain d in (cpu, gpu, emc)::

    P = static_w + sum_d [ leak_w_d * V_d/V_d,max
                           + c_eff_nf_d * 1e-9 * (idle_activity_d + (1 - idle_activity_d) * util_d) * f_d * V_d(f_d)^2 ]

energy integrates that power over the frame (idle power while the edge waits for the cloud). With
``frame_period_ms`` (a camera at a fixed rate) the frame also pays the board's idle power at the
chosen clocks for the rest of the period: ``E = E_busy + P_idle(f) * (max(period, T) - T)``, the
MDP's one definition of frame energy (``dvfo_ros.core.mdp.energy``).
That is what a Jetson's INA3221 integrates between two camera frames, and it is why "race to
idle at max clocks" is not free: the idle power at max clocks (~5 W on Xavier NX) is paid
until the next frame arrives.
Lower clocks stretch the time (static and leakage energy grow as 1/f) while V(f)^2 shrinks the
dynamic energy per cycle down to V_min: the energy-optimal clock is interior, which is the
trade-off the learned policy exploits. Numbers and their public sources live in the profile YAML.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import yaml

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms
from dvfo_ros.core.twin.workload import Workload

DOMAINS = ("cpu", "gpu", "emc")
PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
_FUSE_BYTES_PER_CLASS = 4

# Wire bytes per offloaded feature-map value as a function of xi. Measured with the project's codec
# (codec.py: int8 per-channel + zlib, header included) on the attention-chosen channels of the TRAINED
# resnet18 scenes artifact fed 224-px frames (28x28 split maps; `python scripts/wire_bytes.py --model
# resnet18 --dataset scenes`, the artifact trained with --offload-sparsity 3): raw-float32 / wire ratio
# 9.2 at xi=0.125, 9.3 at 0.25, 8.9 at 0.5, 8.3 at 0.75, 7.2 at 1.0. (Without that penalty the same
# maps compress 6.0-6.7x.) bytes per value = 4 / ratio; np.interp holds the end values outside the
# measured range.
COMPRESSION_BY_XI: Dict[float, float] = {0.125: 9.2, 0.25: 9.3, 0.5: 8.9, 0.75: 8.3, 1.0: 7.2}


def bytes_per_value_at(offload_ratio: float) -> float:
    """Wire bytes per offloaded float value at this xi (interpolated from COMPRESSION_BY_XI)."""
    keys = sorted(COMPRESSION_BY_XI)
    ratio = float(np.interp(float(offload_ratio), keys, [COMPRESSION_BY_XI[k] for k in keys]))
    return 4.0 / ratio


_SCALARS = ("static_w", "gpu_macs_per_cycle", "gpu_efficiency", "emc_bytes_per_cycle", "emc_efficiency",
            "cpu_macs_per_cycle", "cpu_efficiency", "cpu_pre_cycles", "cpu_post_cycles", "cpu_fuse_cycles",
            "cpu_cycles_per_kernel")


class ProfileError(ValueError, DvfoError):
    """A profile name/file that cannot be loaded or whose numbers make no physical sense."""


@dataclass
class DeviceProfile:
    """One edge device's frequency tables and latency/power model (the YAML schema, 1:1).

    Keys (all frequencies in Hz, ascending; see ``profiles/xavier_nx.yaml`` for a commented one):

    - ``name``, ``description``
    - ``cpu_hz``, ``gpu_hz``, ``emc_hz``: the settable levels of each clock domain
    - ``voltage_v``: per domain, V(f). Either ``{v_min, v_max, knee_hz}`` (flat at v_min up to
      knee_hz, then linear to v_max at the top level: the shape of a Tegra DVFS table) or a list
      with one voltage per table level.
    - ``c_eff_nf``: per domain, effective switched capacitance (nF): P_dyn = c*1e-9*a*f*V^2
    - ``leak_w``: per domain, leakage (W) at v_max, scaled by V/v_max
    - ``idle_activity``: per domain, activity factor a when the domain is idle but clocked
    - ``static_w``: board power that no clock changes (regulators, carrier, DRAM refresh)
    - ``gpu_macs_per_cycle``, ``gpu_efficiency``: GPU peak MAC/cycle and achieved fraction
    - ``emc_bytes_per_cycle``, ``emc_efficiency``: DRAM bytes per EMC clock and achieved fraction
    - ``cpu_macs_per_cycle``, ``cpu_efficiency``: FP32 MACs per CPU clock over all cores (NEON) and the
      achieved fraction, for a network run on the CPU alone (the local-CPU target)
    - ``cpu_pre_cycles``, ``cpu_post_cycles``, ``cpu_fuse_cycles``, ``cpu_cycles_per_kernel``
    - ``thermal``: ``{r_c_per_w, c_j_per_c, ambient_c}`` first-order RC model of the module
    - ``rails``: INA3221 rail name -> list of domains it carries (``static`` = the static share,
      ``all`` = the whole board), so the sim reports power the way tegrastats names it
    """

    name: str
    cpu_hz: List[int]
    gpu_hz: List[int]
    emc_hz: List[int]
    description: str = ""
    # per domain: a V per table level, or a knee fit {v_min, v_max, knee_hz}
    voltage_v: Dict[str, Union[List[float], Dict[str, float]]] = field(default_factory=dict)
    c_eff_nf: Dict[str, float] = field(default_factory=dict)
    leak_w: Dict[str, float] = field(default_factory=dict)
    idle_activity: Dict[str, float] = field(default_factory=dict)
    static_w: float = 1.0
    gpu_macs_per_cycle: float = 256.0
    gpu_efficiency: float = 0.4
    emc_bytes_per_cycle: float = 16.0
    emc_efficiency: float = 0.6
    cpu_macs_per_cycle: float = 32.0
    cpu_efficiency: float = 0.25
    cpu_pre_cycles: float = 2.0e6
    cpu_post_cycles: float = 0.5e6
    cpu_fuse_cycles: float = 0.3e6
    cpu_cycles_per_kernel: float = 2.0e4
    thermal: Dict[str, float] = field(default_factory=lambda: {"r_c_per_w": 3.0, "c_j_per_c": 40.0,
                                                               "ambient_c": 25.0})
    rails: Dict[str, List[str]] = field(default_factory=lambda: {"VDD_IN": ["all"]})

    def __post_init__(self) -> None:
        # PyYAML reads "3.0e6" as a string (YAML 1.1 wants "3.0e+6"): coerce every scalar knob
        for key in _SCALARS:
            try:
                setattr(self, key, float(getattr(self, key)))
            except (TypeError, ValueError):
                raise ProfileError(f"profile {self.name}: {key} must be a number") from None
        for key in ("c_eff_nf", "leak_w", "idle_activity", "thermal"):
            try:
                setattr(self, key, {k: float(v) for k, v in dict(getattr(self, key)).items()})
            except (TypeError, ValueError):
                raise ProfileError(f"profile {self.name}: {key} values must be numbers") from None
        for d in DOMAINS:
            table = [int(f) for f in getattr(self, f"{d}_hz")]
            if not table:
                raise ProfileError(f"profile {self.name}: {d}_hz is empty")
            if any(b <= a for a, b in zip(table, table[1:])) or table[0] <= 0:
                raise ProfileError(f"profile {self.name}: {d}_hz must be positive and strictly ascending")
            setattr(self, f"{d}_hz", table)
            for key in ("c_eff_nf", "leak_w", "idle_activity"):
                getattr(self, key).setdefault(d, 0.0)
                if getattr(self, key)[d] < 0:
                    raise ProfileError(f"profile {self.name}: {key}.{d} must be >= 0")
            self.voltage_v.setdefault(d, {"v_min": 1.0, "v_max": 1.0, "knee_hz": table[-1]})
            v = self.voltage_v[d]
            if isinstance(v, list) and len(v) != len(table):
                raise ProfileError(f"profile {self.name}: voltage_v.{d} has {len(v)} values for "
                                   f"{len(table)} levels")
            if isinstance(v, dict) and not {"v_min", "v_max"} <= set(v):
                raise ProfileError(f"profile {self.name}: voltage_v.{d} needs v_min and v_max")
        for key in ("gpu_macs_per_cycle", "gpu_efficiency", "emc_bytes_per_cycle", "emc_efficiency",
                    "cpu_macs_per_cycle", "cpu_efficiency"):
            if not getattr(self, key) > 0:
                raise ProfileError(f"profile {self.name}: {key} must be > 0")

    def table(self, domain: str) -> List[int]:
        return list(getattr(self, f"{domain}_hz"))

    def volts(self, domain: str, freq_hz: float) -> float:
        """V(f) of a domain: the table value (interpolated) or the knee fit."""
        table = self.table(domain)
        v = self.voltage_v[domain]
        if isinstance(v, list):
            return float(np.interp(freq_hz, table, [float(x) for x in v]))
        v_min, v_max = float(v["v_min"]), float(v["v_max"])
        knee = float(v.get("knee_hz", table[0]))
        top = float(table[-1])
        if freq_hz <= knee or top <= knee:
            return v_min
        return v_min + (v_max - v_min) * min(1.0, (freq_hz - knee) / (top - knee))

    def v_max(self, domain: str) -> float:
        return self.volts(domain, self.table(domain)[-1])

    def to_yaml(self, path: str) -> None:
        """Write this profile in the schema ``load_profile`` reads (what ``dvfo-profile`` emits)."""
        data = asdict(self)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"# dvfo_ros device profile '{self.name}'; schema: see DeviceProfile docstring\n")
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)


def list_profiles() -> List[str]:
    """Names of the profiles shipped with the package."""
    return sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".yaml"))


def load_profile(name_or_path: "str | DeviceProfile") -> DeviceProfile:
    """A shipped profile by name ("nano", "tx2", "xavier_nx", "orin_nx") or a YAML file path."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    path = str(name_or_path)
    if not (path.endswith((".yaml", ".yml")) or os.sep in path):
        path = os.path.join(PROFILE_DIR, f"{name_or_path}.yaml")
        if not os.path.isfile(path):
            raise ProfileError(f"unknown profile '{name_or_path}'; choose one of "
                               f"{', '.join(list_profiles())} or give a YAML path")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a mapping")
    known = set(DeviceProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"profile {path}: unknown keys {', '.join(unknown)}")
    missing = [k for k in ("name", "cpu_hz", "gpu_hz", "emc_hz") if k not in data]
    if missing:
        raise ProfileError(f"profile {path}: missing keys {', '.join(missing)}")
    try:
        return DeviceProfile(**data)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"profile {path}: {exc}") from None


@dataclass
class FrameCost:
    """Cost of one frame. ``edge_ms`` is edge compute (busy) time; ``total_ms`` is end to end."""

    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    total_ms: float
    energy_j: float
    power_w: float           # mean edge board power over the frame
    cpu_util: float
    gpu_util: float
    emc_util: float
    bytes_sent: int
    rails_w: Dict[str, float] = field(default_factory=dict)


class DeviceTwin:
    """Prices frames and integrates temperature for one profile. ``noise`` (relative sigma)
    perturbs latency and power log-normally, seeded, so training sees a board, not a formula."""

    def __init__(self, profile: "DeviceProfile | str", seed: int = 0, noise: float = 0.0) -> None:
        self.profile = load_profile(profile)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.temperature_c = float(self.profile.thermal.get("ambient_c", 25.0))

    # ---- power -------------------------------------------------------------------------------
    def _domain_power(self, domain: str, freq_hz: float, util: float) -> float:
        p = self.profile
        v = p.volts(domain, freq_hz)
        a_idle = p.idle_activity[domain]
        activity = a_idle + (1.0 - a_idle) * min(max(util, 0.0), 1.0)
        dyn = p.c_eff_nf[domain] * 1e-9 * activity * freq_hz * v * v
        leak = p.leak_w[domain] * v / max(p.v_max(domain), 1e-9)
        return dyn + leak

    def domain_power_w(self, cpu_hz: float, gpu_hz: float, emc_hz: float, cpu_util: float,
                       gpu_util: float, emc_util: float) -> Dict[str, float]:
        """Power of each domain plus ``static`` at these clocks and utilisations (W)."""
        return {"cpu": self._domain_power("cpu", cpu_hz, cpu_util),
                "gpu": self._domain_power("gpu", gpu_hz, gpu_util),
                "emc": self._domain_power("emc", emc_hz, emc_util),
                "static": self.profile.static_w}

    def idle_power_w(self, cpu_hz: float, gpu_hz: float, emc_hz: float) -> float:
        """Board power with nothing running but the clocks held where they are."""
        return sum(self.domain_power_w(cpu_hz, gpu_hz, emc_hz, 0.0, 0.0, 0.0).values())

    def rails_from_domains(self, parts: Dict[str, float]) -> Dict[str, float]:
        """Map domain powers onto the profile's INA3221 rail names."""
        out = {}
        for rail, members in self.profile.rails.items():
            if "all" in members:
                out[rail] = sum(parts.values())
            else:
                out[rail] = sum(parts.get(m, 0.0) for m in members)
        return out

    # ---- latency -----------------------------------------------------------------------------
    def stage_times_s(self, layer: Dict, cpu_hz: float, gpu_hz: float, emc_hz: float,
                      fraction: float = 1.0, on_cpu: bool = False,
                      shares: Tuple[float, float] = (1.0, 1.0)) -> Dict[str, float]:
        """Roofline of one stage: compute, memory and launch times (s) and the stage time. ``on_cpu``: the
        stage's MACs run on the CPU cores (no GPU, no kernel launches). ``shares``: the (CPU, GPU) share
        this frame gets while co-runners hold the rest (processor sharing: its compute stretches by 1/share)."""
        p = self.profile
        t_mem = fraction * layer["bytes"] / (emc_hz * p.emc_bytes_per_cycle * p.emc_efficiency)
        if on_cpu:
            t_cpu = fraction * layer["flops"] / (cpu_hz * p.cpu_macs_per_cycle * p.cpu_efficiency) / shares[0]
            return {"gpu": 0.0, "mem": t_mem, "cpu": t_cpu, "t": max(t_cpu, t_mem)}
        t_gpu = fraction * layer["flops"] / (gpu_hz * p.gpu_macs_per_cycle * p.gpu_efficiency) / shares[1]
        t_cpu = layer.get("kernels", 1) * p.cpu_cycles_per_kernel / cpu_hz / shares[0] if fraction > 0 else 0.0
        return {"gpu": t_gpu, "mem": t_mem, "cpu": t_cpu, "t": max(t_gpu, t_mem, t_cpu)}

    def measure_stage(self, layer: Dict, cpu_hz: float, gpu_hz: float, emc_hz: float) -> Tuple[float, float]:
        """(seconds, board watts) of ONE stage run alone, as a profiler times it on a board: the stage's
        roofline time and the power at its utilisations, each with this twin's measurement noise."""
        st = self.stage_times_s(layer, cpu_hz, gpu_hz, emc_hz)
        t = max(st["t"], 1e-9)
        parts = self.domain_power_w(cpu_hz, gpu_hz, emc_hz, st["cpu"] / t, max(st["gpu"], st["mem"]) / t,
                                    st["mem"] / t)
        jitter = self._jitter if self.noise > 0 else (lambda: 1.0)
        return t * jitter(), sum(parts.values()) * jitter()

    def frame_cost(self, workload: Workload, cpu_hz: float, gpu_hz: float, emc_hz: float,
                   offload_ratio: float, bandwidth_mbps: float, rtt_ms: float, *,
                   bytes_per_channel_elem: Optional[float] = None, edge_tail_fraction: Optional[float] = None,
                   cloud_gflops: float = 30000.0, frame_period_ms: Optional[float] = None,
                   on_cpu: bool = False, corunner: Tuple[float, float] = (0.0, 0.0)) -> FrameCost:
        """Latency/energy of one frame: head on the edge, share ``offload_ratio`` (xi) of the
        split's channels to the cloud, the rest of the tail on the edge, in parallel.

        ``bytes_per_channel_elem`` None: the measured codec ratio at this xi (``bytes_per_value_at``).
        ``frame_period_ms``: camera period; the energy then covers the whole period (idle power at
        these clocks after the frame finishes), see the module docstring. None: busy energy only.
        ``on_cpu``: the edge's stages run on the CPU cores (the local-CPU target; the GPU idles at its clock).
        ``corunner``: the (CPU, GPU) share other processes hold (interference): this frame's compute there
        stretches by 1 / (1 - share), and the board's utilisation (so its power) counts the co-runners too."""
        p = self.profile
        co = (min(max(float(corunner[0]), 0.0), 0.95), min(max(float(corunner[1]), 0.0), 0.95))
        shares = (1.0 - co[0], 1.0 - co[1])
        xi = min(max(float(offload_ratio), 0.0), 1.0)
        if min(cpu_hz, gpu_hz, emc_hz) <= 0:
            raise ValueError("clock frequencies must be positive Hz")
        tail_frac = (1.0 - xi) if edge_tail_fraction is None else min(max(edge_tail_fraction, 0.0), 1.0)
        busy = {"cpu": 0.0, "gpu": 0.0, "emc": 0.0}
        t_head = 0.0
        t_tail = 0.0
        for layer in workload.layers:
            frac = 1.0 if layer["where"] == "head" else tail_frac
            if frac <= 0.0:
                continue
            st = self.stage_times_s(layer, cpu_hz, gpu_hz, emc_hz, frac, on_cpu, shares)
            if on_cpu:
                busy["cpu"] += max(st["cpu"], st["mem"])
            else:
                busy["gpu"] += max(st["gpu"], st["mem"])   # GPU is "busy" (GR3D load) while stalled too
                busy["cpu"] += st["cpu"]
            busy["emc"] += st["mem"]
            if layer["where"] == "head":
                t_head += st["t"]
            else:
                t_tail += st["t"]
        t_cpu_pre = p.cpu_pre_cycles / cpu_hz / shares[0]
        t_cpu_post = p.cpu_post_cycles / cpu_hz / shares[0]
        t_fuse = p.cpu_fuse_cycles / cpu_hz / shares[0] if xi > 0 else 0.0
        busy["cpu"] += t_cpu_pre + t_cpu_post + t_fuse
        c, h, w = workload.feature_shape
        if bytes_per_channel_elem is None:
            bytes_per_channel_elem = bytes_per_value_at(xi)
        bytes_sent = int(round(xi * c * h * w * bytes_per_channel_elem)) if xi > 0 else 0
        if xi > 0:
            bw = max(float(bandwidth_mbps), 1e-3)
            transfer_s = bytes_sent * 8.0 / (bw * 1e6) + max(float(rtt_ms), 0.0) / 1e3
            cloud_s = xi * workload.tail_flops / (cloud_gflops * 1e9)
        else:
            transfer_s = cloud_s = 0.0
        if self.noise > 0:
            t_head *= self._jitter()
            t_tail *= self._jitter()
            transfer_s *= self._jitter()
        edge_s = t_cpu_pre + t_head + t_tail + t_fuse + t_cpu_post
        total_s = t_cpu_pre + t_head + max(t_tail, transfer_s + cloud_s) + t_fuse + t_cpu_post
        util = {d: min(1.0, busy[d] / total_s) for d in DOMAINS}
        util["cpu"] += (1.0 - util["cpu"]) * co[0]      # what tegrastats reads: ours and the co-runners'
        util["gpu"] += (1.0 - util["gpu"]) * co[1]
        parts = self.domain_power_w(cpu_hz, gpu_hz, emc_hz, util["cpu"], util["gpu"], util["emc"])
        if self.noise > 0:
            parts = {k: v * self._jitter() for k, v in parts.items()}
        power_w = sum(parts.values())
        energy_j = power_w * total_s
        if frame_period_ms is not None:
            total_ms = total_s * 1e3
            energy_j = float(frame_energy_j(energy_j, total_ms, self.idle_power_w(cpu_hz, gpu_hz, emc_hz),
                                            frame_interval_ms(frame_period_ms, total_ms)))
        return FrameCost(
            edge_ms=edge_s * 1e3, transfer_ms=transfer_s * 1e3, cloud_ms=cloud_s * 1e3,
            total_ms=total_s * 1e3, energy_j=energy_j, power_w=power_w,
            cpu_util=util["cpu"], gpu_util=util["gpu"], emc_util=util["emc"],
            bytes_sent=bytes_sent, rails_w=self.rails_from_domains(parts))

    def _jitter(self) -> float:
        return float(math.exp(self.rng.normal(0.0, self.noise) - 0.5 * self.noise ** 2))

    # ---- thermal -----------------------------------------------------------------------------
    def step_thermal(self, dt_s: float, power_w: float) -> float:
        """Advance the first-order RC thermal model by ``dt_s`` at ``power_w``; returns deg C."""
        th = self.profile.thermal
        r, cap, amb = float(th["r_c_per_w"]), float(th["c_j_per_c"]), float(th["ambient_c"])
        steady = amb + power_w * r
        self.temperature_c = steady + (self.temperature_c - steady) * math.exp(-max(dt_s, 0.0) / (r * cap))
        return self.temperature_c
