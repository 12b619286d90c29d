"""SimBackend: the governor's twin-backed hardware. Clamps, integrates energy, restores."""
import pytest

from dvfo_ros.core.hardware.base import HardwareBackend
from dvfo_ros.core.hardware.sim import SimBackend
from dvfo_ros.core.twin import load_profile


class ManualClock:
    """A clock the test advances by hand, so energy integrals are exact."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_is_a_hardware_backend_with_the_profile_tables():
    sim = SimBackend("tx2")
    p = load_profile("tx2")
    assert isinstance(sim, HardwareBackend) and sim.name == "sim" and sim.profile == "tx2"
    assert sim.table().as_dict() == {"cpu": p.cpu_hz, "gpu": p.gpu_hz, "emc": p.emc_hz}
    r = sim.read()
    assert (r.cpu_freq_hz, r.gpu_freq_hz, r.emc_freq_hz) == (p.cpu_hz[-1], p.gpu_hz[-1], p.emc_hz[-1])


def test_apply_clamps_to_the_table_and_leaves_none_alone():
    sim = SimBackend("xavier_nx")
    res = sim.apply(cpu_hz=1_000_000_000, gpu_hz=1, emc_hz=None)
    assert res.ok
    assert res.clamped == {"cpu": 960_000_000, "gpu": 114_750_000}
    assert res.applied["emc"] == 1_866_000_000
    r = sim.read()
    assert (r.cpu_freq_hz, r.gpu_freq_hz) == (960_000_000, 114_750_000)
    sim.apply(gpu_hz=10**12)
    assert sim.read().gpu_freq_hz == 1_109_250_000


def test_energy_integrates_power_over_time():
    clock = ManualClock()
    sim = SimBackend("xavier_nx", load=0.6, clock=clock)
    p_high = sim.read().power_w
    clock.t += 10.0
    r = sim.read()
    assert r.energy_j == pytest.approx(10.0 * p_high)
    sim.apply(cpu_hz=1, gpu_hz=1, emc_hz=1)          # lowest clocks
    p_low = sim.read().power_w
    assert p_low < p_high
    clock.t += 10.0
    assert sim.read().energy_j == pytest.approx(10.0 * p_high + 10.0 * p_low)
    assert sum(v for k, v in r.rails_w.items() if k != "VDD_IN") < r.rails_w["VDD_IN"]


def test_load_raises_power_and_temperature_rises_under_it():
    clock = ManualClock()
    sim = SimBackend("orin_nx", load=0.0, clock=clock)
    idle = sim.read()
    sim.set_load(1.0, 1.0, 1.0)
    busy = sim.read()
    assert busy.power_w > idle.power_w + 3 and busy.gpu_util == 1.0
    clock.t += 300.0
    hot = sim.read()
    assert hot.temperature_c > idle.temperature_c + 10
    sim.set_load(2.0, -1.0, 0.5)                      # out-of-range loads are clipped
    assert (sim.util["cpu"], sim.util["gpu"]) == (1.0, 0.0)


def test_restore_returns_to_max_clocks_idempotently():
    clock = ManualClock()
    sim = SimBackend("nano", clock=clock)
    sim.apply(cpu_hz=1, gpu_hz=1, emc_hz=1)
    clock.t += 5.0
    sim.restore()
    sim.restore()
    r = sim.read()
    p = load_profile("nano")
    assert (r.cpu_freq_hz, r.gpu_freq_hz, r.emc_freq_hz) == (p.cpu_hz[-1], p.gpu_hz[-1], p.emc_hz[-1])
    assert r.energy_j > 0                              # energy since open is kept
    sim.close()
    assert sim.read().gpu_freq_hz == p.gpu_hz[-1]
