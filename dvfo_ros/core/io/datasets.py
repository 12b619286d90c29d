"""Labelled image sets for training and measuring the collaborative models, all offline.

- "digits": scikit-learn's real handwritten digits (1,797 8x8 scans, shipped with the package),
  upsampled to RGB; a fixed stratified train/val/test split.
- "scenes": a harder set the project draws itself: one of 10 shapes (the class) at a random
  place, scale, rotation and colour, over a textured background with clutter (lines, blobs,
  small distractor shapes), blur and sensor noise. Every image comes from its own seeded RNG,
  so the held-out split is the same on every machine.
- a directory: an ImageFolder (class sub-directories of images; `train/`, `val/`, `test/`
  sub-folders are used when present), or a torchvision dataset already on disk (CIFAR-10/100,
  MNIST, FashionMNIST roots). Nothing is ever downloaded.

Images are uint8 [N, H, W, 3] RGB, labels int64 [N], plus the class names.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dvfo_ros.core.errors import DvfoError, one_line

SPLITS = ("train", "val", "test")
BUILTIN = ("digits", "scenes")
DEFAULT_SIZE = {"digits": 32, "scenes": 32}
SCENE_CLASSES = ["circle", "square", "triangle", "star", "plus", "ring", "crescent", "arrow",
                 "ell", "bar"]
SCENE_COUNTS = {"train": 6000, "val": 1000, "test": 1000}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

Dataset = Tuple[np.ndarray, np.ndarray, List[str]]


class DatasetError(ValueError, DvfoError):
    """Unknown data set, bad split, or a directory that holds no usable images."""


def load_dataset(name: str, split: str = "test", size: Optional[int] = None, seed: int = 0) -> Dataset:
    """(images uint8 [N, size, size, 3], labels int64 [N], class_names) for one split.

    `size` is the image side in pixels (None: 32 for the built-in sets, 64 for directories);
    `seed` picks the scenes universe / the digits split (0 = the project's reference split).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if size is not None and not 8 <= int(size) <= 1024:
        raise DatasetError(f"image size must be 8..1024 px, got {size}")
    if name == "digits":
        return _digits(split, int(size or DEFAULT_SIZE["digits"]), int(seed))
    if name == "scenes":
        return _scenes(split, int(size or DEFAULT_SIZE["scenes"]), int(seed))
    if os.path.isdir(name):
        return _directory(os.path.abspath(name), split, int(size or 64), int(seed))
    raise DatasetError(f"unknown data set '{name}': use digits, scenes, or a directory of images")


def _readonly(images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    images.setflags(write=False)  # results are cached and shared between callers
    labels.setflags(write=False)
    return images, labels


# ------------------------------------------------------------------------------------ digits
@functools.lru_cache(maxsize=8)
def _digits(split: str, size: int, seed: int) -> Dataset:
    import cv2
    from sklearn.datasets import load_digits
    raw = load_digits()
    x = (raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    y = raw.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    parts: Dict[str, List[int]] = {s: [] for s in SPLITS}
    for cls in range(10):  # stratified 70/15/15, fixed by the seed
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val = n_test = int(round(0.15 * len(idx)))
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test:n_test + n_val])
        parts["train"].extend(idx[n_test + n_val:])
    sel = np.sort(np.asarray(parts[split]))
    imgs = np.stack([cv2.resize(x[i], (size, size), interpolation=cv2.INTER_CUBIC) for i in sel])
    imgs = np.repeat(imgs[..., None], 3, axis=-1)
    return (*_readonly(np.ascontiguousarray(imgs), y[sel].copy()), [str(i) for i in range(10)])


# ------------------------------------------------------------------------------------ scenes
def _polygon(kind: str, rng: np.random.Generator) -> List[np.ndarray]:
    """Outline(s) of a class shape in unit coordinates (about [-1, 1])."""
    if kind == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8]
    if kind == "triangle":
        a = np.deg2rad([90, 210, 330])
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if kind == "star":
        a = np.deg2rad(np.arange(10) * 36 + 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if kind == "plus":
        t = 0.3
        return [np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                          [-t, t], [-1, t], [-1, -t], [-t, -t]], float)]
    if kind == "arrow":
        return [np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.7], [1, 0], [0.2, 0.7], [0.2, 0.25],
                          [-1, 0.25]], float)]
    if kind == "ell":
        return [np.array([[-0.8, -1], [-0.25, -1], [-0.25, 0.45], [0.8, 0.45], [0.8, 1], [-0.8, 1]], float)]
    if kind == "bar":
        return [np.array([[-1, -0.28], [1, -0.28], [1, 0.28], [-1, 0.28]], float)]
    raise KeyError(kind)


