"""Camera encodings -> RGB (core.io.encodings): every supported encoding gives the frame's RGB pixels,
row padding and byte order are honoured, and a frame that does not match its fields is refused."""
import cv2
import numpy as np
import pytest

from dvfo_ros.core.io import encodings as enc
from dvfo_ros.core.io.labels import class_names, hypotheses

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


COLOUR = [(e, False) for e in ("rgb8", "bgr8", "rgba8", "bgra8")] + \
    [(e, big) for e in ("rgb16", "bgr16", "rgba16", "bgra16") for big in (False, True)]


@pytest.mark.parametrize("encoding,bigendian", COLOUR)
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_give_the_frames_rgb(encoding, bigendian, pad):
    lay = enc.LAYOUTS[encoding]
    step = 8 * lay.channels * lay.bytes_per_value + pad
    step, data = enc.rgb_to_image(RGB, encoding, step, bigendian)
    out = enc.image_to_rgb(6, 8, encoding, step, data, bigendian)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert np.array_equal(out, RGB)


def test_bgr_is_not_read_as_rgb():
    """The byte order of bgr8 matters: the same bytes read as rgb8 are a different image."""
    step, data = enc.rgb_to_image(RGB, "bgr8")
    assert not np.array_equal(enc.image_to_rgb(6, 8, "rgb8", step, data), RGB)
    assert np.array_equal(enc.image_to_rgb(6, 8, "bgr8", step, data), RGB)


def test_mono8_and_mono16_are_grey_rgb():
    grey = RGB[:, :, 0]
    want = np.repeat(grey[:, :, None], 3, axis=2)
    assert np.array_equal(enc.image_to_rgb(6, 8, "mono8", 8, grey.tobytes()), want)
    for big in (False, True):
        words = (grey.astype(np.uint16) * 256 + 3).astype(">u2" if big else "<u2")   # low byte is noise
        padded = np.zeros((6, 20), np.uint8)
        padded[:, :16] = words.view(np.uint8).reshape(6, 16)
        assert np.array_equal(enc.image_to_rgb(6, 8, "mono16", 20, padded.tobytes(), big), want)
    # read with the wrong byte order, a 16-bit frame is not the same picture
    little = (grey.astype(np.uint16) * 256 + 7).astype("<u2").tobytes()
    assert not np.array_equal(enc.image_to_rgb(6, 8, "mono16", 16, little, True), want)


@pytest.mark.parametrize("encoding,code", [("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("uyvy", cv2.COLOR_RGB2YUV_UYVY),
                                           ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2), ("yuyv", cv2.COLOR_RGB2YUV_YUY2)])
def test_yuv422_byte_orders(encoding, code):
    # colour constant over each horizontal pixel pair: 4:2:2 keeps it, up to rounding
    rgb = np.repeat(RNG.integers(40, 216, (6, 4, 3), dtype=np.uint8), 2, axis=1)
    yuv = cv2.cvtColor(rgb, code)
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :16] = yuv.reshape(6, 16)
    out = enc.image_to_rgb(6, 8, encoding, 20, padded.tobytes())
    assert np.abs(out.astype(int) - rgb).max() <= 3
    # the other byte order reads luma as chroma: far off
    other = "yuyv" if enc.LAYOUTS[encoding].order == "uyvy" else "uyvy"
    assert np.abs(enc.image_to_rgb(6, 8, other, 20, padded.tobytes()).astype(int) - rgb).max() > 30


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_a_flat_colour(pattern, bits):
    colour = {"r": 200, "g": 90, "b": 20}
    mosaic = np.zeros((8, 8), np.uint16 if bits == 16 else np.uint8)
    for k, c in enumerate(pattern):
        mosaic[k // 2::2, k % 2::2] = colour[c] * (257 if bits == 16 else 1)
    out = enc.image_to_rgb(8, 8, f"bayer_{pattern}{bits}", 8 * bits // 8, mosaic.tobytes())
    assert np.abs(out[2:-2, 2:-2].astype(int) - [200, 90, 20]).max() <= 2


def test_compressed_jpeg_and_png_decode_to_rgb():
    y, x = np.mgrid[0:32, 0:32]
    smooth = np.dstack([x * 8, y * 4, np.full((32, 32), 128)]).astype(np.uint8)
    ok, png = cv2.imencode(".png", smooth[:, :, ::-1])
    assert ok and np.array_equal(enc.compressed_to_rgb("png", png.tobytes()), smooth)
    ok, jpg = cv2.imencode(".jpg", smooth[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = enc.compressed_to_rgb("rgb8; jpeg compressed bgr8", jpg.tobytes())
    assert out.shape == (32, 32, 3) and np.abs(out.astype(int) - smooth).mean() < 3
    assert np.abs(out.astype(int) - smooth[:, :, ::-1]).mean() > 20       # not left in BGR


@pytest.mark.parametrize("fmt,data,match", [
    ("jpeg", b"", "no data"),
    ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg", "cannot decode"),
    ("16UC1; compressedDepth", b"\x00" * 20, "compressedDepth"),
])
def test_corrupt_compressed_frames_are_refused(fmt, data, match):
    with pytest.raises(enc.FrameError, match=match):
        enc.compressed_to_rgb(fmt, data)


@pytest.mark.parametrize("args,match", [
    ((6, 8, "rgb8", 24, b"\x00" * 100), "needs 144 bytes, got 100"),      # short buffer
    ((6, 8, "rgb8", 20, b"\x00" * 200), "step >= 24"),                    # step shorter than a row
    ((6, 8, "mono16", 8, b"\x00" * 100), "step >= 16"),                   # 16-bit rows are twice as long
    ((0, 8, "rgb8", 24, b""), "no pixels"),
    ((6, 7, "yuv422", 14, b"\x00" * 84), "even width"),
    ((6, 8, "32FC1", 32, b"\x00" * 192), "unsupported image encoding '32FC1'"),
])
def test_frames_that_do_not_match_their_fields_are_refused(args, match):
    with pytest.raises(enc.FrameError, match=match):
        enc.image_to_rgb(*args)


def test_class_ids_are_the_artifacts_names_else_the_index():
    assert class_names({"class_names": ["cat", "dog"]}) == ["cat", "dog"]
    assert class_names({}) is None
    assert hypotheses([1, 0], [0.7, 0.2], ["cat", "dog"]) == [("dog", 0.7), ("cat", pytest.approx(0.2))]
    assert hypotheses([3, 1], [0.5, 0.25], None) == [("3", 0.5), ("1", 0.25)]
