"""Camera frames of any common encoding -> RGB uint8 [H, W, 3]: what the executor classifies.

Pure conversion, no ROS: the node passes the fields of a sensor_msgs/Image (or the format string and
bytes of a sensor_msgs/CompressedImage) and gets an RGB array or a FrameError with one line a user can
act on. Encoding names are the ones of sensor_msgs/image_encodings:

- rgb8, bgr8, rgba8, bgra8, mono8; 16-bit: mono16, rgb16, bgr16, rgba16, bgra16 (scaled to 8 bits by
  the high byte; ``is_bigendian`` says the byte order);
- yuv422 / uyvy (U Y0 V Y1) and yuv422_yuy2 / yuyv (Y0 U Y1 V), even widths;
- bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8 and their 16-bit forms (bilinear demosaicing);
- compressed: anything OpenCV's imdecode reads (JPEG, PNG, ...); compressedDepth is refused.

``step`` (bytes per row, padding included) is honoured; a buffer shorter than step x height, a step
shorter than a row or an unknown encoding is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dvfo_ros.core.io.camera import CameraError


class FrameError(CameraError):
    """A frame that cannot be turned into RGB: unsupported encoding, wrong size, undecodable data."""


@dataclass(frozen=True)
class Layout:
    channels: int          # values per pixel in the buffer (yuv422: 2 bytes per pixel)
    bytes_per_value: int   # 1 or 2
    order: str             # how to reach RGB: rgb, bgr, rgba, bgra, mono, uyvy, yuyv, bayer_<pattern>


def _layouts() -> Dict[str, Layout]:
    table = {
        "rgb8": Layout(3, 1, "rgb"), "bgr8": Layout(3, 1, "bgr"),
        "rgba8": Layout(4, 1, "rgba"), "bgra8": Layout(4, 1, "bgra"), "mono8": Layout(1, 1, "mono"),
        "rgb16": Layout(3, 2, "rgb"), "bgr16": Layout(3, 2, "bgr"),
        "rgba16": Layout(4, 2, "rgba"), "bgra16": Layout(4, 2, "bgra"), "mono16": Layout(1, 2, "mono"),
        "yuv422": Layout(2, 1, "uyvy"), "uyvy": Layout(2, 1, "uyvy"),
        "yuv422_yuy2": Layout(2, 1, "yuyv"), "yuyv": Layout(2, 1, "yuyv"),
    }
    for pattern in ("rggb", "bggr", "gbrg", "grbg"):
        table[f"bayer_{pattern}8"] = Layout(1, 1, f"bayer_{pattern}")
        table[f"bayer_{pattern}16"] = Layout(1, 2, f"bayer_{pattern}")
    return table


LAYOUTS: Dict[str, Layout] = _layouts()
ENCODINGS: Tuple[str, ...] = tuple(LAYOUTS)

# OpenCV names a Bayer code after the second row's pixels (its BayerBG is sensor_msgs' RGGB); these
# old names exist in OpenCV 4 and 5 alike. Checked against a flat-colour mosaic in test_encodings.py.
_BAYER_CODES = {"bayer_rggb": "COLOR_BayerBG2RGB", "bayer_bggr": "COLOR_BayerRG2RGB",
                "bayer_gbrg": "COLOR_BayerGR2RGB", "bayer_grbg": "COLOR_BayerGB2RGB"}
_YUV_CODES = {"uyvy": "COLOR_YUV2RGB_UYVY", "yuyv": "COLOR_YUV2RGB_YUY2"}


def supported(encoding: str) -> bool:
    return encoding.lower() in LAYOUTS


def _flat_bytes(data: Any) -> np.ndarray:
    """A uint8 view of the message's buffer (rclpy keeps it as array.array('B')), copied only if needed."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _rows(height: int, width: int, encoding: str, step: int, data: Any, lay: Layout) -> np.ndarray:
    """The pixel values [H, W, C] (uint8 or uint16 in native order) with row padding dropped."""
    row_bytes = width * lay.channels * lay.bytes_per_value
    if height <= 0 or width <= 0:
        raise FrameError(f"malformed image: {width}x{height} {encoding} has no pixels")
    if step < row_bytes:
        raise FrameError(f"malformed image: {width}x{height} {encoding} needs step >= {row_bytes} bytes, "
                         f"got step {step}")
    flat = _flat_bytes(data)
    if flat.size < step * height:
        raise FrameError(f"malformed image: {width}x{height} {encoding} step {step} needs {step * height} bytes, "
                         f"got {flat.size}")
    rows = flat[: step * height].reshape(height, step)[:, :row_bytes]
    if lay.bytes_per_value == 1:
        return rows.reshape(height, width, lay.channels)
    return rows  # 16-bit: converted by the caller, which knows the byte order


