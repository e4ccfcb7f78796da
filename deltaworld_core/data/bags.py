"""rosbag2 recordings (MCAP and sqlite3) of camera topics, read and written without ROS.

Why a small CDR codec of our own rather than ``rosbags`` or ``mcap-ros2-support``: the two
message types a camera records (``sensor_msgs/msg/Image`` and ``CompressedImage``) are a header,
a few strings and integers and one byte array, which decode here as a zero-copy numpy view of
the message buffer. Measured on this machine (docs/data-sources.md, "Why this reader"), this
decoder costs a few microseconds per message, below the pixel conversion it feeds; the libraries
would add dependencies (``rosbags`` pulls ``ruamel.yaml`` and more) for no speed and no format
we need. MCAP goes through the PyPI ``mcap`` package (already a dependency), chunk by chunk with
CRCs checked: a corrupt chunk is skipped, counted and logged, never decoded into garbage frames.
sqlite3 bags are read with Python's ``sqlite3``.

Pixel conversion follows the node's (``deltaworld_ros.image_conversion``, which needs ROS
messages): ``step`` row padding and ``is_bigendian`` honoured, 16-bit grey scaled from its full
range; Bayer 8-bit patterns are demosaiced here too.
"""

from __future__ import annotations

import io
import re
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .media import MediaError, MediaRef, decode_image, record_skip, shrink

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_SIDE = 16384  # as the node: a larger declared image is a corrupt header, not a camera
MAX_PIXELS = 1 << 25

# Image encodings -> (channels, numpy dtype, OpenCV conversion to RGB or None).
ENCODINGS: dict[str, tuple[int, np.dtype, int | None]] = {
    "rgb8": (3, np.dtype(np.uint8), None),
    "bgr8": (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.dtype(np.uint8), cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "8UC1": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "mono16": (1, np.dtype(np.uint16), cv2.COLOR_GRAY2RGB),
    "16UC1": (1, np.dtype(np.uint16), cv2.COLOR_GRAY2RGB),
    # OpenCV names a Bayer pattern by its second row's first two pixels (as cv_bridge maps them).
    "bayer_rggb8": (1, np.dtype(np.uint8), cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, np.dtype(np.uint8), cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.dtype(np.uint8), cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.dtype(np.uint8), cv2.COLOR_BayerGB2RGB),
}


# What the readers pulled from disk in this process: MCAP chunks and their bytes, sqlite3 rows and
# their bytes (process-local, like the skip counters; tests and benchmarks measure windows with it).
_reads = {"chunks": 0, "chunk_bytes": 0, "rows": 0, "row_bytes": 0}


def read_counts() -> dict[str, int]:
    """MCAP ``chunks``/``chunk_bytes`` and sqlite3 ``rows``/``row_bytes`` read so far in this
    process (a copy)."""
    return dict(_reads)


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


# ------------------------------------------------------------------ CDR
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


# ------------------------------------------------------------------ pixels
def image_to_rgb(msg: ImageMessage, max_side: int | None = None) -> np.ndarray:
    """A decoded Image or CompressedImage -> RGB uint8 [H, W, 3] (at most ``max_side`` a side).
    Raises ValueError naming what is wrong (unsupported encoding, truncated data, ...)."""
    if msg.format is not None:
        size = compressed_size(msg.data)
        if size is None:
            raise ValueError(f"compressed data ({len(msg.data)} bytes, format {msg.format[:40]!r}) is neither "
                             "a readable JPEG nor PNG")
        _check_size(*size)
        rgb = decode_image(msg.data, max_side)
        if rgb is None:
            raise ValueError(f"compressed {msg.format[:40]!r} data ({len(msg.data)} bytes) does not decode")
        return rgb
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {msg.encoding[:40]!r} (supported: {', '.join(ENCODINGS)})")
    channels, dtype, conversion = ENCODINGS[msg.encoding]
    _check_size(msg.height, msg.width)
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ValueError(f"step {msg.step} is shorter than a {msg.encoding} row of {msg.width} px ({row_bytes} bytes)")
    if len(msg.data) < msg.step * msg.height:
        raise ValueError(f"data has {len(msg.data)} bytes, expected step x height = {msg.step * msg.height}")
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    pixels = rows[:, :row_bytes].view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    pixels = pixels.reshape(msg.height, msg.width, channels) if channels > 1 else pixels.reshape(msg.height, msg.width)
    if dtype.itemsize == 2:  # full 16-bit range -> 0..255, as the node does
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    rgb = shrink(pixels if conversion is None else cv2.cvtColor(np.ascontiguousarray(pixels), conversion), max_side)
    # rgb8 unshrunk is still a view of the (read-only) message buffer: hand out a frame of its own
    return rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb, order="C")


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ValueError(f"image size {width}x{height} exceeds {MAX_SIDE} px a side / {MAX_PIXELS} px")


# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4, C8 and CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RSTn: no length field


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame segment, walking the segment lengths
    (a few dozen steps: no pixel is touched); None without one. The node checks camera frames
    with it too (deltaworld_ros.image_conversion)."""
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


def compressed_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) a PNG or JPEG declares, or None for anything else."""
    head = bytes(data[:24])
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head[:3] == b"\xff\xd8\xff":
        return jpeg_size(data)  # walks segment lengths: EXIF/APP segments may put the frame header past 64 KB
    return None


# ------------------------------------------------------------------ bag files
def bag_files(path: str | Path) -> list[Path]:
    """The storage files of a bag given as a file or a rosbag2 folder, in recording order
    (split files ``name_0.mcap``, ``name_1.mcap`` ... by their number)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file()]
        if not files:
            compressed = sorted(p.name for p in path.iterdir() if p.name.endswith((".zstd", ".zst")))
            hint = f" (file-compressed {compressed[0]}: decompress it first, e.g. zstd -d)" if compressed else ""
            raise MediaError(f"{path}: a folder without .mcap files or .db3 files, not a rosbag2 recording{hint}")
        return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not path.is_file():
        raise MediaError(f"{path}: no such bag")
    return [path]


def _storage(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError as err:
        raise MediaError(f"{path}: cannot read the bag ({err})") from err
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if head.startswith(SQLITE_MAGIC):
        return "sqlite3"
    raise MediaError(f"{path}: not an MCAP file nor a sqlite3 rosbag2 file (starts {head[:8]!r})")


def image_topics(path: str | Path) -> dict[str, str]:
    """``{topic: message type}`` of the Image/CompressedImage topics of a bag (file or folder),
    read from the MCAP summary or the sqlite3 ``topics`` table (no message is read). Raises
    MediaError if the bag cannot be read."""
    out: dict[str, str] = {}
    for f in bag_files(path):
        topics = _mcap_topics(f) if _storage(f) == "mcap" else _sqlite_topics(f)
        out.update({t: ty for t, ty in topics.items() if ty in IMAGE_TYPES})
    return out


def bag_refs(path: str | Path, topics: str | list[str] | None, name: str | None = None) -> list[MediaRef]:
    """One :class:`MediaRef` per image topic of the bag at ``path`` (a file or a rosbag2 folder):
    ``topics`` None = the bag's only image topic. MediaError names the bag and lists its image
    topics when a topic is missing or ambiguous."""
    name = str(path) if name is None else name
    topics = [topics] if isinstance(topics, str) else topics
    available = image_topics(path)
    if not available:
        raise MediaError(f"{path}: a bag with no sensor_msgs/Image or CompressedImage topic")
    if topics is None:
        if len(available) > 1:
            raise MediaError(f"{path}: several image topics ({', '.join(sorted(available))}): name one or more "
                             "with data.videos.topic / --topic")
        chosen = list(available)
    else:
        missing = [t for t in topics if t not in available]
        if missing:
            raise MediaError(f"{path}: no image topic {', '.join(missing)} (image topics in this bag: "
                             f"{', '.join(sorted(available))})")
        chosen = list(topics)
    return [MediaRef(f"{name}#{t}", str(path), "bag", topic=t) for t in chosen]


def _mcap_topics(path: Path) -> dict[str, str]:
    from mcap.reader import SeekingReader

    summary, why = None, None
    try:
        with open(path, "rb") as stream:
            summary = SeekingReader(stream).get_summary()
    except Exception as err:  # noqa: BLE001 - the library raises many kinds for a damaged summary
        why = err
    if summary is not None and summary.channels:
        return {c.topic: (summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else "")
                for c in summary.channels.values() if c.message_encoding == "cdr"}
    # No summary (a recorder that was killed) or a damaged one: walk the records.
    topics: dict[str, str] = {}
    schemas: dict[int, str] = {}
    for kind, record in _walk_mcap(path, None, stop_at_first_message=False):
        if kind == "schema":
            schemas[record.id] = record.name
        elif kind == "channel" and record.message_encoding == "cdr":
            topics[record.topic] = schemas.get(record.schema_id, "")
    if not topics and why is not None:
        raise MediaError(f"{path}: unreadable MCAP ({type(why).__name__}: {why})")
    return topics


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM topics").fetchone()
        return db
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err


def _sqlite_topics(path: Path) -> dict[str, str]:
    db = _sqlite_connect(path)
    try:
        return {name: ty for name, ty, fmt in db.execute("SELECT name, type, serialization_format FROM topics")
                if fmt == "cdr"}
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def bag_messages(ref: MediaRef, *, start_s: float | None = None, stop_s: float | None = None
                 ) -> Iterator[tuple[int, str, memoryview]]:
    """``(log time ns, message type, CDR bytes)`` of ``ref.topic`` in recording order. Corrupt
    MCAP chunks (CRC mismatch, undecompressable) and unreadable sqlite3 rows are skipped and
    counted on ``ref``; a bag that cannot be opened raises MediaError. ``start_s``/``stop_s``:
    only messages logged in ``[start_s, stop_s)`` (to the nanosecond); MCAP reads only the chunks
    whose time range overlaps it, sqlite3 only its rows (``timestamp`` is indexed)."""
    start_ns = None if start_s is None else round(start_s * 1e9)
    stop_ns = None if stop_s is None else round(stop_s * 1e9)
    for f in bag_files(ref.path):
        if _storage(f) == "mcap":
            yield from _mcap_messages(f, ref, start_ns, stop_ns)
        else:
            yield from _sqlite_messages(f, ref, start_ns, stop_ns)


def _logged_in(log_time: int, start_ns: int | None, stop_ns: int | None) -> bool:
    return (start_ns is None or log_time >= start_ns) and (stop_ns is None or log_time < stop_ns)


def _mcap_summary(stream):
    from mcap.reader import SeekingReader

    try:
        return SeekingReader(stream).get_summary()
    except Exception:  # noqa: BLE001 - damaged summary: the caller reads the file from the start instead
        return None


def _topic_chunks(summary, topic: str) -> tuple[dict[int, str], list]:
    """``({channel id: type}, chunk indexes that may hold the topic, by file offset)``."""
    channels = {c.id: summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else ""
                for c in summary.channels.values() if c.topic == topic}
    chunks = [index for index in sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
              # a chunk without message indexes may hold anything
              if not index.message_index_offsets or set(index.message_index_offsets) & set(channels)]
    return channels, chunks


def _mcap_messages(path: Path, ref: MediaRef, start_ns: int | None = None,
                   stop_ns: int | None = None) -> Iterator[tuple[int, str, memoryview]]:
    from mcap.data_stream import ReadDataStream
    from mcap.records import Chunk, Message
    from mcap.stream_reader import breakup_chunk

    with open(path, "rb") as stream:
        summary = _mcap_summary(stream)
        if summary is None or not summary.chunk_indexes:
            for message in _walk_messages(path, ref):
                if _logged_in(message[0], start_ns, stop_ns):
                    yield message
            return
        channels, chunks = _topic_chunks(summary, ref.topic)
        # The summary's chunk offsets let a damaged chunk be skipped whatever its bytes say.
        for index in chunks:
            if (start_ns is not None and index.message_end_time < start_ns
                    or stop_ns is not None and index.message_start_time >= stop_ns):
                continue  # the chunk's messages all lie outside the window: never read
            try:
                stream.seek(index.chunk_start_offset + 1 + 8)
                _reads["chunks"] += 1
                _reads["chunk_bytes"] += index.chunk_length
                chunk = Chunk.read(ReadDataStream(stream))
                records = breakup_chunk(chunk, validate_crc=True)
            except Exception as err:  # noqa: BLE001 - CRC, decompression or structure: the chunk is lost
                record_skip(ref, f"a corrupt MCAP chunk at byte {index.chunk_start_offset} of {path.name} "
                                 f"({type(err).__name__}: {str(err)[:200]})")
                continue
            for record in records:
                if (isinstance(record, Message) and record.channel_id in channels
                        and _logged_in(record.log_time, start_ns, stop_ns)):
                    yield record.log_time, channels[record.channel_id], memoryview(record.data)


def bag_duration(ref: MediaRef) -> tuple[float, float] | None:
    """First and last log time (s) of ``ref.topic`` over the bag's files, from the MCAP chunk
    index or sqlite3's ``timestamp`` index (no message is read; see
    :func:`~deltaworld_core.data.media.duration_s`); None if a file has no usable MCAP summary
    or the topic has no message."""
    lo = hi = None
    for f in bag_files(ref.path):
        if _storage(f) == "mcap":
            with open(f, "rb") as stream:
                summary = _mcap_summary(stream)
            if summary is None or not summary.chunk_indexes:
                return None
            chunks = _topic_chunks(summary, ref.topic)[1]
            span = (min(c.message_start_time for c in chunks), max(c.message_end_time for c in chunks)) if chunks \
                else None
        else:
            span = _sqlite_span(f, ref)
        if span is not None:
            lo = span[0] if lo is None else min(lo, span[0])
            hi = span[1] if hi is None else max(hi, span[1])
    return None if lo is None else (lo * 1e-9, hi * 1e-9)


def _sqlite_span(path: Path, ref: MediaRef) -> tuple[int, int] | None:
    db = _sqlite_connect(path)
    try:
        row = db.execute("SELECT id FROM topics WHERE name = ?", (ref.topic,)).fetchone()
        if row is None:
            return None
        # ORDER BY ... LIMIT 1 walks the timestamp index from one end and stops at the topic's
        # first row (MIN/MAX with a WHERE on another column would scan the table).
        first, last = (db.execute(f"SELECT timestamp FROM messages WHERE topic_id = ? ORDER BY timestamp {order} "
                                  "LIMIT 1", (row[0],)).fetchone() for order in ("ASC", "DESC"))
        return None if first is None else (int(first[0]), int(last[0]))
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def _walk_mcap(path: Path, ref: MediaRef | None, stop_at_first_message: bool = False):
    """``(kind, record)`` for the schemas, channels and messages of an MCAP read from the start,
    record by record (for files without a usable summary). A corrupt chunk is skipped (counted on
    ``ref``); a record whose length runs past the end of the file ends the walk (truncated)."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Chunk, Message, Schema
    from mcap.stream_reader import breakup_chunk

    size = path.stat().st_size
    with open(path, "rb") as stream:
        if stream.read(8) != MCAP_MAGIC:
            raise MediaError(f"{path}: not an MCAP file")
        while True:
            offset = stream.tell()
            head = stream.read(9)
            if len(head) < 9:
                break
            opcode, length = head[0], int.from_bytes(head[1:], "little")
            if offset + 9 + length > size:
                if ref is not None:
                    record_skip(ref, f"the rest of {path.name}: truncated at byte {offset}")
                break
            if opcode in (0x0F, 0x02):  # data end, footer: the summary follows
                break
            body = stream.read(length)
            try:
                if opcode == 0x03:
                    yield "schema", Schema.read(ReadDataStream(io.BytesIO(body)))
                elif opcode == 0x04:
                    yield "channel", Channel.read(ReadDataStream(io.BytesIO(body)))
                elif opcode == 0x05:
                    yield "message", Message.read(ReadDataStream(io.BytesIO(body)), length)
                elif opcode == 0x06:
                    _reads["chunks"] += 1
                    _reads["chunk_bytes"] += length
                    for record in breakup_chunk(Chunk.read(ReadDataStream(io.BytesIO(body))), validate_crc=True):
                        kind = {Schema: "schema", Channel: "channel", Message: "message"}.get(type(record))
                        if kind:
                            yield kind, record
            except Exception as err:  # noqa: BLE001
                if ref is not None:
                    record_skip(ref, f"a corrupt MCAP record at byte {offset} of {path.name} "
                                     f"({type(err).__name__}: {str(err)[:200]})")


