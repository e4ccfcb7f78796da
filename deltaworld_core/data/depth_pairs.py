"""Registered depth beside colour from a rosbag2 recording (MCAP or sqlite3): each colour frame
paired with the depth image nearest in stamp, in metres.

A depth topic follows REP 118: ``16UC1`` millimetres or ``32FC1`` metres, with 0 (16UC1) or
NaN/0/inf (32FC1) marking pixels without a measurement; they come out as NaN. The depth image must
be *registered* to the colour camera (same optical centre and pixel grid, as ``*/aligned_depth_to_color``
or ``depth_registered`` topics are), so it has the colour frame's aspect ratio; it is resized to
the colour frame's size with :func:`pool_depth` (invalid pixels never averaged in).

Pairing reads the two topics' stamps first (headers only, no pixel is converted), matches every
colour frame to the nearest depth stamp within ``tolerance_s`` (unmatched colour frames are
counted in :class:`PairStats`, not yielded), then streams both topics once, holding only the depth
images still waiting for their colour frame.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..imaging import UNSUPPORTED_ENCODING, ImageError, raw_pixels
from .refs import MediaError, MediaRef, record_skip
from .rosbag import bag_images, bag_refs, frame_stamp, image_to_rgb
from .rosbag.cdr import ImageMessage

DEPTH_ENCODINGS = {"16UC1": 1e-3, "32FC1": 1.0}  # metres per stored unit
NOT_DEPTH = "is not depth (16UC1 millimetres or 32FC1 metres, REP 118)"
# Depth images held while their colour frame has not come yet. Each topic is read in its own
# recording order; with stamps that grow in both, at most a few wait. More means stamps far out
# of order, and holding them all could hold the whole recording.
MAX_WAITING_DEPTH = 64


@dataclass
class PairStats:
    """What one pass over a bag paired: colour and depth messages seen, pairs yielded, colour
    frames with no depth within the tolerance, and messages skipped as undecodable."""

    colour: int = 0
    depth: int = 0
    paired: int = 0
    unmatched: int = 0
    skipped: int = 0


def depth_to_metres(msg: ImageMessage) -> np.ndarray:
    """A REP 118 depth Image -> float32 [H, W] metres, NaN where invalid. The declared size and the
    data length are checked before anything is allocated (:func:`~deltaworld_core.imaging.raw_pixels`,
    the node's conversion); raises ImageError (a ValueError) naming what is wrong: a non-depth
    encoding, a compressed message, a short buffer or a bad ``step``."""
    if msg.format is not None:
        raise ImageError(f"a CompressedImage ({msg.format!r}); depth must be a raw Image (16UC1 or 32FC1)",
                         UNSUPPORTED_ENCODING)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageError(f"encoding {msg.encoding!r} {NOT_DEPTH}", UNSUPPORTED_ENCODING)
    values = raw_pixels(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
    metres = values.astype(np.float32, copy=False)  # raw_pixels' array is fresh: scaled in place
    metres *= np.float32(DEPTH_ENCODINGS[msg.encoding])
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def pool_depth(depth: np.ndarray, size: tuple[int, int], min_valid: float = 0.5) -> np.ndarray:
    """float32 [H, W] metres (NaN invalid) -> [h, w] (``size``) by area averaging of the valid
    pixels only; a cell whose area is less than ``min_valid`` valid is NaN. Invalid pixels are
    never mixed into a value (a hole's 0 would pull an edge towards the camera)."""
    h, w = size
    valid = np.isfinite(depth)
    if depth.shape == (h, w):
        return depth.astype(np.float32, copy=True)
    interp = cv2.INTER_AREA if h <= depth.shape[0] and w <= depth.shape[1] else cv2.INTER_LINEAR
    total = cv2.resize(np.where(valid, depth, 0).astype(np.float32), (w, h), interpolation=interp)
    share = cv2.resize(valid.astype(np.float32), (w, h), interpolation=interp)
    out = np.full((h, w), np.nan, np.float32)
    ok = share >= max(min_valid, 1e-6)
    out[ok] = total[ok] / share[ok]
    return out


def _stamps(ref: MediaRef) -> np.ndarray:
    return np.array([frame_stamp(t, m) for t, m in bag_images(ref)], np.float64)


def match_stamps(colour: np.ndarray, depth: np.ndarray, tolerance_s: float) -> np.ndarray:
    """For each colour stamp the index of the nearest depth stamp, -1 where none lies within
    ``tolerance_s``. [Nc] float, [Nd] float -> [Nc] int64."""
    out = np.full(len(colour), -1, np.int64)
    if len(depth) == 0 or len(colour) == 0:
        return out
    order = np.argsort(depth, kind="stable")
    ordered = depth[order]
    right = np.clip(np.searchsorted(ordered, colour), 0, len(ordered) - 1)
    left = np.clip(right - 1, 0, len(ordered) - 1)
    pick = np.where(np.abs(ordered[left] - colour) <= np.abs(ordered[right] - colour), left, right)
    close = np.abs(ordered[pick] - colour) <= tolerance_s
    out[close] = order[pick[close]]
    return out


def rgbd_refs(path: str | Path, colour_topic: str, depth_topic: str) -> tuple[MediaRef, MediaRef]:
    """The colour and depth topics of a bag as refs; MediaError (one line naming the bag and its
    image topics) when either is missing or empty, or both name one topic."""
    if colour_topic == depth_topic:
        raise MediaError(f"{path}: the colour and the depth topic are both {colour_topic}")
    colour, depth = bag_refs(path, [colour_topic, depth_topic])
    return colour, depth


def rgbd_pairs(path: str | Path, colour_topic: str, depth_topic: str, *, tolerance_s: float = 0.02,
               max_side: int | None = None, stats: PairStats | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """``(RGB uint8 [H, W, 3], depth float32 [H, W] metres with NaN invalid, colour stamp s)`` for
    every colour frame of ``colour_topic`` with a depth image of ``depth_topic`` within
    ``tolerance_s``, in recording order. ``max_side`` shrinks the colour frame (and so the depth).
    Undecodable messages are skipped and counted (on the bag's refs and in ``stats``); a depth
    topic whose images are not depth (another encoding) or not registered to the colour frame (a
    different aspect ratio) raises MediaError naming the bag and topic."""
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
    stats = PairStats() if stats is None else stats
    colour_ref, depth_ref = rgbd_refs(path, colour_topic, depth_topic)
    depth_stamps = _stamps(depth_ref)
    stats.depth += len(depth_stamps)
    matches = match_stamps(_stamps(colour_ref), depth_stamps, tolerance_s)
    waiting = Counter(int(j) for j in matches if j >= 0)  # depth index -> colour frames still to come
    held: dict[int, np.ndarray | None] = {}
    depth_stream = enumerate(bag_images(depth_ref))
    for i, (log_time, msg) in enumerate(bag_images(colour_ref)):
        stats.colour += 1
        j = int(matches[i]) if i < len(matches) else -1
        if j < 0:
            stats.unmatched += 1
            continue
        while j not in held:
            k, (depth_time, depth_msg) = next(depth_stream, (None, (0, None)))
            if k is None:
                raise MediaError(f"{path}: {depth_topic} ended before its image {j} (the bag changed while read)")
            if waiting[k]:
                held[k] = _decode_depth(depth_ref, depth_time, depth_msg, stats)
            if len(held) > MAX_WAITING_DEPTH:
                raise MediaError(f"{path}: topic {depth_topic}: more than {MAX_WAITING_DEPTH} depth images wait "
                                 f"for their {colour_topic} frame (the two topics' stamps are far out of order)")
        depth = held[j]
        waiting[j] -= 1
        if not waiting[j]:
            del held[j]
        try:
            rgb = image_to_rgb(msg, max_side)  # checks the declared size and data length before decoding
        except ValueError as err:
            record_skip(colour_ref, f"an image logged at {log_time} ns ({err})")
            stats.skipped += 1
            continue
        if depth is None:
            stats.unmatched += 1
            continue
        yield rgb, _registered(depth, rgb.shape[:2], path, depth_topic), frame_stamp(log_time, msg)
        stats.paired += 1


def _decode_depth(ref: MediaRef, log_time: int, msg: ImageMessage, stats: PairStats) -> np.ndarray | None:
    if msg.format is None and msg.encoding not in DEPTH_ENCODINGS:
        raise MediaError(f"{ref.path}: topic {ref.topic}: encoding {msg.encoding!r} {NOT_DEPTH}")
    try:
        return depth_to_metres(msg)
    except ValueError as err:
        record_skip(ref, f"a depth image logged at {log_time} ns ({err})")
        stats.skipped += 1
        return None


def _registered(depth: np.ndarray, size: tuple[int, int], path, topic: str) -> np.ndarray:
    """Depth resized to the colour frame's ``size``; MediaError when the aspect ratios differ
    (an unregistered depth image: its pixels do not look where the colour pixels look)."""
    (dh, dw), (h, w) = depth.shape, size
    if abs(dh * w - dw * h) > 0.01 * dh * w:
        raise MediaError(f"{path}: topic {topic}: depth {dw}x{dh} is not registered to the {w}x{h} colour frames "
                         "(record the depth registered to the colour camera, e.g. aligned_depth_to_color)")
    return pool_depth(depth, size)
