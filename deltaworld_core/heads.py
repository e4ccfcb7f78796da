"""Linear task heads read off one frame's VFM features: semantics and metric depth.

Segmentation: BatchNorm + 1x1 conv to class logits. Depth: BatchNorm + 1x1 conv to bins whose
centres (linear from ``min_depth`` to ``max_depth``) are averaged with weights relu(logit) + 0.1,
normalised (the released heads' rule, so they load and behave as published). Both are
upsampled bilinearly to the output size; depth is reduced to metres at patch resolution first, so
upsampling never touches the 256 bin logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .checkpoint import CheckpointError
from .config import HeadsConfig

MAX_CLASSES = 255  # class ids are uint8 and 255 means "ignore"


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

    @property
    def num_outputs(self) -> int:
        """Width of :meth:`logits`: class logits, then depth-bin logits."""
        return len(self.class_names) + self.depth.conv.out_channels

    def forward(self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]):
        """features [B, N, C] -> (class ids [B, h, w] uint8, depth [B, h, w] float32 metres)."""
        if not self.training:
            return self.maps(self.logits(features), grid, size)
        seg_logits = self.segmentation(features, grid)  # BatchNorm must see the batch
        return _upsample(seg_logits, self.depth(features, grid), size)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads at inference as one linear map, BatchNorms folded in (running statistics):
        weight [classes + bins, C], bias [classes + bins]."""
        weights, biases = [], []
        for head in (self.segmentation, self.depth):
            bn, conv = head.bn, head.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C]
            w = conv.weight.flatten(1)  # [out, C]
            weights.append(w * scale)
            biases.append(conv.bias + w @ (bn.bias - bn.running_mean * scale))
        return torch.cat(weights), torch.cat(biases)

    def logits(self, features: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Inference: features [B, N, C] -> [B, N, classes + bins] logits, the K x H feature maps
        read once. Same numbers as the two heads in eval mode. ``affine``: :meth:`affine`, when the
        caller already folded it."""
        weight, bias = affine or self.affine()
        return torch.addmm(bias, features.flatten(0, 1).to(weight.dtype), weight.t()).unflatten(0, features.shape[:2])

    def logits_change(self, residual: torch.Tensor,
                      affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The linear part of :meth:`logits` alone: residual [..., C] -> [..., classes + bins], so
        ``logits(f + r) == logits(f) + logits_change(r)``; it also commutes with any linear
        resampling of positions (a decoder residual can go through the heads before upsampling)."""
        weight, _ = affine or self.affine()
        return torch.matmul(residual.to(weight.dtype), weight.t())

    def maps(self, logits: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]):
        """[B, N, classes + bins] logits -> (class ids [B, h, w] uint8, depth [B, h, w] float32)."""
        return _upsample(*self.grid_maps(logits, grid), size)

    def grid_maps(self, logits: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, classes + bins] logits -> (class logits [B, classes, gh, gw], a channels-last
        view, and depth [B, gh, gw] float32 metres) at the feature grid: what :meth:`maps`
        upsamples, for callers that place several views' maps into one before upsampling."""
        b, n = logits.shape[:2]
        if n != grid[0] * grid[1] or logits.shape[2] != self.num_outputs:
            raise ValueError(f"logits {tuple(logits.shape)} do not match grid {grid} and "
                             f"{self.num_outputs} head outputs")
        logits = logits.float()
        classes = len(self.class_names)
        depth = expected_depth(logits[..., classes:], self.depth.bin_centres)  # [B, N]
        # [B, N, classes] is already a channels-last class map: a view, no copy.
        seg = logits[..., :classes].reshape(b, *grid, classes).permute(0, 3, 1, 2)
        return seg, depth.reshape(b, *grid)


