"""Execution targets (DvfoAction.target: the board's GPU or CPU, a LAN edge server, the cloud) and the conditions
around the robot (co-runners, edge-server users, accuracy requirement) in the twin and live, and AutoScale, the
seed system that chooses among the targets from what it observes of them."""
from __future__ import annotations

import numpy as np
import pytest

from dvfo_ros.core.inference.collab import CollaborativeModel
from dvfo_ros.core.inference.edge import Clocks, EdgeInference
from dvfo_ros.core.io.traces import NetworkTrace
from dvfo_ros.core.mdp import STATE_NAMES, ActionExtras, SimEnv, build_state, feature_value
from dvfo_ros.core.policies import make_policy, rollout, twin_options
from dvfo_ros.core.policies.experiments import train_policy
from dvfo_ros.core.policies.setup import TwinSetup
from dvfo_ros.core.twin import DeviceTwin, model_workload, partition_workload


def _steady(bw: float, rtt: float = 20.0) -> NetworkTrace:
    return NetworkTrace(np.array([0.0, 1.0]), np.array([bw, bw]), np.array([rtt, rtt]), name="steady")


def test_the_cpu_target_is_slower_and_dearer_than_the_gpu_and_co_runners_stretch_the_frame():
    twin = DeviceTwin("xavier_nx")
    p = twin.profile
    work = model_workload("resnet18", None, 224, 1000)
    top = (p.cpu_hz[-1], p.gpu_hz[-1], p.emc_hz[-1])
    gpu = twin.frame_cost(work, *top, 0.0, 8.0, 20.0)
    cpu = twin.frame_cost(work, *top, 0.0, 8.0, 20.0, on_cpu=True)
    slower_cpu = twin.frame_cost(work, p.cpu_hz[0], p.gpu_hz[-1], p.emc_hz[-1], 0.0, 8.0, 20.0, on_cpu=True)
    assert cpu.total_ms > 5 * gpu.total_ms and cpu.energy_j > gpu.energy_j
    assert slower_cpu.total_ms > 10 * cpu.total_ms                   # the CPU clock now sets the pace
    assert cpu.gpu_util == 0.0 and cpu.cpu_util > 0.9
    shared = twin.frame_cost(work, *top, 0.0, 8.0, 20.0, corunner=(0.0, 0.5))
    # half the GPU held by co-runners: the GPU-bound stages take twice as long, the memory-bound ones do not
    assert 1.4 * gpu.total_ms < shared.total_ms < 2.0 * gpu.total_ms
    assert shared.gpu_util > gpu.gpu_util


def test_targets_place_the_frame_where_they_say_and_conditions_are_in_the_state():
    env = SimEnv("xavier_nx", "resnet18", _steady(30.0), seed=1,
                 conditions={"corunner": (0.9, 0.9), "edge_server": True, "edge_users": (3, 3),
                             "accuracy_bounds": [0.02]})
    state = env.reset(seed=1)
    for name, value in (("corunner_gpu_util", 0.9), ("edge_server_users", 3.0), ("accuracy_requirement", 0.02)):
        assert feature_value(state, name) == pytest.approx(value, rel=1e-5)
    assert env.episode_reward_cfg.accuracy_loss_bound == 0.02
    a = env.action_space.max_action(0.0)
    layers = len(env.workload.layers)
    out = {}
    for target in ("gpu", "cpu", "edge", "cloud"):
        _, _, _, info = env.clone().step(a, extras=ActionExtras(target=target))
        out[target] = info
    assert out["gpu"]["split_index"] == out["cpu"]["split_index"] == layers and out["gpu"]["bytes_sent"] == 0
    assert out["edge"]["split_index"] == out["cloud"]["split_index"] == 0 and out["cloud"]["bytes_sent"] > 0
    # the edge server's link is the LAN's, shared four ways; the cloud's is the trace's 30 Mbps
    assert out["edge"]["bandwidth_mbps"] == pytest.approx(50.0 / 4) and out["cloud"]["bandwidth_mbps"] == 30.0
    # the GPU is 90 % taken by co-runners: sending the image away beats running here
    assert out["cloud"]["latency_ms"] < out["gpu"]["latency_ms"]
    with pytest.raises(ValueError, match="unknown target"):
        env.step(a, extras=ActionExtras(target="dsp"))


def test_without_an_edge_server_the_edge_target_is_the_cloud_and_no_conditions_draw_nothing():
    env = SimEnv("xavier_nx", "resnet18", _steady(8.0), seed=2)
    plain = SimEnv("xavier_nx", "resnet18", _steady(8.0), seed=2)
    a = env.action_space.max_action(0.0)
    _, r_edge, _, edge = env.clone().step(a, extras=ActionExtras(target="edge"))
    _, r_cloud, _, cloud = env.clone().step(a, extras=ActionExtras(target="cloud"))
    assert r_edge == r_cloud and edge["bandwidth_mbps"] == cloud["bandwidth_mbps"] == 8.0
    s = env.reset(seed=4)
    assert np.array_equal(s, plain.reset(seed=4))
    assert feature_value(s, "corunner_gpu_util") == 0.0 and feature_value(s, "accuracy_requirement") == \
        pytest.approx(env.reward_cfg.accuracy_loss_bound)


def test_the_extended_oracle_is_at_least_as_good_as_every_fixed_target():
    setup = TwinSetup(device="xavier_nx", model="resnet18", trace="dvfo", corunner=(0.0, 0.9), edge_server=True,
                      edge_users=(0, 6), episode_frames=50)
    costs = {}
    for name in ("oracle", "edge_only", "cpu_only", "image_upload"):
        env = setup.make_env(seed=5)
        policy = make_policy(name, env.action_space, **twin_options(name, env, partitions=True, targets=True))
        log = rollout(env, policy, 150)
        costs[name] = log.summary()["reward_mean"]
    assert all(costs["oracle"] >= costs[n] - 1e-9 for n in costs), costs