def _walk_messages(path: Path, ref: MediaRef) -> Iterator[tuple[int, str, memoryview]]:
    schemas: dict[int, str] = {}
    channels: dict[int, str] = {}
    for kind, record in _walk_mcap(path, ref):
        if kind == "schema":
            schemas[record.id] = record.name
        elif kind == "channel" and record.topic == ref.topic:
            channels[record.id] = schemas.get(record.schema_id, "")
        elif kind == "message" and record.channel_id in channels:
            yield record.log_time, channels[record.channel_id], memoryview(record.data)


def _sqlite_messages(path: Path, ref: MediaRef, start_ns: int | None = None,
                     stop_ns: int | None = None) -> Iterator[tuple[int, str, memoryview]]:
    db = _sqlite_connect(path)
    try:
        topics = db.execute("SELECT id, type FROM topics WHERE name = ?", (ref.topic,)).fetchall()
        if not topics:
            return
        (topic_id, type_name), = topics
        # rosbag2's own reader returns messages by timestamp, then insertion order.
        window = ("" if start_ns is None else " AND timestamp >= :start") + \
                 ("" if stop_ns is None else " AND timestamp < :stop")
        cursor = db.execute(f"SELECT timestamp, data FROM messages WHERE topic_id = :topic{window} "
                            "ORDER BY timestamp, id", {"topic": topic_id, "start": start_ns, "stop": stop_ns})
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.DatabaseError as err:  # a damaged page: the rest of the file is lost
                record_skip(ref, f"the rest of {path.name} (sqlite3: {err})")
                return
            if row is None:
                return
            _reads["rows"] += 1
            _reads["row_bytes"] += len(row[1])
            yield int(row[0]), type_name, memoryview(row[1])
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def bag_images(ref: MediaRef, *, start_s: float | None = None, stop_s: float | None = None
               ) -> Iterator[tuple[int, ImageMessage]]:
    """``(log time ns, decoded message)`` of ``ref`` (logged in ``[start_s, stop_s)``, as
    :func:`bag_messages`); messages that do not decode as CDR are skipped and counted."""
    for log_time, type_name, data in bag_messages(ref, start_s=start_s, stop_s=stop_s):
        try:
            yield log_time, decode_image_message(type_name, data)
        except CdrError as err:
            record_skip(ref, f"a {type_name or 'untyped'} message logged at {log_time} ns ({err})")


