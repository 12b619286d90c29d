"""The executor as Jetson/ROS perception users drive it, over real DDS: any camera encoding and
compressed frames give the same classification, results go out as vision_msgs (real vision_msgs,
built from ../shared/ros2-src by vision_ws.py), LabelInfo is latched, a bad frame is an error for its
seq and the next one is classified, and the camera's images reach a reliable subscriber (REP 2003)."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

import vision_ws
from rosutil import ros_context, spin_until

pytestmark = pytest.mark.ros
EXECUTOR = [Parameter("artifact", value="none"), Parameter("num_classes", value=10),
            Parameter("input_size", value=32), Parameter("cloud_endpoint", value=""),
            Parameter("top_k", value=10), Parameter("timing", value="measured")]
# Largest score change a correct lossy conversion (JPEG q95, 4:2:2 chroma, Bayer demosaicing) may cause;
# swapping red and blue moves the scores well past it (checked in the test itself).
LOSSY_TOL = 0.004


@pytest.fixture(scope="module")
def vision_msgs():
    vision_ws.load()
    import vision_msgs.msg
    return vision_msgs.msg


def _smooth_image() -> np.ndarray:
    """64x64 RGB ramps: red rises left to right, blue falls, green rises downwards (no sharp edges, so
    4:2:2 chroma and demosaicing lose little, while a red/blue swap changes the picture)."""
    y, x = np.mgrid[0:64, 0:64]
    return np.dstack([x * 4, y * 2 + 64, 255 - x * 4]).clip(0, 255).astype(np.uint8)


def _image(stamp: int, name: str, height: int, width: int, encoding: str, step: int, data: bytes,
           bigendian: bool = False):
    from sensor_msgs.msg import Image
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(bigendian))
    msg.data = data
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 + stamp
    msg.header.frame_id = f"cam_{name}"
    return msg


def _compressed(stamp: int, name: str, fmt: str, data: bytes):
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage(format=fmt)
    msg.data = data
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 1000 + stamp
    msg.header.frame_id = f"cam_{name}"
    return msg


def _bayer(rgb: np.ndarray, pattern: str) -> bytes:
    mosaic = np.zeros(rgb.shape[:2], np.uint8)
    for k, c in enumerate(pattern):
        mosaic[k // 2::2, k % 2::2] = rgb[k // 2::2, k % 2::2, "rgb".index(c)]
    return mosaic.tobytes()


def _frames():
    """name -> (message builder(stamp), reference name, exact?) for one picture in every input form."""
    from dvfo_ros.core.io.encodings import rgb_to_image
    rgb = _smooth_image()
    grey = np.repeat(rgb[:, :, 1:2], 3, axis=2)
    h, w, _ = rgb.shape

    def plain(img, encoding, step=None, big=False):
        st, data = rgb_to_image(img, encoding, step, big)
        return lambda s, n: _image(s, n, h, w, encoding, st, data, big)

    def raw(encoding, step, data):
        return lambda s, n: _image(s, n, h, w, encoding, step, data)

    def packed(fmt, ext, **kw):
        ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], list(kw.get("params", [])))
        assert ok
        return lambda s, n: _compressed(s, n, fmt, buf.tobytes())

    return {
        "rgb8": (plain(rgb, "rgb8"), "rgb8", True),
        "grey": (plain(grey, "rgb8"), "grey", True),
        "swapped": (plain(rgb[:, :, ::-1].copy(), "rgb8"), "rgb8", None),     # the control: must NOT match
        "bgr8": (plain(rgb, "bgr8"), "rgb8", True),
        "rgba8": (plain(rgb, "rgba8"), "rgb8", True),
        "bgra8": (plain(rgb, "bgra8"), "rgb8", True),
        "rgb8 padded": (plain(rgb, "rgb8", step=w * 3 + 12), "rgb8", True),
        "rgb16 big-endian": (plain(rgb, "rgb16", big=True), "rgb8", True),
        "bgra16": (plain(rgb, "bgra16"), "rgb8", True),
        "mono8": (plain(grey, "mono8"), "grey", True),
        "mono16": (plain(grey, "mono16"), "grey", True),
        "mono16 big-endian": (plain(grey, "mono16", big=True), "grey", True),
        "png": (packed("png", ".png"), "rgb8", True),
        "jpeg": (packed("rgb8; jpeg compressed bgr8", ".jpg", params=[cv2.IMWRITE_JPEG_QUALITY, 95]), "rgb8", False),
        "yuv422 (uyvy)": (raw("yuv422", w * 2, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY).tobytes()), "rgb8", False),
        "yuv422_yuy2": (raw("yuv422_yuy2", w * 2, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2).tobytes()), "rgb8",
                        False),
        "bayer_rggb8": (raw("bayer_rggb8", w, _bayer(rgb, "rggb")), "rgb8", False),
        "bayer_gbrg8": (raw("bayer_gbrg8", w, _bayer(rgb, "gbrg")), "rgb8", False),
    }


class Probe:
    """Publishes frames to the executor and collects what it answers, keyed by the frame's stamp."""

    def __init__(self, ctx, vision=None):
        from sensor_msgs.msg import CompressedImage, Image

        from dvfo_ros.msg import InferenceResult
        self.node = Node("probe", context=ctx)
        self.results: dict = {}
        self.classifications: dict = {}
        self.node.create_subscription(InferenceResult, "dvfo/inference",
                                      lambda m: self.results.setdefault(m.header.stamp.sec, m), QoSProfile(depth=100))
        if vision is not None:
            self.node.create_subscription(vision.Classification, "dvfo/classification",
                                          lambda m: self.classifications.setdefault(m.header.stamp.sec, m),
                                          QoSProfile(depth=100))
        self.image_pub = self.node.create_publisher(Image, "camera/image_raw", QoSProfile(depth=10))
        self.compressed_pub = self.node.create_publisher(CompressedImage, "camera/image_raw/compressed",
                                                         QoSProfile(depth=10))

    def send(self, ctx, ex, msg) -> object:
        pub = self.compressed_pub if type(msg).__name__ == "CompressedImage" else self.image_pub
        stamp = msg.header.stamp.sec
        pub.publish(msg)
        assert spin_until(ctx, [ex, self.node], lambda: stamp in self.results, timeout_s=20), \
            f"no dvfo/inference for frame {msg.header.frame_id}"
        return self.results[stamp]


