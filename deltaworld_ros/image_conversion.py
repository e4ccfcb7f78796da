"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

ROS 2's cv_bridge is not installable from PyPI, and the PyPI `cv-bridge` is a broken ROS 1 port.
These conversions are the only code path, so the node behaves identically on a ROS install and in
the PyPI set-up. Every conversion works on numpy views of the message buffer (no per-pixel Python
loops) and honours `step` row padding and `is_bigendian`. Malformed messages raise a subclass of
:class:`ImageConversionError` (a ValueError) whose ``cause`` names the kind of malformation, so
the node can log each cause once.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# Bounds on one input image, checked before any pixel is copied or decoded. 2^25 px holds 8K UHD
# (7680x4320); one RGB copy of it is 96 MiB, so the node's per-frame buffers stay bounded.
MAX_SIDE = 16384  # pixels; anything larger is a corrupt header, not a camera
MAX_PIXELS = 1 << 25


# Strings from a message (encoding, format, frame_id) end up in log lines and errors: a 10 MB
# encoding made a 10 MB log line. Quoted strings are cut to this many characters.
LOGGED_CHARS = 64


def cut(text, limit: int = LOGGED_CHARS) -> str:
    """``repr`` of a string from a message or a command line, cut to ``limit`` characters and
    saying how long it really was (bytes are decoded for the purpose: never copied whole)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text[:limit + 1]).decode("utf-8", "replace")
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class ImageConversionError(ValueError):
    """An image message that cannot be converted; ``cause`` is a short stable key."""

    cause = "malformed"


class UnsupportedEncodingError(ImageConversionError):
    cause = "unsupported_encoding"


class TruncatedDataError(ImageConversionError):
    cause = "truncated_data"


class EmptyImageError(ImageConversionError):
    cause = "zero_size"


class ImageTooLargeError(ImageConversionError):
    cause = "absurd_size"


class CompressedDecodeError(ImageConversionError):
    cause = "undecodable"


# encoding -> (channels, dtype); mono16/16UC1 are read as grey.
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "32FC1": (1, np.dtype(np.float32)),
}
INPUT_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1")
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class StampOutOfRangeError(ImageConversionError):
    cause = "stamp_out_of_range"


class FrameIdTooLongError(ImageConversionError):
    cause = "frame_id_too_long"


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise EmptyImageError(f"image has zero size ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageTooLargeError(f"image size {width}x{height} exceeds {MAX_SIDE} px a side / {MAX_PIXELS} px")


def image_to_array(msg: Image) -> np.ndarray:
    """The pixels of ``msg`` in their own type: [h, w] for one channel, else [h, w, c].
    The result is a fresh, contiguous array in native byte order (it does not alias ``msg``)."""
    if msg.encoding not in ENCODINGS:
        raise UnsupportedEncodingError(
            f"unsupported encoding {cut(msg.encoding)} (supported: {', '.join(ENCODINGS)})")
    channels, dtype = ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    _check_size(height, width)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise TruncatedDataError(f"step {step} is shorter than a {msg.encoding} row of {width} px ({row_bytes} bytes)")
    data = msg.data
    if len(data) < step * height:
        raise TruncatedDataError(f"data has {len(data)} bytes, expected step x height = {step * height}")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = rows.view(dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    return pixels.astype(dtype.newbyteorder("="), copy=True, order="C")


_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB}


def _to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding in ("mono16", "16UC1"):
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # full range -> 0..255
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if encoding == "rgb8":
        return pixels
    return cv2.cvtColor(pixels, _TO_RGB[encoding])  # SIMD; a numpy channel flip is ~10x slower


# Frames are shrunk to no less than this many camera pixels per model pixel (a side of the model
# input): the model's own antialiased resize from there matches a resize from full size closely,
# while a 32 Mpx frame never reaches it (the model converts its input to float32 before resizing:
# 400 MB for 8192x4096; the node went from 312 to 1,088 MB under a flood of such PNGs).
KEEP_PIXELS_PER_MODEL_PIXEL = 2
REDUCTIONS = (8, 4, 2)  # the factors OpenCV's reduced decoding offers (IMREAD_REDUCED_COLOR_2/4/8)
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction(height: int, width: int, model_size: tuple[int, int] | None) -> int:
    """The largest factor of REDUCTIONS (else 1) that leaves a ``height`` x ``width`` frame at
    least KEEP_PIXELS_PER_MODEL_PIXEL camera pixels per model pixel for a model input of
    ``model_size`` (h, w); the model's views span the frame's short side relative to its aspect,
    hence the smaller of the two ratios. 640x480 for a 224x224 model: 1 (frames as they are)."""
    if model_size is None:
        return 1
    ratio = min(height / model_size[0], width / model_size[1])
    return next((f for f in REDUCTIONS if ratio / f >= KEEP_PIXELS_PER_MODEL_PIXEL), 1)


def shrink(pixels: np.ndarray, factor: int) -> np.ndarray:
    """``pixels`` averaged over ``factor`` x ``factor`` blocks (uint8 in, uint8 out)."""
    if factor == 1:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, -(-width // factor)), max(1, -(-height // factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def image_msg_to_rgb(msg: Image, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """A camera image -> [h, w, 3] uint8 RGB (grey encodings repeated across channels), shrunk
    (see :func:`reduction`) when ``model_size`` is given and the frame is much larger."""
    if msg.encoding not in INPUT_ENCODINGS:
        raise UnsupportedEncodingError(
            f"unsupported camera encoding {cut(msg.encoding)} (supported: {', '.join(INPUT_ENCODINGS)})")
    pixels = image_to_array(msg)
    if pixels.dtype == np.uint8:  # shrink first: the colour conversion then touches 1/f^2 of the pixels
        pixels = shrink(pixels, reduction(msg.height, msg.width, model_size))
    rgb = _to_rgb(pixels, msg.encoding)
    return shrink(rgb, reduction(msg.height, msg.width, model_size)) if pixels.dtype != np.uint8 else rgb


def compressed_image_size(data: bytes) -> tuple[str, int, int]:
    """(format, height, width) read from a PNG or JPEG header without decoding; raises
    CompressedDecodeError for anything else (other formats are never handed to a decoder)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    elif data[:3] == b"\xff\xd8\xff":
        kind = "jpeg"
    else:
        raise CompressedDecodeError(f"data ({len(data)} bytes) is neither PNG nor JPEG (starts {bytes(data[:8])!r})")
    # Imported here: the node must start (and report a broken deltaworld_core at configure) even
    # when the core library does not import.
    from deltaworld_core.data.bags import compressed_size

    size = compressed_size(data)  # the header's claim, read the way bag readers read it
    if size is None:
        raise CompressedDecodeError(f"{kind} data ({len(data)} bytes) has no readable image header")
    return kind, *size