def bag_frames(ref: MediaRef, max_side: int | None = None, *, start_s: float | None = None,
               stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames of a bag topic with their header stamps (the log time where the header stamp
    is zero, as the node falls back to its clock for an unstamped camera). ``start_s``/``stop_s``
    select by log time, the clock the bag indexes (:func:`bag_messages`)."""
    for log_time, msg in bag_images(ref, start_s=start_s, stop_s=stop_s):
        try:
            rgb = image_to_rgb(msg, max_side)
        except ValueError as err:
            record_skip(ref, f"an image logged at {log_time} ns ({err})")
            continue
        yield rgb, (msg.stamp if msg.sec or msg.nanosec else log_time * 1e-9)


# ------------------------------------------------------------------ writing
# Message definitions as rosbag2 stores them in MCAP schemas (ros2msg, dependencies appended),
# so Foxglove, ros2 bag and rosbags can decode what we write.
_HEADER_DEFS = ("================================================================================\n"
                "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
                "================================================================================\n"
                "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n")
MSG_DEFINITIONS = {
    IMAGE_TYPE: ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\n"
                 "uint32 step\nuint8[] data\n" + _HEADER_DEFS),
    COMPRESSED_TYPE: "std_msgs/Header header\nstring format\nuint8[] data\n" + _HEADER_DEFS,
}
# rosbag2's default offered QoS for a recorded camera topic (reliable, volatile, keep last 10).
_QOS = ("- history: 1\n  depth: 10\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 0\n    nsec: 0\n"
        "  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n"
        "    nsec: 0\n  avoid_ros_namespace_conventions: false\n")


def image_message(rgb: np.ndarray, stamp: float, frame_id: str = "camera", compressed: bool = False,
                  encoding: str = "rgb8", quality: int = 90) -> ImageMessage:
    """An RGB uint8 [H, W, 3] frame as an Image (``encoding`` rgb8, bgr8 or mono8) or a JPEG
    CompressedImage, stamped ``stamp`` seconds."""
    sec = int(np.floor(stamp))
    nanosec = min(int(round((stamp - sec) * 1e9)), 999_999_999)
    if compressed:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise MediaError("JPEG encoding failed")
        return ImageMessage(sec, nanosec, frame_id, memoryview(jpeg.tobytes()), format="jpeg")
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}.get(encoding)
    if pixels is None:
        raise MediaError(f"write encoding must be rgb8, bgr8 or mono8, got {encoding!r}")
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return ImageMessage(sec, nanosec, frame_id, memoryview(pixels.tobytes()), h, w, encoding, False,
                        pixels.strides[0])


class BagWriter:
    """Writes image messages to a rosbag2 file: ``.mcap`` (rosbag2's MCAP layout, CRCs on) or
    ``.db3`` (rosbag2's sqlite3 schema). Written to a temporary name and renamed on close, so a
    failed write leaves no half bag under the final name."""

    def __init__(self, out: str | Path, chunk_size: int = 4 << 20):
        self.out = Path(out)
        if self.out.suffix not in (".mcap", ".db3"):
            raise MediaError(f"{out}: a bag file must end in .mcap or .db3")
        self.tmp = self.out.with_name(f".{self.out.name}.tmp")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.unlink(missing_ok=True)
        self._topics: dict[str, int] = {}
        self._count = 0
        if self.out.suffix == ".mcap":
            from mcap.writer import CompressionType, Writer

            self._stream = open(self.tmp, "wb")
            self._mcap = Writer(self._stream, chunk_size=chunk_size, compression=CompressionType.NONE)
            self._mcap.start(profile="ros2", library="deltaworld")
            self._schemas: dict[str, int] = {}
        else:
            self._db = sqlite3.connect(self.tmp)
            self._db.executescript(
                "CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);"
                "INSERT INTO schema VALUES (4, 'kilted');"
                "CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, "
                "metadata TEXT NOT NULL);"
                "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, "
                "serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL, "
                "type_description_hash TEXT NOT NULL);"
                "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, "
                "timestamp INTEGER NOT NULL, data BLOB NOT NULL);"
                "CREATE INDEX timestamp_idx ON messages (timestamp ASC);")

    def write(self, topic: str, msg: ImageMessage, log_time_ns: int | None = None) -> None:
        """One message on ``topic``, logged at ``log_time_ns`` (default: its header stamp)."""
        type_name = COMPRESSED_TYPE if msg.format is not None else IMAGE_TYPE
        data = encode_image_message(msg)
        log_time_ns = msg.sec * 1_000_000_000 + msg.nanosec if log_time_ns is None else int(log_time_ns)
        if self.out.suffix == ".mcap":
            if type_name not in self._schemas:
                self._schemas[type_name] = self._mcap.register_schema(type_name, "ros2msg",
                                                                      MSG_DEFINITIONS[type_name].encode())
            if topic not in self._topics:
                self._topics[topic] = self._mcap.register_channel(
                    topic, "cdr", self._schemas[type_name], {"offered_qos_profiles": _QOS})
            self._mcap.add_message(self._topics[topic], log_time_ns, data, log_time_ns, self._count)
        else:
            if topic not in self._topics:
                cursor = self._db.execute("INSERT INTO topics (name, type, serialization_format, "
                                          "offered_qos_profiles, type_description_hash) VALUES (?, ?, 'cdr', ?, '')",
                                          (topic, type_name, _QOS))
                self._topics[topic] = cursor.lastrowid
            self._db.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                             (self._topics[topic], log_time_ns, data))
        self._count += 1

    def close(self) -> None:
        if self.out.suffix == ".mcap":
            self._mcap.finish()
            self._stream.close()
        else:
            self._db.commit()
            self._db.close()
        self.tmp.replace(self.out)

    def abort(self) -> None:
        try:
            if self.out.suffix == ".mcap":
                self._stream.close()
            else:
                self._db.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close() if kind is None else self.abort()


def write_frames(out: str | Path, topic: str, frames: Iterable[tuple[np.ndarray, float]], *,
                 compressed: bool = False, encoding: str = "rgb8", frame_id: str = "camera",
                 log_times_ns: Iterable[int] | None = None) -> int:
    """Writes ``(RGB frame, stamp s)`` pairs as a bag topic; returns how many. ``log_times_ns``:
    when each was recorded (default: its stamp), e.g. to store frames whose stamps go backwards
    in the order they arrived."""
    log_times = iter(log_times_ns) if log_times_ns is not None else None
    n = 0
    with BagWriter(out) as writer:
        for rgb, stamp in frames:
            msg = image_message(rgb, stamp, frame_id, compressed, encoding)
            writer.write(topic, msg, next(log_times) if log_times is not None else None)
            n += 1
    return n


def write_bag(video: str | Path, out: str | Path, topic: str = "/camera/image_raw", *, compressed: bool = False,
              frame_id: str = "camera", start: float | None = None, max_frames: int | None = None) -> int:
    """A video (any entry :func:`expand_media` reads as one stream) as a rosbag2 bag on
    ``topic``: frame ``i`` stamped ``start + i / fps`` (``start`` None: now). Returns the frame count."""
    from itertools import islice

    from .media import expand_media, iter_frames

    refs = expand_media([video])
    if len(refs) != 1:
        raise MediaError(f"{video}: names {len(refs)} recordings; to-bag writes one")
    if max_frames is not None and max_frames < 1:
        raise MediaError(f"--max-frames must be >= 1, got {max_frames}")
    t0 = time.time() if start is None else float(start)
    frames = ((rgb, t0 + t) for rgb, t in islice(iter_frames(refs[0]), max_frames))
    n = write_frames(out, topic, frames, compressed=compressed, frame_id=frame_id)
    if n == 0:
        Path(out).unlink(missing_ok=True)
        raise MediaError(f"{video}: no frame decodes")
    return n
