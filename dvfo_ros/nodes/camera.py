"""camera node: publishes frames from a source on camera/image_raw (reliable, system default depth: REP 2003).

    ros2 run dvfo_ros camera --ros-args -p source:=video -p location:=/data/run.mp4 -p fps:=15.0
Labelled sources (``source:=dataset``) also publish camera/label (FrameLabel) just before each image.
/diagnostics once a second ("camera: frames"): the published rate against ``fps`` (WARN outside 10 %), ERROR
while a failed frame read is in the window, OK "waiting for a subscriber" / "source ended" when idle.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from dvfo_ros.core.diag import ERROR, OK, Status, StreamHealth, merge
from dvfo_ros.core.io import camera as cam
from dvfo_ros.msg import FrameLabel
from dvfo_ros.nodes import bridge, qos
from dvfo_ros.nodes.diagnostics import WINDOW, Diagnostics, monotonic
from dvfo_ros.nodes.params import Param, ParamSet
from dvfo_ros.nodes.spin import run

PARAMS = [
    Param("source", "synthetic", "frame source", choices=("synthetic", "dataset", "directory", "video", "v4l2")),
    Param("location", "", "dataset name (digits, scenes, ImageFolder path), directory, video file or V4L2 index"),
    Param("fps", 10.0, "frames per second", 0.1, 240.0),
    Param("width", 224, "published image width in pixels", 8, 4096),
    Param("height", 224, "published image height in pixels", 8, 4096),
    Param("loop", True, "restart a finite source when it ends"),
    Param("max_frames", 0, "stop publishing after this many frames (0 = never)", 0, 10**9),
    Param("frame_id", "camera_optical_frame", "frame_id of the published images"),
    Param("seed", 0, "seed of the synthetic source", 0, 2**31 - 1),
    Param("wait_for_subscribers", True, "hold frames until someone subscribes to camera/image_raw"),
    WINDOW,
]


class CameraNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("camera", **kwargs)
        self.params = ParamSet(self, PARAMS, on_change=self._reopen)
        self.image_pub = qos.publisher(self, Image, "camera/image_raw", qos.IMAGE_PUB)
        self.label_pub = qos.publisher(self, FrameLabel, "camera/label", QoSProfile(depth=50))
        self.bridge = bridge.cv_bridge()
        self.frames_published = 0
        self.finished = False
        self.waiting = False
        self.health = StreamHealth(self.params["diagnostic_window_s"], self.params["fps"], what="frames")
        # failed reads apart: the rate and the stale check count the frames actually published
        self.read_failures = StreamHealth(self.params["diagnostic_window_s"], what="frame reads")
        self.diagnostics = Diagnostics(self)
        self.diagnostics.follow_device_state()
        self.diagnostics.add("frames", self._status)
        self._frames = self._open(self.params.values)
        self.timer = self.create_timer(1.0 / self.params["fps"], self._tick)
        self.get_logger().info(
            f"publishing {self.params['source']} frames {self.params['width']}x{self.params['height']} "
            f"at {self.params['fps']} fps ({'cv_bridge' if self.bridge else 'built-in conversion'})")

    def _open(self, v: Dict[str, Any]):
        return cam.open_source(v["source"], v["location"], v["width"], v["height"], v["loop"], v["seed"])

    def _reopen(self, new: Dict[str, Any]) -> Optional[str]:
        keys = ("source", "location", "width", "height", "loop", "seed")
        if any(new[k] != self.params[k] for k in keys):
            try:
                self._frames = self._open(new)
            except cam.CameraError as e:
                return str(e)
        if new["fps"] != self.params["fps"]:
            self.timer.timer_period_ns = int(1e9 / new["fps"])
            self.health.freq.expected_hz = new["fps"]
            self.health.window.restart()         # the rate is measured afresh against the new fps
        return None

    def _status(self, now: float) -> Status:
        """Publishing at fps (frequency check), ERROR while a failed read is in the window; idle is OK."""
        if self.finished:
            return Status(OK, f"source ended after {self.frames_published} frames").add(frames=self.frames_published)
        failed = self.read_failures.kinds_status(now)
        if self.waiting:
            st = merge([failed if failed.level == ERROR else Status(), Status(OK, "waiting for a subscriber")])
        else:
            st = merge([failed if failed.level == ERROR else Status(), self.health.input_status(now)])
        return st.add(frames=self.frames_published, fps=self.params["fps"])

    def _tick(self) -> None:
        limit = self.params["max_frames"]
        if self.finished or (limit and self.frames_published >= limit):
            self.finished = True
            return
        self.waiting = self.params["wait_for_subscribers"] and self.image_pub.get_subscription_count() == 0
        if self.waiting:
            return
        try:
            rgb, label = next(self._frames)
        except StopIteration:
            self.finished = True
            self.get_logger().info(f"source ended after {self.frames_published} frames")
            return
        except Exception as e:  # noqa: BLE001 - a bad frame must not stop the camera
            self.get_logger().error(f"frame read failed: {e}", throttle_duration_sec=5.0)
            self.read_failures.add(monotonic(), "failed", reason=f"frame read failed: {e}")
            return
        stamp = self.get_clock().now().to_msg()
        if self.bridge is not None:
            msg = self.bridge.cv2_to_imgmsg(rgb, "rgb8")
        else:
            msg = Image()
            msg.height, msg.width, msg.encoding, msg.step, msg.data = cam.image_fields(rgb, as_array=True)
        msg.header.stamp = stamp
        msg.header.frame_id = self.params["frame_id"]
        lab = FrameLabel()
        lab.header = msg.header
        lab.seq = self.frames_published
        lab.label = int(label)
        self.label_pub.publish(lab)
        self.image_pub.publish(msg)
        self.frames_published += 1
        self.health.add(monotonic())


def main(args=None) -> int:
    return run(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
