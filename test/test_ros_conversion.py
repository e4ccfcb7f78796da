"""Image conversions (every encoding, row padding, byte order, compressed) and Futures building."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402

from deltaworld_ros.image_conversion import (  # noqa: E402
    CompressedDecodeError, EmptyImageError, ImageConversionError, ImageTooLargeError, TruncatedDataError,
    UnsupportedEncodingError, array_to_image_msg, image_to_array, msg_to_rgb)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Builds an Image by hand (independently of the code under test), with ``pad`` bytes of
    garbage at the end of every row."""
    h, w = pixels.shape[:2]
    rows = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).reshape(h, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=padded.shape[1],
                 data=padded.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding, pixels, expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
])
def test_8bit_encodings_with_row_padding(encoding, pixels, expected, pad):
    out = msg_to_rgb(raw_msg(np.ascontiguousarray(pixels), encoding, pad=pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_grey_in_both_byte_orders(encoding, bigendian):
    grey16 = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    out = msg_to_rgb(raw_msg(grey16, encoding, pad=2, bigendian=bigendian))
    expected = np.array([[0, 1, 255], [128, 4, 254]], np.uint8)  # value * 255 / 65535, rounded
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_converted_image_does_not_alias_the_message():
    msg = raw_msg(RGB, "rgb8")
    out = msg_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(msg_to_rgb(msg), RGB)


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".jpg"), ("png", ".png"), ("rgb8; jpeg compressed bgr8", ".jpg")])
def test_compressed(fmt, ext):
    image = cv2.resize(RGB, (56, 40), interpolation=cv2.INTER_LINEAR)  # smooth: jpeg keeps it closely
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    out = msg_to_rgb(CompressedImage(format=fmt, data=encoded.tobytes()))
    assert out.shape == image.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - image)
    assert error.max() == 0 if ext == ".png" else error.mean() < 4  # jpeg: lossy at colour edges


@pytest.mark.parametrize("msg, error", [
    (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), UnsupportedEncodingError),
    (Image(height=2, width=2, encoding="RGB8", step=6, data=bytes(12)), UnsupportedEncodingError),
    (Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)), UnsupportedEncodingError),  # not a camera
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(11)), TruncatedDataError),
    (Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(12)), TruncatedDataError),
    (Image(height=2, width=2, encoding="mono16", step=4, data=bytes(7)), TruncatedDataError),
    (Image(height=0, width=2, encoding="rgb8", step=6, data=b""), EmptyImageError),
    (Image(height=2, width=0, encoding="mono8", step=0, data=b""), EmptyImageError),
    (Image(height=100_000, width=100_000, encoding="mono8", step=100_000, data=bytes(10)), ImageTooLargeError),
    (Image(height=20_000, width=2, encoding="mono8", step=2, data=bytes(40_000)), ImageTooLargeError),
    (CompressedImage(format="jpeg", data=b""), EmptyImageError),
    (CompressedImage(format="jpeg", data=b"\xff\xd8 not really a jpeg"), CompressedDecodeError),
    (CompressedImage(format="tiff", data=b"II*\x00"), UnsupportedEncodingError),
])
def test_malformed_messages_raise_their_own_error(msg, error):
    with pytest.raises(error) as info:
        msg_to_rgb(msg)
    assert isinstance(info.value, ImageConversionError) and isinstance(info.value, ValueError)
    assert info.value.cause == error.cause


@pytest.mark.parametrize("array, encoding", [
    (RNG.integers(0, 9, (6, 4), dtype=np.uint8), "mono8"),
    (RNG.normal(size=(6, 4)).astype(np.float32), "32FC1"),
    (RGB, "rgb8"),
])
def test_array_to_image_round_trip(array, encoding):
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id="cam")
    msg = array_to_image_msg(array, encoding, header)
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (6 if array.ndim == 2 else 5,
                                                                        array.shape[1], encoding, "cam")
    assert msg.step == array.shape[1] * array.itemsize * (3 if array.ndim == 3 else 1)
    np.testing.assert_array_equal(image_to_array(msg), array)


