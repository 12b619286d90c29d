"""jetson backend against fake Nano / TX2 / Xavier NX / Orin trees: discovery, reading, clamped
writes, refused writes, restore, power and energy, and the jtop fallback."""
import sys

import pytest

from dvfo_ros.core.hardware import open_backend
from dvfo_ros.core.hardware.jetson import BPMP_EMC, T210_EMC, JetsonBackend
from fake_sysfs import BOARDS, build_jetson_tree, read, refuse_writes, remove_node, set_rails

BOARD_PROFILE = {"nano": "nano", "tx2": "tx2", "xavier_nx": "xavier_nx", "orin": "orin_nx"}


@pytest.fixture(params=sorted(BOARDS))
def board(request, tmp_path):
    info = build_jetson_tree(str(tmp_path), request.param)
    return request.param, str(tmp_path), info


def _open(root, **kw):
    return JetsonBackend(root=root, use_jtop=False, **kw)


def test_discovers_the_boards_tables(board):
    name, root, info = board
    b = _open(root)
    t = b.table()
    assert t.cpu == [k * 1000 for k in info["clusters"][0][1]]
    assert t.gpu == info["gpu_hz"]
    assert b.gpu.path.endswith(info["gpu_node"])          # the VIC devfreq node is not taken for the GPU
    assert b.profile == BOARD_PROFILE[name]
    if info["emc"] == "bpmp":
        assert t.emc == info["emc_hz"]                   # possible_rates (kHz) read as Hz
    else:                                                # Nano: profile levels inside bwmgr [min, max]
        assert t.emc[0] >= info["emc_hz"][0] and t.emc[-1] <= info["emc_hz"][-1] and t.emc
    assert "INA3221" in b.describe()