def _rgb(values: Any) -> Tuple[int, int, int]:
    """The first three values (a pixel, a drawn colour) as an int (r, g, b) for cv2."""
    return int(values[0]), int(values[1]), int(values[2])


def _draw_shape(canvas: np.ndarray, kind: str, cx: float, cy: float, radius: float, angle: float,
                color: Tuple[int, int, int], bg: Tuple[int, int, int]) -> None:
    import cv2
    shift = 4  # sub-pixel precision for cv2 drawing
    k = float(1 << shift)
    if kind in ("circle", "ring", "crescent"):
        center = (int(cx * k), int(cy * k))
        cv2.circle(canvas, center, int(radius * k), color, -1, cv2.LINE_AA, shift)
        if kind == "ring":
            cv2.circle(canvas, center, int(radius * 0.55 * k), bg, -1, cv2.LINE_AA, shift)
        elif kind == "crescent":
            off = (int((cx + 0.45 * radius * math.cos(angle)) * k),
                   int((cy + 0.45 * radius * math.sin(angle)) * k))
            cv2.circle(canvas, off, int(radius * 0.85 * k), bg, -1, cv2.LINE_AA, shift)
        return
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for poly in _polygon(kind, np.random.default_rng(0)):
        pts = (poly @ rot.T) * radius + np.array([cx, cy])
        cv2.fillPoly(canvas, [np.round(pts * k).astype(np.int32)], color, cv2.LINE_AA, shift)


