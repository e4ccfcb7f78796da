"""Evaluation windows: a recording sub-sampled to one frame every ``step_s`` seconds (the frame
nearest each point of a grid, a gap starting a new grid) and cut into windows of ``context +
horizon`` consecutive sub-sampled frames."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..data.media import MediaError, iter_frames, skipped
from ..data.video import open_video
from .clips import EvaluationError


def _open_video(path: Path, fps: float | None = None):
    """A reader of a video file or a frame folder: iterating yields (rgb uint8 [H, W, 3], stamp s),
    ``len()`` is its frame count."""
    try:
        return open_video(path, fps=fps)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def subsample(frames: Iterable[tuple[np.ndarray, float]], step_s: float) -> Iterator[tuple[int, int, np.ndarray, float]]:
    """Yields (segment, frame index, rgb, stamp): for each point of a grid ``t0 + i * step_s`` the
    nearest frame, if it lies within a quarter step of it. A grid point without such a frame is a
    gap: the next frame starts a new segment (and a new grid)."""
    tol = step_s / 4
    segment, grid_t, prev, last = 0, None, None, -1  # prev = (index, rgb, stamp) just before grid_t
    for index, (rgb, stamp) in enumerate(frames):
        stamp = float(stamp)
        if grid_t is None:
            grid_t = stamp
        while stamp >= grid_t - 1e-9:  # grid_t lies in (prev stamp, stamp]
            if prev is not None and grid_t - prev[2] <= stamp - grid_t:
                pick = prev
            else:
                pick = (index, rgb, stamp)
            if abs(pick[2] - grid_t) > tol or pick[0] == last:  # nothing near this grid point
                segment += 1
                grid_t, pick = stamp, (index, rgb, stamp)
            yield segment, *pick
            last = pick[0]
            grid_t += step_s
            prev = None
        prev = (index, rgb, stamp)
    if prev is not None and prev[0] != last and abs(prev[2] - grid_t) <= tol:
        yield segment, *prev


def video_windows(path: Path, length: int, stride: int, step_s: float, fps: float | None = None,
                  segment: tuple[float, float] = (0.0, 1.0)) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """Windows of ``length`` sub-sampled frames (index, rgb, stamp), one every ``stride``, from
    the part ``segment`` (fractions of the frame count) of the video; indices stay absolute."""
    reader = _open_video(path, fps)
    lo, hi = (0, math.inf) if tuple(segment) == (0.0, 1.0) else (int(f * len(reader)) for f in segment)
    yield from stream_windows(reader, length, stride, step_s, lo, hi)


def media_windows(ref, length: int, stride: int, step_s: float, segment: tuple[float, float] = (0.0, 1.0)
                  ) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """:func:`video_windows` of a recording read by :func:`deltaworld_core.data.media.iter_frames`
    (a bag topic, a shard sample). Such a stream has no frame count up front, so ``segment`` is
    refused unless it is the whole recording."""
    if tuple(segment) != (0.0, 1.0):
        raise EvaluationError(f"{ref.name}: --segment needs a frame count, which a {ref.kind} stream does not "
                              "declare; give video files or frame folders, or leave --segment out")

    def frames():
        count = 0
        try:
            for frame in iter_frames(ref):
                count += 1
                yield frame
        except MediaError as err:
            raise EvaluationError(str(err)) from err
        if count == 0:  # a recording without one valid frame is refused, not silently empty
            raise EvaluationError(f"{ref.name}: no valid frame ({skipped(ref)} skipped)")

    yield from stream_windows(frames(), length, stride, step_s, 0, math.inf)


def stream_windows(frames: Iterable[tuple[np.ndarray, float]], length: int, stride: int, step_s: float,
                   lo: float = 0, hi: float = math.inf) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """The windows of :func:`video_windows` from any ``(rgb, stamp)`` stream, keeping frames whose
    index lies in ``[lo, hi)``."""
    buf: list[tuple[int, np.ndarray, float]] = []
    seg_now, skip = None, 0
    for seg, index, rgb, stamp in subsample(frames, step_s):
        if not lo <= index < hi:
            continue
        if seg != seg_now:
            buf, seg_now, skip = [], seg, 0
        if skip:
            skip -= 1
            continue
        buf.append((index, rgb, stamp))
        if len(buf) == length:
            yield list(buf)
            if stride >= length:
                buf, skip = [], stride - length
            else:
                buf = buf[stride:]
