"""Image sizes read from headers, checked before a pixel is copied or decoded.

A few-KB PNG or JPEG can declare 30000x30000 px, which OpenCV (limit 2^30 px) would spend
seconds and gigabytes decoding; a raw camera message can claim any height and width. Every
reader (the node, rosbag2 recordings, frame folders, tar shards) checks the declared size against
these bounds first.
"""

from __future__ import annotations

from .errors import ABSURD_SIZE, ZERO_SIZE, ImageError

# 2^25 px holds 8K UHD (7680x4320); one RGB copy of it is 96 MiB, so per-frame buffers stay bounded.
MAX_SIDE = 16384  # pixels; anything larger is a corrupt header, not a camera
MAX_PIXELS = 1 << 25

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4, C8 and CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RSTn: no length field


def check_size(height: int, width: int) -> None:
    """Raises ImageError with cause ``zero_size`` for a zero side, ``absurd_size`` beyond
    MAX_SIDE a side or MAX_PIXELS."""
    if height == 0 or width == 0:
        raise ImageError(f"image has zero size ({width}x{height})", ZERO_SIZE)
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageError(f"image size {width}x{height} exceeds {MAX_SIDE} px a side / {MAX_PIXELS} px", ABSURD_SIZE)


def compressed_kind(data: bytes | memoryview) -> str | None:
    """``"png"`` or ``"jpeg"`` by the file's magic bytes, else None."""
    head = bytes(data[:8])
    if head == PNG_MAGIC:
        return "png"
    if head[:3] == JPEG_MAGIC:
        return "jpeg"
    return None


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame segment, walking the segment lengths
    (a few dozen steps: no pixel is touched); None without one."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if length < 7 or pos + 9 > end:
                return None
            return int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
        if length < 2:
            return None
        pos += 2 + length
    return None


def pnm_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) of a binary or ASCII PGM/PPM (``P2``/``P3``/``P5``/``P6``) header, or None."""
    head = bytes(data[:512])
    if len(head) < 2 or head[:1] != b"P" or head[1:2] not in b"2356":
        return None
    fields: list[bytes] = []
    for line in head[2:].split(b"\n"):
        fields += line.split(b"#", 1)[0].split()
        if len(fields) >= 2:
            break
    if len(fields) < 2 or not all(f.isdigit() and len(f) < 10 for f in fields[:2]):
        return None
    return int(fields[1]), int(fields[0])


def compressed_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) a PNG or JPEG declares, or None for anything else."""
    head = bytes(data[:24])
    if head[:8] == PNG_MAGIC and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head[:3] == JPEG_MAGIC:
        return jpeg_size(data)  # walks segment lengths: EXIF/APP segments may put the frame header past 64 KB
    return None
