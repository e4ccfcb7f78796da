"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

ROS 2's cv_bridge is not installable from PyPI, and the PyPI `cv-bridge` is a broken ROS 1 port.
These conversions are the only code path, so the node behaves identically on a ROS install and in
the PyPI set-up. The pixels are converted by ``deltaworld_core.imaging``, the conversion the
recording readers use too: numpy views of the message buffer (no per-pixel Python loops), `step`
row padding and `is_bigendian` honoured, headers checked before decoding. Malformed messages
raise a subclass of :class:`ImageConversionError` (a ValueError) whose ``cause`` names the kind
of malformation, so the node can log each cause once.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from deltaworld_core import imaging

# Strings from a message (encoding, format, frame_id) end up in log lines and errors: a 10 MB
# encoding made a 10 MB log line. Quoted strings are cut to this many characters.
LOGGED_CHARS = 64


def cut(text, limit: int = LOGGED_CHARS) -> str:
    """``repr`` of a string from a message or a command line, cut to ``limit`` characters and
    saying how long it really was (bytes are decoded for the purpose: never copied whole)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text[:limit + 1]).decode("utf-8", "replace")
    return imaging.quoted(str(text), limit)


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


COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class StampOutOfRangeError(ImageConversionError):
    cause = "stamp_out_of_range"


class FrameIdTooLongError(ImageConversionError):
    cause = "frame_id_too_long"


_ERRORS = {cls.cause: cls for cls in (UnsupportedEncodingError, TruncatedDataError, EmptyImageError,
                                      ImageTooLargeError, CompressedDecodeError)}


@contextmanager
def _imaging():
    """``deltaworld_core.imaging`` (the one camera pixel conversion, shared with the recording
    readers), its errors raised as this module's :class:`ImageConversionError` subclasses."""
    try:
        yield imaging
    except imaging.ImageError as err:
        raise _ERRORS.get(err.cause, ImageConversionError)(str(err)) from None


def image_to_array(msg: Image) -> np.ndarray:
    """The pixels of ``msg`` in their own type: [h, w] for one channel, else [h, w, c].
    The result is a fresh, contiguous array in native byte order (it does not alias ``msg``)."""
    with _imaging() as imaging:
        return imaging.raw_pixels(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)


# Frames are shrunk to no less than this many camera pixels per model pixel (a side of the model
# input): the model's own antialiased resize from there matches a resize from full size closely,
# while a 32 Mpx frame never reaches it (the model converts its input to float32 before resizing:
# 400 MB for 8192x4096; the node went from 312 to 1,088 MB under a flood of such PNGs).
KEEP_PIXELS_PER_MODEL_PIXEL = 2


def reduction(height: int, width: int, model_size: tuple[int, int] | None) -> int:
    """The largest factor of ``imaging.REDUCTIONS`` (else 1) that leaves a ``height`` x
    ``width`` frame at least KEEP_PIXELS_PER_MODEL_PIXEL camera pixels per model pixel for a model
    input of ``model_size`` (h, w); the model's views span the frame's short side relative to its aspect,
    hence the smaller of the two ratios. 640x480 for a 224x224 model: 1 (frames as they are)."""
    if model_size is None:
        return 1
    ratio = min(height / model_size[0], width / model_size[1])
    return next((f for f in imaging.REDUCTIONS if ratio / f >= KEEP_PIXELS_PER_MODEL_PIXEL), 1)


def image_msg_to_rgb(msg: Image, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """A camera image -> [h, w, 3] uint8 RGB (grey encodings repeated across channels), shrunk
    (see :func:`reduction`) when ``model_size`` is given and the frame is much larger."""
    with _imaging() as imaging:
        return imaging.raw_to_rgb(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian,
                                  reduction(msg.height, msg.width, model_size))


def compressed_image_size(data: bytes) -> tuple[str, int, int]:
    """(format, height, width) read from a PNG or JPEG header without decoding; raises
    CompressedDecodeError for anything else (other formats are never handed to a decoder)."""
    with _imaging() as imaging:
        return imaging.compressed_header(data)


def compressed_msg_to_rgb(msg: CompressedImage, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """A jpeg/png CompressedImage -> [h, w, 3] uint8 RGB.

    The size is read from the PNG/JPEG header and checked before decoding: a few-KB file can
    declare 30000x30000 px, which OpenCV (limit 2^30 px) would spend seconds and gigabytes
    decoding. With ``model_size``, a frame much larger than the model needs is decoded at 1/2, 1/4
    or 1/8 size (:func:`reduction`): JPEG's decoder then never builds the full-size image at all."""
    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise UnsupportedEncodingError(f"unsupported compressed format {cut(msg.format)} (supported: jpeg, png)")
    if len(msg.data) == 0:
        raise EmptyImageError("compressed image has no data")
    data = bytes(msg.data)
    with _imaging() as imaging:
        kind, height, width = imaging.compressed_header(data)
        return imaging.decode_compressed(data, reduction(height, width, model_size), (kind, height, width))


def msg_to_rgb(msg: Image | CompressedImage, model_size: tuple[int, int] | None = None) -> np.ndarray:
    """Either camera message type -> [h, w, 3] uint8 RGB, no larger than ``model_size`` (h, w)
    needs (see :func:`reduction`; None = full size)."""
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_rgb(msg, model_size)
    return image_msg_to_rgb(msg, model_size)


_ARRAY_ENCODINGS = {("mono8", 2): np.uint8, ("32FC1", 2): np.float32, ("rgb8", 3): np.uint8, ("bgr8", 3): np.uint8}


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """[h, w] (mono8, 32FC1) or [h, w, 3] (rgb8, bgr8) -> Image, in the host's byte order.
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
