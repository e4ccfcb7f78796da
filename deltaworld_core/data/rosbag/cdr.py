"""The CDR (XCDR1, as rmw_fastrtps writes it) of the two message types a camera records,
``sensor_msgs/msg/Image`` and ``CompressedImage``: decoded to :class:`ImageMessage` with the pixel
bytes as a zero-copy view of the message buffer, and encoded back."""

from __future__ import annotations

import struct
from dataclasses import dataclass

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


class CdrError(ValueError):
    """A message whose bytes are not the CDR of the type it claims."""


@dataclass
class ImageMessage:
    """The fields of a decoded sensor_msgs Image (``format`` None) or CompressedImage
    (``format`` set; ``height``/``width``/``encoding``/``step`` unused)."""

    sec: int
    nanosec: int
    frame_id: str
    data: memoryview
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: bool = False
    step: int = 0
    format: str | None = None

    @property
    def stamp(self) -> float:
        return self.sec + self.nanosec * 1e-9


class _CdrReader:
    """XCDR1 plain CDR (what rmw_fastrtps writes): alignment is relative to the byte after the
    4-byte encapsulation header; byte order from that header."""

    def __init__(self, buf: bytes | memoryview):
        self.buf = memoryview(buf)
        if len(self.buf) < 4 or self.buf[0] != 0 or self.buf[1] not in (0, 1):
            raise CdrError(f"not a CDR message (encapsulation {bytes(self.buf[:4])!r})")
        self.order = "<" if self.buf[1] == 1 else ">"
        self.pos = 4

    def _align(self, n: int) -> None:
        self.pos += -(self.pos - 4) % n

    def u32(self) -> int:
        self._align(4)
        if self.pos + 4 > len(self.buf):
            raise CdrError("message ends inside a field")
        (value,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        self.pos += 4
        return value

    def i32(self) -> int:
        value = self.u32()
        return value - (1 << 32) if value >= 1 << 31 else value

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise CdrError("message ends inside a field")
        self.pos += 1
        return self.buf[self.pos - 1]

    def string(self, limit: int = 4096) -> str:
        n = self.u32()  # includes the terminating NUL
        if n > limit or self.pos + n > len(self.buf):
            raise CdrError(f"a string of {n} bytes does not fit the message (or exceeds {limit})")
        raw = bytes(self.buf[self.pos:self.pos + max(0, n - 1)])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def octets(self) -> memoryview:
        n = self.u32()
        if self.pos + n > len(self.buf):
            raise CdrError(f"data of {n} bytes runs past the message's {len(self.buf)} bytes")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def decode_image_message(type_name: str, data: bytes | memoryview) -> ImageMessage:
    """CDR bytes of a sensor_msgs Image or CompressedImage -> :class:`ImageMessage` (the pixel
    bytes are a view of ``data``, not a copy). Raises CdrError."""
    r = _CdrReader(data)
    sec, nanosec, frame_id = r.i32(), r.u32(), r.string()
    if type_name == COMPRESSED_TYPE:
        fmt = r.string()
        return ImageMessage(sec, nanosec, frame_id, r.octets(), format=fmt)
    if type_name != IMAGE_TYPE:
        raise CdrError(f"{type_name} is not an image type ({', '.join(IMAGE_TYPES)})")
    height, width, encoding = r.u32(), r.u32(), r.string(256)
    is_bigendian, step = bool(r.u8()), r.u32()
    return ImageMessage(sec, nanosec, frame_id, r.octets(), height, width, encoding, is_bigendian, step)


class _CdrWriter:
    def __init__(self):
        self.out = bytearray(b"\x00\x01\x00\x00")  # CDR little endian

    def _align(self, n: int) -> None:
        self.out += b"\x00" * (-(len(self.out) - 4) % n)

    def u32(self, v: int) -> None:
        self._align(4)
        self.out += struct.pack("<I", v & 0xFFFFFFFF)

    def string(self, s: str) -> None:
        raw = s.encode() + b"\x00"
        self.u32(len(raw))
        self.out += raw

    def octets(self, b: bytes | memoryview) -> None:
        self.u32(len(b))
        self.out += b


def encode_image_message(msg: ImageMessage) -> bytes:
    """:class:`ImageMessage` -> CDR bytes of sensor_msgs Image (``format`` None) or CompressedImage."""
    w = _CdrWriter()
    w.u32(msg.sec)
    w.u32(msg.nanosec)
    w.string(msg.frame_id)
    if msg.format is not None:
        w.string(msg.format)
    else:
        w.u32(msg.height)
        w.u32(msg.width)
        w.string(msg.encoding)
        w.out.append(1 if msg.is_bigendian else 0)
        w.u32(msg.step)
    w.octets(msg.data)
    return bytes(w.out)
