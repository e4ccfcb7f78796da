"""``data.stream``, the settings of the streaming reader, and the frame strides a step range
allows at a frame rate (the clip rule the feature-cache windows and the stream share)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigError


def stride_options(fps: float, step_s: tuple[float, float]) -> list[int]:
    """Frame strides whose step at ``fps`` lies in ``step_s`` (else the one nearest its middle)."""
    lo, hi = step_s
    s = list(range(max(1, math.ceil(lo * fps - 1e-9)), math.floor(hi * fps + 1e-9) + 1))
    return s or [max(1, round((lo + hi) / 2 * fps))]


@dataclass
class StreamConfig:
    """``data.stream``: the streaming reader (used when ``data.feature_cache: false``)."""

    # steps drawn together: each read gives one clip to each (a clip costs 1/round_steps of a recording's decoding)
    round_steps: int = 8
    workers: int = 2  # DataLoader worker processes per rank (0 = read in the training process)
    prefetch: int = 2  # rounds queued per worker
    max_gap_s: float = 1.0  # a larger jump between stamps splits a recording (clips never span it)
    max_side: int | None = None  # decode-time downscale of the longer side (None = 2 x the VFM size)
    max_attempts: int = 8  # recordings a read tries before the stream fails
    pca_pairs: int = 1024  # tokenizer with a linear path: pairs (from a stream of their own) for its PCA init
    timeout_s: float = 600.0  # a worker that delivers no round for this long fails the run (never a silent hang)
    # a read of a longer recording decodes a random window this long (seconds; null = whole recordings).
    # 60 s: Kinetics-length clips (10 s) and most short videos still read whole
    window_s: float | None = 60.0

    def validate(self) -> None:
        if self.round_steps < 1 or self.workers < 0 or self.prefetch < 1 or self.max_attempts < 1:
            raise ConfigError("data.stream: round_steps >= 1, workers >= 0, prefetch >= 1, max_attempts >= 1")
        if not self.max_gap_s > 0:
            raise ConfigError(f"data.stream.max_gap_s must be > 0, got {self.max_gap_s}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"data.stream.max_side must be >= 16 or null, got {self.max_side}")
        if not self.timeout_s > 0:
            raise ConfigError(f"data.stream.timeout_s must be > 0, got {self.timeout_s}")
        if self.pca_pairs < 2:
            raise ConfigError("data.stream.pca_pairs must be >= 2")
        if self.window_s is not None and not (isinstance(self.window_s, (int, float))
                                              and not isinstance(self.window_s, bool)
                                              and math.isfinite(self.window_s) and self.window_s > 0):
            raise ConfigError(f"data.stream.window_s must be a number of seconds > 0 or null, got {self.window_s!r}")
