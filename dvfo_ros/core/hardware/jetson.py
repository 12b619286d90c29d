"""`jetson` backend: CPU, GPU and EMC clocks and INA3221 power rails on NVIDIA Jetson boards.

Paths, checked against jetson-stats 7.2 (rbonghi/jetson_stats, jtop/core/*.py) and NVIDIA's
``jetson_clocks`` script (L4T R32-R36, /usr/bin/jetson_clocks):
- CPU: /sys/devices/system/cpu/cpuN/cpufreq/{scaling_available_frequencies, scaling_min_freq,
  scaling_max_freq, scaling_cur_freq} in kHz (jtop core/cpu.py; jetson_clocks do_cpu pins
  scaling_min_freq := scaling_max_freq).
- GPU: /sys/class/devfreq/<node>/{available_frequencies, min_freq, max_freq, cur_freq} in Hz,
  where <node> is 57000000.gpu (Nano, T210), 17000000.gp10b (TX2, T186), 17000000.gv11b
  (Xavier, T194), 17000000.ga10b (Orin, T234); jtop core/gpu.py finds it by
  <node>/device/of_node/name in {gv11b, gp10b, ga10b, gpu}; load is <node>/device/load in
  per-mille. jetson_clocks do_igpu writes max_freq into min_freq.
- EMC on T186/T194/T234 (BPMP debugfs): /sys/kernel/debug/bpmp/debug/clk/emc/{rate, min_rate,
  max_rate, mrq_rate_locked} in Hz; jetson_clocks do_emc writes 1 to mrq_rate_locked, then the
  rate to ``rate``; nvpmodel caps it via /sys/kernel/nvpmodel_emc_cap/emc_iso_cap. The level
  list is /sys/kernel/debug/bpmp/debug/emc/possible_rates (kHz).
  EMC on T210 (Nano): /sys/kernel/debug/clk/override.emc/{clk_rate, clk_update_rate,
  clk_state} and /sys/kernel/debug/tegra_bwmgr/{emc_min_rate, emc_max_rate} (jetson_clocks
  tegra210 branch; jtop core/memory.py read_emc); no level list there: the twin profile's EMC
  levels inside [min, max] are used.
  EMC load: /sys/kernel/actmon_avg_activity/mc_all or debug/cactmon/mc_all or
  debug/bpmp/debug/actmon/mc_all_avg_activity, in kHz of the current rate (jtop read_emc).
- Power: INA3221 under /sys/bus/i2c/devices/<bus-addr>/ with ``name`` containing ina3221;
  JetPack 5+: hwmon/hwmonN/in{k}_label, in{k}_input (mV), curr{k}_input (mA); JetPack <= 4:
  iio:deviceN/rail_name_{k}, in_power{k}_input (mW) (jtop core/power.py). "NC" rails and the
  in7 "sum of shunt voltages" are skipped; VDD_IN / POM_5V_IN / VIN is the board total.
Debugfs (EMC) needs root and a mounted debugfs; every write needs root.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from dvfo_ros.core.errors import one_line
from dvfo_ros.core.hardware.base import (ApplyResult, FrequencyTable, HardwareBackend, HardwareError, LogFn,
                                         Reading, clamp_to_table)
from dvfo_ros.core.hardware.linux import CpufreqDomain
from dvfo_ros.core.hardware.sysfs import (CpuLoad, EnergyMeter, SysfsTree, SysfsWriter, read_thermal_zones,
                                          set_min_max)

DEVFREQ_DIR = "/sys/class/devfreq"
GPU_OF_NAMES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")          # jtop KNOWN_GPU_DEVICE_NAMES
# devfreq node suffix -> (SoC, the twin profile closest to that board)
GPU_NODES = {"57000000.gpu": ("tegra210", "nano"), "gp10b": ("tegra186", "tx2"),
             "gv11b": ("tegra194", "xavier_nx"), "ga10b": ("tegra234", "orin_nx")}
BPMP_EMC = "/sys/kernel/debug/bpmp/debug/clk/emc"
BPMP_EMC_RATES = "/sys/kernel/debug/bpmp/debug/emc/possible_rates"
EMC_ISO_CAP = "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"
T210_EMC = "/sys/kernel/debug/clk/override.emc"
T210_BWMGR = "/sys/kernel/debug/tegra_bwmgr"
EMC_ACTMON = ("/sys/kernel/debug/cactmon/mc_all", "/sys/kernel/debug/bpmp/debug/actmon/mc_all_avg_activity",
              "/sys/kernel/actmon_avg_activity/mc_all")
I2C_DIR = "/sys/bus/i2c/devices"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")                           # jtop power.py total_power


def find_gpu_devfreq(tree: SysfsTree) -> Optional[str]:
    """The GPU's devfreq dir, by of_node name (as jtop) or by the known node names."""
    for item in tree.listdir(DEVFREQ_DIR):
        d = f"{DEVFREQ_DIR}/{item}"
        of_name = (tree.read_str(f"{d}/device/of_node/name") or "").lower()
        if of_name in GPU_OF_NAMES or "gpu" in of_name or any(item.endswith(k) for k in GPU_NODES):
            if tree.isfile(f"{d}/available_frequencies") or tree.isfile(f"{d}/max_freq"):
                return d
    return None


