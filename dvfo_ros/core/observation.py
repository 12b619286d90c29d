"""What the executor tells the policy after each frame: a named feature dict.

Names follow the MDP's state (dvfo_ros.core.env); the policy node turns the dict into the state
vector with env.build_state, so both ends agree by name, not by position.
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence, Tuple


class ObservationTracker:
    """Keeps running estimates (bandwidth, RTT) and the last action/device state between frames."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.a = smoothing
        self.f: Dict[str, float] = {"bandwidth_mbps": 0.0, "rtt_ms": 0.0}
        self._last_action_t = time.monotonic()

    def on_action(self, offload_ratio: float, decision_ms: float, freqs_hz: Sequence[int]) -> None:
        self._last_action_t = time.monotonic()
        self.f["prev_offload_ratio"] = float(offload_ratio)
        self.f["decision_ms"] = float(decision_ms)
        for name, hz in zip(("prev_cpu_freq_hz", "prev_gpu_freq_hz", "prev_emc_freq_hz"), freqs_hz):
            self.f[name] = float(hz)

    def on_device_state(self, s) -> None:
        self.f.update(cpu_freq_hz=float(s.cpu_freq_hz), gpu_freq_hz=float(s.gpu_freq_hz),
                      emc_freq_hz=float(s.emc_freq_hz), cpu_util=float(s.cpu_util), gpu_util=float(s.gpu_util),
                      emc_util=float(s.emc_util), temperature_c=float(s.temperature_c), power_w=float(s.power_w))

    def _ewma(self, key: str, value: float) -> None:
        old = self.f.get(key, 0.0)
        self.f[key] = value if old <= 0.0 else (1 - self.a) * old + self.a * value

    def on_frame(self, r) -> Tuple[List[str], List[float]]:
        """Update from a FrameOutcome; returns (names, values) for the Observation message."""
        if r.cloud_used and r.transfer_ms > 0 and r.bytes_sent > 0:
            self._ewma("bandwidth_mbps", r.bytes_sent * 8 / 1e6 / (r.transfer_ms / 1000.0))
            self._ewma("rtt_ms", r.transfer_ms)
        self.f["last_latency_ms"] = float(r.total_ms)
        self.f["last_energy_j"] = float(r.energy_j)
        self.f["last_offload_ratio"] = float(r.offload_ratio)
        self.f["last_fallback"] = 1.0 if r.fallback else 0.0
        self.f.update({k: float(v) for k, v in r.importance.items()})
        self.f["time_since_action_ms"] = (time.monotonic() - self._last_action_t) * 1000.0
        names = sorted(self.f)
        return names, [float(self.f[n]) for n in names]
