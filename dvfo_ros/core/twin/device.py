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
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms
from dvfo_ros.core.twin.profile import (DOMAINS, PROFILE_DIR, DeviceProfile, ProfileError,  # noqa: F401 - re-exported
                                        list_profiles, load_profile)
from dvfo_ros.core.twin.workload import Workload

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
    fallback: bool = False   # the cloud's answer would come after the deadline: the frame finished without it


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
                   on_cpu: bool = False, corunner: Tuple[float, float] = (0.0, 0.0),
                   deadline_ms: Optional[float] = None) -> FrameCost:
        """Latency/energy of one frame: head on the edge, share ``offload_ratio`` (xi) of the
        split's channels to the cloud, the rest of the tail on the edge, in parallel.

        ``bytes_per_channel_elem`` None: the measured codec ratio at this xi (``bytes_per_value_at``).
        ``frame_period_ms``: camera period; the energy then covers the whole period (idle power at
        these clocks after the frame finishes), see the module docstring. None: busy energy only.
        ``on_cpu``: the edge's stages run on the CPU cores (the local-CPU target; the GPU idles at its clock).
        ``corunner``: the (CPU, GPU) share other processes hold (interference): this frame's compute there
        stretches by 1 / (1 - share), and the board's utilisation (so its power) counts the co-runners too.
        ``deadline_ms``: the executor's wait for the cloud (its ``deadline_ms``, counted from the frame's start).
        An answer due later is not waited for: the frame ends at the deadline (or when the local tail is done)
        without it, and when nothing of the tail stayed local (xi = 1, or a whole-layer cut) the tail then runs
        here, as the executor does (``fallback``). None: the answer is always waited for."""
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
            st = self._run_stage(busy, layer, cpu_hz, gpu_hz, emc_hz, frac, on_cpu, shares)
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
        deadline_s = float(deadline_ms) / 1e3 if deadline_ms is not None and xi > 0 else math.inf
        fallback = t_cpu_pre + t_head + transfer_s + cloud_s > deadline_s
        if fallback:
            t_rest = 0.0
            if tail_frac <= 0.0:      # nothing of the tail ran here: the executor runs all of it after the wait
                for layer in workload.layers:
                    if layer["where"] != "head":
                        t_rest += self._run_stage(busy, layer, cpu_hz, gpu_hz, emc_hz, 1.0, on_cpu, shares)["t"]
            busy["cpu"] -= t_fuse                  # no answer to fuse
            edge_s = t_cpu_pre + t_head + t_tail + t_rest + t_cpu_post
            total_s = max(deadline_s, t_cpu_pre + t_head + t_tail) + t_rest + t_cpu_post
        else:
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
            bytes_sent=bytes_sent, rails_w=self.rails_from_domains(parts), fallback=bool(fallback))

    def _run_stage(self, busy: Dict[str, float], layer: Dict, cpu_hz: float, gpu_hz: float, emc_hz: float,
                   fraction: float, on_cpu: bool, shares: Tuple[float, float]) -> Dict[str, float]:
        """``stage_times_s``, its busy time added to ``busy`` per domain."""
        st = self.stage_times_s(layer, cpu_hz, gpu_hz, emc_hz, fraction, on_cpu, shares)
        if on_cpu:
            busy["cpu"] += max(st["cpu"], st["mem"])
        else:
            busy["gpu"] += max(st["gpu"], st["mem"])   # GPU is "busy" (GR3D load) while stalled too
            busy["cpu"] += st["cpu"]
        busy["emc"] += st["mem"]
        return st

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