def detect_soc(tree: SysfsTree, gpu_dir: Optional[str]) -> Tuple[str, str]:
    """(soc, twin profile name) from /proc/device-tree/compatible, else from the GPU node."""
    compat = tree.read_str("/proc/device-tree/compatible") or ""
    for soc, prof in (("tegra210", "nano"), ("tegra186", "tx2"), ("tegra194", "xavier_nx"), ("tegra234", "orin_nx")):
        if soc in compat:
            return soc, prof
    if gpu_dir:
        for key, (soc, prof) in GPU_NODES.items():
            if gpu_dir.endswith(key):
                return soc, prof
    return "", ""


class DevfreqDomain:
    """A devfreq clock (the Jetson iGPU): Hz table, pinned with min_freq = max_freq."""

    def __init__(self, tree: SysfsTree, path: str) -> None:
        self.tree, self.path = tree, path
        hz = tree.read_ints(f"{path}/available_frequencies")
        if not hz:
            hz = [v for v in (tree.read_int(f"{path}/min_freq"), tree.read_int(f"{path}/max_freq")) if v]
        self.table = sorted(set(hz))

    def settable_paths(self) -> List[str]:
        return [f"{self.path}/min_freq", f"{self.path}/max_freq"]

    def current_hz(self) -> int:
        return int(self.tree.read_int(f"{self.path}/cur_freq") or 0)

    def load(self) -> float:
        permille = self.tree.read_int(f"{self.path}/device/load")
        return min(1.0, permille / 1000.0) if permille is not None else 0.0

    def set_hz(self, writer: SysfsWriter, freq_hz: int) -> Tuple[int, List[str]]:
        errors = set_min_max(writer, f"{self.path}/min_freq", f"{self.path}/max_freq", freq_hz)
        lo, hi = self.tree.read_int(f"{self.path}/min_freq"), self.tree.read_int(f"{self.path}/max_freq")
        return (lo if lo is not None and lo == hi else self.current_hz()), errors