def test_array_to_image_rejects_wrong_shapes():
    with pytest.raises(UnsupportedEncodingError):
        array_to_image_msg(RGB, "mono8")
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((2, 2, 4), np.uint8), "rgb8")


def test_conversions_of_a_720p_frame_round_trip_without_per_element_copies():
    """A 1280x720 frame round-trips exactly, and the message holds the pixels as one bytes-like
    buffer (a per-element fill took ~140 ms per MB). Speed itself is a benchmark, not a test:
    ``python -m deltaworld_ros.bench`` reports the conversion's milliseconds."""
    frame = RNG.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8"):
        msg = array_to_image_msg(frame, encoding)
        assert len(msg.data) == frame.nbytes and msg.step == 1280 * 3
        # the array is stored as given, labelled with the encoding: bgr8 data decode to RGB reversed
        np.testing.assert_array_equal(msg_to_rgb(msg), frame if encoding == "rgb8" else frame[..., ::-1])


# ---------------------------------------------------------------- Futures from a Forecast
@dataclass
class FakeSummary:
    semantic_mode: np.ndarray
    agreement: np.ndarray
    depth_mean: np.ndarray
    depth_std: np.ndarray


@dataclass
class FakeForecast:
    """The fields of deltaworld_core.Forecast that the message builder reads."""

    stamp: float
    stamps: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray
    class_names: list[str]
    summary: FakeSummary
    timings: dict = field(default_factory=dict)

    @property
    def k(self):
        return self.semantic.shape[0]

    @property
    def horizon(self):
        return self.semantic.shape[1]


def fake_forecast(k=3, horizon=2, h=4, w=5, stamp=1700000000.25, step=0.2) -> FakeForecast:
    semantic = RNG.integers(0, 4, (k, horizon, h, w), dtype=np.uint8)
    depth = RNG.uniform(1, 50, (k, horizon, h, w)).astype(np.float32)
    mode = np.stack([np.apply_along_axis(lambda v: np.bincount(v, minlength=4).argmax(), 0, semantic[:, s])
                     for s in range(horizon)]).astype(np.uint8)
    return FakeForecast(
        stamp=stamp, stamps=stamp + step * np.arange(1, horizon + 1), semantic=semantic, depth=depth,
        class_names=["sky", "road", "car", "person"],
        summary=FakeSummary(mode, (semantic == mode).mean(0).astype(np.float32), depth.mean(0), depth.std(0)))


def test_futures_message_from_a_forecast():
    from deltaworld_ros.futures_msg import decode_futures, forecast_to_msg, time_to_ns

    forecast = fake_forecast()
    header = Header(stamp=Time(sec=1700000000, nanosec=250_000_000), frame_id="camera_optical")
    msg = forecast_to_msg(forecast, header)
    assert msg.header.stamp == header.stamp and msg.header.frame_id == "camera_optical"
    assert [time_to_ns(t) for t in msg.target_stamps] == [1700000000_450_000_000, 1700000000_650_000_000]
    assert list(msg.class_names) == forecast.class_names
    assert len(msg.hypotheses) == 3 and len(msg.summary) == 2
    for hypothesis in msg.hypotheses:
        assert [i.encoding for i in hypothesis.semantic] == ["mono8"] * 2
        assert [i.encoding for i in hypothesis.depth] == ["32FC1"] * 2
        assert [i.header.stamp for i in hypothesis.depth] == list(msg.target_stamps)
    assert [s.semantic_agreement.encoding for s in msg.summary] == ["32FC1"] * 2
    decoded = decode_futures(msg)
    np.testing.assert_array_equal(decoded.semantic, forecast.semantic)
    np.testing.assert_array_equal(decoded.depth, forecast.depth)
    np.testing.assert_array_equal(decoded.semantic_mode, forecast.summary.semantic_mode)
    np.testing.assert_array_equal(decoded.agreement, forecast.summary.agreement)
    np.testing.assert_allclose(decoded.depth_mean, forecast.summary.depth_mean)
    np.testing.assert_allclose(decoded.depth_std, forecast.summary.depth_std)
    np.testing.assert_allclose(decoded.target_stamps - decoded.stamp, [0.2, 0.4], atol=1e-6)


