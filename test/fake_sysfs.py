"""Fake sysfs/debugfs/procfs trees of Jetson boards and of a plain Linux box, for tests.

File names, units and value formats mirror the boards (jetson-stats 7.2 jtop/core/*.py and
NVIDIA's jetson_clocks read the same files): cpufreq in kHz, devfreq and BPMP EMC in Hz,
possible_rates in kHz, INA3221 hwmon in mV/mA (JetPack 5+) or iio in mW (JetPack 4),
thermal zones in milli-degC, device-tree strings NUL-separated. Values end in a newline.
The tree is plain files: nothing moves a ``cur_freq`` after a write, as no kernel runs here.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional

KHZ = 1000

NANO_CPU_KHZ = [102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600, 921600, 1036800,
                1132800, 1224000, 1326000, 1428000, 1479000]
TX2_CPU_KHZ = [345600, 499200, 652800, 806400, 960000, 1113600, 1267200, 1420800, 1574400, 1728000,
               1881600, 2035200]
TX2_DENVER_KHZ = [345600, 499200, 652800, 806400, 960000, 1113600, 1267200, 1420800, 1574400, 1728000,
                  1881600, 2035200]
XAVIER_CPU_KHZ = [115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200,
                  960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200,
                  1728000, 1804800, 1881600, 1907200]
ORIN_CPU_KHZ = [115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200,
                960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200,
                1728000, 1804800, 1881600, 1958400, 1984000]

BOARDS: Dict[str, dict] = {
    "nano": dict(
        compatible=["nvidia,p3449-0000-b00+p3448-0002-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
        clusters=[([0, 1, 2, 3], NANO_CPU_KHZ)],
        gpu_node="57000000.gpu",
        gpu_hz=[76800000, 153600000, 230400000, 307200000, 384000000, 460800000, 537600000, 614400000,
                691200000, 768000000, 844800000, 921600000],
        emc="t210", emc_hz=[204000000, 1600000000], emc_rate=1600000000,
        power=("iio", "6-0040", ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]),
        thermal=["AO-therm", "CPU-therm", "GPU-therm", "PLL-therm", "PMIC-Die", "thermal-fan-est"],
        actmon="/sys/kernel/actmon_avg_activity/mc_all",
    ),
    "tx2": dict(
        compatible=["nvidia,p2771-0000", "nvidia,tegra186"],
        clusters=[([0, 3, 4, 5], TX2_CPU_KHZ), ([1, 2], TX2_DENVER_KHZ)],
        gpu_node="17000000.gp10b",
        gpu_hz=[114750000, 216750000, 318750000, 420750000, 522750000, 624750000, 726750000, 828750000,
                930750000, 1032750000, 1134750000, 1236750000, 1300500000],
        emc="bpmp", emc_hz=[40800000, 68000000, 102000000, 204000000, 408000000, 665600000, 800000000,
                            1062400000, 1331200000, 1600000000, 1866000000], emc_rate=1866000000,
        power=("iio", "0-0041", ["VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"]),
        thermal=["BCPU-therm", "MCPU-therm", "GPU-therm", "PLL-therm", "Tboard_tegra", "Tdiode_tegra",
                 "PMIC-Die", "thermal-fan-est"],
        actmon="/sys/kernel/actmon_avg_activity/mc_all",
    ),
    "xavier_nx": dict(
        compatible=["nvidia,p3509-0000+p3668-0001", "nvidia,jetson-xavier-nx", "nvidia,tegra194"],
        clusters=[([0, 1], XAVIER_CPU_KHZ), ([2, 3], XAVIER_CPU_KHZ), ([4, 5], XAVIER_CPU_KHZ)],
        gpu_node="17000000.gv11b",
        gpu_hz=[114750000, 204000000, 306000000, 408000000, 510000000, 599250000, 701250000, 752250000,
                803250000, 854250000, 905250000, 956250000, 1007250000, 1058250000, 1109250000],
        emc="bpmp", emc_hz=[204000000, 408000000, 665600000, 800000000, 1065600000, 1331200000, 1600000000,
                            1866000000], emc_rate=1600000000,
        power=("hwmon", "7-0040", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        thermal=["AO-therm", "AUX-therm", "CPU-therm", "GPU-therm", "PMIC-Die", "Tboard_tegra", "Tdiode_tegra",
                 "thermal-fan-est"],
        actmon="/sys/kernel/actmon_avg_activity/mc_all",
    ),
    "orin": dict(
        compatible=["nvidia,p3509-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"],
        clusters=[([0, 1, 2, 3], ORIN_CPU_KHZ), ([4, 5, 6, 7], ORIN_CPU_KHZ)],
        gpu_node="17000000.ga10b",
        gpu_hz=[306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000],
        emc="bpmp", emc_hz=[204000000, 665600000, 2133000000, 3199000000], emc_rate=3199000000,
        power=("hwmon", "1-0040", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        thermal=["cpu-thermal", "gpu-thermal", "cv0-thermal", "soc0-thermal", "soc1-thermal", "tj-thermal"],
        actmon="/sys/kernel/debug/cactmon/mc_all",
    ),
}


def _w(root: str, abs_path: str, value: object) -> None:
    p = os.path.join(root, abs_path.lstrip("/"))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        f.write(value if isinstance(value, str) else f"{value}\n")


def read(root: str, abs_path: str) -> str:
    with open(os.path.join(root, abs_path.lstrip("/")), encoding="utf-8") as f:
        return f.read().strip()


def _proc_stat(root: str, ncpu: int) -> None:
    lines = ["cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0"]
    lines += [f"cpu{i} 2533038 72674 771179 11707120 4170 0 6298 0 0 0" for i in range(ncpu)]
    _w(root, "/proc/stat", "\n".join(lines + ["intr 0", "ctxt 0"]) + "\n")


def _cpufreq(root: str, clusters: List, governor: str = "schedutil") -> int:
    ncpu = 0
    for cpus, khz in clusters:
        for cpu in cpus:
            d = f"/sys/devices/system/cpu/cpu{cpu}"
            _w(root, f"{d}/online", 1)
            c = f"{d}/cpufreq"
            _w(root, f"{c}/scaling_available_frequencies", " ".join(str(k) for k in khz) + " \n")
            _w(root, f"{c}/scaling_available_governors", "userspace ondemand performance schedutil\n")
            _w(root, f"{c}/scaling_governor", f"{governor}\n")
            _w(root, f"{c}/cpuinfo_min_freq", khz[0])
            _w(root, f"{c}/cpuinfo_max_freq", khz[-1])
            _w(root, f"{c}/scaling_min_freq", khz[0])
            _w(root, f"{c}/scaling_max_freq", khz[-1])
            _w(root, f"{c}/scaling_cur_freq", khz[len(khz) // 2])
            _w(root, f"{c}/scaling_setspeed", "<unsupported>\n")
            ncpu = max(ncpu, cpu + 1)
    return ncpu


def build_jetson_tree(root: str, board: str) -> Dict[str, object]:
    """Write a fake ``board`` tree under ``root`` ("nano", "tx2", "xavier_nx", "orin").

    Returns the board spec plus the key paths a test checks (``gpu_dir``, ``cpu0``)."""
    spec = BOARDS[board]
    _w(root, "/proc/device-tree/compatible", "\x00".join(spec["compatible"]) + "\x00")
    _w(root, "/proc/device-tree/model", f"NVIDIA Jetson {board}\x00")
    ncpu = _cpufreq(root, spec["clusters"])
    _proc_stat(root, ncpu)
    gpu = f"/sys/class/devfreq/{spec['gpu_node']}"
    hz = spec["gpu_hz"]
    _w(root, f"{gpu}/available_frequencies", " ".join(str(f) for f in hz) + " \n")
    _w(root, f"{gpu}/available_governors", "nvhost_podgov userspace performance simple_ondemand\n")
    _w(root, f"{gpu}/governor", "nvhost_podgov\n")
    _w(root, f"{gpu}/min_freq", hz[0])
    _w(root, f"{gpu}/max_freq", hz[-1])
    _w(root, f"{gpu}/cur_freq", hz[len(hz) // 2])
    _w(root, f"{gpu}/device/of_node/name", "gpu\x00")
    _w(root, f"{gpu}/device/load", 250)                       # per-mille: 25 %
    # a non-GPU devfreq node that discovery must skip
    _w(root, "/sys/class/devfreq/15340000.vic/available_frequencies", "115200000 345600000\n")
    _w(root, "/sys/class/devfreq/15340000.vic/device/of_node/name", "vic\x00")
    if spec["emc"] == "bpmp":
        e = "/sys/kernel/debug/bpmp/debug/clk/emc"
        _w(root, f"{e}/rate", spec["emc_rate"])
        _w(root, f"{e}/min_rate", spec["emc_hz"][0])
        _w(root, f"{e}/max_rate", spec["emc_hz"][-1])
        _w(root, f"{e}/mrq_rate_locked", 0)
        _w(root, "/sys/kernel/debug/bpmp/debug/emc/possible_rates",
           " ".join(str(f // KHZ) for f in spec["emc_hz"]) + "\n")
        _w(root, "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap", 0)
    else:
        _w(root, "/sys/kernel/debug/clk/override.emc/clk_rate", spec["emc_rate"])
        _w(root, "/sys/kernel/debug/clk/override.emc/clk_update_rate", 0)
        _w(root, "/sys/kernel/debug/clk/override.emc/clk_state", 0)
        _w(root, "/sys/kernel/debug/tegra_bwmgr/emc_min_rate", spec["emc_hz"][0])
        _w(root, "/sys/kernel/debug/tegra_bwmgr/emc_max_rate", spec["emc_hz"][-1])
    _w(root, spec["actmon"], spec["emc_rate"] // KHZ * 40)   # 40 % of the current rate (kHz units)
    kind, dev, rails = spec["power"]
    base = f"/sys/bus/i2c/devices/{dev}"
    if kind == "hwmon":
        _w(root, f"{base}/name", "ina3221\n")
        hw = f"{base}/hwmon/hwmon3"
        _w(root, f"{hw}/name", "ina3221\n")
        for k, rail in enumerate(rails, start=1):
            _w(root, f"{hw}/in{k}_label", f"{rail}\n")
        _w(root, f"{hw}/in7_label", "sum of shunt voltages\n")
        _w(root, f"{hw}/in7_input", 40)
        _w(root, f"{hw}/curr7_input", 0)
    else:
        _w(root, f"{base}/name", "ina3221x\n")
        for k, rail in enumerate(rails):
            _w(root, f"{base}/iio:device0/rail_name_{k}", f"{rail}\n")
    set_rails(root, board, {r: 1000.0 * (3 if i == 0 else 1) for i, r in enumerate(rails)})
    for i, name in enumerate(spec["thermal"]):
        _w(root, f"/sys/class/thermal/thermal_zone{i}/type", f"{name}\n")
        _w(root, f"/sys/class/thermal/thermal_zone{i}/temp", 100000 if "PMIC" in name else 40000 + 500 * i)
    return dict(spec, gpu_dir=gpu, cpu0="/sys/devices/system/cpu/cpu0/cpufreq", rails=rails)


def set_rails(root: str, board: str, milliwatts: Dict[str, float], volt_mv: int = 5000) -> None:
    """Set each rail's power (mW) the way the board reports it (mV x mA, or mW)."""
    kind, dev, rails = BOARDS[board]["power"]
    base = f"/sys/bus/i2c/devices/{dev}"
    for k, rail in enumerate(rails):
        if rail not in milliwatts:
            continue
        mw = milliwatts[rail]
        if kind == "hwmon":
            hw = f"{base}/hwmon/hwmon3"
            _w(root, f"{hw}/in{k + 1}_input", volt_mv)
            _w(root, f"{hw}/curr{k + 1}_input", int(round(mw * 1000 / volt_mv)))
        else:
            _w(root, f"{base}/iio:device0/in_voltage{k}_input", volt_mv)
            _w(root, f"{base}/iio:device0/in_current{k}_input", int(round(mw * 1000 / volt_mv)))
            _w(root, f"{base}/iio:device0/in_power{k}_input", int(round(mw)))