def recorded_class_names(heads_file: str | Path) -> list[str] | None:
    """The class names a heads file records (safetensors metadata ``class_names``: a JSON list of
    distinct non-empty strings, one per output of ``segmentation.conv``), or None if it records
    none. Raises :class:`~deltaworld_core.checkpoint.CheckpointError` naming the file for a file
    that cannot be read or metadata that is not such a list."""
    heads_file = Path(heads_file)
    try:
        with safe_open(str(heads_file), "pt") as f:
            raw = (f.metadata() or {}).get("class_names")
            outputs = (f.get_slice("segmentation.conv.weight").get_shape()[0]
                       if "segmentation.conv.weight" in f.keys() else None)
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CheckpointError(f"heads file {heads_file}: not a valid safetensors file, truncated or corrupt "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if raw is None:
        return None
    bad = f"heads file {heads_file}: metadata class_names"
    try:
        names = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{bad} is not valid JSON ({err.msg} at character {err.pos}); "
                              "expected a JSON list of class names") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise CheckpointError(f"{bad} must be a non-empty JSON list of non-empty strings, got {raw[:80]!r}")
    if len(names) > MAX_CLASSES:
        raise CheckpointError(f"{bad} lists {len(names)} classes; at most {MAX_CLASSES} (class ids are uint8, "
                              "255 = ignore)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(f"{bad} repeats {', '.join(repeated[:4])}: each class id needs its own name")
    if outputs is not None and outputs != len(names):
        raise CheckpointError(f"{bad} lists {len(names)} names but the segmentation head has {outputs} outputs")
    return names


def _upsample(seg_logits: torch.Tensor, depth: torch.Tensor, size: tuple[int, int]):
    """Class logits [B, classes, gh, gw] and depth [B, gh, gw] -> bilinearly upsampled class ids
    [B, h, w] uint8 and depth [B, h, w]."""
    return upsample_maps(seg_logits, depth, size)


_MATRICES: dict[tuple, torch.Tensor] = {}


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[n_out, n_in]: F.interpolate's 1-D linear weights (align_corners=False), so that bilinear
    upsampling of a [.., gh, gw] map is ``A_h @ map @ A_w.T`` (it is separable)."""
    key = (n_in, n_out, str(device), dtype)
    if key not in _MATRICES:
        eye = torch.eye(n_in, dtype=torch.float64)[None]  # [1, n_in(channels), n_in(positions)]
        weights = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]  # [n_in, n_out]
        _MATRICES[key] = weights.t().contiguous().to(device=device, dtype=dtype)
    return _MATRICES[key]


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, C, gh, gw] (any memory layout) -> [B, C, h, w] contiguous, the same numbers as
    ``F.interpolate(mode="bilinear", align_corners=False)`` up to float rounding, as two small
    matmuls (rows, then columns): ~4x faster on CPU than the interpolation kernel at 16 -> 112
    (bench), and the NCHW result lets the argmax over classes run over whole planes."""
    maps = maps.float()
    rows = interpolation_matrix(maps.shape[-2], size[0], maps.device)
    cols = interpolation_matrix(maps.shape[-1], size[1], maps.device)
    # Rows first on the small maps, then the columns as one large matmul (batched [h, w] products
    # of the other order took ~3x longer).
    tall = torch.matmul(rows, maps)  # [B, C, h, gw]
    return torch.mm(tall.reshape(-1, tall.shape[-1]), cols.t()).view(*tall.shape[:-1], size[1])


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """[B, classes, h, w] (classes <= 255) -> [B, h, w] uint8 index of the first largest logit,
    as ``argmax(dim=1)``: the largest logit per pixel (a plane-wise reduction), then the first
    class reaching it (uint8 weights, largest for class 0). torch's argmax over a class dim of
    size ~10 runs per pixel and took 4-15x longer on CPU (bench)."""
    classes = logits.shape[1]
    if classes > MAX_CLASSES:
        raise ValueError(f"{classes} classes; at most {MAX_CLASSES}")
    best = logits.amax(dim=1, keepdim=True)
    rank = torch.arange(classes, 0, -1, dtype=torch.uint8, device=logits.device).view(1, classes, 1, 1)
    first = torch.ge(logits, best).to(torch.uint8).mul_(rank).amax(dim=1)  # classes - index
    return first.neg_().add_(classes)  # uint8 arithmetic, exact for classes <= 255


def upsample_maps(seg_logits: torch.Tensor, depth: torch.Tensor, size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [B, classes, gh, gw] (any layout) and depth [B, gh, gw] at the feature grid ->
    class ids [B, h, w] uint8 of the bilinearly upsampled logits and bilinearly upsampled depth
    [B, h, w] float32: both upsampled together (depth as one more channel) by
    :func:`upsample_bilinear`, the ids by :func:`argmax_classes`."""
    classes = seg_logits.shape[1]
    up = upsample_bilinear(torch.cat((seg_logits.float(), depth.float()[:, None]), dim=1), size)
    return argmax_classes(up[:, :classes]), up[:, classes].contiguous()
