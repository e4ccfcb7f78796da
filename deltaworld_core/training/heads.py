"""Stage ``heads``: segmentation and depth heads on present-frame features of the synthetic world.

Loss: cross-entropy (label 255 ignored) plus ``loss.depth_weight`` x L1 in metres on the expected
depth, computed by :class:`~deltaworld_core.heads.DepthHead` itself, i.e. exactly what inference
outputs; logits and depth are upsampled bilinearly to ``data.label_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.sampling import Sampler
from ..heads import TaskHeads
from .config import TrainConfig


class HeadsStage:
    """Draws labelled frames ``{"features": [N, C], "semantic": [h, w], "depth": [h, w]}``."""

    name = "heads"

    def __init__(self, cfg: TrainConfig, sampler: Sampler, grid: tuple[int, int]):
        self.sampler, self.grid, self.depth_weight = sampler, grid, cfg.loss.depth_weight

    def item(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        pool = self.sampler.synthetic
        w = pool[Sampler.integer(g, len(pool))]
        j = Sampler.integer(g, len(w.features))
        return {"features": w.features[j].float(), "semantic": w.semantic[j], "depth": w.depth[j].float()}

    def finish(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        return batch

    def loss(self, heads: TaskHeads, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        size = batch["semantic"].shape[-2:]
        logits = F.interpolate(heads.segmentation(batch["features"], self.grid).float(), size=size, mode="bilinear",
                               align_corners=False)
        seg = F.cross_entropy(logits, batch["semantic"].long(), ignore_index=255)
        depth = heads.depth(batch["features"], self.grid)  # metres exactly as inference reduces the bins
        depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return seg + self.depth_weight * F.l1_loss(depth, batch["depth"].float())
