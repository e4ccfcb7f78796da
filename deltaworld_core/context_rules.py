"""When a stream of camera frames restarts the forecaster's context.

One rule for the live node (:class:`~deltaworld_core.forecaster.Forecaster` applies it to each
frame) and for training on recordings (the streaming loader cuts recordings where the node would
restart), so a model is trained on the runs it will see.
"""

from __future__ import annotations


def context_break(last_stamp: float | None, last_shape: tuple[int, ...] | None, stamp: float,
                  shape: tuple[int, ...], max_gap_s: float) -> str | None:
    """Why the forecast node restarts its context at this frame, or None: the image size
    changed, the stamp does not increase, or the gap exceeds ``max_gap_s``."""
    if last_stamp is None:
        return None
    if shape != last_shape:
        return f"image size changed from {tuple(last_shape[:2])} to {tuple(shape[:2])}"
    if stamp <= last_stamp:
        return f"stamp {stamp:.6f} s does not increase (last {last_stamp:.6f} s)"
    if stamp - last_stamp > max_gap_s:
        return f"gap {stamp - last_stamp:.3f} s exceeds max_gap_s {max_gap_s}"
    return None