class EmcDomain:
    """External memory clock through debugfs: BPMP (T186+) or the T210 override clock."""

    def __init__(self, tree: SysfsTree, soc: str, profile_levels: Callable[[], List[int]]) -> None:
        self.tree = tree
        self.kind = ""
        lo = hi = None
        if tree.isdir(BPMP_EMC):
            self.kind = "bpmp"
            lo, hi = tree.read_int(f"{BPMP_EMC}/min_rate"), tree.read_int(f"{BPMP_EMC}/max_rate")
            cap = tree.read_int(EMC_ISO_CAP) or 0
            if hi and 0 < cap < hi:
                hi = cap
            rates = tree.read_ints(BPMP_EMC_RATES)
            if rates and max(rates) < 10_000_000:      # possible_rates is in kHz
                rates = [r * 1000 for r in rates]
        elif tree.isdir(T210_EMC):
            self.kind = "override"
            lo, hi = tree.read_int(f"{T210_BWMGR}/emc_min_rate"), tree.read_int(f"{T210_BWMGR}/emc_max_rate")
            rates = []
        else:
            rates = []
        if self.kind:
            rates = rates or list(profile_levels())
            if lo is not None and hi is not None:
                rates = [r for r in rates if lo <= r <= hi] or [v for v in (lo, hi) if v]
        self.table = sorted(set(rates))

    @property
    def found(self) -> bool:
        return bool(self.kind and self.table)

    def settable_paths(self) -> List[str]:
        if self.kind == "bpmp":
            return [f"{BPMP_EMC}/mrq_rate_locked", f"{BPMP_EMC}/rate"]
        if self.kind == "override":
            return [f"{T210_EMC}/clk_update_rate", f"{T210_EMC}/clk_state"]
        return []

    def current_hz(self) -> int:
        if self.kind == "bpmp":
            return int(self.tree.read_int(f"{BPMP_EMC}/rate") or 0)
        if self.kind == "override":
            return int(self.tree.read_int(f"{T210_EMC}/clk_rate") or 0)
        return 0

    def load(self) -> float:
        cur_khz = self.current_hz() // 1000
        for p in EMC_ACTMON:
            act = self.tree.read_int(p)
            if act is not None and cur_khz > 0:
                return max(0.0, min(1.0, act / cur_khz / 100.0))   # jtop: act // cur is percent
        return 0.0

    def set_hz(self, writer: SysfsWriter, freq_hz: int) -> Tuple[int, List[str]]:
        # order as jetson_clocks: lock then rate (BPMP); update rate then override on (T210)
        if self.kind == "bpmp":
            steps = [(f"{BPMP_EMC}/mrq_rate_locked", 1), (f"{BPMP_EMC}/rate", freq_hz)]
            readback = f"{BPMP_EMC}/rate"
        else:
            steps = [(f"{T210_EMC}/clk_update_rate", freq_hz), (f"{T210_EMC}/clk_state", 1)]
            readback = f"{T210_EMC}/clk_update_rate"
        errors = []
        for path, value in steps:
            err = writer.write(path, value)
            if err:
                errors.append(err)
                break
        applied = self.tree.read_int(readback) if not errors else self.current_hz()
        return int(applied or 0), errors

    def describe(self) -> str:
        if not self.kind:
            return "no EMC debugfs (debugfs not mounted, not root, or not a Jetson)"
        return f"EMC via {BPMP_EMC if self.kind == 'bpmp' else T210_EMC}, {len(self.table)} levels"


class Ina3221:
    """Power rails of the on-module INA3221 monitors, in W."""

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree
        self.rails: Dict[str, Tuple[str, ...]] = {}   # name -> ("hwmon", volt, curr) | ("iio", power)
        for dev in tree.listdir(I2C_DIR):
            base = f"{I2C_DIR}/{dev}"
            if "ina3221" not in (tree.read_str(f"{base}/name") or "").lower():
                continue
            for sub in tree.listdir(base):
                if sub == "hwmon":
                    for hw in tree.listdir(f"{base}/hwmon"):
                        self._hwmon(f"{base}/hwmon/{hw}")
                elif sub.startswith("iio:device"):
                    self._iio(f"{base}/{sub}")

    def _hwmon(self, d: str) -> None:
        for item in self.tree.listdir(d):
            if not (item.startswith("in") and item.endswith("_label")):
                continue
            k = item[2:-len("_label")]
            name = self.tree.read_str(f"{d}/{item}") or ""
            if not k.isdigit() or k == "7" or "NC" in name or not name:
                continue
            if self.tree.isfile(f"{d}/in{k}_input") and self.tree.isfile(f"{d}/curr{k}_input"):
                self.rails[name] = ("hwmon", f"{d}/in{k}_input", f"{d}/curr{k}_input")

    def _iio(self, d: str) -> None:
        for item in self.tree.listdir(d):
            if not item.startswith("rail_name_"):
                continue
            k = item[len("rail_name_"):]
            name = self.tree.read_str(f"{d}/{item}") or ""
            if name and self.tree.isfile(f"{d}/in_power{k}_input"):
                self.rails[name] = ("iio", f"{d}/in_power{k}_input")

    @property
    def found(self) -> bool:
        return bool(self.rails)

    def read(self) -> Tuple[Dict[str, float], float]:
        """(rails W, board total W)."""
        out: Dict[str, float] = {}
        for name, src in self.rails.items():
            if src[0] == "hwmon":
                mv, ma = self.tree.read_int(src[1]), self.tree.read_int(src[2])
                if mv is not None and ma is not None:
                    out[name] = mv * ma / 1e6
            else:
                mw = self.tree.read_int(src[1])
                if mw is not None:
                    out[name] = mw / 1e3
        total = next((out[n] for n in TOTAL_RAILS if n in out), sum(out.values()))
        return out, total


