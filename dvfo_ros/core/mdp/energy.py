"""Frame energy: what a board's power rail integrates from one camera frame to the next.

One definition for the twin (``DeviceTwin.frame_cost``, ``SimEnv.step``) and the robot
(``EdgeInference.process`` on the twin's timing): the frame's busy energy plus the idle power at the
clocks in force for the rest of the frame's interval. The interval is the camera period, or the
frame's latency when the frame takes longer than a period (the next frame waits). That is why "race
to idle at max clocks" is not free: the idle power at max clocks is paid until the next frame.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


def frame_interval_ms(period_ms: Optional[float], latency_ms: Any) -> Any:
    """max(camera period, latency): how long one frame's action is in force (no period: the latency)."""
    if period_ms is None:
        return latency_ms
    return np.maximum(float(period_ms), latency_ms)


def frame_energy_j(busy_energy_j: Any, busy_ms: Any, idle_power_w: Any, interval_ms: Any) -> Any:
    """Busy energy + idle power over the rest of the interval (``interval_ms - busy_ms``, never < 0)."""
    return busy_energy_j + idle_power_w * np.maximum(np.asarray(interval_ms) - busy_ms, 0.0) / 1e3


def soc_energy_j(energy_j: Any, interval_ms: Any, static_w: float) -> Any:
    """Board energy minus the share no clock setting changes (carrier, DRAM refresh, regulators: the
    profile's ``static_w``) over the interval: the CPU/GPU/SoC rails' energy, the part DVFS can act on
    (tegrastats' VDD_CPU_GPU_CV + VDD_SOC on a Xavier NX). Works on arrays."""
    return np.asarray(energy_j) - static_w * np.asarray(interval_ms) / 1e3
