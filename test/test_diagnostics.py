"""/diagnostics in diagnostic_updater's conventions, over real DDS: 1 Hz, "<node>: <task>" names, hardware_id
the board (fake device tree on a Jetson, the profile on the twin), a sliding window that lets a run recover
from bad frames, a stale-input status when frames stop (and a no-input one before any), and an input-rate
check against the camera's expected fps."""
from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from fake_sysfs import build_jetson_tree
from rosutil import ros_context, spin_until

pytestmark = pytest.mark.ros


class Diags:
    """Collects every DiagnosticStatus on /diagnostics with the time it arrived."""

    def __init__(self, node: Node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        self.seen: list = []        # (arrival monotonic s, status)
        self.arrays: list = []      # (arrival monotonic s, [names])
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, QoSProfile(depth=100))

    def _on(self, msg) -> None:
        now = time.monotonic()
        self.arrays.append((now, [s.name for s in msg.status]))
        self.seen.extend((now, s) for s in msg.status)

    def latest(self, name: str, since: float = 0.0):
        got = [s for t, s in self.seen if s.name == name and t >= since]
        return got[-1] if got else None

    def wait(self, ctx, nodes, name: str, cond, timeout_s: float = 6.0, since: float = 0.0):
        ok = spin_until(ctx, nodes, lambda: (s := self.latest(name, since)) is not None and cond(s), timeout_s)
        return self.latest(name, since) if ok else pytest.fail(f"{name}: {self.latest(name, since)}")


def _level(s) -> int:
    return s.level[0] if isinstance(s.level, (bytes, bytearray)) else int(s.level)


def _image(stamp: int, bad: bool = False):
    from sensor_msgs.msg import Image
    msg = Image(height=32, width=32, encoding="rgb8", step=96)
    msg.data = b"\x00" * 10 if bad else np.full((32, 32, 3), 90, np.uint8).tobytes()
    msg.header.stamp.sec = stamp
    return msg


def _artifact(tmp_path) -> str:
    from dvfo_ros.core.inference.collab import CollaborativeModel
    path = str(tmp_path / "resnet18_test.pt")
    CollaborativeModel.from_zoo("resnet18", num_classes=10, input_size=32).save_artifact(path)
    return path


def test_executor_status_recovers_over_its_window_and_reports_no_and_stale_input(tmp_path):
    from dvfo_ros.msg import DeviceState
    from dvfo_ros.nodes.executor import ExecutorNode
    OK, WARN, ERROR = 0, 1, 2
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=[
            Parameter("artifact", value=_artifact(tmp_path)), Parameter("cloud_endpoint", value=""),
            Parameter("diagnostic_window_s", value=1.5), Parameter("input_timeout_s", value=1.0),
            Parameter("expected_fps", value=0.0)])
        probe = Node("probe", context=ctx)
        d = Diags(probe)
        pub = probe.create_publisher(type(_image(0)), "camera/image_raw", QoSProfile(depth=10))
        state_pub = probe.create_publisher(DeviceState, "dvfo/device_state", QoSProfile(depth=10))
        nodes = [ex, probe]
        assert spin_until(ctx, nodes, lambda: pub.get_subscription_count() > 0 and state_pub.get_subscription_count())
        # no frames at all: never "OK, frames flowing"
        st = d.wait(ctx, nodes, "executor: camera input", lambda s: True)
        assert _level(st) == WARN and "no frames received yet" in st.message
        assert _level(d.latest("executor: inference")) == WARN
        state_pub.publish(DeviceState(backend="sim", profile="orin_nx"))
        stamp = 1
        for _ in range(3):                                   # three bad frames: ERROR
            pub.publish(_image(stamp, bad=True))
            stamp += 1
            spin_until(ctx, nodes, lambda: False, timeout_s=0.1)
        st = d.wait(ctx, nodes, "executor: inference", lambda s: _level(s) == ERROR)
        assert "3 of 3 frames failed" in st.message and st.hardware_id == "orin_nx (twin)"
        # good frames for longer than the window: back to OK (one bad spell does not stick for the run)
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            pub.publish(_image(stamp))
            stamp += 1
            spin_until(ctx, nodes, lambda: False, timeout_s=0.1)
        st = d.latest("executor: inference")
        assert _level(st) == OK and st.message.endswith("frames in the last 1.5 s"), st.message
        values = {kv.key: kv.value for kv in st.values}
        assert values["failed"] == "3" and values["window_failed"] == "0"   # the total stays, the window moved on
        assert _level(d.latest("executor: camera input")) == OK
        # frames stop: the input goes stale
        st = d.wait(ctx, nodes, "executor: camera input", lambda s: _level(s) == ERROR, timeout_s=4)
        assert st.message.startswith("stale frames: last one")
        ex.destroy_node()
        probe.destroy_node()


