"""Compressed images (PNG, JPEG, any format OpenCV reads) -> RGB uint8, and shrinking frames.

:func:`decode_compressed` is the strict path of camera messages (the node's CompressedImage,
rosbag2 recordings): the header's size is read and checked before decoding, JPEGs are decoded at
1/2, 1/4 or 1/8 scale when asked (JPEG's decoder then never builds the full-size image), and a
decoded size that differs from the header's claim is refused. :func:`decode_image` reads image
files (frame folders, tar shards) the same way: header first, checked, then decoded.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import ABSURD_SIZE, UNDECODABLE, ZERO_SIZE, ImageError
from .headers import check_size, compressed_kind, compressed_size, pnm_size

REDUCTIONS = (8, 4, 2)  # the factors OpenCV's reduced decoding offers (IMREAD_REDUCED_COLOR_2/4/8)
REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def compressed_header(data: bytes | memoryview) -> tuple[str, int, int]:
    """(``"png"``/``"jpeg"``, height, width) from a PNG or JPEG header without decoding. Raises
    ImageError (cause ``undecodable``) for anything else (other formats are never handed to a
    decoder)."""
    kind = compressed_kind(data)
    if kind is None:
        raise ImageError(f"data ({len(data)} bytes) is neither PNG nor JPEG (starts {bytes(data[:8])!r})",
                         UNDECODABLE)
    size = compressed_size(data)
    if size is None:
        raise ImageError(f"{kind} data ({len(data)} bytes) has no readable image header", UNDECODABLE)
    return kind, *size


def decode_compressed(data: bytes | memoryview, factor: int = 1,
                      header: tuple[str, int, int] | None = None) -> np.ndarray:
    """A PNG or JPEG -> RGB uint8 [ceil(h / factor), ceil(w / factor), 3] (``factor`` 1, 2, 4 or
    8: reduced decoding). The header's size is checked first (:func:`~.headers.check_size`);
    raises ImageError (cause ``undecodable``) for other formats, data that do not decode or
    decode to another size than declared. ``header``: what :func:`compressed_header` read from
    ``data`` already (a caller that chose ``factor`` by it), so that it is not read again."""
    if factor != 1 and factor not in REDUCED_FLAGS:
        raise ValueError(f"a reduced decoding factor is 1, 2, 4 or 8, got {factor}")
    kind, height, width = compressed_header(data) if header is None else header
    try:
        check_size(height, width)
    except ImageError as err:
        if err.cause != ABSURD_SIZE:
            raise
        raise ImageError(f"{kind} header declares {err}", ABSURD_SIZE) from None
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR))
    if bgr is None:
        raise ImageError(f"{kind} data ({len(data)} bytes) could not be decoded", UNDECODABLE)
    expected = (-(-height // factor), -(-width // factor))
    if any(abs(got - want) > (factor > 1) for got, want in zip(bgr.shape[:2], expected)):
        # a header that lies: never trust a size we did not check (reduced sizes may round either way)
        raise ImageError(f"{kind} decoded to {bgr.shape[1]}x{bgr.shape[0]}, header said {width}x{height}"
                                    + (f" (decoded at 1/{factor})" if factor > 1 else ""), UNDECODABLE)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def side_factor(kind: str | None, height: int, width: int, max_side: int | None) -> int:
    """The reduced decoding factor that still leaves a JPEG ``max_side`` pixels on its longer
    side (1 for other formats, whose reduced decoding builds the full image anyway)."""
    if kind != "jpeg" or max_side is None:
        return 1
    return next((f for f in REDUCTIONS if max(height, width) // f >= max_side), 1)


def decode_to_side(data: bytes | memoryview | np.ndarray, header: tuple[str, int, int],
                   max_side: int | None) -> np.ndarray:
    """A PNG or JPEG whose ``header`` (:func:`compressed_header`) was read already -> RGB uint8 with
    its longer side at most ``max_side``: decoded at the reduction :func:`side_factor` allows, then
    shrunk (:func:`shrink_to_side`)."""
    factor = side_factor(*header, max_side)
    return shrink_to_side(decode_compressed(data, factor, header), max_side)


def file_header(data: bytes | memoryview | np.ndarray) -> tuple[str, int, int]:
    """(``"png"``/``"jpeg"``/``"pnm"``, height, width) of an image file's header, size checked
    (:func:`~.headers.check_size`) before any pixel is decoded. Raises ImageError: ``zero_size``
    for an empty file, ``undecodable`` for another format or an unreadable header,
    ``absurd_size`` for a header declaring more than the bounds."""
    view = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else memoryview(data.reshape(-1))
    if len(view) == 0:
        raise ImageError("an empty file (0 bytes)", ZERO_SIZE)
    if compressed_kind(view) is not None:
        kind, height, width = compressed_header(view)
    else:
        size = pnm_size(view)
        if size is None:
            raise ImageError(f"data ({len(view)} bytes) is not a PNG, JPEG, PGM or PPM image "
                             f"(starts {bytes(view[:8])!r})", UNDECODABLE)
        kind, (height, width) = "pnm", size
    try:
        check_size(height, width)
    except ImageError as err:
        raise ImageError(f"{kind} header declares {err}", err.cause) from None
    return kind, height, width


def decode_image(data: bytes | memoryview | np.ndarray, max_side: int | None = None) -> np.ndarray:
    """An image file (PNG, JPEG, PGM or PPM: what frame folders and shards hold) -> RGB uint8 with
    its longer side at most ``max_side``. The header is read and checked first
    (:func:`file_header`), so a few-KB file declaring 30000x30000 px is never decoded. JPEGs are
    decoded at 1/2, 1/4 or 1/8 scale when that still leaves ``max_side`` pixels (several times
    faster than decoding in full and shrinking). Raises ImageError naming what is wrong."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    kind, height, width = file_header(buf)
    if kind != "pnm":  # PNG and JPEG: the camera messages' own decoding, decoded size checked too
        return decode_to_side(buf, (kind, height, width), max_side)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        raise ImageError(f"{kind} data ({len(buf)} bytes) could not be decoded to its header's "
                         f"{width}x{height}", UNDECODABLE)
    return shrink_to_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)


def shrink_to_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side``: box-averaged by the largest whole factor
    that keeps it at least that size, then bilinear for the rest (less than 2x, so no aliasing).
    OpenCV's area interpolation at a fractional factor gives about the same pixels ~7x slower
    (1.5 vs 0.2 ms for 640x272 -> 224 px on one core)."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    factor = int(1 / scale)
    if factor >= 2:
        rgb = cv2.resize(rgb, (max(size[0], w // factor), max(size[1], h // factor)), interpolation=cv2.INTER_AREA)
    if rgb.shape[1::-1] == size:
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def block_average(pixels: np.ndarray, factor: int) -> np.ndarray:
    """``pixels`` averaged over ``factor`` x ``factor`` blocks (uint8 in, uint8 out)."""
    if factor == 1:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, -(-width // factor)), max(1, -(-height // factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
