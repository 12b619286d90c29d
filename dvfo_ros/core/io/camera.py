"""Camera sources: synthetic (default), labelled eval set, video file, image directory, V4L2.

Every source yields (rgb uint8 [H, W, 3], label) pairs; label is -1 when the source cannot know it.
The camera node only paces and publishes what a source yields.
"""
from __future__ import annotations

import array
import os
from typing import Iterator, List, Tuple, Union

import numpy as np

from dvfo_ros.core.errors import DvfoError

Frame = Tuple[np.ndarray, int]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class CameraError(ValueError, DvfoError):
    """A source that cannot be opened or read; one line a user can act on."""


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def synthetic_frames(width: int, height: int, seed: int = 0) -> Iterator[Frame]:
    """Moving coloured shapes over a gradient: cheap, deterministic, never runs out."""
    import cv2
    rng = np.random.default_rng(seed)
    # the gradient's two ramps once, as uint8: adding t then wraps exactly as (ramp + t) % 256
    ramp_x = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)
    ramp_y = (np.arange(height) * 255 // max(height - 1, 1)).astype(np.uint8)
    base = np.empty((height, width, 3), np.uint8)
    t = 0
    while True:
        base[:, :, 0] = ramp_x + np.uint8(t % 256)
        base[:, :, 1] = ramp_y[:, None]
        base[:, :, 2] = (t * 3) % 256
        for k in range(3):
            cx = int((np.sin(0.05 * t + k) * 0.4 + 0.5) * width)
            cy = int((np.cos(0.07 * t + 2 * k) * 0.4 + 0.5) * height)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.circle(base, (cx, cy), max(3, min(width, height) // 8), color, -1)
        noise = rng.integers(0, 12, base.shape, dtype=np.uint8)
        yield np.add(base, noise, out=noise), -1      # a new array per frame: callers may keep frames
        t += 1


def dataset_frames(name: str, width: int, height: int, loop: bool, seed: int = 0) -> Iterator[Frame]:
    """Labelled frames from the project's eval sets (digits, scenes) or an ImageFolder path."""
    from dvfo_ros.core.io.datasets import load_dataset
    images, labels, _ = load_dataset(name, split="test", seed=seed)
    if len(images) == 0:
        raise CameraError(f"data set '{name}' has no images")
    while True:
        for img, lab in zip(images, labels):
            yield _resize(np.ascontiguousarray(img), width, height), int(lab)
        if not loop:
            return


def directory_frames(path: str, width: int, height: int, loop: bool) -> Iterator[Frame]:
    """Every image in a directory, in name order; unreadable files are skipped with no crash."""
    import cv2
    if not os.path.isdir(path):
        raise CameraError(f"image directory not found: {path}")
    files: List[str] = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise CameraError(f"no images ({', '.join(IMAGE_EXTS)}) in {path}")
    while True:
        readable = 0
        for f in files:
            bgr = cv2.imread(os.path.join(path, f), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            readable += 1
            yield _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height), -1
        if readable == 0:   # looping over files that never decode would spin forever
            raise CameraError(f"none of the {len(files)} images in {path} could be read")
        if not loop:
            return


def capture_frames(source: str | int, width: int, height: int, loop: bool) -> Iterator[Frame]:
    """A video file (str path) or a V4L2 device (int index) through OpenCV."""
    import cv2
    if isinstance(source, str) and not os.path.isfile(source):
        raise CameraError(f"video file not found: {source}")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise CameraError(f"cannot open video source {source!r}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if loop and isinstance(source, str):
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, bgr = cap.read()
                if not ok:
                    return
            yield _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height), -1
    finally:
        cap.release()


def open_source(kind: str, location: str, width: int, height: int, loop: bool = True,
                seed: int = 0) -> Iterator[Frame]:
    """kind: synthetic | dataset | directory | video | v4l2 (location: name, path or index)."""
    if kind == "synthetic":
        return synthetic_frames(width, height, seed)
    if kind == "dataset":
        return dataset_frames(location or "scenes", width, height, loop, seed)
    if kind == "directory":
        if not os.path.isdir(location):
            raise CameraError(f"image directory not found: {location}")
        return directory_frames(location, width, height, loop)
    if kind == "video":
        if not os.path.isfile(location):
            raise CameraError(f"video file not found: {location}")
        return capture_frames(location, width, height, loop)
    if kind == "v4l2":
        try:
            index = int(location or 0)
        except ValueError:
            raise CameraError(f"v4l2 source needs a device index, got {location!r}") from None
        return capture_frames(index, width, height, loop)
    raise CameraError(f"unknown camera source '{kind}': synthetic, dataset, directory, video, v4l2")


ImageData = Union[bytes, "array.array[int]"]


def image_fields(rgb: np.ndarray, as_array: bool = False) -> Tuple[int, int, str, int, ImageData]:
    """(height, width, encoding, step, data) of a sensor_msgs/Image for an RGB frame. ``as_array``: data as
    the array.array('B') the message keeps it in, made with one copy; the message's setter takes that as it
    is, where bytes are copied again and, with field checks on (ROS_PYTHON_CHECK_FIELDS=1, or any distro
    before Kilted), checked value by value in Python."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise CameraError(f"expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    if not as_array:
        return h, w, "rgb8", w * 3, np.ascontiguousarray(rgb).tobytes()
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(rgb).data.cast("B"))
    return h, w, "rgb8", w * 3, data


def image_from_fields(height: int, width: int, encoding: str, step: int, data: ImageData,
                      is_bigendian: bool = False) -> np.ndarray:
    """RGB uint8 [H, W, 3] from sensor_msgs/Image fields, any encoding of core.io.encodings; CameraError
    (its FrameError) when the encoding is unsupported or the buffer does not match the fields."""
    from dvfo_ros.core.io.encodings import image_to_rgb
    return image_to_rgb(height, width, encoding, step, data, is_bigendian)
