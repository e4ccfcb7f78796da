"""Stage ``dense``: the deterministic dense baseline (:mod:`deltaworld_core.dense`) on
``dense.context + 1``-frame clips; Smooth-L1 (``loss.dense_beta``) or MSE on the next features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import Sampler
from .config import TrainConfig


class DenseStage:
    """Draws ``{"context": [c, N, C], "times": [c], "target_times": [], "target": [N, C]}``."""

    name = "dense"

    def __init__(self, cfg: TrainConfig, sampler: Sampler, grid: tuple[int, int]):
        self.cfg, self.sampler, self.grid = cfg, sampler, grid

    def item(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.dense.context
        _, w = self.sampler.window(g)
        j0, s = self.sampler.clip(g, w, c + 1, False)
        frames = w.features[j0 + s * torch.arange(c + 1)].float()
        times = s * torch.arange(c + 1, dtype=torch.float64) / w.fps
        return {"context": frames[:-1], "times": times[:-1], "target_times": times[-1], "target": frames[-1]}

    def finish(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        return batch

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = net(batch["context"], batch["times"], batch["target_times"], self.grid)
        if self.cfg.loss.dense == "mse":
            return F.mse_loss(pred.float(), batch["target"].float())
        return F.smooth_l1_loss(pred.float(), batch["target"].float(), beta=self.cfg.loss.dense_beta)
