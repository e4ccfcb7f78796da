"""Video files decoded with OpenCV, streamed frame by frame (``index / fps`` stamps), seeking to
a time window where the container allows it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..imaging import shrink_to_side
from .refs import MediaError, MediaRef, in_window, record_skip


def open_capture(path: str, name: str) -> cv2.VideoCapture:
    """An opened capture of the video file at ``path`` (MediaError naming ``name`` if it cannot be)."""
    if not Path(path).is_file():
        raise MediaError(f"{name}: no such video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise MediaError(f"{name}: cannot open the video (corrupt or unsupported container)")
    return cap


def decodes_a_frame(path: str | Path) -> bool:
    """Whether OpenCV opens ``path`` as a video and decodes its first frame (any container and
    codec its FFmpeg knows: an MPEG transport stream ``.ts``, ...)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def video_fps(path: str | Path) -> float:
    """The frame rate a video container declares (MediaError if none)."""
    cap = open_capture(str(path), str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"{path}: the video has no valid frame rate ({fps})")
    return fps


def video_span(ref: MediaRef) -> tuple[float, float] | None:
    """``0`` and ``(frame count - 1) / fps`` from the container (None if it declares no count)."""
    cap = open_capture(ref.path, ref.name)
    try:
        fps, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0) or count < 1:
        return None
    return 0.0, (count - 1) / fps


def video_frames(ref: MediaRef, max_side: int | None, start_s: float | None = None,
                 stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames of a video file stamped ``index / fps``, those in ``[start_s, stop_s)`` only.
    Frames that fail to decode mid-stream are skipped and counted on ``ref``."""
    cap = open_capture(ref.path, ref.name)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not (math.isfinite(fps) and fps > 0):
            raise MediaError(f"{ref.name}: the video has no valid frame rate ({fps})")
        position = first = 0  # the frame the decoder is at / the first frame of the window
        if start_s is not None and start_s > 0:
            first = max(0, math.floor(start_s * fps))  # at or before the window (the stamp check decides)
        if first and first >= claimed >= 1:
            return  # the window starts after the declared end
        if first:
            # OpenCV's FFmpeg seek goes to the keyframe before and decodes forward to the exact
            # frame; one that cannot seek (or lands elsewhere) is reopened and walked with grab():
            # no colour conversion, but every frame is still decoded.
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) == first:
                position = first
            else:
                cap.release()
                cap = open_capture(ref.path, ref.name)
                while position < first and cap.grab():
                    position += 1
        start_position, decoded = position, 0  # frames the decoder went past from here / that decoded
        # A frame that fails to decode mid-stream makes read() fail once, after which decoding
        # goes on; at the end every read fails. So failures are retried up to the frame count the
        # container declares (none declared: the first failure ends the stream).
        while stop_s is None or position / fps < stop_s:
            ok, bgr = cap.read()
            if ok:
                if in_window(position / fps, start_s, stop_s):
                    yield shrink_to_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side), position / fps
                decoded += 1
            elif position >= claimed:
                break
            position += 1
        tried = position - start_position
        if decoded == 0 and start_position == 0:  # (a window that starts later may lie past the end)
            raise MediaError(f"{ref.name}: no frame decodes (corrupt or unsupported video)")
        if decoded < tried:
            record_skip(ref, f"{tried - decoded} of the {tried} frames the container declares (they do "
                             "not decode: a corrupt or truncated video)", tried - decoded)
    finally:
        cap.release()
