"""Stage ``tokenizer``: DeltaTok on 2-frame pairs of VFM features.

A pair is two frames of one window, ``data.pair_gap_s`` apart (1/25-1/3 s), or with probability
``data.black_pair_prob`` an all-black frame and a frame (the whole-frame token that starts every
stream). Loss: element-wise log-cosh between the reconstruction and the true features, in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import Sampler
from .config import TrainConfig


def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean element-wise log(cosh(x)), in fp32, overflow-free: |x| + softplus(-2|x|) - log 2."""
    x = (pred.float() - target.float()).abs()
    return (x + F.softplus(-2 * x) - math.log(2.0)).mean()


class TokenizerStage:
    """Draws pairs ``{"prev": [N, C], "cur": [N, C]}``; ``loss`` is log-cosh of the reconstruction."""

    name = "tokenizer"

    def __init__(self, cfg: TrainConfig, sampler: Sampler, black: torch.Tensor, grid: tuple[int, int]):
        self.data, self.sampler, self.black, self.grid = cfg.data, sampler, black.half(), grid

    def item(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        d = self.data
        _, w = self.sampler.window(g)
        n = len(w.features)
        gap = min(n - 1, max(1, round(Sampler.uniform(g, *d.pair_gap_s) * w.fps)))
        j = Sampler.integer(g, n - gap)
        black = Sampler.uniform(g) < d.black_pair_prob
        prev = self.black if black else w.features[j]
        return {"prev": prev.float(), "cur": w.features[j + gap].float()}

    def finish(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        return batch

    @staticmethod
    def freeze(net: nn.Module) -> None:
        """The linear path stays as its PCA init (resumed runs too)."""
        if getattr(net, "linear_grid", None) is not None:
            net.linear_basis.requires_grad_(False)
            net.linear_mean.requires_grad_(False)

    @torch.no_grad()
    def prepare(self, net: nn.Module, pairs: int = 4096) -> dict[str, float] | None:
        """Before step 0: a tokenizer with a linear path gets its PCA init from ``pairs`` frame
        pairs of the training data (drawn as training draws them, whole-frame pairs left out, from
        a generator of their own: the same data give the same init)."""
        if getattr(net, "linear_grid", None) is None:
            return None
        g = torch.Generator().manual_seed(0x9CA)
        d = self.data
        changes = []
        for _ in range(pairs):
            _, w = self.sampler.window(g)
            n = len(w.features)
            gap = min(n - 1, max(1, round(Sampler.uniform(g, *d.pair_gap_s) * w.fps)))
            j = Sampler.integer(g, n - gap)
            changes.append(net.linear_change(w.features[j][None].float(), w.features[j + gap][None].float(),
                                             self.grid)[0])
        info = net.init_linear_path(torch.stack(changes))
        self.freeze(net)
        # Frozen from here on: Adam's per-element steps (~lr) dwarf the PCA weights (~1e-3), so
        # the transformers learn what the linear code misses instead of unlearning it.
        return info

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        _, recon = net(batch["prev"], batch["cur"], self.grid)
        return log_cosh(recon, batch["cur"])
