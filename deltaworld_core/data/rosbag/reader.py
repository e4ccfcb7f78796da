"""Camera topics of rosbag2 recordings (MCAP or sqlite3, a file or a rosbag2 folder of split
files) as :class:`~deltaworld_core.data.refs.MediaRef` s and streams of RGB frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...imaging import (TRUNCATED_DATA, ImageError, check_size, compressed_header, decode_to_side, raw_to_rgb,
                        shrink_to_side)
from ..refs import MediaError, MediaRef, record_skip
from .cdr import IMAGE_TYPES, CdrError, ImageMessage, decode_image_message
from .mcap_reader import mcap_has_messages, mcap_messages, mcap_span, mcap_topics
from .sqlite_reader import sqlite_has_messages, sqlite_messages, sqlite_span, sqlite_topics
from .storage import bag_files, storage


def image_topics(path: str | Path) -> dict[str, str]:
    """``{topic: message type}`` of the Image/CompressedImage topics of a bag (file or folder),
    read from the MCAP summary or the sqlite3 ``topics`` table (no message is read). Raises
    MediaError if the bag cannot be read."""
    out: dict[str, str] = {}
    for f in bag_files(path):
        topics = mcap_topics(f) if storage(f) == "mcap" else sqlite_topics(f)
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
    for topic in chosen:
        found = [mcap_has_messages(f, topic) if storage(f) == "mcap" else sqlite_has_messages(f, topic)
                 for f in bag_files(path)]
        if not any(f is None or f for f in found):
            raise MediaError(f"{path}: topic {topic} has no messages (an empty recording)")
    return [MediaRef(f"{name}#{t}", str(path), "bag", topic=t) for t in chosen]


def bag_messages(ref: MediaRef, *, start_s: float | None = None, stop_s: float | None = None
                 ) -> Iterator[tuple[int, str, memoryview]]:
    """``(log time ns, message type, CDR bytes)`` of ``ref.topic`` in recording order. Corrupt
    MCAP chunks (CRC mismatch, undecompressable) and unreadable sqlite3 rows are skipped and
    counted on ``ref``; a bag that cannot be opened raises MediaError. ``start_s``/``stop_s``:
    only messages logged in ``[start_s, stop_s)`` (to the nanosecond); MCAP reads only the chunks
    whose time range overlaps it, sqlite3 only its rows (``timestamp`` is indexed)."""
    start_ns = None if start_s is None else _ns(start_s)
    stop_ns = None if stop_s is None else _ns(stop_s)
    for f in bag_files(ref.path):
        if storage(f) == "mcap":
            yield from mcap_messages(f, ref, start_ns, stop_ns)
        else:
            yield from sqlite_messages(f, ref, start_ns, stop_ns)


def _ns(seconds: float) -> int:
    """Seconds -> integer ns, clamped to the int64 that both storages hold."""
    return max(-(1 << 63), min((1 << 63) - 1, round(seconds * 1e9)))


def bag_duration(ref: MediaRef) -> tuple[float, float] | None:
    """First and last log time (s) of ``ref.topic`` over the bag's files, from the MCAP chunk
    index or sqlite3's ``timestamp`` index (no message is read; see
    :func:`~deltaworld_core.data.recordings.duration_s`); None if a file has no usable MCAP
    summary or the topic has no message."""
    lo = hi = None
    for f in bag_files(ref.path):
        if storage(f) == "mcap":
            indexed, span = mcap_span(f, ref.topic)
            if not indexed:
                return None
        else:
            span = sqlite_span(f, ref)
        if span is not None:
            lo = span[0] if lo is None else min(lo, span[0])
            hi = span[1] if hi is None else max(hi, span[1])
    return None if lo is None else (lo * 1e-9, hi * 1e-9)


def bag_images(ref: MediaRef, *, start_s: float | None = None, stop_s: float | None = None
               ) -> Iterator[tuple[int, ImageMessage]]:
    """``(log time ns, decoded message)`` of ``ref`` (logged in ``[start_s, stop_s)``, as
    :func:`bag_messages`); messages that do not decode as CDR are skipped and counted."""
    for log_time, type_name, data in bag_messages(ref, start_s=start_s, stop_s=stop_s):
        try:
            yield log_time, decode_image_message(type_name, data)
        except CdrError as err:
            record_skip(ref, f"a {type_name or 'untyped'} message logged at {log_time} ns ({err})")


def check_image(msg: ImageMessage) -> None:
    """Raises an ImageError unless the message's declared size is a usable camera frame
    (:func:`~deltaworld_core.imaging.check_size`: no zero side, no absurd size) and a raw
    Image's data hold ``step x height`` bytes; nothing is decoded."""
    if msg.format is not None:
        kind, height, width = compressed_header(msg.data)
        check_size(height, width)
        return
    check_size(msg.height, msg.width)
    if len(msg.data) < msg.step * msg.height:
        raise ImageError(f"data has {len(msg.data)} bytes, step x height = {msg.step * msg.height}", TRUNCATED_DATA)


def image_to_rgb(msg: ImageMessage, max_side: int | None = None) -> np.ndarray:
    """A decoded Image or CompressedImage -> RGB uint8 [H, W, 3] (at most ``max_side`` a side),
    converted as the forecast node converts camera frames (:mod:`deltaworld_core.imaging`).
    Raises an ImageError (a ValueError) naming what is wrong."""
    if msg.format is not None:
        return decode_to_side(msg.data, compressed_header(msg.data), max_side)
    rgb = raw_to_rgb(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
    return shrink_to_side(rgb, max_side)


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
        yield rgb, frame_stamp(log_time, msg)


def frame_stamp(log_time: int, msg: ImageMessage) -> float:
    """The header stamp (s), or the log time for an unstamped message (as the node falls back to
    its clock for an unstamped camera)."""
    return msg.stamp if msg.sec or msg.nanosec else log_time * 1e-9
