"""What every part of an evaluation passes around: a :class:`Clip` (context + horizon frames'
true features, stamps and labels), the seed of its sampling, and :class:`EvaluationError`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


class EvaluationError(RuntimeError):
    """Bad input for an evaluation (missing file, no clips, mismatched shapes)."""


@dataclass
class Clip:
    """One evaluation window: T = context + horizon frames."""

    features: torch.Tensor  # [T, N, C] float32, true VFM features
    stamps: np.ndarray  # [T] float64 seconds
    semantic: list[np.ndarray | None]  # per target step: uint8 [h, w] or None
    depth: list[np.ndarray | None]  # per target step: float32 [h, w] metres or None
    source: str = ""
    # What seeds the clip's sampling noise: the stable name of the recording it comes from and its
    # index within that recording (never its position in the run: adding a video must not change
    # another video's numbers)
    stream: str = ""
    index: int = 0


def clip_seed(seed: int, stream: str, index: int) -> int:
    """The generator seed of one clip: a hash of the run's ``--seed``, the recording's stable name
    and the clip's index within it (the same on every machine and Python process)."""
    digest = hashlib.sha256(f"{seed}\0{stream}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
