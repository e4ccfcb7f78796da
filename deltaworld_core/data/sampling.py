"""Seeded sampling of training windows: the global batch of step ``s`` is drawn from a generator
seeded by ``(seed, s)``, so restarts and the number of ranks never change what a step sees."""

from __future__ import annotations

import torch

from ..config import ConfigError
from .windows import Window, strides


class Sampler:
    """Chooses windows: synthetic with probability ``p_synthetic``, else a real one drawn in
    proportion to its weight (:func:`~deltaworld_core.data.windows.weigh_by_motion`).

    Args:
        seed: the run's seed.
        videos / synthetic: the two pools of :class:`Window`.
        synthetic_fraction: share of synthetic draws; None = by window count.
        step_s: (low, high) seconds between clip frames, for :meth:`strides`.
    """

    def __init__(self, seed: int, videos: list[Window], synthetic: list[Window],
                 synthetic_fraction: float | None, step_s: tuple[float, float]):
        self.seed, self.videos, self.synthetic, self.step_s = seed, videos, synthetic, tuple(step_s)
        n_v, n_s = len(videos), len(synthetic)
        if n_v + n_s == 0:
            raise ConfigError("no training data: set data.videos (paths/sources), data.motion and/or data.synthetic.seeds")
        frac = synthetic_fraction
        self.p_synthetic = (n_s / (n_v + n_s)) if frac is None else (frac if n_v and n_s else float(n_s > 0))
        weights = torch.tensor([w.weight for w in videos], dtype=torch.float64)
        self._video_weights = None if not n_v or bool((weights == weights[0]).all()) else weights

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    @staticmethod
    def uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    @staticmethod
    def integer(g: torch.Generator, n: int) -> int:
        return int(torch.randint(n, (), generator=g))

    def window(self, g: torch.Generator) -> tuple[tuple[str, int], Window]:
        """((pool, index), window)."""
        if self.uniform(g) < self.p_synthetic:
            i = self.integer(g, len(self.synthetic))
            return ("s", i), self.synthetic[i]
        if self._video_weights is None:
            i = self.integer(g, len(self.videos))
        else:
            i = int(torch.multinomial(self._video_weights, 1, generator=g))
        return ("v", i), self.videos[i]

    def strides(self, w: Window, frames_needed: int) -> list[int]:
        """Frame strides whose step lies in ``step_s`` and whose clip fits in the window."""
        return strides(w, frames_needed, self.step_s)

    def clip(self, g: torch.Generator, w: Window, frames: int, need_prev: bool) -> tuple[int, int]:
        """(first frame j0, stride s) of a ``frames``-long clip in ``w``; ``need_prev`` keeps one
        more frame before j0 (for the delta token of the first frame)."""
        options = self.strides(w, frames + int(need_prev))
        s = options[self.integer(g, len(options))]
        first = s if need_prev else 0
        j0 = first + self.integer(g, len(w.features) - (frames - 1) * s - first)
        return j0, s
