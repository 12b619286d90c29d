"""Untrained weights are a WARN (log + /diagnostics), never silent; twin figures are labelled as such."""
import os
import subprocess
import sys

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from rosutil import free_port, ros_context, spin_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = "dvfo-artifact train --model resnet18 --dataset digits"


def _executor(ctx, **extra):
    from dvfo_ros.nodes.executor import ExecutorNode
    params = {"cloud_endpoint": "", "input_size": 32, "num_classes": 10, **extra}
    return ExecutorNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _statuses(ctx, nodes, probe, cond, timeout_s=5.0):
    from diagnostic_msgs.msg import DiagnosticArray
    seen = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: seen.extend(m.status), QoSProfile(depth=10))
    spin_until(ctx, nodes + [probe], lambda: any(cond(s) for s in seen), timeout_s=timeout_s)
    return [s for s in seen if s.name == "executor: inference"]


def test_executor_on_untrained_weights_warns_in_log_and_diagnostics(capfd):
    from diagnostic_msgs.msg import DiagnosticStatus
    from dvfo_ros.msg import DeviceState
    with ros_context() as ctx:
        ex = _executor(ctx, artifact="none")
        probe = Node("probe", context=ctx)
        err = capfd.readouterr().err
        assert "WARN" in err and "UNTRAINED" in err and FIX in err
        st = _statuses(ctx, [ex], probe, lambda s: s.name == "executor: inference")
        assert st and st[-1].level == DiagnosticStatus.WARN and FIX in st[-1].message
        values = {kv.key: kv.value for kv in st[-1].values}
        assert values["weights"] == "UNTRAINED" and values["timing"] == "measured on this machine"
        # a sim governor: the figures come from the twin, and both the log and /diagnostics say so
        pub = probe.create_publisher(DeviceState, "dvfo/device_state", QoSProfile(depth=10))
        assert spin_until(ctx, [ex, probe], lambda: pub.get_subscription_count() > 0)
        pub.publish(DeviceState(backend="sim", profile="xavier_nx"))
        st = _statuses(ctx, [ex], probe, lambda s: any(kv.key == "timing" and "twin" in kv.value for kv in s.values))
        values = {kv.key: kv.value for kv in st[-1].values}
        assert values["timing"] == "twin (xavier_nx profile), not measured"
        assert "timing: twin (xavier_nx profile), not measured" in capfd.readouterr().err
        ex.destroy_node()
        probe.destroy_node()


def test_executor_with_an_artifact_does_not_warn(tmp_path, monkeypatch, capfd):
    from diagnostic_msgs.msg import DiagnosticStatus
    from dvfo_ros.core.inference.collab import CollaborativeModel
    path = str(tmp_path / "resnet18_digits.pt")
    CollaborativeModel.from_zoo("resnet18", num_classes=10, input_size=16).save_artifact(path)
    with ros_context() as ctx:
        ex = _executor(ctx, artifact=path)
        probe = Node("probe", context=ctx)
        assert "UNTRAINED" not in capfd.readouterr().err
        st = _statuses(ctx, [ex], probe, lambda s: s.name == "executor: inference")
        # no frames yet is the one WARN left (no input is never "OK"); nothing about the weights
        assert st and st[-1].level == DiagnosticStatus.WARN and st[-1].message == "no frames in the last 5 s"
        assert {kv.key: kv.value for kv in st[-1].values}["weights"].startswith("resnet18-s")
        ex.destroy_node()
        probe.destroy_node()


def test_cloud_on_untrained_weights_warns_at_start(tmp_path):
    env = dict(os.environ, DVFO_ARTIFACT_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", f"tcp://127.0.0.1:{free_port()}",
                             "--dataset", "nothing_here", "--num-classes", "10", "--input-size", "32",
                             "--max-batch", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "dvfo-cloud ready" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "WARNING running UNTRAINED resnet18" in err
    assert "dvfo-artifact train --model resnet18 --dataset nothing_here" in err
