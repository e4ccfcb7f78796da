"""Each frame's VFM features computed once per recording: windows that overlap (``--stride``
below ``context + horizon``) share their frames' features instead of recomputing them, and a
window whose frames differ in size (a camera that changed resolution) is encoded size by size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


class FrameFeatures:
    """Features of one recording's frames by frame index, kept while a later window may use
    them (windows go forward, so frames before the current window's first are dropped).

    ``encode``: uint8 ``[B, H, W, 3]`` -> ``[B, N, C]`` float32 (one VFM forward), called with at
    most ``batch`` frames of one size.
    """

    def __init__(self, encode: Callable[[np.ndarray], torch.Tensor], batch: int = 16):
        self.encode, self.batch = encode, batch
        self.kept: dict[int, torch.Tensor] = {}
        self.encoded = 0  # frames that went through ``encode`` (tests and logs count the work)

    def window(self, frames: Sequence[tuple[int, np.ndarray, float]]) -> torch.Tensor:
        """``[T, N, C]`` features of a window of ``(index, rgb uint8 [H, W, 3], stamp)`` frames."""
        first = frames[0][0]
        self.kept = {i: f for i, f in self.kept.items() if i >= first}
        by_size: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for index, rgb, _ in frames:
            if index not in self.kept:
                by_size.setdefault(rgb.shape, []).append((index, rgb))
        for group in by_size.values():
            for lo in range(0, len(group), self.batch):
                part = group[lo:lo + self.batch]
                feats = self.encode(np.stack([rgb for _, rgb in part]))
                self.encoded += len(part)
                self.kept.update((index, f) for (index, _), f in zip(part, feats))
        return torch.stack([self.kept[index] for index, _, _ in frames])
