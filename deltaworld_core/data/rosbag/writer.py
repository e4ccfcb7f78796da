"""Camera frames written as rosbag2 recordings without ROS: ``.mcap`` (rosbag2's MCAP layout,
CRCs on, schemas that Foxglove, ``ros2 bag`` and rosbags decode) or ``.db3`` (rosbag2's sqlite3
schema)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from mcap.writer import CompressionType, Writer

from ..refs import MediaError
from .cdr import COMPRESSED_TYPE, IMAGE_TYPE, ImageMessage, encode_image_message

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


def depth_message(metres: np.ndarray, stamp: float, frame_id: str = "camera", encoding: str = "16UC1"
                  ) -> ImageMessage:
    """A depth map float [H, W] in metres (NaN or <= 0 = no measurement) as a REP 118 Image:
    ``16UC1`` millimetres (0 = invalid) or ``32FC1`` metres (NaN = invalid), stamped ``stamp`` s."""
    metres = np.asarray(metres, np.float32)
    valid = np.isfinite(metres) & (metres > 0)
    if encoding == "16UC1":
        pixels = np.where(valid, np.clip(np.round(metres * 1000.0), 1, 65535), 0).astype("<u2")
    elif encoding == "32FC1":
        pixels = np.where(valid, metres, np.nan).astype("<f4")
    else:
        raise MediaError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    sec = int(np.floor(stamp))
    nanosec = min(int(round((stamp - sec) * 1e9)), 999_999_999)
    h, w = pixels.shape
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