def draw_scene(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One scene of class `label` (index into SCENE_CLASSES), uint8 [size, size, 3] RGB."""
    import cv2
    s = 2 * size  # draw at 2x, then area-downsample: anti-aliased like a real camera
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, s)[:, None, None]
    grad = c0 * (1 - t) + c1 * t
    canvas = np.ascontiguousarray(np.broadcast_to(grad, (s, s, 3)).astype(np.uint8))
    if rng.random() < 0.5:
        canvas = np.ascontiguousarray(np.rot90(canvas, int(rng.integers(1, 4))))
    bg = _rgb(canvas[s // 2, s // 2])
    for _ in range(int(rng.integers(2, 6))):  # clutter: lines and blobs
        col = _rgb(rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            p, q = rng.integers(0, s, 2), rng.integers(0, s, 2)
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            center = tuple(int(v) for v in rng.integers(0, s, 2))
            cv2.circle(canvas, center, int(rng.integers(1, max(2, s // 16))), col, -1)
    for _ in range(int(rng.integers(0, 3))):  # small distractor shapes of any class
        col = _rgb(rng.integers(0, 256, 3))
        _draw_shape(canvas, SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))], rng.uniform(0, s),
                    rng.uniform(0, s), s * rng.uniform(0.04, 0.07), rng.uniform(0, 2 * math.pi), col, bg)
    radius = s * rng.uniform(0.26, 0.4)
    cx, cy = rng.uniform(radius * 0.8, s - radius * 0.8, 2)
    while True:  # a colour that stands out from the background, as a real object would
        obj_col = rng.integers(0, 256, 3)
        if np.abs(obj_col - np.asarray(bg)).sum() > 200:
            break
    # pose: upright +-25 deg (a robot's camera sees objects mostly upright), flipped for arrow/ell
    angle = rng.uniform(-0.44, 0.44) + (math.pi if rng.random() < 0.5 else 0.0)
    _draw_shape(canvas, SCENE_CLASSES[label], cx, cy, radius, angle, _rgb(obj_col), bg)
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    img *= rng.uniform(0.8, 1.15)  # exposure
    img += rng.normal(0.0, rng.uniform(3.0, 12.0), img.shape)  # sensor noise
    return img.clip(0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _scenes(split: str, size: int, seed: int) -> Dataset:
    n = SCENE_COUNTS[split]
    split_id = SPLITS.index(split)
    labels = np.arange(n, dtype=np.int64) % len(SCENE_CLASSES)  # balanced classes
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        images[i] = draw_scene(int(labels[i]), size, np.random.default_rng([seed, split_id, i]))
    return (*_readonly(images, labels), list(SCENE_CLASSES))


# ----------------------------------------------------------------------------- directories
_TV_DATASETS = {"cifar-10-batches-py": "CIFAR10", "cifar-100-python": "CIFAR100",
                "MNIST": "MNIST", "FashionMNIST": "FashionMNIST"}


def _directory(path: str, split: str, size: int, seed: int) -> Dataset:
    for marker, cls_name in _TV_DATASETS.items():
        if os.path.isdir(os.path.join(path, marker)) or os.path.basename(path) == marker:
            root = path if os.path.isdir(os.path.join(path, marker)) else os.path.dirname(path)
            return _torchvision(cls_name, root, split, size)
    return _image_folder(path, split, size, seed)


def _torchvision(cls_name: str, root: str, split: str, size: int) -> Dataset:
    import cv2
    import torchvision
    try:
        ds = getattr(torchvision.datasets, cls_name)(root, train=(split == "train"), download=False)
    except Exception as exc:  # noqa: BLE001 - missing or corrupt files raise many types: one line, no traceback
        raise DatasetError(f"cannot read {cls_name} under {root}: {one_line(exc)}") from None
    data = np.asarray(ds.data)
    if data.ndim == 3:
        data = np.repeat(data[..., None], 3, axis=-1)
    imgs = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in data])
    return (*_readonly(np.ascontiguousarray(imgs), np.asarray(ds.targets, dtype=np.int64)), list(ds.classes))


def _list_classes(path: str) -> List[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))


def _image_folder(path: str, split: str, size: int, seed: int) -> Dataset:
    import cv2
    sub = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
    if sub:
        if split not in sub:
            raise DatasetError(f"{path} has {', '.join(sub)} but no '{split}' folder")
        root, use_all = os.path.join(path, split), True
        classes = sorted(set().union(*[_list_classes(os.path.join(path, s)) for s in sub]))
    else:
        root, classes, use_all = path, _list_classes(path), False
    if not classes:
        raise DatasetError(f"{path} holds no class folders (ImageFolder layout: <class>/<image>)")
    files: List[Tuple[str, int]] = []
    for ci, cname in enumerate(classes):
        cdir = os.path.join(root, cname)
        if os.path.isdir(cdir):
            files += [(os.path.join(cdir, f), ci) for f in sorted(os.listdir(cdir)) if f.lower().endswith(IMAGE_EXTS)]
    if not use_all:  # one flat folder: a fixed 70/15/15 split per class
        rng = np.random.default_rng(seed)
        chosen = []
        for ci in range(len(classes)):
            mine = [f for f in files if f[1] == ci]
            order = rng.permutation(len(mine))
            n_hold = int(round(0.15 * len(mine)))
            pick = {"test": order[:n_hold], "val": order[n_hold:2 * n_hold], "train": order[2 * n_hold:]}[split]
            chosen += [mine[i] for i in sorted(pick)]
        files = chosen
    images, labels = [], []
    for f, ci in files:
        bgr = cv2.imread(f, cv2.IMREAD_COLOR)
        if bgr is None:
            continue  # unreadable file: skipped, never a crash
        images.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
        labels.append(ci)
    if not images:
        raise DatasetError(f"no readable images for split '{split}' under {root}")
    return (*_readonly(np.stack(images), np.asarray(labels, np.int64)), classes)
