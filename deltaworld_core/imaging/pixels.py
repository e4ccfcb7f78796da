"""Raw camera pixels (the fields of a sensor_msgs/Image: ``data``, ``height``, ``width``,
``encoding``, ``step``, ``is_bigendian``) -> numpy, without ROS.

The one conversion of raw frames, used by the forecast node's camera input and the rosbag2
readers alike. It works on numpy views of the message buffer (no per-pixel Python loop), honours
``step`` row padding and ``is_bigendian``, scales 16-bit grey from its full range and demosaics
8-bit Bayer patterns. Malformed fields raise an :class:`~.errors.ImageError` naming what is
wrong (and its ``cause``), before any pixel is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .decode import block_average
from .errors import TRUNCATED_DATA, UNSUPPORTED_ENCODING, ImageError, quoted
from .headers import check_size


@dataclass(frozen=True)
class PixelLayout:
    """How an encoding lays out one pixel, and how it becomes RGB."""

    channels: int
    dtype: np.dtype
    to_rgb: int | None  # OpenCV colour conversion to RGB; None: RGB already (or not a camera image)
    camera: bool = True  # a colour or grey camera frame (32FC1 is a depth image, not one)
    bayer: bool = False  # a mosaic: converted at full size, shrunk after


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
ENCODINGS: dict[str, PixelLayout] = {
    "rgb8": PixelLayout(3, _U8, None),
    "bgr8": PixelLayout(3, _U8, cv2.COLOR_BGR2RGB),
    "rgba8": PixelLayout(4, _U8, cv2.COLOR_RGBA2RGB),
    "bgra8": PixelLayout(4, _U8, cv2.COLOR_BGRA2RGB),
    "mono8": PixelLayout(1, _U8, cv2.COLOR_GRAY2RGB),
    "8UC1": PixelLayout(1, _U8, cv2.COLOR_GRAY2RGB),
    "mono16": PixelLayout(1, _U16, cv2.COLOR_GRAY2RGB),
    "16UC1": PixelLayout(1, _U16, cv2.COLOR_GRAY2RGB),
    # OpenCV names a Bayer pattern by its second row's first two pixels (as cv_bridge maps them).
    "bayer_rggb8": PixelLayout(1, _U8, cv2.COLOR_BayerBG2RGB, bayer=True),
    "bayer_bggr8": PixelLayout(1, _U8, cv2.COLOR_BayerRG2RGB, bayer=True),
    "bayer_gbrg8": PixelLayout(1, _U8, cv2.COLOR_BayerGR2RGB, bayer=True),
    "bayer_grbg8": PixelLayout(1, _U8, cv2.COLOR_BayerGB2RGB, bayer=True),
    "32FC1": PixelLayout(1, _F32, None, camera=False),
}
CAMERA_ENCODINGS = tuple(name for name, layout in ENCODINGS.items() if layout.camera)


def _pixel_view(data, height: int, width: int, encoding: str, step: int, is_bigendian: bool) -> np.ndarray:
    """A view of ``data`` as [h, w] (one channel) or [h, w, c] in the message's byte order."""
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise ImageError(f"unsupported encoding {quoted(encoding)} (supported: {', '.join(ENCODINGS)})",
                         UNSUPPORTED_ENCODING)
    check_size(height, width)
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is shorter than a {encoding} row of {width} px ({row_bytes} bytes)",
                         TRUNCATED_DATA)
    if len(data) < step * height:
        raise ImageError(f"data has {len(data)} bytes, expected step x height = {step * height}", TRUNCATED_DATA)
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)[:, :row_bytes]
    dtype = layout.dtype.newbyteorder(">" if is_bigendian else "<") if layout.dtype.itemsize > 1 else layout.dtype
    pixels = rows.view(dtype)
    return pixels.reshape(height, width, layout.channels) if layout.channels > 1 else pixels.reshape(height, width)


def raw_pixels(data, height: int, width: int, encoding: str, step: int, is_bigendian: bool = False) -> np.ndarray:
    """The pixels in their own type: [h, w] for one channel, else [h, w, c]; a fresh,
    contiguous array in native byte order (it does not alias ``data``)."""
    pixels = _pixel_view(data, height, width, encoding, step, is_bigendian)
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=True, order="C")


def raw_to_rgb(data, height: int, width: int, encoding: str, step: int, is_bigendian: bool = False,
               factor: int = 1) -> np.ndarray:
    """A camera frame -> RGB uint8 [ceil(h / factor), ceil(w / factor), 3] (grey repeated across
    channels, 16-bit grey scaled from its full range), averaged over ``factor`` x ``factor``
    blocks. A fresh array of its own (never a view of ``data``)."""
    layout = ENCODINGS.get(encoding)
    if layout is None or not layout.camera:
        raise ImageError(f"unsupported camera encoding {quoted(encoding)} "
                                       f"(supported: {', '.join(CAMERA_ENCODINGS)})", UNSUPPORTED_ENCODING)
    pixels = _pixel_view(data, height, width, encoding, step, is_bigendian)
    if layout.dtype.itemsize == 2:  # full 16-bit range -> 0..255
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if not layout.bayer and factor > 1:  # shrink first: the colour conversion then touches 1/factor^2 of the pixels
        pixels = block_average(np.ascontiguousarray(pixels), factor)
    if layout.to_rgb is None:  # rgb8: still a view of the message unless shrunk
        return np.array(pixels, order="C") if factor == 1 else pixels
    rgb = cv2.cvtColor(np.ascontiguousarray(pixels), layout.to_rgb)  # SIMD; a numpy channel flip is ~10x slower
    return block_average(rgb, factor) if layout.bayer else rgb