def _two_networks() -> NetworkTrace:
    t = np.arange(0.0, 121.0, 10.0)
    bw = np.where(np.arange(len(t)) % 2 == 0, 2.0, 30.0)       # 10 s at 2 Mbps, 10 s at 30 Mbps, ...
    return NetworkTrace(t, bw, np.full_like(t, 20.0), name="two")


def test_autoscale_chooses_its_target_by_bandwidth_and_interference():
    setup = TwinSetup(device="xavier_nx", model="resnet18", trace=_two_networks(), noise=0.05, corunner=(0.0, 0.9),
                      edge_server=True, edge_users=(6, 6), episode_frames=100)
    auto = train_policy(setup, "autoscale", 15000)["policy"]

    def target(bw: float, gpu_corunner: float) -> str:
        return auto.target_of(build_state({"bandwidth_mbps": bw, "rtt_ms": 20.0, "corunner_cpu_util": 0.1,
                                           "corunner_gpu_util": gpu_corunner}))
    assert target(30.0, 0.0) == "gpu"            # a free GPU: the board is cheapest
    assert target(30.0, 0.9) == "cloud"          # co-runners hold the GPU, the link is fast: the cloud
    assert target(2.0, 0.9) == "gpu"             # ... but not over 2 Mbps, where the image takes too long
    # it learns from its own reward (energy within the QoS), not the bench's
    s2 = build_state({"last_energy_j": 0.2, "last_latency_ms": 10.0})
    late = build_state({"last_energy_j": 0.2, "last_latency_ms": 2 * auto.hp["qos_ms"]})
    assert auto.own_reward(s2) == pytest.approx(-0.2 / auto.hp["energy_ref_j"], rel=1e-5)
    assert auto.own_reward(late) < auto.own_reward(s2) - 1.0


def test_a_changed_slo_reaches_autoscale_and_e2e_rl_on_the_robot():
    """The policy node's latency_slo_ms set at run time is the QoS autoscale's own reward prices from the next frame."""
    from dvfo_ros.core.policies.runtime import PolicyRuntime
    rt = PolicyRuntime("autoscale", "xavier_nx", reward={"latency_slo_ms": 100.0})
    frame = build_state({"last_energy_j": 0.2, "last_latency_ms": 60.0})
    within = rt.policy.own_reward(frame)
    rt.set_reward({"latency_slo_ms": 50.0})
    assert rt.policy.hp["qos_ms"] == 50.0 and rt.policy.own_reward(frame) < within - 1.0
    e2e = PolicyRuntime("e2e_rl", "xavier_nx", model="resnet18")
    e2e.set_reward({"latency_ref_ms": 40.0})
    assert e2e.policy.hp["latency_ref_ms"] == 40.0


def test_autoscale_round_trips_and_an_untried_state_takes_the_gpu():
    env = SimEnv(seed=11)
    auto = make_policy("autoscale", env.action_space, exploration_steps=100, **twin_options("autoscale", env))
    assert auto.hp["qos_ms"] == pytest.approx(env.reward_cfg.latency_slo_ms)
    assert auto.train(False).target_of(np.zeros(len(STATE_NAMES), np.float32)) == "gpu"


def test_the_edge_core_runs_the_cpu_target_on_the_cpu_and_answers_as_the_gpu_target():
    model = CollaborativeModel.from_zoo("resnet18", None, 10, 32)
    twin = DeviceTwin("xavier_nx")
    p = twin.profile
    engine = EdgeInference(model, None, twin=twin)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    clocks = Clocks(p.cpu_hz[-1], p.gpu_hz[-1], p.emc_hz[-1])
    gpu = engine.process_partition(rgb, 0, model.num_stages, False, clocks, target="gpu")
    cpu = engine.process_partition(rgb, 1, 0, True, clocks, target="cpu")      # cpu ignores the cut: all here
    assert cpu.target == "cpu" and cpu.split_index == model.num_stages and not cpu.cloud_used
    assert cpu.top_classes == gpu.top_classes
    # priced on the CPU cores by the twin: the whole network's CPU roofline at these clocks
    whole = partition_workload("resnet18", model.num_stages, 32, 10)
    priced = twin.frame_cost(whole, clocks.cpu_freq_hz, clocks.gpu_freq_hz, clocks.emc_freq_hz, 0.0, 1e4, 0.0,
                             on_cpu=True)
    assert cpu.edge_ms == pytest.approx(priced.edge_ms)
    assert cpu.edge_ms > gpu.edge_ms


def test_the_edge_target_goes_to_the_edge_server_s_link_not_the_cloud_s():
    from dvfo_ros.cloud.tail import make_tail_runner
    from dvfo_ros.cloud.server import CloudServer
    from dvfo_ros.core.wire.link import CloudLink
    model = CollaborativeModel.from_zoo("resnet18", None, 10, 32)
    servers = []
    for _ in range(2):
        runner, accept = make_tail_runner(model, "cpu")
        servers.append(CloudServer("tcp://127.0.0.1:*", runner, accept=accept))
        servers[-1].start_in_thread()
    cloud, edge = servers
    links = [CloudLink(s.endpoint) for s in servers]
    try:
        engine = EdgeInference(model, links[0], deadline_ms=5000.0)
        rgb = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        out = engine.process_partition(rgb, 7, 0, True, target="edge", link=links[1])
        assert out.cloud_used and out.target == "edge" and out.split_index == 0
        assert edge.stats["answered"] == 1 and cloud.stats["answered"] == 0
    finally:
        for link in links:
            link.close()
        for server in servers:
            server.stop()
