"""Every policy_mode the policy node advertises acts live; the others are refused with a one-line reason
(at start-up, by the node and by dvfo-pipeline, never with a traceback)."""
import math

import pytest

from dvfo_ros.core.policies import POLICIES, live_policy_names, policy_names, why_not_live

COMMAND = ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio")


def _advertised():
    from dvfo_ros.nodes.policy import PARAMS
    return list(next(p for p in PARAMS if p.name == "policy_mode").choices)


def test_advertised_modes_are_the_registry_s_live_ones():
    advertised = _advertised()
    assert advertised == live_policy_names() and advertised[0] == "static"
    assert set(advertised) <= set(policy_names())
    assert {"autoscale", "e2e_rl", "neurosurgeon", "cpu_only", "image_upload"} <= set(advertised)
    for name in policy_names():
        assert (why_not_live(name) is None) == (name in advertised), name
    for name in ("e4", "mcia", "telepathy"):          # advertised once, not implemented (yet)
        assert name not in advertised and why_not_live(name).startswith(f"unknown policy '{name}'")


@pytest.mark.parametrize("name", ["oracle", "dvfo_sequential"])
def test_registered_but_not_live_has_a_one_line_reason(name):
    assert name in POLICIES
    reason = why_not_live(name)
    assert reason and name in reason and "\n" not in reason


@pytest.mark.parametrize("mode", _advertised())
def test_every_advertised_mode_acts_in_a_live_runtime(mode):
    from dvfo_ros.core.policies.runtime import PolicyRuntime
    from dvfo_ros.core.twin import load_profile
    prof = load_profile("xavier_nx")
    rt = PolicyRuntime(mode, "xavier_nx")
    try:
        commands = [rt.first_action()]
        features = {"bandwidth_mbps": 4.0, "rtt_ms": 20.0, "cpu_freq_hz": float(prof.cpu_hz[-1]),
                    "gpu_freq_hz": float(prof.gpu_hz[3]), "emc_freq_hz": float(prof.emc_hz[-1]),
                    "last_latency_ms": 12.0}
        first = rt.step(features)
        rt.on_result(0.09, 12.0, False)
        second = rt.step(dict(features, last_latency_ms=13.0))
        commands += [first.command, second.command]
        assert second.transition is not None and math.isfinite(second.transition.reward)
        for c in commands:
            assert set(COMMAND) <= set(c)
            assert c["cpu_freq_hz"] in prof.cpu_hz and c["gpu_freq_hz"] in prof.gpu_hz
            assert c["emc_freq_hz"] in prof.emc_hz and 0.0 <= c["offload_ratio"] <= 1.0
    finally:
        rt.close()


@pytest.mark.ros
@pytest.mark.parametrize("mode", ["oracle", "e4"])
def test_policy_node_refuses_a_mode_that_cannot_act_live_with_the_reason(mode):
    from rclpy.parameter import Parameter
    from rosutil import ros_context
    from dvfo_ros.nodes.policy import PolicyNode
    with ros_context() as ctx:
        with pytest.raises(ValueError) as info:
            PolicyNode(context=ctx, parameter_overrides=[Parameter("policy_mode", value=mode)])
    msg = str(info.value)
    assert why_not_live(mode) in msg and "policy_mode" in msg and "\n" not in msg


@pytest.mark.ros
def test_a_validator_refuses_a_run_time_set_with_its_reason():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosutil import ros_context
    from dvfo_ros.nodes.params import Param, ParamSet
    with ros_context() as ctx:
        node = Node("validated", context=ctx)
        params = ParamSet(node, [Param("mode", "static", "a policy", choices=tuple(live_policy_names()),
                                       validator=why_not_live)])
        res = node.set_parameters([Parameter("mode", value="oracle")])[0]
        assert not res.successful and res.reason == f"mode='oracle': {why_not_live('oracle')}"
        assert params["mode"] == "static"
        assert node.set_parameters([Parameter("mode", value="dvfo")])[0].successful and params["mode"] == "dvfo"
        node.destroy_node()


@pytest.mark.ros
def test_dvfo_pipeline_refuses_oracle_with_the_reason(capsys):
    from dvfo_ros.cli import pipeline
    rc = pipeline.main(["--frames", "1", "--timeout-s", "60", "--set", "policy.policy_mode=oracle",
                        "--set", "executor.cloud_endpoint=''", "--set", "executor.artifact=none",
                        "--set", "executor.num_classes=10", "--set", "executor.input_size=32"])
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("dvfo-pipeline: error:") and why_not_live("oracle") in last
    assert "Traceback" not in err
