"""Camera sources and the image conversion the executor relies on."""
import numpy as np
import pytest

from dvfo_ros.core.io import camera as cam


def test_synthetic_frames_have_the_requested_size_and_change():
    frames = cam.open_source("synthetic", "", 80, 60)
    a, la = next(frames)
    b, _ = next(frames)
    assert a.shape == (60, 80, 3) and a.dtype == np.uint8 and la == -1
    assert not np.array_equal(a, b)


def test_image_fields_round_trip_and_bgr():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    h, w, enc, step, data = cam.image_fields(rgb)
    assert (h, w, enc, step) == (5, 7, "rgb8", 21)
    assert np.array_equal(cam.image_from_fields(h, w, enc, step, data), rgb)
    bgr = rgb[:, :, ::-1].tobytes()
    assert np.array_equal(cam.image_from_fields(h, w, "bgr8", step, bgr), rgb)


@pytest.mark.parametrize("args", [
    (5, 7, "rgb8", 21, b"\x00" * 20),          # too short
    (5, 7, "32FC1", 28, b"\x00" * 140),        # unsupported encoding (a depth image)
    (0, 7, "rgb8", 21, b""),                   # empty
    (5, 7, "rgb8", 3, b"\x00" * 105),          # step smaller than a row
])
def test_malformed_images_are_refused_with_a_reason(args):
    with pytest.raises(cam.CameraError):
        cam.image_from_fields(*args)


def test_directory_source_reads_images_and_skips_broken_files(tmp_path):
    import cv2
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 12, 3), i * 50, np.uint8))
    (tmp_path / "3.png").write_bytes(b"not a png")
    frames = list(cam.open_source("directory", str(tmp_path), 12, 10, loop=False))
    assert len(frames) == 3
    assert frames[2][0][0, 0, 0] == 100


def test_missing_sources_give_one_line_errors(tmp_path):
    with pytest.raises(cam.CameraError, match="not found"):
        cam.open_source("video", str(tmp_path / "nope.mp4"), 8, 8)
    with pytest.raises(cam.CameraError, match="unknown camera source"):
        cam.open_source("webcam", "", 8, 8)


def test_directory_of_only_broken_images_stops_instead_of_spinning(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    frames = cam.open_source("directory", str(tmp_path), 8, 8, loop=True)
    with pytest.raises(cam.CameraError, match="could be read"):
        next(frames)
