"""Linear task heads read off one frame's VFM features: semantics and metric depth.

Segmentation: BatchNorm + 1x1 conv to class logits. Depth: BatchNorm + 1x1 conv to bins whose
centres (linear from ``min_depth`` to ``max_depth``) are averaged with weights relu(logit) + 0.1,
normalised (the released heads' rule, so they load and behave as published). Both are
upsampled bilinearly to the output size; depth is reduced to metres at patch resolution first, so
upsampling never touches the 256 bin logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import HeadsConfig


def features_to_maps(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, N, C] -> [B, C, gh, gw]."""
    return features.transpose(1, 2).unflatten(2, grid)


class SegmentationHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(feature_dim)
        self.conv = nn.Conv2d(feature_dim, num_classes, 1)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """features [B, N, C] -> logits [B, classes, gh, gw]."""
        return self.conv(self.bn(features_to_maps(features, grid)))


def expected_depth(logits: torch.Tensor, bin_centres: torch.Tensor) -> torch.Tensor:
    """Bin logits ``[..., bins]`` -> metres ``[...]``: centres averaged with weights
    relu(logit) + 0.1, normalised (the released heads' rule)."""
    weights = logits.float().relu() + 0.1
    return (weights @ bin_centres.float()) / weights.sum(dim=-1)


class DepthHead(nn.Module):
    def __init__(self, feature_dim: int, num_bins: int = 256, min_depth: float = 1e-3, max_depth: float = 80.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(feature_dim)
        self.conv = nn.Conv2d(feature_dim, num_bins, 1)
        self.register_buffer("bin_centres", torch.linspace(min_depth, max_depth, num_bins), persistent=False)

    def logits(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """features [B, N, C] -> bin logits [B, bins, gh, gw]."""
        return self.conv(self.bn(features_to_maps(features, grid)))

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """features [B, N, C] -> depth [B, gh, gw] metres."""
        return expected_depth(self.logits(features, grid).permute(0, 2, 3, 1), self.bin_centres)


class TaskHeads(nn.Module):
    """Both heads plus the class names their ids refer to."""

    def __init__(self, feature_dim: int, class_names: list[str], depth_bins: int = 256,
                 min_depth: float = 1e-3, max_depth: float = 80.0):
        super().__init__()
        self.class_names = list(class_names)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.segmentation = SegmentationHead(feature_dim, len(class_names))
        self.depth = DepthHead(feature_dim, depth_bins, min_depth, max_depth)

    @classmethod
    def from_config(cls, cfg: HeadsConfig, feature_dim: int) -> "TaskHeads":
        return cls(feature_dim, cfg.class_names, cfg.depth_bins, cfg.min_depth, cfg.max_depth)

    def forward(self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]):
        """features [B, N, C] -> (class ids [B, h, w] uint8, depth [B, h, w] float32 metres)."""
        if self.training:  # BatchNorm must see the batch
            seg_logits = self.segmentation(features, grid)
            depth = self.depth(features, grid)
        else:
            seg_logits, depth = self._fused(features, grid)
        # Channels-last makes both the upsampling and the per-pixel argmax over classes run along
        # contiguous memory: ~3x and ~1.7x faster on CPU than the NCHW layout (timed in isolation).
        logits = F.interpolate(seg_logits.float().contiguous(memory_format=torch.channels_last), size=size,
                               mode="bilinear", align_corners=False)
        depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return logits.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.uint8), depth  # classes innermost

    def _fused(self, features: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: both BatchNorms folded into one linear map from features to [classes | bins]
        logits, so the K x H feature maps are read once. Same numbers as the two heads in eval mode.
        features [B, N, C] -> (class logits [B, classes, gh, gw], depth [B, gh, gw])."""
        weights, biases = [], []
        for head in (self.segmentation, self.depth):
            bn, conv = head.bn, head.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C]
            w = conv.weight.flatten(1)  # [out, C]
            weights.append(w * scale)
            biases.append(conv.bias + w @ (bn.bias - bn.running_mean * scale))
        b, n = features.shape[:2]
        logits = torch.addmm(torch.cat(biases), features.reshape(b * n, -1).to(weights[0].dtype),
                             torch.cat(weights).t()).float()  # [B*N, classes + bins]
        classes = len(self.class_names)
        depth = expected_depth(logits[:, classes:], self.depth.bin_centres)  # [B*N]
        # [B*N, classes] is already a channels-last class map: a view, no copy.
        seg = logits[:, :classes].reshape(b, *grid, classes).permute(0, 3, 1, 2)
        return seg, depth.reshape(b, *grid)