def test_one_hz_names_and_board_of_every_node(tmp_path):
    """governor (fake Jetson tree, 20 Hz DeviceState, 10 actions/s), executor, policy and camera: each publishes
    /diagnostics once a second, named "<node>: <task>", hardware_id = the board."""
    from dvfo_ros.msg import DvfoAction
    from dvfo_ros.nodes.camera import CameraNode
    from dvfo_ros.nodes.executor import ExecutorNode
    from dvfo_ros.nodes.governor import GovernorNode
    from dvfo_ros.nodes.policy import PolicyNode
    root = str(tmp_path)
    build_jetson_tree(root, "xavier_nx")                       # /proc/device-tree/model: "NVIDIA Jetson xavier_nx"
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[Parameter("backend", value="jetson"),
                                                             Parameter("sysfs_root", value=root),
                                                             Parameter("rate_hz", value=20.0)])
        ex = ExecutorNode(context=ctx, parameter_overrides=[Parameter("artifact", value="none"),
                                                            Parameter("num_classes", value=10),
                                                            Parameter("input_size", value=32),
                                                            Parameter("cloud_endpoint", value="")])
        pol = PolicyNode(context=ctx, parameter_overrides=[Parameter("startup_period_s", value=10.0)])
        cam = CameraNode(context=ctx, parameter_overrides=[Parameter("width", value=32), Parameter("height", value=32)])
        probe = Node("probe", context=ctx)
        d = Diags(probe)
        act = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))
        nodes = [gov, ex, pol, cam, probe]
        assert spin_until(ctx, nodes, lambda: act.get_subscription_count() >= 2)
        t0 = time.monotonic()
        while time.monotonic() < t0 + 4.0:                    # 10 actions a second
            act.publish(DvfoAction(cpu_freq_hz=0, gpu_freq_hz=0, emc_freq_hz=0))
            spin_until(ctx, nodes, lambda: False, timeout_s=0.1)
        window = [n for t, n in d.arrays if t0 + 1.0 <= t < t0 + 4.0]       # 3 s, after start-up
        for name in ("governor: clocks", "executor: inference", "executor: camera input", "policy: decisions",
                     "camera: frames"):
            count = sum(name in names for names in window)
            assert 2 <= count <= 4, (name, count)             # 1 Hz, not per state message or per action
        board = "NVIDIA Jetson xavier_nx"
        assert d.latest("governor: clocks").hardware_id == board
        assert _level(d.latest("governor: clocks")) == 0
        # the others learn the board from dvfo/device_state (a jetson backend: this machine's device tree)
        from dvfo_ros.core.diag import hardware_id
        for name in ("executor: inference", "policy: decisions", "camera: frames"):
            assert d.latest(name).hardware_id == hardware_id("jetson", "xavier_nx"), name
        for n in nodes:
            n.destroy_node()