def _to_8bit(rows: np.ndarray, height: int, width: int, channels: int, bigendian: bool) -> np.ndarray:
    dtype = np.dtype(">u2" if bigendian else "<u2")
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    return (values >> 8).astype(np.uint8)


def image_to_rgb(height: int, width: int, encoding: str, step: int, data: Any,
                 is_bigendian: bool = False) -> np.ndarray:
    """RGB uint8 [H, W, 3] from the fields of a sensor_msgs/Image; FrameError when it cannot be."""
    lay = LAYOUTS.get(encoding.lower())
    if lay is None:
        raise FrameError(f"unsupported image encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if lay.order in _YUV_CODES and width % 2:
        raise FrameError(f"malformed image: {encoding} needs an even width, got {width}")
    img = _rows(height, width, encoding, step, data, lay)
    if lay.bytes_per_value == 2:
        img = _to_8bit(img, height, width, lay.channels, bool(is_bigendian))
    return _reorder(img, lay.order)


def _reorder(img: np.ndarray, order: str) -> np.ndarray:
    if order == "rgb":
        return np.ascontiguousarray(img)
    if order in ("bgr", "bgra"):
        return np.ascontiguousarray(img[:, :, 2::-1])
    if order == "rgba":
        return np.ascontiguousarray(img[:, :, :3])
    if order == "mono":
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    import cv2
    code = _YUV_CODES.get(order) or _BAYER_CODES[order]
    src = np.ascontiguousarray(img if order in _YUV_CODES else img[:, :, 0])
    return np.ascontiguousarray(cv2.cvtColor(src, getattr(cv2, code)))


def compressed_to_rgb(fmt: str, data: Any, max_pixels: Optional[int] = 64 * 1024 * 1024) -> np.ndarray:
    """RGB uint8 [H, W, 3] from a sensor_msgs/CompressedImage (format "jpeg", "png", "rgb8; jpeg compressed
    bgr8", ...); FrameError for an empty or undecodable buffer and for compressedDepth (depth maps)."""
    import cv2
    if "compresseddepth" in (fmt or "").lower().replace(" ", ""):
        raise FrameError(f"unsupported compressed format '{fmt}': compressedDepth is a depth map, not a camera image")
    buf = _flat_bytes(data)
    if buf.size == 0:
        raise FrameError(f"corrupt compressed frame ('{fmt}'): no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise FrameError(f"corrupt compressed frame ('{fmt}', {buf.size} bytes): OpenCV cannot decode it")
    if max_pixels is not None and bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise FrameError(f"compressed frame of {bgr.shape[1]}x{bgr.shape[0]} exceeds {max_pixels} pixels")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def rgb_to_image(rgb: np.ndarray, encoding: str, step: Optional[int] = None,
                 is_bigendian: bool = False) -> Tuple[int, bytes]:
    """(step, data) of ``rgb`` in one of the plain encodings (rgb/bgr/rgba/bgra/mono, 8 or 16 bit): the
    inverse of image_to_rgb for those, for drivers in tests and tools. ``step`` > a row pads each row."""
    lay = LAYOUTS.get(encoding.lower())
    if lay is None or lay.order not in ("rgb", "bgr", "rgba", "bgra", "mono"):
        raise FrameError(f"rgb_to_image writes rgb/bgr/rgba/bgra/mono encodings, not '{encoding}'")
    h, w, _ = rgb.shape
    if lay.order == "mono":
        px = rgb[:, :, :1]
    else:
        px = rgb[:, :, ::-1] if lay.order.startswith("bgr") else rgb
        if lay.channels == 4:
            px = np.concatenate([px, np.full((h, w, 1), 255, np.uint8)], axis=2)
    if lay.bytes_per_value == 2:
        px = (px.astype(np.uint16) * 257).astype(">u2" if is_bigendian else "<u2")
    row = np.ascontiguousarray(px).view(np.uint8).reshape(h, -1)
    step = row.shape[1] if step is None else step
    if step < row.shape[1]:
        raise FrameError(f"step {step} is shorter than a row of {row.shape[1]} bytes")
    out = np.zeros((h, step), np.uint8)
    out[:, : row.shape[1]] = row
    return step, out.tobytes()