def _scores(result) -> np.ndarray:
    by_class = dict(zip(result.top_classes.tolist(), result.top_scores.tolist()))
    return np.array([by_class[c] for c in range(10)])


def test_every_encoding_and_compressed_frame_gets_the_same_classification(vision_msgs):
    from dvfo_ros.nodes.executor import ExecutorNode
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        probe = Probe(ctx, vision_msgs)
        assert spin_until(ctx, [ex, probe.node], lambda: probe.image_pub.get_subscription_count() > 0
                          and probe.compressed_pub.get_subscription_count() > 0
                          and ex.count_subscribers("dvfo/classification") > 0)
        sent, got = {}, {}
        for stamp, (name, (build, ref, exact)) in enumerate(_frames().items(), start=1):
            sent[name] = build(stamp, name)
            got[name] = probe.send(ctx, ex, sent[name])
            assert not got[name].error, (name, got[name].error_reason)
        assert spin_until(ctx, [ex, probe.node], lambda: len(probe.classifications) == len(sent))
        names = ex.model.meta["class_names"]
        ex.destroy_node()
        probe.node.destroy_node()

    reference = {ref: _scores(got[ref]) for ref in ("rgb8", "grey")}
    swap = np.abs(_scores(got["swapped"]) - reference["rgb8"]).max()
    assert swap > 3 * LOSSY_TOL, f"red/blue swap changes scores by only {swap:.4f}: the check could not see it"
    for name, (_, ref, exact) in _frames().items():
        if exact is None or name == ref:
            continue
        r = got[name]
        diff = np.abs(_scores(r) - reference[ref]).max()
        if exact:
            assert r.top_classes.tolist() == got[ref].top_classes.tolist() and diff == 0.0, (name, diff)
        else:
            assert r.top_classes[0] == got[ref].top_classes[0] and diff <= LOSSY_TOL, (name, diff)
        # the standard result: the image's own header, one hypothesis per top-k entry, ids = class names
        c = probe.classifications[sent[name].header.stamp.sec]
        assert c.header == sent[name].header, name
        assert [h.class_id for h in c.results] == [names[i] for i in r.top_classes], name
        assert np.allclose([h.score for h in c.results], r.top_scores), name


def test_label_info_reaches_a_subscriber_that_joins_late(vision_msgs):
    from dvfo_ros.nodes.executor import ExecutorNode
    from dvfo_ros.nodes.qos import LATCHED
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        spin_until(ctx, [ex], lambda: False, timeout_s=1.0)       # published at start; nobody listened
        late = Node("late_joiner", context=ctx)
        infos = []
        late.create_subscription(vision_msgs.LabelInfo, "dvfo/label_info", infos.append, LATCHED)
        assert spin_until(ctx, [ex, late], lambda: bool(infos), timeout_s=10), "no LabelInfo for a late joiner"
        info = infos[0]
        assert [(v.class_id, v.class_name) for v in info.class_map] == \
            list(enumerate(ex.model.meta["class_names"]))
        assert len(info.class_map) == 10
        ex.destroy_node()
        late.destroy_node()


