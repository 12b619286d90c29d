"""Nodes under faults, over real DDS: a callback that fails logs it and the node keeps serving;
invalid parameters are refused with a reason and change nothing; the governor, run as a real
process, puts the clocks back on SIGTERM and SIGINT."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from fake_sysfs import BOARDS, XAVIER_CPU_KHZ, build_jetson_tree, read, refuse_writes
from rosutil import executor_probe, ros_context, spin_until

pytestmark = pytest.mark.ros
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTOR = [Parameter("artifact", value="none"), Parameter("num_classes", value=10),
            Parameter("input_size", value=32), Parameter("cloud_endpoint", value="tcp://127.0.0.1:1"),
            Parameter("deadline_ms", value=50.0), Parameter("timing", value="measured")]


def _image(width=32, height=32, encoding="rgb8", data=None):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, width * 3
    msg.data = bytes(width * height * 3) if data is None else data
    return msg


# ----------------------------------------------------------------------------- callbacks that fail

def test_executor_answers_a_malformed_frame_logs_it_and_serves_the_next(capfd):
    from dvfo_ros.msg import InferenceResult
    from dvfo_ros.nodes.executor import ExecutorNode
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        probe = Node("probe", context=ctx)
        results = []
        probe.create_subscription(InferenceResult, "dvfo/inference", results.append, QoSProfile(depth=50))
        from sensor_msgs.msg import Image
        pub = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        assert spin_until(ctx, [ex, probe], lambda: pub.get_subscription_count() > 0)
        pub.publish(_image(data=b"\x00" * 10))                 # claims 32x32 rgb8, carries 10 bytes
        assert spin_until(ctx, [ex, probe], lambda: len(results) >= 1)
        pub.publish(_image())
        assert spin_until(ctx, [ex, probe], lambda: len(results) >= 2)
        bad, good = results[0], results[1]
        assert bad.error and "malformed image" in bad.error_reason and bad.top_classes.tolist() == []
        assert not bad.fallback                                   # a bad frame is an error, not a cloud fallback
        assert len(good.top_classes) == 5 and not good.error
        ex.destroy_node()
        probe.destroy_node()
    assert "malformed image" in capfd.readouterr().err           # and it is in the log


def test_executor_ignores_a_nan_action_and_survives_an_inference_fault(capfd):
    """A NaN offload share from a broken policy is refused; an exception inside inference is logged and
    every frame still gets a result; the executor recovers when the fault goes away."""
    from dvfo_ros.msg import DvfoAction
    from dvfo_ros.nodes.executor import ExecutorNode
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        probe, results, img_pub, act_pub = executor_probe(ctx, ex)
        before = ex.action
        bad = DvfoAction()
        bad.offload_ratio, bad.fusion_weight = math.nan, -1.0
        act_pub.publish(bad)
        spin_until(ctx, [ex, probe], lambda: False, timeout_s=0.5)
        assert ex.action == before                                  # the NaN action was not applied
        real_process = ex.engine.process

        def broken(*args, **kwargs):
            raise RuntimeError("simulated CUDA error")
        ex.engine.process = broken
        for n in range(3):
            img_pub.publish(_image())
            assert spin_until(ctx, [ex, probe], lambda: len(results) >= n + 1)
        assert all(r.error and "inference failed" in r.error_reason for r in results[:3])
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        diags = []
        probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, QoSProfile(depth=10))
        assert spin_until(ctx, [ex, probe], lambda: any(
            st.name == "executor: inference" and st.level == DiagnosticStatus.ERROR for d in diags for st in d.status),
            timeout_s=5)
        ex.engine.process = real_process
        img_pub.publish(_image())
        assert spin_until(ctx, [ex, probe], lambda: len(results) >= 4)
        assert not results[3].error and len(results[3].top_classes) == 5
        ex.destroy_node()
        probe.destroy_node()
    err = capfd.readouterr().err
    assert "inference failed" in err and "ignored action" in err


def test_policy_keeps_acting_on_garbage_observations():
    """NaN, infinite, unknown and missing features: the policy still answers every one with a table action."""
    from dvfo_ros.msg import DvfoAction, Observation
    from dvfo_ros.nodes.policy import PolicyNode
    with ros_context() as ctx:
        pol = PolicyNode(context=ctx, parameter_overrides=[Parameter("policy_mode", value="dvfo"),
                                                           Parameter("startup_period_s", value=10.0)])
        table = pol.runtime.space
        probe = Node("probe", context=ctx)
        actions = []
        probe.create_subscription(DvfoAction, "dvfo/action", actions.append, QoSProfile(depth=50))
        pub = probe.create_publisher(Observation, "dvfo/observation", QoSProfile(depth=10))
        assert spin_until(ctx, [pol, probe], lambda: pub.get_subscription_count() > 0)
        garbage = [(["latency_ms", "cpu_freq_hz"], [math.nan, math.nan]),
                   (["energy_j", "bandwidth_mbps"], [math.inf, -math.inf]),
                   (["no_such_feature"], [1e300]),
                   (["latency_ms", "energy_j", "cpu_freq_hz"], [1.0]),   # fewer values than names
                   ([], [])]
        for n, (names, values) in enumerate(garbage):
            ob = Observation()
            ob.seq, ob.names, ob.values = n, names, values
            pub.publish(ob)
            assert spin_until(ctx, [pol, probe], lambda: pol.frames >= n + 1), f"observation {n} not handled"
        assert spin_until(ctx, [pol, probe], lambda: len(actions) >= len(garbage))
        for a in actions[-len(garbage):]:
            assert a.cpu_freq_hz in table.cpu_hz and a.gpu_freq_hz in table.gpu_hz and a.emc_freq_hz in table.emc_hz
            assert 0.0 <= a.offload_ratio <= 1.0
        pol.destroy_node()
        probe.destroy_node()


def test_governor_refused_write_is_an_error_in_state_and_diagnostics_and_it_keeps_publishing(tmp_path, capfd):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from dvfo_ros.msg import DeviceState, DvfoAction
    from dvfo_ros.nodes.governor import GovernorNode
    root = str(tmp_path)
    info = build_jetson_tree(root, "xavier_nx")
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[
            Parameter("backend", value="jetson"), Parameter("sysfs_root", value=root),
            Parameter("rate_hz", value=20.0)])
        probe = Node("probe", context=ctx)
        states, diags = [], []
        probe.create_subscription(DeviceState, "dvfo/device_state", states.append, QoSProfile(depth=100))
        probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, QoSProfile(depth=100))
        pub = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))
        assert spin_until(ctx, [gov, probe], lambda: states and pub.get_subscription_count() > 0)
        refuse_writes(root, f"{info['gpu_dir']}/max_freq")       # the kernel node goes away mid-run
        a = DvfoAction()
        a.cpu_freq_hz, a.gpu_freq_hz, a.emc_freq_hz = XAVIER_CPU_KHZ[3] * 1000, info["gpu_hz"][2], 0
        pub.publish(a)
        assert spin_until(ctx, [gov, probe], lambda: any(s.error for s in states))
        n = len(states)
        assert spin_until(ctx, [gov, probe], lambda: len(states) >= n + 3)   # still publishing
        errored = [s for s in states if s.error][0]
        assert "max_freq" in errored.error or "gpu" in errored.error.lower()
        assert spin_until(ctx, [gov, probe], lambda: any(d.status[0].level == DiagnosticStatus.ERROR
                                                         and "refused" in d.status[0].message for d in diags),
                          timeout_s=3)                      # in the next 1 Hz /diagnostics
        gov.destroy_node()
        probe.destroy_node()
    assert "refused" in capfd.readouterr().err


# ----------------------------------------------------------------------------- invalid parameters

@pytest.mark.parametrize("node_cls,bad,name", [
    ("camera.CameraNode", Parameter("fps", value=0.0), "fps"),
    ("camera.CameraNode", Parameter("source", value="lidar"), "source"),
    ("camera.CameraNode", Parameter("width", value=4), "width"),
    ("executor.ExecutorNode", Parameter("deadline_ms", value=0.0), "deadline_ms"),
    ("executor.ExecutorNode", Parameter("offload_ratio", value=1.5), "offload_ratio"),
    ("executor.ExecutorNode", Parameter("timing", value="sundial"), "timing"),
    ("policy.PolicyNode", Parameter("offload_ratio", value=2.0), "offload_ratio"),
    ("policy.PolicyNode", Parameter("eta", value=-0.1), "eta"),
    ("policy.PolicyNode", Parameter("latency_slo_ms", value=0.0), "latency_slo_ms"),
])
def test_invalid_runtime_parameter_is_refused_with_a_reason_and_changes_nothing(node_cls, bad, name):
    import importlib
    module, cls = node_cls.split(".")
    node_type = getattr(importlib.import_module(f"dvfo_ros.nodes.{module}"), cls)
    with ros_context() as ctx:
        node = node_type(context=ctx, parameter_overrides=EXECUTOR if module == "executor" else [])
        before = node.get_parameter(name).value
        res = node.set_parameters([bad])[0]
        assert not res.successful
        assert name in res.reason                               # the reason names the parameter
        assert node.get_parameter(name).value == before and node.params[name] == before
        node.destroy_node()


def test_camera_refuses_a_missing_directory_and_keeps_publishing(tmp_path):
    from dvfo_ros.nodes.camera import CameraNode
    from sensor_msgs.msg import Image
    with ros_context() as ctx:
        cam = CameraNode(context=ctx, parameter_overrides=[Parameter("fps", value=50.0), Parameter("width", value=16),
                                                           Parameter("height", value=16)])
        probe = Node("probe", context=ctx)
        images = []
        probe.create_subscription(Image, "camera/image_raw", images.append, qos_profile_sensor_data)
        res = cam.set_parameters([Parameter("source", value="directory"),
                                  Parameter("location", value=str(tmp_path / "nowhere"))])
        assert not all(r.successful for r in res)
        assert any("not found" in r.reason for r in res if not r.successful)
        assert cam.params["source"] == "synthetic"
        assert spin_until(ctx, [cam, probe], lambda: len(images) >= 3)   # still serving the old source
        cam.destroy_node()
        probe.destroy_node()


@pytest.mark.parametrize("node_cls,bad", [
    ("camera.CameraNode", Parameter("fps", value=-5.0)),
    ("policy.PolicyNode", Parameter("policy_mode", value="telepathy")),
    ("executor.ExecutorNode", Parameter("model", value="alexnet")),
])
def test_invalid_start_parameter_stops_the_node_with_a_reason(node_cls, bad):
    import importlib
    module, cls = node_cls.split(".")
    node_type = getattr(importlib.import_module(f"dvfo_ros.nodes.{module}"), cls)
    with ros_context() as ctx:
        with pytest.raises(Exception, match=bad.name):
            node_type(context=ctx, parameter_overrides=(EXECUTOR if module == "executor" else []) + [bad])


def test_read_only_parameters_cannot_be_changed_at_run_time():
    from dvfo_ros.nodes.policy import PolicyNode
    with ros_context() as ctx:
        pol = PolicyNode(context=ctx)
        res = pol.set_parameters([Parameter("policy_mode", value="dvfo")])[0]
        assert not res.successful and "read-only" in res.reason.lower()
        assert pol.params["policy_mode"] == "static"
        pol.destroy_node()


# ----------------------------------------------------------------------------- governor process exit

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_governor_process_puts_the_clocks_back_on_signal(tmp_path, sig):
    from dvfo_ros.core.hardware.jetson import BPMP_EMC
    from dvfo_ros.msg import DvfoAction
    root = str(tmp_path)
    info = build_jetson_tree(root, "xavier_nx")
    watched = [f"{info['cpu0']}/scaling_min_freq", f"{info['cpu0']}/scaling_max_freq",
               f"{info['gpu_dir']}/min_freq", f"{info['gpu_dir']}/max_freq", f"{BPMP_EMC}/rate"]
    before = {p: read(root, p) for p in watched}
    proc = subprocess.Popen([sys.executable, "-m", "dvfo_ros.nodes.governor", "--ros-args",
                             "-p", "backend:=jetson", "-p", f"sysfs_root:={root}", "-p", "rate_hz:=20.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        a = DvfoAction()
        a.cpu_freq_hz = XAVIER_CPU_KHZ[2] * 1000
        a.gpu_freq_hz = BOARDS["xavier_nx"]["gpu_hz"][1]
        a.emc_freq_hz = BOARDS["xavier_nx"]["emc_hz"][0]
        with ros_context() as ctx:
            probe = Node("probe", context=ctx)
            pub = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))

            def changed() -> bool:
                pub.publish(a)
                time.sleep(0.05)
                return all(read(root, p) != before[p] for p in watched)
            assert spin_until(ctx, [probe], changed, timeout_s=60.0), \
                f"governor never applied the action: {proc.stdout.read() if proc.poll() is not None else ''}"
            probe.destroy_node()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert {p: read(root, p) for p in watched} == before, out
    assert "Traceback" not in out, out
