"""The sim-to-real contract: the twin and the robot's path build the same state, charge the same
energy and record the level the governor really applies; the twin is a registered gymnasium env."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dvfo_ros.core import mdp
from dvfo_ros.core.hardware import clamp_to_table
from dvfo_ros.core.hardware.sim import SimBackend
from dvfo_ros.core.inference.edge import Clocks, EdgeInference, FrameOutcome
from dvfo_ros.core.io.traces import NetworkTrace
from dvfo_ros.core.mdp.observation import LinkEstimator, ObservationTracker
from dvfo_ros.core.policies.runtime import PolicyRuntime
from dvfo_ros.core.twin import DeviceTwin


def _steady_link(bw: float = 4.0, rtt: float = 25.0) -> NetworkTrace:
    return NetworkTrace(np.array([0.0, 1.0]), np.array([bw, bw]), np.array([rtt, rtt]), name="steady")


class _DeviceState:
    """The fields of a DeviceState message the tracker reads."""

    def __init__(self, cmd, info) -> None:
        self.cpu_freq_hz, self.gpu_freq_hz, self.emc_freq_hz = (cmd["cpu_freq_hz"], cmd["gpu_freq_hz"],
                                                                cmd["emc_freq_hz"])
        self.cpu_util, self.gpu_util, self.emc_util = info["cpu_util"], info["gpu_util"], info["emc_util"]
        self.temperature_c, self.power_w = info["temperature_c"], info["power_w"]


def test_twin_and_live_path_build_the_same_state_from_the_same_frames():
    env = mdp.SimEnv("xavier_nx", "resnet18", _steady_link(), seed=3)
    env.reset(seed=3)
    tracker = ObservationTracker()
    space = env.action_space
    # offloading at three shares: from the second frame on the link fit has two sizes to tell RTT from bandwidth
    for i, xi_level in enumerate((3, 7, 5)):
        a = np.array([2, 5, 3, xi_level])
        cmd = space.to_command(a)
        state, _, _, info = env.step(a, decision_ms=0.4, decision_on_path=False)
        tracker.on_action(cmd["offload_ratio"], 0.4, [cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"]])
        tracker.on_device_state(_DeviceState(cmd, info))
        importance = {k: env._obs[k] for k in ("importance_low25", "importance_low50", "importance_low75")}
        frame = FrameOutcome([0], [1.0], info["edge_ms"], info["transfer_ms"], 0.0, info["latency_ms"],
                             info["energy_j"], cmd["offload_ratio"], 0.5, info["bytes_sent"], 0, True, False,
                             importance=importance)
        names, values = tracker.on_frame(frame, period_ms=env.period_ms)
        live = mdp.build_state(dict(zip(names, values)), space, env.reward_cfg.accuracy_loss_bound)  # as the runtime
        if i == 0:
            continue
        np.testing.assert_allclose(live, state, rtol=1e-5, atol=1e-6,
                                   err_msg=str([(n, a_, b_) for n, a_, b_ in zip(mdp.STATE_NAMES, live, state)
                                                if abs(a_ - b_) > 1e-6]))


def test_link_estimator_recovers_the_twins_bandwidth_and_rtt():
    est = LinkEstimator()
    for kb in (2.0, 9.0, 5.0, 14.0):
        est.add(kb * 1000, 30.0 + kb * 1000 * 8 / (2.5 * 1e3))        # 2.5 Mbps, 30 ms round trip
    bw, rtt = est.estimate()
    assert bw == pytest.approx(2.5, rel=1e-6) and rtt == pytest.approx(30.0, abs=1e-6)


def test_edge_path_charges_the_twins_frame_energy():
    env = mdp.SimEnv("xavier_nx", "resnet18", _steady_link(), seed=0)
    env.reset(seed=0)
    a = np.array([1, 3, 2, 0])                      # all on the edge at lowered clocks
    cmd = env.action_space.to_command(a)
    _, _, _, info = env.step(a, decision_on_path=False)
    from dvfo_ros.core.inference.collab import CollaborativeModel
    edge = EdgeInference(CollaborativeModel.from_zoo("resnet18", None, 10, 32), twin=DeviceTwin("xavier_nx"),
                         workload=env.workload)
    out = edge.process(np.zeros((32, 32, 3), np.uint8), 0, 0.0,
                       clocks=Clocks(cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"]),
                       frame_period_ms=env.period_ms)
    assert out.total_ms == pytest.approx(info["latency_ms"], rel=1e-9)
    assert out.energy_j == pytest.approx(info["energy_j"], rel=1e-9)


def test_recorded_static_level_is_the_clock_the_governor_applies():
    # 806.4 MHz is a Xavier NX CPU level, but not one of the learning policies' five
    rt = PolicyRuntime("static", "xavier_nx", static={"cpu_freq_hz": 806_400_000, "offload_ratio": 0.25})
    backend = SimBackend("xavier_nx")
    rt.first_action()
    rt.on_result(0.2, 20.0, False)
    rt.step({})
    rt.on_result(0.2, 20.0, False)
    step = rt.step({})
    backend.apply(int(step.command["cpu_freq_hz"]), int(step.command["gpu_freq_hz"]),
                  int(step.command["emc_freq_hz"]))
    applied = backend.read().cpu_freq_hz
    t = step.transition
    assert applied == 806_400_000 == rt.space.cpu_hz[int(t.action[0])] == t.action_values[0]
    assert rt.space.offload_ratios[int(t.action[3])] == t.action_values[3] == 0.25
    backend.restore()


def test_policy_grid_snaps_like_the_hardware_clamp():
    space = mdp.ActionSpace.from_profile(SimBackend("xavier_nx").twin.profile)
    for hz in (115_200_000, 806_400_000, 1_500_000_000, 2_500_000_000, 10_000_000):
        level = space.from_command({"cpu_freq_hz": hz})[0]
        assert space.cpu_hz[level] == clamp_to_table(hz, space.cpu_hz)


def test_twin_is_a_registered_gymnasium_env_that_passes_check_env():
    env = gymnasium.make("dvfo_ros/DvfoTwin-v0", profile="tx2", model="mobilenet_v2", episode_frames=20)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    total, steps, truncated = 0.0, 0, False
    while not truncated:
        obs, r, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and env.observation_space.contains(obs) and "energy_j" in info
        total += r
        steps += 1
    assert steps == 20 and total < 0