def test_reads_clocks_load_rails_and_temperature(board):
    name, root, info = board
    b = _open(root)
    r = b.read()
    assert r.gpu_freq_hz == info["gpu_hz"][len(info["gpu_hz"]) // 2]
    assert r.gpu_util == pytest.approx(0.25)
    assert r.emc_util == pytest.approx(0.40)
    assert r.emc_freq_hz == info["emc_rate"]
    assert set(r.rails_w) == set(info["rails"])          # "sum of shunt voltages" not a rail
    assert r.power_w == pytest.approx(3.0, rel=1e-3)     # the board total rail (VDD_IN / POM_5V_IN)
    non_pmic = [40 + 0.5 * i for i, z in enumerate(info["thermal"]) if "PMIC" not in z]
    assert r.temperature_c == pytest.approx(max(non_pmic))   # PMIC-Die (100 C) skipped


def test_clamped_writes_pin_every_policy_and_restore_puts_all_back(board):
    name, root, info = board
    b = _open(root)
    originals = {p: read(root, p) for p in b.writer.originals}
    res = b.apply(cpu_hz=1_000_000_000, gpu_hz=500_000_000, emc_hz=1_000_000_000)
    assert res.ok, res.errors
    cpu_table = [k * 1000 for k in info["clusters"][0][1]]
    assert res.clamped["cpu"] == max(f for f in cpu_table if f <= 1_000_000_000)
    assert res.clamped["gpu"] == max(f for f in info["gpu_hz"] if f <= 500_000_000)
    assert res.applied == res.clamped
    for cpus, _ in info["clusters"]:
        d = f"/sys/devices/system/cpu/cpu{cpus[0]}/cpufreq"
        assert int(read(root, f"{d}/scaling_min_freq")) == int(read(root, f"{d}/scaling_max_freq"))
        assert int(read(root, f"{d}/scaling_max_freq")) <= 1_000_000
    assert int(read(root, f"{info['gpu_dir']}/min_freq")) == res.clamped["gpu"]
    assert int(read(root, f"{info['gpu_dir']}/max_freq")) == res.clamped["gpu"]
    if info["emc"] == "bpmp":
        assert read(root, f"{BPMP_EMC}/mrq_rate_locked") == "1"
        assert int(read(root, f"{BPMP_EMC}/rate")) == res.clamped["emc"]
    else:
        assert read(root, f"{T210_EMC}/clk_state") == "1"
        assert int(read(root, f"{T210_EMC}/clk_update_rate")) == res.clamped["emc"]
    assert any(read(root, p) != v for p, v in originals.items())
    assert b.restore() == []
    assert {p: read(root, p) for p in originals} == originals
    assert b.restore() == [] and {p: read(root, p) for p in originals} == originals   # idempotent


def test_request_below_the_table_gets_the_lowest_level(board):
    name, root, info = board
    res = _open(root).apply(gpu_hz=1)
    assert res.applied["gpu"] == info["gpu_hz"][0]


def test_refused_write_is_one_line_naming_the_path_and_other_domains_still_apply(board):
    name, root, info = board
    b = _open(root)
    refuse_writes(root, f"{info['gpu_dir']}/max_freq")
    refuse_writes(root, f"{info['gpu_dir']}/min_freq")
    res = b.apply(cpu_hz=2_000_000_000, gpu_hz=info["gpu_hz"][0])
    assert not res.ok
    assert len(res.errors) >= 1 and all("\n" not in e for e in res.errors)
    assert f"{info['gpu_dir']}/" in res.errors[0] and "refused" in res.errors[0]
    assert res.applied["cpu"] == res.clamped["cpu"]          # CPU went through
    assert res.applied["gpu"] == info["gpu_hz"][len(info["gpu_hz"]) // 2]   # what runs: untouched cur_freq


def test_missing_emc_debugfs_is_reported_not_raised(tmp_path):
    root = str(tmp_path)
    build_jetson_tree(root, "xavier_nx")
    remove_node(root, "/sys/kernel/debug")                     # debugfs not mounted / not root
    b = _open(root)
    assert b.table().emc == []
    res = b.apply(emc_hz=800_000_000, gpu_hz=510_000_000)
    assert res.applied == {"gpu": 510_000_000}
    assert len(res.errors) == 1 and res.errors[0].startswith("emc: not settable") and "debugfs" in res.errors[0]


def test_missing_node_at_write_time_is_enoent_not_a_new_file(tmp_path):
    root = str(tmp_path)
    build_jetson_tree(root, "orin")
    b = _open(root)
    remove_node(root, f"{BPMP_EMC}/rate")
    res = b.apply(emc_hz=2_133_000_000)
    assert len(res.errors) == 1 and f"{BPMP_EMC}/rate" in res.errors[0] and "no such file" in res.errors[0]
    assert not (tmp_path / BPMP_EMC.lstrip("/") / "rate").exists()
    b.restore()
    assert read(root, f"{BPMP_EMC}/mrq_rate_locked") == "0"   # the lock that did apply is undone


def test_energy_integrates_rail_power_over_time(tmp_path):
    root = str(tmp_path)
    build_jetson_tree(root, "xavier_nx")
    now = [100.0]
    b = JetsonBackend(root=root, use_jtop=False, clock=lambda: now[0])
    assert b.read().energy_j == 0.0                  # first sample: no interval yet
    now[0] += 2.0
    assert b.read().energy_j == pytest.approx(6.0, rel=1e-3)       # 3 W for 2 s
    set_rails(root, "xavier_nx", {"VDD_IN": 5000.0})
    now[0] += 2.0
    r = b.read()
    assert r.power_w == pytest.approx(5.0, rel=1e-3)
    assert r.energy_j == pytest.approx(6.0 + 8.0, rel=1e-3)        # trapezoid (3+5)/2 W x 2 s


def test_jtop_service_not_active_falls_back_to_sysfs_with_one_log_line(tmp_path):
    root = str(tmp_path)
    build_jetson_tree(root, "orin")
    lines = []
    b = JetsonBackend(root=root, use_jtop=True, log=lines.append)
    assert b.jtop is None
    assert len(lines) == 1 and "jtop" in lines[0] and "sysfs" in lines[0]
    assert "not active" in lines[0]                   # jetson-stats' JtopException on a non-Jetson
    assert b.read().power_w == pytest.approx(3.0, rel=1e-3)


def test_jtop_not_installed_falls_back_with_one_log_line(tmp_path, monkeypatch):
    root = str(tmp_path)
    build_jetson_tree(root, "tx2")
    monkeypatch.setitem(sys.modules, "jtop", None)    # import jtop -> ImportError
    lines = []
    b = JetsonBackend(root=root, use_jtop=True, log=lines.append)
    assert len(lines) == 1 and "not installed" in lines[0]
    assert b.table().gpu == BOARDS["tx2"]["gpu_hz"]


def test_auto_picks_jetson_on_a_jetson_tree_with_one_line(tmp_path):
    root = str(tmp_path)
    build_jetson_tree(root, "nano")
    lines = []
    b = open_backend("auto", root=root, log=lines.append)
    assert b.name == "jetson" and b.profile == "nano"
    assert len(lines) == 1 and lines[0].startswith("hardware backend: jetson")