def set_temperature(root: str, zone: int, celsius: float) -> None:
    _w(root, f"/sys/class/thermal/thermal_zone{zone}/temp", int(celsius * 1000))


def refuse_writes(root: str, abs_path: str) -> None:
    """Make a write to ``abs_path`` fail as root would see it fail: a directory in its place."""
    p = os.path.join(root, abs_path.lstrip("/"))
    if os.path.isfile(p):
        os.remove(p)
    os.makedirs(p, exist_ok=True)


def remove_node(root: str, abs_path: str) -> None:
    """Delete a file or directory (a node this kernel does not have)."""
    p = os.path.join(root, abs_path.lstrip("/"))
    if os.path.isdir(p):
        shutil.rmtree(p)
    elif os.path.exists(p):
        os.remove(p)


def build_linux_tree(root: str, cpus: int = 4, khz: Optional[List[int]] = None, rapl: bool = True) -> None:
    """A desktop-like Linux tree: acpi-cpufreq policies and an intel-rapl package + dram zone."""
    khz = khz or [800000, 1600000, 2400000, 3200000]
    _cpufreq(root, [(list(range(cpus)), khz)], governor="ondemand")
    _proc_stat(root, cpus)
    _w(root, "/sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
    _w(root, "/sys/class/thermal/thermal_zone0/temp", 52000)
    if rapl:
        for zone, name, uj in (("intel-rapl:0", "package-0", 1_000_000), ("intel-rapl:0:0", "core", 400_000),
                               ("intel-rapl:0:1", "uncore", 100_000), ("intel-rapl:0:2", "dram", 200_000)):
            d = f"/sys/class/powercap/{zone}"
            _w(root, f"{d}/name", f"{name}\n")
            _w(root, f"{d}/energy_uj", uj)
            _w(root, f"{d}/max_energy_range_uj", 262143328850)


def set_rapl(root: str, zone: str, energy_uj: int) -> None:
    _w(root, f"/sys/class/powercap/{zone}/energy_uj", energy_uj)