def test_without_vision_msgs_the_executor_says_so_once_and_publishes_the_rest(monkeypatch, capfd):
    from dvfo_ros.nodes.executor import ExecutorNode
    monkeypatch.setitem(sys.modules, "vision_msgs", None)        # `import vision_msgs.msg` -> ImportError
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        probe = Probe(ctx)
        assert spin_until(ctx, [ex, probe.node], lambda: probe.image_pub.get_subscription_count() > 0)
        for stamp in (1, 2):
            build, _, _ = _frames()["rgb8"]
            assert len(probe.send(ctx, ex, build(stamp, "rgb8")).top_classes) == 10
        assert ex.count_publishers("dvfo/classification") == 0
        ex.destroy_node()
        probe.node.destroy_node()
    err = capfd.readouterr().err
    assert err.count("vision_msgs is not installed") == 1, err


def test_a_bad_frame_is_an_error_for_its_seq_and_the_next_frame_is_classified(capfd):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from dvfo_ros.nodes.executor import ExecutorNode
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=EXECUTOR)
        probe = Probe(ctx)
        diags = []
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, QoSProfile(depth=10))
        assert spin_until(ctx, [ex, probe.node], lambda: probe.image_pub.get_subscription_count() > 0
                          and probe.compressed_pub.get_subscription_count() > 0)
        # REP 2003: the executor's image subscriptions are best effort, so any driver's images match
        subs = probe.node.get_subscriptions_info_by_topic("/camera/image_raw")
        assert subs and all(s.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for s in subs)
        bad = [_image(1, "short", 32, 32, "rgb8", 96, b"\x00" * 10),            # claims 32x32, carries 10 bytes
               _image(2, "depth", 4, 4, "32FC1", 16, b"\x00" * 64),             # not a camera encoding we read
               _compressed(3, "jpeg", "jpeg", b"\xff\xd8\xff\xe0 truncated jpeg")]
        results = [probe.send(ctx, ex, m) for m in bad]
        build, _, _ = _frames()["rgb8"]
        good = probe.send(ctx, ex, build(4, "rgb8"))
        for r, why in zip(results, ("needs 3072 bytes, got 10", "unsupported image encoding '32FC1'",
                                    "cannot decode")):
            assert r.error and why in r.error_reason, (r.error_reason, why)
            assert not r.fallback and r.top_classes.tolist() == []           # an error, not a cloud fallback
        assert [r.seq for r in results + [good]] == [0, 1, 2, 3]
        assert not good.error and len(good.top_classes) == 10
        assert spin_until(ctx, [ex, probe.node], lambda: any(
            st.level == DiagnosticStatus.ERROR and {"failed": "3", "fallbacks": "0"}.items()
            <= {kv.key: kv.value for kv in st.values}.items() for d in diags for st in d.status), timeout_s=5)
        ex.destroy_node()
        probe.node.destroy_node()
    err = capfd.readouterr().err
    assert err.count("bad frame: ") == 1, err         # three bad frames in a row: one (throttled) log line


def test_a_reliable_subscriber_receives_the_cameras_frames():
    from sensor_msgs.msg import Image

    from dvfo_ros.nodes.camera import CameraNode
    camera = [Parameter("width", value=32), Parameter("height", value=32), Parameter("fps", value=20.0)]
    with ros_context() as ctx:
        cam = CameraNode(context=ctx, parameter_overrides=camera)
        probe = Node("reliable_consumer", context=ctx)
        reliable, best_effort = [], []
        probe.create_subscription(Image, "camera/image_raw", reliable.append,
                                  QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        probe.create_subscription(Image, "camera/image_raw", best_effort.append, qos_profile_sensor_data)
        assert spin_until(ctx, [cam, probe], lambda: len(reliable) >= 3 and len(best_effort) >= 3, timeout_s=10), \
            (len(reliable), len(best_effort))
        assert (reliable[0].height, reliable[0].width, reliable[0].encoding) == (32, 32, "rgb8")
        cam.destroy_node()
        probe.destroy_node()


def test_qos_overrides_apply_to_the_cameras_publisher():
    from dvfo_ros.nodes.camera import CameraNode
    with ros_context() as ctx:
        default = CameraNode(context=ctx)
        overridden = CameraNode(context=ctx, namespace="/other", parameter_overrides=[
            Parameter("qos_overrides./other/camera/image_raw.publisher.reliability", value="best_effort")])
        looks = Node("looker", context=ctx)
        assert spin_until(ctx, [default, overridden, looks], lambda: len(
            looks.get_publishers_info_by_topic("/camera/image_raw")) == 1 and len(
            looks.get_publishers_info_by_topic("/other/camera/image_raw")) == 1)
        assert looks.get_publishers_info_by_topic("/camera/image_raw")[0].qos_profile.reliability == \
            ReliabilityPolicy.RELIABLE
        assert looks.get_publishers_info_by_topic("/other/camera/image_raw")[0].qos_profile.reliability == \
            ReliabilityPolicy.BEST_EFFORT
        for n in (default, overridden, looks):
            n.destroy_node()
