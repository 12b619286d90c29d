"""E2E-RL: where a request runs (the device, the LAN edge server, the cloud) and which model version answers it,
learnt from response time at the accuracy requirement in force; and the model variants it picks from, in the
twin (their published accuracy, their own work) and live."""
from __future__ import annotations

import numpy as np
import pytest

from dvfo_ros.core.io.traces import NetworkTrace
from dvfo_ros.core.mdp import ActionExtras, SimEnv, build_state
from dvfo_ros.core.policies import make_policy, twin_options
from dvfo_ros.core.policies.experiments import train_policy
from dvfo_ros.core.policies.setup import TwinSetup
from dvfo_ros.core.twin import published_accuracy

VARIANTS = ("resnet18", "mobilenet_v3_large", "efficientnet_b0")


def _two_networks() -> NetworkTrace:
    t = np.arange(0.0, 1201.0, 60.0)
    bw = np.where(np.arange(len(t)) % 2 == 0, 0.5, 100.0)      # a minute at 0.5 Mbps, a minute at 100, ...
    return NetworkTrace(t, bw, np.full_like(t, 20.0), name="two")


def test_a_variant_runs_its_own_network_and_loses_its_published_accuracy():
    env = SimEnv("nano", "resnet50", "dvfo", seed=1, variants=VARIANTS)
    assert env.variants["resnet18"] == pytest.approx(published_accuracy("resnet50") - published_accuracy("resnet18"))
    a = env.action_space.max_action(0.0)
    _, _, _, own = env.clone().step(a, extras=ActionExtras(target="gpu"))
    _, _, _, small = env.clone().step(a, extras=ActionExtras(model_variant="resnet18", target="gpu"))
    assert small["latency_ms"] < 0.6 * own["latency_ms"] and small["model_variant"] == "resnet18"
    assert small["accuracy_loss"] == pytest.approx(env.variants["resnet18"]) and own["accuracy_loss"] == 0.0
    with pytest.raises(ValueError, match="unknown model variant"):
        env.step(a, extras=ActionExtras(model_variant="alexnet"))


@pytest.fixture(scope="module")
def trained():
    setup = TwinSetup(device="nano", model="resnet50", trace=_two_networks(), noise=0.05, fps=10.0,
                      edge_server=True, edge_users=(0, 8), accuracy_bounds=(0.005, 0.04, 0.12), variants=VARIANTS,
                      episode_frames=60)
    return train_policy(setup, "e2e_rl", 30000)["policy"]


def _choice(policy, bw: float, users: float, bound: float) -> ActionExtras:
    return policy.choice_of(build_state({"bandwidth_mbps": bw, "rtt_ms": 20.0, "edge_server_users": users,
                                         "accuracy_requirement": bound}))


def test_under_a_high_accuracy_requirement_it_never_picks_a_model_below_it(trained):
    for bw in (0.5, 100.0):
        for users in (0, 3, 8):
            pick = _choice(trained, bw, users, 0.005)
            assert trained.loss[pick.model_variant] <= 0.005, (bw, users, pick)
    # a loose requirement lets it take a smaller, faster model somewhere
    assert any(_choice(trained, bw, u, 0.12).model_variant for bw in (0.5, 100.0) for u in (0, 8))


def test_with_many_users_it_moves_off_the_edge_server(trained):
    assert _choice(trained, 100.0, 0, 0.005).target == "edge"         # a free LAN server: the fastest answer
    assert _choice(trained, 100.0, 8, 0.005).target != "edge"         # shared eight ways it is not


def test_at_half_a_megabit_it_never_uploads_an_image_over_that_link():
    setup = TwinSetup(device="nano", model="resnet50", trace=_two_networks(), noise=0.05, fps=10.0,
                      accuracy_bounds=(0.005, 0.04, 0.12), variants=VARIANTS, episode_frames=60)   # no LAN server
    policy = train_policy(setup, "e2e_rl", 15000)["policy"]
    for bound in (0.005, 0.04, 0.12):
        assert _choice(policy, 0.5, 0, bound).target == "gpu", bound
    assert _choice(policy, 100.0, 0, 0.005).target in ("cloud", "edge")    # at 100 Mbps the image goes up


def test_e2e_rl_round_trips_with_its_variants(tmp_path):
    from dvfo_ros.core.policies import load_policy, rollout
    env = SimEnv("nano", "resnet50", "dvfo", seed=3, variants=VARIANTS)
    policy = make_policy("e2e_rl", env.action_space, exploration_steps=100, **twin_options("e2e_rl", env))
    assert set(policy.loss) == {"", *VARIANTS} and len(policy.choices) == 3 * 4
    rollout(env, policy, 200, learn=True)
    policy.save(str(tmp_path / "e.pt"))
    again = load_policy(str(tmp_path / "e.pt"))
    assert np.array_equal(again.q, policy.q) and again.loss == policy.loss


@pytest.mark.ros
def test_the_executor_runs_the_variant_and_target_an_action_names_and_refuses_an_unknown_one(capfd):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from dvfo_ros.msg import DvfoAction
    from dvfo_ros.nodes.executor import ExecutorNode
    from rosutil import executor_probe, ros_context, spin_until
    params = [Parameter("artifact", value="none"), Parameter("num_classes", value=10),
              Parameter("input_size", value=32), Parameter("cloud_endpoint", value=""),
              Parameter("variants", value="mobilenet_v2"), Parameter("timing", value="measured")]
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=params)
        probe, results, img_pub, act_pub = executor_probe(ctx, ex)
        frame = Image()
        frame.height = frame.width = 32
        frame.encoding, frame.step, frame.data = "rgb8", 96, bytes(32 * 32 * 3)
        for n, (variant, target) in enumerate((("mobilenet_v2", ""), ("", "cpu"), ("alexnet", "gpu"))):
            a = DvfoAction()
            a.seq, a.fusion_weight, a.model_variant, a.target = n, -1.0, variant, target
            act_pub.publish(a)
            spin_until(ctx, [ex, probe], lambda: False, timeout_s=0.3)
            img_pub.publish(frame)
            assert spin_until(ctx, [ex, probe], lambda: len(results) >= n + 1)
        small, on_cpu, after_bad = results
        assert small.model == "mobilenet_v2" and small.target == "gpu" and len(small.top_classes) == 5
        assert on_cpu.model == "resnet18" and on_cpu.target == "cpu"
        assert after_bad.target == "cpu" and not after_bad.error          # the unknown variant changed nothing
        ex.destroy_node()
        probe.destroy_node()
    assert "model_variant='alexnet'" in capfd.readouterr().err
