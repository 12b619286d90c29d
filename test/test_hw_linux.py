"""linux backend (cpufreq + RAPL) on a fake desktop tree and on this machine; nvml without a GPU."""
import os

import pytest

from dvfo_ros.core.hardware import HardwareError, open_backend
from dvfo_ros.core.hardware.linux import LinuxBackend
from fake_sysfs import build_linux_tree, read, refuse_writes, set_rapl


def test_cpufreq_table_clamped_write_and_restore(tmp_path):
    root = str(tmp_path)
    build_linux_tree(root, cpus=4)
    b = LinuxBackend(root=root)
    assert b.table().cpu == [800_000_000, 1_600_000_000, 2_400_000_000, 3_200_000_000]
    assert b.table().gpu == [] and b.can_set()
    res = b.apply(cpu_hz=2_000_000_000)
    assert res.ok and res.clamped == {"cpu": 1_600_000_000} and res.applied == {"cpu": 1_600_000_000}
    for i in range(4):
        d = f"/sys/devices/system/cpu/cpu{i}/cpufreq"
        assert read(root, f"{d}/scaling_min_freq") == read(root, f"{d}/scaling_max_freq") == "1600000"
    b.restore()
    assert read(root, "/sys/devices/system/cpu/cpu3/cpufreq/scaling_min_freq") == "800000"
    assert read(root, "/sys/devices/system/cpu/cpu3/cpufreq/scaling_max_freq") == "3200000"


def test_gpu_request_on_linux_is_an_error_line_not_a_silent_no_op(tmp_path):
    build_linux_tree(str(tmp_path))
    res = LinuxBackend(root=str(tmp_path)).apply(cpu_hz=800_000_000, gpu_hz=500_000_000)
    assert res.applied == {"cpu": 800_000_000}
    assert len(res.errors) == 1 and res.errors[0].startswith("gpu:")


def test_refused_cpufreq_write_names_the_path(tmp_path):
    root = str(tmp_path)
    build_linux_tree(root, cpus=2)
    refuse_writes(root, "/sys/devices/system/cpu/cpu1/cpufreq/scaling_max_freq")
    res = LinuxBackend(root=root).apply(cpu_hz=3_200_000_000)
    assert len(res.errors) == 1
    assert "/sys/devices/system/cpu/cpu1/cpufreq/scaling_max_freq" in res.errors[0]
    assert read(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq") == "3200000"


def test_rapl_power_and_energy_with_counter_wrap(tmp_path):
    root = str(tmp_path)
    build_linux_tree(root)
    now = [0.0]
    b = LinuxBackend(root=root, clock=lambda: now[0])
    assert set(b.rapl.zones) == {"package-0", "core", "uncore", "dram"}
    now[0] = 2.0
    set_rapl(root, "intel-rapl:0", 1_000_000 + 30_000_000)          # +30 J in 2 s
    r = b.read()
    assert r.power_w == pytest.approx(15.0) and r.energy_j == pytest.approx(30.0)
    now[0] = 3.0
    set_rapl(root, "intel-rapl:0", 5_000_000)                       # wrapped past max_energy_range_uj
    r = b.read()
    assert r.energy_j == pytest.approx(30.0 + (5_000_000 + 262143328850 - 31_000_000) / 1e6)
    assert r.temperature_c == pytest.approx(52.0)


def test_this_machine_linux_backend_says_it_found_nothing_settable():
    if os.path.isdir("/sys/devices/system/cpu/cpu0/cpufreq"):
        pytest.skip("this machine has cpufreq")
    b = open_backend("linux")
    assert not b.can_set() and b.table().cpu == []
    assert "no cpufreq" in b.describe()
    res = b.apply(cpu_hz=1_000_000_000)
    assert res.errors and "nothing settable" in res.errors[0]


def test_nvml_without_a_driver_is_a_clear_error():
    try:
        import pynvml
        pynvml.nvmlInit()
        pytest.skip("this machine has an NVIDIA driver")
    except Exception:  # noqa: BLE001 - no pynvml or no driver: ImportError, NVMLError_*, OSError, ...
        pass
    with pytest.raises(HardwareError, match="nvml: no NVIDIA GPU 0 usable"):
        open_backend("nvml")
