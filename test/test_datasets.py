"""Data sets: the fixed held-out split, the shapes, ImageFolder, clear errors."""
import cv2
import numpy as np
import pytest

from dvfo_ros.core.io.datasets import SCENE_CLASSES, DatasetError, load_dataset


def test_scenes_are_fixed_balanced_and_noisy():
    x, y, names = load_dataset("scenes", "test")
    assert x.dtype == np.uint8 and x.shape == (1000, 32, 32, 3) and y.dtype == np.int64
    assert len(names) >= 10 and names == SCENE_CLASSES
    assert np.bincount(y).min() == np.bincount(y).max()  # balanced
    x2, _, _ = load_dataset("scenes", "test", size=32)
    assert np.array_equal(x, x2)  # the held-out split is the same every time
    xt, _, _ = load_dataset("scenes", "train", size=32)
    assert not any(np.array_equal(xt[i], x[i]) for i in range(20))  # held out: no overlap
    assert x.std() > 30  # clutter and noise, not flat shapes on black


def test_digits_are_real_upsampled_and_split_without_overlap():
    tr, ytr, names = load_dataset("digits", "train", size=24)
    te, yte, _ = load_dataset("digits", "test", size=24)
    va, _, _ = load_dataset("digits", "val", size=24)
    assert names == [str(i) for i in range(10)]
    assert len(tr) + len(te) + len(va) == 1797 and tr.shape[1:] == (24, 24, 3)
    assert set(np.unique(yte)) == set(range(10))


def test_image_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for cname in ("cat", "dog"):
        (tmp_path / cname).mkdir()
        for i in range(20):
            cv2.imwrite(str(tmp_path / cname / f"{i}.png"), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    (tmp_path / "dog" / "broken.png").write_bytes(b"garbage")
    x, y, names = load_dataset(str(tmp_path), "test", size=16)
    assert names == ["cat", "dog"] and x.shape[1:] == (16, 16, 3)
    assert sorted(np.bincount(y).tolist()) == [3, 3]  # 15% of 20 per class
    xtr, _, _ = load_dataset(str(tmp_path), "train", size=16)
    assert len(xtr) == 28


@pytest.mark.parametrize("args, msg", [(("imagenet_but_not_here",), "unknown data set"),
                                       (("scenes", "holdout"), "unknown split"),
                                       (("scenes", "test", 3), "image size")])
def test_bad_input_is_a_one_line_error(args, msg):
    with pytest.raises(DatasetError, match=msg):
        load_dataset(*args)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(str(tmp_path))
