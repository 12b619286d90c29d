"""The robot's side of the state: running estimates from measured frames, described with ``observe``.

The executor feeds this tracker what it measures (each frame's outcome, the governor's DeviceState,
the action in force) and publishes the named features; the policy turns them into the vector with
``build_state``. The twin describes its frames with the same ``observe``, so every feature has the
meaning ``features.FEATURES`` gives it on both sides.

The network estimate comes from the offloaded frames' transfers: ``LinkEstimator`` fits
``transfer_ms = rtt_ms + 8 * bytes / (bandwidth_mbps * 1e3)`` over a window of recent frames (the
twin's transfer model), so ``bandwidth_mbps`` and ``rtt_ms`` mean the link's rate and round trip
as in the twin. A frame that offloads nothing measures nothing: the estimate then stays as it was.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.mdp.energy import frame_interval_ms
from dvfo_ros.core.mdp.features import observe


class LinkEstimator:
    """Least-squares fit of (rtt, 1/bandwidth) over the last ``window`` transfers.

    When the payload sizes in the window hardly differ (one fixed xi), the two cannot be told
    apart: the round trip then keeps its last fitted value (0 until one exists) and the rest of
    the transfer time is put down to bandwidth.
    """

    def __init__(self, window: int = 32, min_spread: float = 0.2) -> None:
        self.samples: Deque[Tuple[float, float]] = deque(maxlen=int(window))   # (kbit, ms)
        self.min_spread = float(min_spread)
        self.bandwidth_mbps = 0.0
        self.rtt_ms = 0.0

    def add(self, bytes_sent: float, transfer_ms: float) -> None:
        if bytes_sent > 0 and transfer_ms > 0 and np.isfinite(transfer_ms):
            self.samples.append((float(bytes_sent) * 8.0 / 1e3, float(transfer_ms)))
            self._fit()

    def _fit(self) -> None:
        x = np.asarray([s[0] for s in self.samples])
        t = np.asarray([s[1] for s in self.samples])
        if len(x) >= 2 and float(np.std(x)) > self.min_spread * float(np.mean(x)):
            slope, intercept = np.polyfit(x, t, 1)
            if slope > 0 and intercept >= 0:
                self.rtt_ms, self.bandwidth_mbps = float(intercept), float(1.0 / slope)
                return
        rtt = min(self.rtt_ms, float(np.min(t)) * 0.999)
        self.rtt_ms = max(rtt, 0.0)
        self.bandwidth_mbps = float(np.mean(x) / max(float(np.mean(t)) - self.rtt_ms, 1e-6))

    def estimate(self) -> Tuple[float, float]:
        """(bandwidth_mbps, rtt_ms); (0, 0) before the first offloaded frame."""
        return self.bandwidth_mbps, self.rtt_ms


class ObservationTracker:
    """What the executor knows between frames: the link estimate, the device state, the action in force."""

    def __init__(self, window: int = 32) -> None:
        self.link = LinkEstimator(window)
        self.device: Dict[str, float] = {}
        self.command: Optional[Dict[str, float]] = None
        self.decision_ms = 0.0
        self.policy = ""        # policy_mode of the action in force ('' = none yet, or not said)
        self.f: Dict[str, float] = {}

    def on_action(self, offload_ratio: float, decision_ms: float, freqs_hz: Sequence[int], policy: str = "") -> None:
        cpu, gpu, emc = (float(f) for f in freqs_hz)
        self.command = {"cpu_freq_hz": cpu, "gpu_freq_hz": gpu, "emc_freq_hz": emc,
                        "offload_ratio": float(offload_ratio)}
        self.decision_ms = float(decision_ms)
        self.policy = str(policy)

    def on_device_state(self, s: Any) -> None:
        self.device = {k: float(getattr(s, k)) for k in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "cpu_util",
                                                         "gpu_util", "emc_util", "temperature_c", "power_w")}

    def on_frame(self, r: Any, period_ms: Optional[float] = None) -> Tuple[List[str], List[float]]:
        """Update from a FrameOutcome (``period_ms``: camera stamp gap, None when unknown); returns
        (names, values) for the Observation message."""
        if r.cloud_used and r.transfer_ms > 0 and r.bytes_sent > 0:
            self.link.add(r.bytes_sent, r.transfer_ms)
        bw, rtt = self.link.estimate()
        d = self.device
        command = self.command
        if command is None and d.get("cpu_freq_hz"):
            # no action yet: what is in force is what the governor reports, with the frame's xi
            command = {k: d[k] for k in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz")}
            command["offload_ratio"] = float(r.offload_ratio)
        f = observe(bandwidth_mbps=bw, rtt_ms=rtt,
                    clocks_hz=[d.get(k, 0.0) for k in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz")],
                    utils=[d.get(k, 0.0) for k in ("cpu_util", "gpu_util", "emc_util")],
                    temperature_c=d.get("temperature_c", 0.0), latency_ms=r.total_ms, energy_j=r.energy_j,
                    importance=r.importance, command=command,
                    interval_ms=float(frame_interval_ms(period_ms, r.total_ms)), decision_ms=self.decision_ms)
        # beyond the state: what the recorder and /diagnostics readers find useful
        f.update(power_w=d.get("power_w", 0.0), last_offload_ratio=float(r.offload_ratio),
                 last_fallback=1.0 if r.fallback else 0.0)
        self.f = f
        names = sorted(f)
        return names, [float(f[n]) for n in names]