# ---------------------------------------------------------------- hostile compressed data and headers
def _jpeg_declaring(side: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize("progressive", [0, 1])
def test_compressed_size_is_read_from_the_header(progressive):
    from deltaworld_ros.image_conversion import compressed_image_size

    image = cv2.resize(RGB, (57, 41))
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])[1].tobytes()
    assert compressed_image_size(jpeg) == ("jpeg", 41, 57)
    assert compressed_image_size(cv2.imencode(".png", image)[1].tobytes()) == ("png", 41, 57)
    assert compressed_image_size(_jpeg_declaring(30000)) == ("jpeg", 30000, 30000)
    # Camera JPEGs with EXIF/APP segments: the frame header may lie past the first 64 KB
    app1 = b"\xff\xe1" + (65535).to_bytes(2, "big") + bytes(65533)
    assert compressed_image_size(jpeg[:2] + app1 * 2 + jpeg[2:]) == ("jpeg", 41, 57)


@pytest.mark.parametrize("data", [
    _jpeg_declaring(30000),  # 30000^2 px in ~700 bytes: OpenCV would decode it (16 s, 5 GB)
    b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (20000).to_bytes(4, "big") * 2 + bytes(9),
])
def test_decompression_bombs_are_never_decoded(data, monkeypatch):
    """The decoder is not even called for a header over the size limits."""
    def no_decode(*args):
        raise AssertionError("imdecode called on a decompression bomb")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(ImageTooLargeError, match="header declares"):
        msg_to_rgb(CompressedImage(format="jpeg", data=data))


@pytest.mark.parametrize("data", [
    cv2.imencode(".bmp", RGB)[1].tobytes(),  # another format under a jpeg label: never decoded
    b"\xff\xd8\xff\xe0" + bytes(20),  # a JPEG start without a frame header
    b"\x89PNG\r\n\x1a\n" + bytes(8),  # a PNG signature without IHDR
])
def test_compressed_data_without_a_readable_header_is_rejected(data):
    with pytest.raises(CompressedDecodeError):
        msg_to_rgb(CompressedImage(format="jpeg", data=data))


def test_headers_that_cannot_be_copied_into_futures_are_rejected():
    """A frame_id longer than MAX_FRAME_ID_LENGTH, and stamps whose
    targets pass 2^31 s (which serialised as -2^31), raise their own errors, before and inside
    the message builder."""
    from deltaworld_ros.futures_msg import MAX_FRAME_ID_LENGTH, check_header, forecast_to_msg, ns_to_time
    from deltaworld_ros.image_conversion import FrameIdTooLongError, StampOutOfRangeError

    fine = Header(stamp=Time(sec=1700000000), frame_id="c" * MAX_FRAME_ID_LENGTH)
    check_header(fine, horizon_s=0.6)
    assert forecast_to_msg(fake_forecast(stamp=1700000000.0), fine).header.frame_id == fine.frame_id
    with pytest.raises(FrameIdTooLongError):
        check_header(Header(stamp=Time(sec=1), frame_id="c" * (MAX_FRAME_ID_LENGTH + 1)))
    last = Header(stamp=Time(sec=2**31 - 1, nanosec=500_000_000), frame_id="cam")
    check_header(last, horizon_s=0.4)
    with pytest.raises(StampOutOfRangeError, match="2038"):
        check_header(last, horizon_s=0.6)
    with pytest.raises(StampOutOfRangeError):
        forecast_to_msg(fake_forecast(stamp=2**31 - 1 + 0.5, step=0.3), last)
    with pytest.raises(StampOutOfRangeError):
        check_header(Header(stamp=Time(sec=3, nanosec=1_000_000_000)))
    with pytest.raises(StampOutOfRangeError):
        ns_to_time(2**31 * 1_000_000_000)
    assert ns_to_time(2**31 * 1_000_000_000 - 1).sec == 2**31 - 1


