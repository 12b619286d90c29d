"""Write the held-out network traces (dvfo_ros/traces/heldout_*.csv) that no training mix uses.

    python scripts/make_heldout_traces.py          # rewrites the three CSVs (seeded: same bytes)

Each comes from a generator that lives only here, unlike anything in ``TraceMix``:

- ``heldout_drive_lte``: a robot driving through LTE cells. Bandwidth follows the distance to the
  serving cell (high at the centre, low at the edge, 1-30 Mbps), RTT rises towards the edge
  (40-120 ms), and each handover is a 0.5-2 s gap at 0.2 Mbps / 300 ms.
- ``heldout_wifi_dropouts``: a warehouse robot on Wi-Fi: 20-70 Mbps (AR(1)), 2-8 ms RTT,
  contention bursts (5-10 Mbps, 20-40 ms for 5-15 s) and a dropout every 30-90 s (2-6 s at
  0.1 Mbps / 600 ms).
- ``heldout_congested_uplink``: a congested cellular uplink, 0.3-2 Mbps at 100-250 ms, where
  offloading rarely pays.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dvfo_ros.core.io.traces import TRACE_DIR, NetworkTrace  # noqa: E402

STEP_S = 0.5
DURATION_S = 600.0


def drive_lte(rng: np.random.Generator) -> NetworkTrace:
    t = np.arange(0.0, DURATION_S, STEP_S)
    bw, rtt = np.empty(len(t)), np.empty(len(t))
    i = 0
    while i < len(t):
        cell = int(rng.uniform(20, 60) / STEP_S)
        peak = rng.uniform(12.0, 30.0)
        for k in range(min(cell, len(t) - i)):
            edge = abs(2.0 * k / cell - 1.0)                     # 0 at the cell centre, 1 at its edge
            bw[i + k] = max(1.0, peak * (1.0 - 0.95 * edge) * np.exp(rng.normal(0.0, 0.25)))
            rtt[i + k] = (40.0 + 80.0 * edge) * np.exp(rng.normal(0.0, 0.1))
        i += cell
        gap = int(rng.uniform(0.5, 2.0) / STEP_S)
        bw[i:i + gap], rtt[i:i + gap] = 0.2, 300.0
        i += gap
    return NetworkTrace(t, bw, rtt, name="heldout_drive_lte")


def wifi_dropouts(rng: np.random.Generator) -> NetworkTrace:
    t = np.arange(0.0, DURATION_S, STEP_S)
    bw, rtt = np.empty(len(t)), np.empty(len(t))
    level = 45.0
    for i in range(len(t)):
        level = float(np.clip(45.0 + 0.9 * (level - 45.0) + rng.normal(0.0, 4.0), 20.0, 70.0))
        bw[i], rtt[i] = level, rng.uniform(2.0, 8.0)
    i = int(rng.uniform(5, 20) / STEP_S)
    while i < len(t):
        k = int(rng.uniform(5, 15) / STEP_S)
        bw[i:i + k], rtt[i:i + k] = rng.uniform(5.0, 10.0), rng.uniform(20.0, 40.0)
        i += k + int(rng.uniform(20, 60) / STEP_S)
    i = int(rng.uniform(30, 90) / STEP_S)
    while i < len(t):
        k = int(rng.uniform(2, 6) / STEP_S)
        bw[i:i + k], rtt[i:i + k] = 0.1, 600.0
        i += k + int(rng.uniform(30, 90) / STEP_S)
    return NetworkTrace(t, bw, rtt, name="heldout_wifi_dropouts")


def congested_uplink(rng: np.random.Generator) -> NetworkTrace:
    t = np.arange(0.0, DURATION_S, STEP_S)
    bw = np.clip(np.exp(rng.normal(np.log(0.8), 0.5, size=len(t))), 0.3, 2.0)
    rtt = rng.uniform(100.0, 250.0, size=len(t))
    return NetworkTrace(t, bw, rtt, name="heldout_congested_uplink")


def main() -> int:
    for seed, make in enumerate((drive_lte, wifi_dropouts, congested_uplink), start=2024):
        trace = make(np.random.default_rng(seed))
        path = os.path.join(TRACE_DIR, f"{trace.name}.csv")
        trace.to_csv(path)
        print(f"{path}: {len(trace.time_s)} rows, {trace.bandwidth_mbps.min():.2f}-{trace.bandwidth_mbps.max():.1f} "
              f"Mbps, RTT {trace.rtt_ms.min():.0f}-{trace.rtt_ms.max():.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
