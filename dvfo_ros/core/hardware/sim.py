"""The ``sim`` hardware backend: a device twin behind the same interface as a real Jetson.

On a laptop or in CI the governor node drives this backend, so the whole pipeline (policy ->
governor -> DeviceState) runs and reports believable clocks, rail power, cumulative energy and
temperature. Power follows the twin's model at the current clocks and the load the executor
reports (``set_load``); energy and temperature integrate over wall time (``clock``), piecewise
constant between calls.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

from dvfo_ros.core.hardware.base import (ApplyResult, FrequencyTable, HardwareBackend, Reading,
                                         clamp_to_table)
from dvfo_ros.core.twin import DeviceProfile, DeviceTwin, load_profile


def _unit(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


class SimBackend(HardwareBackend):
    """Clocks, power, energy and temperature of a simulated board (see module docstring)."""

    name = "sim"

    def __init__(self, profile: "str | DeviceProfile" = "xavier_nx", load: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        prof = load_profile(profile)
        self.profile = prof.name
        self.twin = DeviceTwin(prof)
        self._clock = clock
        self._last_s = clock()
        self.freqs: Dict[str, int] = {d: prof.table(d)[-1] for d in ("cpu", "gpu", "emc")}
        self.util: Dict[str, float] = {d: _unit(load) for d in ("cpu", "gpu", "emc")}
        self.energy_j = 0.0

    # ---- the model at the current state ------------------------------------------------------
    def _parts(self) -> Dict[str, float]:
        f, u = self.freqs, self.util
        return self.twin.domain_power_w(f["cpu"], f["gpu"], f["emc"], u["cpu"], u["gpu"], u["emc"])

    def _advance(self) -> None:
        """Integrate energy and temperature from the last call to now at the state held since."""
        now = self._clock()
        dt = max(0.0, now - self._last_s)
        if dt > 0:
            power = sum(self._parts().values())
            self.energy_j += power * dt
            self.twin.step_thermal(dt, power)
        self._last_s = now

    # ---- HardwareBackend ---------------------------------------------------------------------
    def table(self) -> FrequencyTable:
        p = self.twin.profile
        return FrequencyTable(cpu=p.table("cpu"), gpu=p.table("gpu"), emc=p.table("emc"))

    def apply(self, cpu_hz: Optional[int] = None, gpu_hz: Optional[int] = None,
              emc_hz: Optional[int] = None) -> ApplyResult:
        self._advance()
        requested: Dict[str, int] = {}
        clamped: Dict[str, int] = {}
        for domain, want in (("cpu", cpu_hz), ("gpu", gpu_hz), ("emc", emc_hz)):
            if not want:
                continue
            requested[domain] = int(want)
            clamped[domain] = clamp_to_table(int(want), self.twin.profile.table(domain))
            self.freqs[domain] = clamped[domain]
        return ApplyResult(requested=requested, clamped=clamped, applied=dict(self.freqs))

    def read(self) -> Reading:
        self._advance()
        parts = self._parts()
        return Reading(
            cpu_freq_hz=self.freqs["cpu"], gpu_freq_hz=self.freqs["gpu"], emc_freq_hz=self.freqs["emc"],
            cpu_util=self.util["cpu"], gpu_util=self.util["gpu"], emc_util=self.util["emc"],
            rails_w=self.twin.rails_from_domains(parts), power_w=sum(parts.values()),
            energy_j=self.energy_j, temperature_c=self.twin.temperature_c)

    def restore(self) -> None:
        """Back to max clocks (what the board boots into under jetson_clocks). Idempotent."""
        self._advance()
        p = self.twin.profile
        self.freqs = {d: p.table(d)[-1] for d in ("cpu", "gpu", "emc")}

    # ---- sim-only ----------------------------------------------------------------------------
    def set_load(self, cpu_util: float, gpu_util: float, emc_util: float) -> None:
        """The utilisation the executor's frames put on each domain (0..1) from now on."""
        self._advance()
        self.util = {"cpu": _unit(cpu_util), "gpu": _unit(gpu_util), "emc": _unit(emc_util)}