# ---------------------------------------------------------------- reduced decoding, cut strings
def test_reduction_keeps_two_camera_pixels_per_model_pixel():
    from deltaworld_ros.image_conversion import reduction

    assert reduction(480, 640, (224, 224)) == 1  # ordinary cameras are used as they are
    assert reduction(720, 1280, (224, 224)) == 1
    assert reduction(1080, 1920, (224, 224)) == 2
    assert reduction(4096, 8192, (224, 224)) == 8
    assert reduction(4096, 8192, None) == 1  # no model size: full size
    assert reduction(4096, 8192, (1024, 1024)) == 2


def test_large_frames_are_decoded_and_converted_at_the_reduced_size():
    """A 32 Mpx PNG decodes at 1/8 (1024x512), never as a full-size array for the model; JPEG
    and raw frames shrink the same way, and stay close to a full-size decode shrunk after."""
    stripes = np.zeros((4096, 8192, 3), np.uint8)
    stripes[::64] = 255
    png = CompressedImage(format="png", data=cv2.imencode(".png", stripes)[1].tobytes())
    assert msg_to_rgb(png, (224, 224)).shape == (512, 1024, 3)
    assert msg_to_rgb(png).shape == (4096, 8192, 3)
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (1920, 1080),
                        interpolation=cv2.INTER_LINEAR)
    jpeg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))[1]
                           .tobytes())
    reduced = msg_to_rgb(jpeg, (224, 224))
    assert reduced.shape == (540, 960, 3)
    full_then_shrunk = cv2.resize(msg_to_rgb(jpeg), (960, 540), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - full_then_shrunk).mean() < 3
    raw = array_to_image_msg(smooth, "rgb8")
    shrunk = msg_to_rgb(raw, (224, 224))
    assert shrunk.shape == (540, 960, 3)
    np.testing.assert_array_equal(shrunk, cv2.resize(smooth, (960, 540), interpolation=cv2.INTER_AREA))
    bgr = array_to_image_msg(smooth[..., ::-1], "bgr8")
    np.testing.assert_array_equal(msg_to_rgb(bgr, (224, 224)), shrunk)


def test_strings_from_messages_are_cut_in_errors():
    from deltaworld_ros.image_conversion import cut

    long_text = "e" * 10_000_000
    assert cut(long_text) == f"{'e' * 64!r}... (10000000 characters)"
    assert cut("rgb8") == "'rgb8'"
    for msg in (Image(height=1, width=1, step=3, encoding=long_text, data=b"\0\0\0"),
                CompressedImage(format=long_text, data=b"\x89PNG\r\n\x1a\n")):
        with pytest.raises(ImageConversionError) as raised:
            msg_to_rgb(msg)
        assert len(str(raised.value)) < 300 and "10000000 characters" in str(raised.value)


@pytest.mark.parametrize("encoding, channels, dtype", [
    ("rgb8", 3, np.uint8), ("bgra8", 4, np.uint8), ("8UC1", 1, np.uint8), ("mono16", 1, np.uint16),
    ("bayer_rggb8", 1, np.uint8), ("bayer_gbrg8", 1, np.uint8)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_the_node_and_the_bag_readers_convert_camera_pixels_alike(encoding, channels, dtype, bigendian):
    """One conversion of raw camera fields: a frame recorded in a bag trains on the pixels the
    node sees live, for every encoding either accepts (Bayer and 8UC1 included)."""
    from deltaworld_core.data.rosbag import ImageMessage, image_to_rgb

    pixels = RNG.integers(0, np.iinfo(dtype).max, (6, 8, channels), dtype=dtype).squeeze(-1 if channels == 1 else ())
    msg = raw_msg(pixels, encoding, pad=2, bigendian=bigendian)
    recorded = ImageMessage(0, 0, "", memoryview(bytes(msg.data)), msg.height, msg.width, msg.encoding,
                            bool(msg.is_bigendian), msg.step)
    live = msg_to_rgb(msg)
    assert live.shape == (6, 8, 3) and live.dtype == np.uint8
    np.testing.assert_array_equal(live, image_to_rgb(recorded))
