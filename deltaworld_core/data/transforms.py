"""Clip-consistent augmentation: one random resized crop + flip shared by every frame.

The tokenizer learns the change between frames, so frames of a clip (and their label and depth
maps) must all receive exactly the same geometric transform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class CropParams:
    """A crop box in source pixels (top, left, height, width) and a horizontal-flip flag."""
    top: int
    left: int
    height: int
    width: int
    flip: bool


def _uniform(gen, lo: float, hi: float) -> float:
    if isinstance(gen, torch.Generator):
        return lo + (hi - lo) * torch.rand((), generator=gen).item()
    return float(gen.uniform(lo, hi))


def sample_crop(src_hw: tuple[int, int], out_hw: tuple[int, int], gen,
                scale: tuple[float, float] = (0.6, 1.0),
                ratio_jitter: tuple[float, float] = (3 / 4, 4 / 3),
                flip_prob: float = 0.5) -> CropParams:
    """Draw crop parameters.

    The crop covers ``scale`` of the source area, with aspect ratio equal to the output's
    times a log-uniform jitter in ``ratio_jitter`` (mild, so objects are not stretched much).
    Args:
        gen: ``torch.Generator`` or ``numpy.random.Generator`` (deterministic results).
    """
    H, W = src_hw
    target = out_hw[1] / out_hw[0]
    for _ in range(10):
        area = H * W * _uniform(gen, *scale)
        ar = target * math.exp(_uniform(gen, math.log(ratio_jitter[0]),
                                        math.log(ratio_jitter[1])))
        w, h = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < w <= W and 0 < h <= H:
            break
    else:   # fall back to the largest centred box of the target aspect ratio
        w, h = (W, min(H, round(W / target))) if W / H < target else (min(W, round(H * target)), H)
    top = int(round(_uniform(gen, 0, H - h)))
    left = int(round(_uniform(gen, 0, W - w)))
    return CropParams(top, left, h, w, _uniform(gen, 0, 1) < flip_prob)


def apply_crop(x: np.ndarray, p: CropParams, out_hw: tuple[int, int],
               nearest: bool = False, channels: bool = True) -> np.ndarray:
    """Crop, resize to ``out_hw`` and maybe flip a stack of maps.

    Args:
        x: [..., H, W, C] if ``channels`` else [..., H, W] (leading dims, e.g. T, shared).
        nearest: nearest-neighbour resampling (label ids, depth); else area/linear.
    Returns:
        same leading dims and dtype, spatial size ``out_hw``.
    """
    sp = x.ndim - (3 if channels else 2)        # index of the H axis
    lead = x.shape[:sp]
    flat = x.reshape((-1,) + x.shape[sp:])
    crop = flat[:, p.top:p.top + p.height, p.left:p.left + p.width]
    interp = cv2.INTER_NEAREST if nearest else (
        cv2.INTER_AREA if p.height > out_hw[0] else cv2.INTER_LINEAR)
    out = np.stack([cv2.resize(np.ascontiguousarray(c), (out_hw[1], out_hw[0]),
                               interpolation=interp) for c in crop])
    if channels and out.ndim == 3:                 # cv2 drops a singleton channel
        out = out[..., None]
    if p.flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out).reshape(lead + out.shape[1:])


class ClipAugment:
    """Shared random resized crop + horizontal flip for a clip dict.

    ``frames`` [T, H, W, 3] uint8 use area/linear resampling; ``semantic`` and ``depth``
    ([T, H, W] or [H, W]) use nearest so ids stay valid and depth is never blended across edges.
    Other keys pass through.
    """

    def __init__(self, out_hw: tuple[int, int], scale=(0.6, 1.0), ratio_jitter=(3 / 4, 4 / 3),
                 flip_prob: float = 0.5):
        self.out_hw, self.scale = tuple(out_hw), scale
        self.ratio_jitter, self.flip_prob = ratio_jitter, flip_prob

    def __call__(self, clip: dict, gen) -> dict:
        src_hw = clip["frames"].shape[-3:-1]
        p = sample_crop(src_hw, self.out_hw, gen, self.scale, self.ratio_jitter, self.flip_prob)
        out = dict(clip)
        out["frames"] = apply_crop(clip["frames"], p, self.out_hw)
        for k in ("semantic", "depth"):
            if clip.get(k) is not None:
                out[k] = apply_crop(clip[k], p, self.out_hw, nearest=True, channels=False)
        return out
