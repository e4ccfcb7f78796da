"""A recording cut into runs where the forecast node restarts its context
(:func:`deltaworld_core.context_rules.context_break`): training clips never span a restart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..context_rules import context_break


def run_starts(frames: Iterable[tuple[np.ndarray, float]], max_gap_s: float
               ) -> Iterator[tuple[np.ndarray, float, str | None]]:
    """Streams ``(frame, stamp, why a new run starts here or None)``: the streaming form of
    :func:`monotonic_runs` (holds one frame's shape and stamp, nothing else). The first frame's
    reason is ``"start"``."""
    last_stamp = last_shape = None
    for rgb, stamp in frames:
        reason = "start" if last_stamp is None else context_break(last_stamp, last_shape, stamp, rgb.shape, max_gap_s)
        last_stamp, last_shape = stamp, rgb.shape
        yield rgb, stamp, reason


def monotonic_runs(frames: Iterable[tuple[np.ndarray, float]], max_gap_s: float
                   ) -> Iterator[list[tuple[np.ndarray, float]]]:
    """The stream cut into runs as the forecast node sees it: a frame whose stamp does not
    increase, that follows a gap over ``max_gap_s`` or whose size changed starts a new run (the
    node restarts its context there; the frame itself is kept as the new run's first). Each run
    is a list (it is held in memory: use :func:`run_starts` to stream)."""
    run: list[tuple[np.ndarray, float]] = []
    for rgb, stamp, reason in run_starts(frames, max_gap_s):
        if reason is not None and run:
            yield run
            run = []
        run.append((rgb, stamp))
    if run:
        yield run
