"""The executor's attention only where it is used (importance=auto): a frame that offloads nothing skips it
when the policy in force never reads the importance features and nothing records dvfo/transition; the DVFO
state keeps them wherever they can matter."""
from __future__ import annotations

import time

import numpy as np
import pytest

from dvfo_ros.core.mdp import STATE_NAMES, ActionSpace
from dvfo_ros.core.mdp.observation import ObservationTracker
from dvfo_ros.core.policies import POLICIES, reads_importance

IMPORTANCE = [n for n in STATE_NAMES if n.startswith("importance_")]


BLIND = sorted(n for n, cls in POLICIES.items() if not cls.reads_importance)


def test_the_rule_policies_and_the_seed_systems_but_dvfo_and_only_they_say_they_never_read_the_importance():
    assert BLIND == ["autoscale", "cloud_only", "cpu_only", "e2e_rl", "edge_only", "image_upload", "max_freq",
                     "neurosurgeon", "ondemand", "static"]


@pytest.mark.parametrize("name", BLIND)
def test_blind_policies_act_the_same_whatever_the_importance_says(name):
    from dvfo_ros.core.policies import make_policy
    from dvfo_ros.core.twin import load_profile
    policy = make_policy(name, ActionSpace.from_profile(load_profile("xavier_nx"))).train(False)
    rng = np.random.default_rng(0)
    for _ in range(20):
        state = rng.uniform(0.0, 1.0, len(STATE_NAMES)).astype(np.float32)
        other = state.copy()
        for feature in IMPORTANCE:
            other[STATE_NAMES.index(feature)] = rng.uniform(0.0, 1.0)
        (a, extras), (b, other_extras) = policy.decide(state), policy.decide(other)
        assert np.array_equal(a, b) and extras == other_extras, name


def test_the_policy_in_force_reads_importance_until_a_blind_one_acts():
    t = ObservationTracker()
    assert reads_importance(t.policy)                         # no action yet: assume it is read
    t.on_action(0.0, 0.1, [1, 2, 3], "static")
    assert not reads_importance(t.policy)
    for name in ("dvfo", "dvfs_only", "my_own_policy", ""):
        t.on_action(0.0, 0.1, [1, 2, 3], name)
        assert reads_importance(t.policy), name


def test_edge_core_skips_the_attention_only_where_asked_and_answers_the_same():
    from dvfo_ros.core.inference.collab import CollaborativeModel
    from dvfo_ros.core.inference.edge import EdgeInference
    from dvfo_ros.core.io.camera import synthetic_frames
    engine = EdgeInference(CollaborativeModel.from_zoo("resnet18", None, 10, 32))
    frame = next(synthetic_frames(32, 32, 0))[0]
    full = engine.process(frame, 0, 0.0)
    lean = engine.process(frame, 1, 0.0, importance=False)
    assert set(full.importance) == set(IMPORTANCE) and lean.importance == {}
    assert lean.top_classes == full.top_classes and lean.top_scores == full.top_scores


@pytest.mark.ros
def test_executor_importance_auto_follows_the_policy_and_a_recorder():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from dvfo_ros.msg import DvfoAction, Observation, Transition
    from dvfo_ros.nodes.executor import ExecutorNode
    from rosutil import ros_context, spin_until
    params = [Parameter("artifact", value="none"), Parameter("num_classes", value=10),
              Parameter("input_size", value=32), Parameter("cloud_endpoint", value=""),
              Parameter("timing", value="measured")]
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=params)
        probe = Node("probe", context=ctx)
        seen = []
        probe.create_subscription(Observation, "dvfo/observation", seen.append, QoSProfile(depth=50))
        images = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        actions = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))
        nodes = [ex, probe]

        def frame_has_importance() -> bool:
            """Send one frame; whether its observation carries the importance features."""
            n = len(seen)
            img = Image(height=32, width=32, encoding="rgb8", step=96)
            img.data = np.full(32 * 32 * 3, 7, np.uint8).tobytes()
            images.publish(img)
            assert spin_until(ctx, nodes, lambda: len(seen) > n)
            return set(IMPORTANCE) <= set(seen[-1].names)

        def act(policy: str) -> None:
            a = DvfoAction(policy=policy, offload_ratio=0.0, fusion_weight=-1.0)
            actions.publish(a)
            assert spin_until(ctx, nodes, lambda: ex.obs.policy == policy)

        assert spin_until(ctx, nodes, lambda: images.get_subscription_count() > 0
                          and actions.get_subscription_count() > 0)
        assert frame_has_importance()                          # no action yet
        act("static")
        time.sleep(1.2)                                        # the once-a-second look at the graph
        assert spin_until(ctx, nodes, lambda: not ex.recording, 5.0)
        assert not frame_has_importance()                      # static at xi = 0, nobody records
        recorder = probe.create_subscription(Transition, "dvfo/transition", lambda m: None, QoSProfile(depth=10))
        assert spin_until(ctx, nodes, lambda: ex.recording, 5.0)
        assert frame_has_importance()                          # a bag for offline training carries the state
        probe.destroy_subscription(recorder)
        assert spin_until(ctx, nodes, lambda: not ex.recording, 5.0)
        act("dvfo")
        assert frame_has_importance()                          # a learnt policy reads the state
        act("static")
        ex.set_parameters([Parameter("importance", value="always")])
        assert frame_has_importance()
        ex.destroy_node()
        probe.destroy_node()