class JtopSource:
    """Readings through the jtop service (works without root); None when it is not reachable."""

    def __init__(self) -> None:
        from jtop import jtop  # ImportError when jetson-stats is not installed
        self.jetson: Any = jtop()
        self.jetson.start()     # JtopException: "The jtop.service is not active"

    def read(self) -> Tuple[Dict[str, float], Optional[float], Optional[float]]:
        """(rails W, total W, max temperature C)."""
        power = self.jetson.power or {}
        rails = {n: v.get("power", 0) / 1e3 for n, v in (power.get("rail") or {}).items()}
        tot = (power.get("tot") or {}).get("power")
        temps = [v.get("temp", -256) for v in (self.jetson.temperature or {}).values()
                 if v.get("online", True)]
        return rails, (tot / 1e3 if tot is not None else None), (max(temps) if temps else None)

    def close(self) -> None:
        try:
            self.jetson.close()
        except Exception:   # noqa: BLE001 - closing a dead socket must not hide a restore
            pass


class JetsonBackend(HardwareBackend):
    """Jetson clocks through sysfs/debugfs; power and temperature through jtop when reachable."""

    name = "jetson"

    def __init__(self, root: str = "/", profile: Optional[str] = None, use_jtop: Optional[bool] = None,
                 log: Optional[LogFn] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.tree = SysfsTree(root)
        self.log = log
        gpu_dir = find_gpu_devfreq(self.tree)
        self.soc, detected = detect_soc(self.tree, gpu_dir)
        if not gpu_dir and not self.soc:
            raise HardwareError(f"not a Jetson: no Tegra GPU under {self.tree.path(DEVFREQ_DIR)} and "
                                f"{self.tree.path('/proc/device-tree/compatible')} names no tegra SoC")
        self.profile = profile or detected or "jetson"
        self.cpu = CpufreqDomain(self.tree)
        self.gpu = DevfreqDomain(self.tree, gpu_dir) if gpu_dir else None
        self.emc = EmcDomain(self.tree, self.soc, lambda: self._profile_emc_levels(self.profile))
        self.ina = Ina3221(self.tree)
        self.load = CpuLoad(self.tree)
        self.meter = EnergyMeter(clock)
        self.writer = SysfsWriter(self.tree, log)
        self.writer.snapshot(self._settable_paths())        # originals BEFORE any write
        self.jtop: Optional[JtopSource] = None
        self.jtop_status = self._open_jtop(use_jtop, root)

    @staticmethod
    def _profile_emc_levels(profile: str) -> List[int]:
        """T210 has no EMC level list in sysfs: use the twin profile's (empty if unavailable)."""
        try:
            from dvfo_ros.core.twin import load_profile
            return list(load_profile(profile).emc_hz)
        except Exception:   # noqa: BLE001 - no profile: fall back to [min, max]
            return []

    def _open_jtop(self, use_jtop: Optional[bool], root: str) -> str:
        """use_jtop None: only on the real tree ('/'), since jtop reads the live board."""
        if use_jtop is False:
            return "jtop off"
        if use_jtop is None and self.tree.root != "/":
            return "jtop skipped (sysfs root is not /)"
        try:
            self.jtop = JtopSource()
            return "jtop service connected"
        except ImportError:
            msg = "jtop not installed (pip install jetson-stats); reading sysfs directly"
        except Exception as e:   # noqa: BLE001 - JtopException and socket errors alike
            msg = f"jtop unavailable ({one_line(e)}); reading sysfs directly"
        if self.log:
            self.log(msg)
        return msg

    def _settable_paths(self) -> List[str]:
        paths = self.cpu.settable_paths() + self.emc.settable_paths()
        return paths + (self.gpu.settable_paths() if self.gpu else [])

    def describe(self) -> str:
        gpu = f"GPU devfreq {self.gpu.path} ({len(self.gpu.table)} levels)" if self.gpu else "no GPU devfreq"
        power = f"INA3221 rails {', '.join(self.ina.rails)}" if self.ina.found else "no INA3221 rails"
        return (f"{self.soc or 'tegra'} ({self.profile}): {self.cpu.describe()}; {gpu}; {self.emc.describe()}; "
                f"{power}; {self.jtop_status}")

    def table(self) -> FrequencyTable:
        return FrequencyTable(cpu=self.cpu.levels(), gpu=list(self.gpu.table) if self.gpu else [],
                              emc=list(self.emc.table) if self.emc.found else [])

    def read(self) -> Reading:
        rails, total = self.ina.read()
        zones = read_thermal_zones(self.tree)
        temp = max(zones.values(), default=0.0)
        if self.jtop is not None:
            try:
                j_rails, j_total, j_temp = self.jtop.read()
                rails = j_rails or rails
                total = j_total if j_total is not None else total
                temp = j_temp if j_temp is not None else temp
            except Exception as e:   # noqa: BLE001 - the service died: keep going on sysfs
                if self.log:
                    self.log(f"jtop read failed ({e}); reading sysfs directly from now on")
                self.jtop.close()
                self.jtop = None
        return Reading(cpu_freq_hz=self.cpu.current_hz(), gpu_freq_hz=self.gpu.current_hz() if self.gpu else 0,
                       emc_freq_hz=self.emc.current_hz(), cpu_util=self.load.read(),
                       gpu_util=self.gpu.load() if self.gpu else 0.0, emc_util=self.emc.load(),
                       rails_w=rails, power_w=total, energy_j=self.meter.add(total), temperature_c=temp)

    def apply(self, cpu_hz: Optional[int] = None, gpu_hz: Optional[int] = None,
              emc_hz: Optional[int] = None) -> ApplyResult:
        requested = {d: int(v) for d, v in (("cpu", cpu_hz), ("gpu", gpu_hz), ("emc", emc_hz)) if v}
        res = ApplyResult(requested=requested, clamped={}, applied={})
        domains = {"cpu": self.cpu if self.cpu.found else None, "gpu": self.gpu,
                   "emc": self.emc if self.emc.found else None}
        table = self.table()
        for d, want in requested.items():
            dom = domains[d]
            if dom is None:
                why = {"cpu": self.cpu.describe(), "gpu": f"no GPU devfreq under {DEVFREQ_DIR}",
                       "emc": self.emc.describe()}[d]
                res.errors.append(f"{d}: not settable: {why}")
                continue
            res.clamped[d] = clamp_to_table(want, table.levels(d))
            try:
                res.applied[d], errs = dom.set_hz(self.writer, res.clamped[d])
            except Exception as e:   # noqa: BLE001 - never raise from apply
                res.applied[d], errs = 0, [f"{d}: {e}"]
            res.errors += errs
        return res

    def restore(self) -> List[str]:
        return self.writer.restore()

    def close(self) -> None:
        try:
            self.restore()
        finally:
            if self.jtop is not None:
                self.jtop.close()
                self.jtop = None
