"""cv_bridge where the distro has a working one; None means: use core.io.encodings instead."""
from __future__ import annotations

from typing import Any, Optional


def cv_bridge() -> Optional[Any]:
    """The distro's CvBridge when it works here (ROS 1's PyPI cv-bridge fails under numpy 2)."""
    try:
        import numpy as np
        from cv_bridge import CvBridge
        bridge = CvBridge()
        bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), "rgb8")
        return bridge
    except Exception:  # noqa: BLE001 - any failure means: use our own conversion
        return None


def image_to_rgb(bridge: Optional[Any], msg: Any):
    """RGB uint8 [H, W, 3] of a sensor_msgs/Image: cv_bridge first when there is one, our own conversion
    otherwise or when cv_bridge refuses the frame (FrameError from there: the frame is bad)."""
    from dvfo_ros.core.io.encodings import image_to_rgb as convert
    if bridge is not None:
        try:
            return bridge.imgmsg_to_cv2(msg, "rgb8")
        except Exception:  # noqa: BLE001 - cv_bridge's own errors: ours decides, with a clear reason
            pass
    return convert(msg.height, msg.width, msg.encoding, msg.step, msg.data, bool(msg.is_bigendian))


def compressed_to_rgb(bridge: Optional[Any], msg: Any):
    """RGB uint8 [H, W, 3] of a sensor_msgs/CompressedImage, likewise."""
    from dvfo_ros.core.io.encodings import compressed_to_rgb as convert
    if bridge is not None:
        try:
            return bridge.compressed_imgmsg_to_cv2(msg, "rgb8")
        except Exception:  # noqa: BLE001
            pass
    return convert(msg.format, msg.data)