def test_input_rate_check_warns_when_the_camera_runs_at_half_the_expected_fps():
    from dvfo_ros.nodes.camera import CameraNode
    from dvfo_ros.nodes.executor import ExecutorNode
    OK, WARN = 0, 1
    with ros_context() as ctx:
        cam = CameraNode(context=ctx, parameter_overrides=[Parameter("width", value=32), Parameter("height", value=32),
                                                           Parameter("fps", value=10.0),
                                                           Parameter("diagnostic_window_s", value=2.0)])
        ex = ExecutorNode(context=ctx, parameter_overrides=[
            Parameter("artifact", value="none"), Parameter("num_classes", value=10),
            Parameter("input_size", value=32), Parameter("cloud_endpoint", value=""),
            Parameter("expected_fps", value=10.0), Parameter("diagnostic_window_s", value=2.0)])
        probe = Node("probe", context=ctx)
        d = Diags(probe)
        nodes = [cam, ex, probe]
        t0 = time.monotonic()
        st = d.wait(ctx, nodes, "executor: camera input", lambda s: _level(s) == OK, since=t0 + 2.5, timeout_s=8)
        assert "frames at" in st.message
        assert _level(d.latest("camera: frames")) == OK
        cam.set_parameters([Parameter("fps", value=5.0)])    # the camera now runs at half the expected rate
        t1 = time.monotonic()
        st = d.wait(ctx, nodes, "executor: camera input", lambda s: _level(s) == WARN, since=t1 + 2.0, timeout_s=8)
        assert "too low" in st.message and "expected 10 Hz" in st.message, st.message
        rate = float({kv.key: kv.value for kv in st.values}["rate_hz"])
        assert 4.0 <= rate <= 6.0, rate
        st = d.wait(ctx, nodes, "camera: frames", lambda s: True, since=t1 + 1.5)
        assert _level(st) == OK, st.message                   # the camera itself does what it was told (5 fps)
        for n in nodes:
            n.destroy_node()


def test_the_executor_checks_its_input_against_the_camera_it_runs_with():
    """dvfo-pipeline and pipeline.launch.py give the executor the camera's fps as expected_fps, so a
    30 fps camera is not a WARN "too high"; a value the user sets for the executor stands."""
    from dvfo_ros.nodes.graph import linked_params
    assert linked_params({"fps": 30.0}, {}) == {"expected_fps": 30.0}
    assert linked_params({"fps": 30.0}, {"expected_fps": 0.0}) == {}
    assert linked_params({}, {}) == {}


def test_a_camera_whose_reads_fail_reports_the_rate_it_publishes_not_the_rate_it_tries():
    """Every other read fails: the camera is in ERROR with the read's reason, and its rate is the frames it
    published (about half its fps), not its timer's."""
    from dvfo_ros.nodes.camera import CameraNode
    ERROR = 2
    with ros_context() as ctx:
        cam = CameraNode(context=ctx, parameter_overrides=[Parameter("width", value=32), Parameter("height", value=32),
                                                           Parameter("fps", value=10.0),
                                                           Parameter("diagnostic_window_s", value=2.0)])
        cam._frames = _EveryOtherReadFails(cam._frames)
        probe = Node("probe", context=ctx)
        from sensor_msgs.msg import Image
        probe.create_subscription(Image, "camera/image_raw", lambda m: None, QoSProfile(depth=5))
        d = Diags(probe)
        t0 = time.monotonic()
        st = d.wait(ctx, [cam, probe], "camera: frames", lambda s: _level(s) == ERROR, since=t0 + 2.5, timeout_s=8)
        assert "frame read failed: bad sector" in st.message, st.message
        values = {kv.key: kv.value for kv in st.values}
        assert 3.5 <= float(values["rate_hz"]) <= 6.5, values
        assert cam.frames_published > 0
        for n in (cam, probe):
            n.destroy_node()


class _EveryOtherReadFails:
    """The camera's own source, with every other read raising (a flaky disk or USB camera)."""

    def __init__(self, frames):
        self.frames, self.reads = frames, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.reads += 1
        if self.reads % 2 == 0:
            raise OSError("bad sector")
        return next(self.frames)
