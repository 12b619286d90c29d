"""`linux` backend: CPU clocks through cpufreq, energy from RAPL, on any Linux machine.

Paths (Linux kernel docs, admin-guide/pm/cpufreq.rst and power/powercap/powercap.rst):
- /sys/devices/system/cpu/cpuN/cpufreq/{scaling_available_frequencies, scaling_min_freq,
  scaling_max_freq, scaling_cur_freq, scaling_governor, scaling_setspeed, cpuinfo_min_freq,
  cpuinfo_max_freq}: all in kHz. jetson_clocks and jtop (core/cpu.py) use the same files.
- /sys/class/powercap/intel-rapl:N[:M]/{name, energy_uj, max_energy_range_uj}: a wrapping
  micro-joule counter per zone (package-N, core, uncore, dram, psys). Root-only to read since
  Linux 5.10 (CVE-2020-8694).
Writes need root. The CpufreqDomain here is shared with the jetson backend.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from dvfo_ros.core.hardware.base import (ApplyResult, FrequencyTable, HardwareBackend, HardwareError, LogFn,
                                         Reading, clamp_to_table)
from dvfo_ros.core.hardware.sysfs import CpuLoad, SysfsTree, SysfsWriter, read_thermal_zones, set_min_max

CPU_DIR = "/sys/devices/system/cpu"
POWERCAP_DIR = "/sys/class/powercap"


class CpufreqDomain:
    """All cpufreq policies of the machine, driven together (one CPU clock for the policy)."""

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree
        self.dirs: List[str] = []               # e.g. /sys/devices/system/cpu/cpu0/cpufreq
        self.tables: Dict[str, List[int]] = {}  # per dir, Hz ascending
        seen = set()
        cpus = [c for c in tree.listdir(CPU_DIR) if c.startswith("cpu") and c[3:].isdigit()]
        for cpu in sorted(cpus, key=lambda c: int(c[3:])):
            d = f"{CPU_DIR}/{cpu}/cpufreq"
            if not tree.isdir(d):
                continue                         # offline CPU or no cpufreq driver
            real = os.path.realpath(tree.path(d))
            if real in seen:                     # cpuN/cpufreq -> ../cpufreq/policyX (shared)
                continue
            seen.add(real)
            khz = tree.read_ints(f"{d}/scaling_available_frequencies")
            if not khz:                          # intel_pstate/cppc: no list, only the range
                khz = [v for v in (tree.read_int(f"{d}/cpuinfo_min_freq"),
                                   tree.read_int(f"{d}/cpuinfo_max_freq")) if v]
            if not khz:
                continue
            self.dirs.append(d)
            self.tables[d] = sorted({k * 1000 for k in khz})

    @property
    def found(self) -> bool:
        return bool(self.dirs)

    def levels(self) -> List[int]:
        return list(self.tables[self.dirs[0]]) if self.dirs else []

    def settable_paths(self) -> List[str]:
        out = []
        for d in self.dirs:
            out += [f"{d}/scaling_min_freq", f"{d}/scaling_max_freq"]
            if self.tree.isfile(f"{d}/scaling_setspeed"):
                out.append(f"{d}/scaling_setspeed")
        return out

    def writable(self) -> bool:
        return any(self.tree.writable(p) for p in self.settable_paths())

    def current_hz(self) -> int:
        if not self.dirs:
            return 0
        khz = self.tree.read_int(f"{self.dirs[0]}/scaling_cur_freq")
        return int(khz or 0) * 1000

    def governor(self) -> str:
        return (self.tree.read_str(f"{self.dirs[0]}/scaling_governor") or "") if self.dirs else ""

    def set_hz(self, writer: SysfsWriter, freq_hz: int) -> Tuple[int, List[str]]:
        """Pin every policy at its own table entry for freq_hz; returns (applied Hz, errors)."""
        errors: List[str] = []
        for d in self.dirs:
            khz = clamp_to_table(freq_hz, self.tables[d]) // 1000
            errors += set_min_max(writer, f"{d}/scaling_min_freq", f"{d}/scaling_max_freq", khz)
            if self.tree.read_str(f"{d}/scaling_governor") == "userspace" and \
                    self.tree.isfile(f"{d}/scaling_setspeed"):
                err = writer.write(f"{d}/scaling_setspeed", khz)
                if err:
                    errors.append(err)
        return self.applied_hz(), errors

    def applied_hz(self) -> int:
        """The clock the first policy is held at: min == max if pinned, else what it runs at."""
        if not self.dirs:
            return 0
        d = self.dirs[0]
        lo, hi = self.tree.read_int(f"{d}/scaling_min_freq"), self.tree.read_int(f"{d}/scaling_max_freq")
        if lo is not None and lo == hi:
            return lo * 1000
        return self.current_hz()

    def describe(self) -> str:
        if not self.dirs:
            return f"no cpufreq under {CPU_DIR}/cpu*/cpufreq"
        return f"cpufreq {len(self.dirs)} policies ({self.governor()}), {len(self.levels())} levels"


class RaplMeter:
    """Energy per RAPL zone, with counter wrap-around; power from the last two reads."""

    def __init__(self, tree: SysfsTree, clock: Callable[[], float] = time.monotonic) -> None:
        self.tree, self.clock = tree, clock
        self.zones: Dict[str, str] = {}          # rail name -> zone dir
        self.top: List[str] = []                 # top-level zones (packages, psys) for the total
        for z in tree.listdir(POWERCAP_DIR):
            if not z.startswith("intel-rapl:"):
                continue
            d = f"{POWERCAP_DIR}/{z}"
            if tree.read_int(f"{d}/energy_uj") is None:
                continue                         # not readable (non-root since 5.10)
            name = tree.read_str(f"{d}/name") or z
            key = name if name not in self.zones else f"{name}({z})"
            self.zones[key] = d
            if z.count(":") == 1:
                self.top.append(key)
        if any(k.startswith("psys") for k in self.top):
            self.top = [k for k in self.top if k.startswith("psys")]   # psys already includes packages
        self._last: Dict[str, int] = {}
        self._last_t: Optional[float] = None
        self.energy_j: Dict[str, float] = {k: 0.0 for k in self.zones}
        self.power_w: Dict[str, float] = {k: 0.0 for k in self.zones}
        self.read()

    @property
    def found(self) -> bool:
        return bool(self.zones)

    def read(self) -> Tuple[Dict[str, float], float, float]:
        """(rails W, total W, total J since open)."""
        t = self.clock()
        dt = (t - self._last_t) if self._last_t is not None else 0.0
        for k, d in self.zones.items():
            uj = self.tree.read_int(f"{d}/energy_uj")
            if uj is None:
                continue
            if k in self._last:
                delta = uj - self._last[k]
                if delta < 0:                    # wrapped
                    delta += self.tree.read_int(f"{d}/max_energy_range_uj") or 0
                self.energy_j[k] += delta / 1e6
                if dt > 0:
                    self.power_w[k] = delta / 1e6 / dt
            self._last[k] = uj
        if dt > 0 or self._last_t is None:
            self._last_t = t
        total_w = sum(self.power_w[k] for k in self.top)
        total_j = sum(self.energy_j[k] for k in self.top)
        return dict(self.power_w), total_w, total_j


class LinuxBackend(HardwareBackend):
    """CPU frequency through cpufreq; power/energy through RAPL where readable."""

    name = "linux"

    def __init__(self, root: str = "/", log: Optional[LogFn] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tree = SysfsTree(root)
        if not self.tree.isdir(CPU_DIR) and not self.tree.isfile("/proc/stat"):
            raise HardwareError(f"not a Linux sysfs tree: {self.tree.path(CPU_DIR)} missing")
        self.log = log
        self.cpu = CpufreqDomain(self.tree)
        self.rapl = RaplMeter(self.tree, clock)
        self.load = CpuLoad(self.tree)
        self.writer = SysfsWriter(self.tree, log)
        self.writer.snapshot(self.cpu.settable_paths())   # originals BEFORE any write
        self.profile = "linux"

    def can_set(self) -> bool:
        return self.cpu.found

    def describe(self) -> str:
        rapl = f"RAPL {', '.join(self.rapl.zones)}" if self.rapl.found else \
            f"no readable RAPL under {POWERCAP_DIR}"
        return f"{self.cpu.describe()}; {rapl}"

    def table(self) -> FrequencyTable:
        return FrequencyTable(cpu=self.cpu.levels())

    def read(self) -> Reading:
        rails, power, energy = self.rapl.read()
        zones = read_thermal_zones(self.tree)
        return Reading(cpu_freq_hz=self.cpu.current_hz(), cpu_util=self.load.read(), rails_w=rails,
                       power_w=power, energy_j=energy, temperature_c=max(zones.values(), default=0.0))

    def apply(self, cpu_hz: Optional[int] = None, gpu_hz: Optional[int] = None,
              emc_hz: Optional[int] = None) -> ApplyResult:
        requested = {d: int(v) for d, v in (("cpu", cpu_hz), ("gpu", gpu_hz), ("emc", emc_hz)) if v}
        res = ApplyResult(requested=requested, clamped={}, applied={})
        for d in ("gpu", "emc"):
            if d in requested:
                res.errors.append(f"{d}: the linux backend has no {d} clock to set (use jetson or nvml)")
        if "cpu" in requested:
            if not self.cpu.found:
                res.errors.append(f"cpu: {self.cpu.describe()}; nothing settable on this machine")
            else:
                res.clamped["cpu"] = clamp_to_table(requested["cpu"], self.cpu.levels())
                res.applied["cpu"], errs = self.cpu.set_hz(self.writer, res.clamped["cpu"])
                res.errors += errs
        return res

    def restore(self) -> List[str]:
        return self.writer.restore()