def compressed_msg_to_rgb(msg: CompressedImage, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """A jpeg/png CompressedImage -> [h, w, 3] uint8 RGB.

    The size is read from the PNG/JPEG header and checked against MAX_SIDE / MAX_PIXELS before
    decoding: a few-KB file can declare 30000x30000 px, which OpenCV (limit 2^30 px) would
    spend seconds and gigabytes decoding. With ``model_size``, a frame much larger than the model
    needs is decoded at 1/2, 1/4 or 1/8 size (:func:`reduction`): JPEG's decoder then never
    builds the full-size image at all."""
    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise UnsupportedEncodingError(f"unsupported compressed format {cut(msg.format)} (supported: jpeg, png)")
    if len(msg.data) == 0:
        raise EmptyImageError("compressed image has no data")
    data = bytes(msg.data)
    kind, height, width = compressed_image_size(data)
    try:
        _check_size(height, width)
    except ImageTooLargeError as err:
        raise ImageTooLargeError(f"{kind} header declares {err}") from None
    factor = reduction(height, width, model_size)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR))
    if bgr is None:
        raise CompressedDecodeError(f"{cut(msg.format)} data ({len(msg.data)} bytes) could not be decoded")
    expected = (-(-height // factor), -(-width // factor))
    if any(abs(got - want) > (factor > 1) for got, want in zip(bgr.shape[:2], expected)):
        # a header that lies: never trust a size we did not check (reduced sizes may round either way)
        raise CompressedDecodeError(f"{kind} decoded to {bgr.shape[1]}x{bgr.shape[0]}, header said {width}x{height}"
                                    + (f" (decoded at 1/{factor})" if factor > 1 else ""))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def msg_to_rgb(msg: Image | CompressedImage, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """Either camera message type -> [h, w, 3] uint8 RGB, no larger than ``model_size`` (h, w)
    needs (see :func:`reduction`; None = full size)."""
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_rgb(msg, model_size)
    return image_msg_to_rgb(msg, model_size)


_ARRAY_ENCODINGS = {("mono8", 2): np.uint8, ("32FC1", 2): np.float32, ("rgb8", 3): np.uint8, ("bgr8", 3): np.uint8}


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """[h, w] (mono8, 32FC1) or [h, w, 3] (rgb8, bgr8) -> Image, in this machine's byte order.
    The data are assigned as ``bytes``: element-wise assignment of an ndarray is ~1000x slower."""
    dtype = _ARRAY_ENCODINGS.get((encoding, array.ndim))
    if dtype is None:
        raise UnsupportedEncodingError(f"cannot encode a {array.ndim}-D array as {encoding!r}")
    if array.ndim == 3 and array.shape[2] != 3:
        raise ValueError(f"{encoding} needs [h, w, 3], got {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg
