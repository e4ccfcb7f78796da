"""How well a segmentation head agrees with the person teacher on real frames.

:class:`PersonAgreement` accumulates, over a video's frames, the intersection and union of the
head's "person" pixels (the class of the largest upsampled logit, as inference labels a pixel)
and the teacher's, two ways:

* ``decided``: only where the teacher is confident (probability >= hi is person, <= lo is not;
  the band between is left out, as a void label is);
* ``at_half``: every pixel, the teacher's person where its probability >= 0.5.

Pooled over the video's frames (each pixel weighs the same), so one frame with a large person does
not count as much as a video's worth of small ones only when it has that many more pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..heads import TaskHeads, argmax_classes, upsample_bilinear


def class_maps(heads: TaskHeads, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
               affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """features [B, N, C] -> class ids uint8 [B, *size], as inference labels a pixel (``affine``:
    :meth:`~deltaworld_core.heads.TaskHeads.affine`, when the caller already folded it)."""
    seg, _ = heads.grid_maps(heads.logits(features.float(), affine), grid)
    return argmax_classes(upsample_bilinear(seg, size))


def head_person(heads: TaskHeads, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                person_id: int, batch: int = 32) -> torch.Tensor:
    """Present-frame features [T, N, C] -> bool [T, *size]: where the head's most likely class is person."""
    affine = heads.affine()
    return torch.cat([class_maps(heads, chunk, grid, size, affine) == person_id for chunk in features.split(batch)])


def teacher_probability(person: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Stored teacher labels uint8 [T, h, w] (probability x 255) -> float [T, *size] in [0, 1]."""
    return F.interpolate(person[:, None].float() / 255.0, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


@dataclass
class PersonAgreement:
    lo: float = 0.2
    hi: float = 0.7
    decided_inter: int = 0
    decided_union: int = 0
    half_inter: int = 0
    half_union: int = 0
    head_pixels: int = 0
    teacher_pixels: int = 0
    pixels: int = 0
    frames: int = 0

    def add(self, head: torch.Tensor, teacher: torch.Tensor) -> None:
        """head bool [T, h, w]; teacher probability [T, h, w]."""
        decided = (teacher >= self.hi) | (teacher <= self.lo)
        sure = teacher >= self.hi
        self.decided_inter += int((head & sure).sum())
        self.decided_union += int(((head | sure) & decided).sum())
        half = teacher >= 0.5
        self.half_inter += int((head & half).sum())
        self.half_union += int((head | half).sum())
        self.head_pixels += int(head.sum())
        self.teacher_pixels += int(half.sum())
        self.pixels += head.numel()
        self.frames += head.shape[0]

    @staticmethod
    def _ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    def summary(self) -> dict:
        return {"frames": self.frames, "iou_decided": self._ratio(self.decided_inter, self.decided_union),
                "iou_at_half": self._ratio(self.half_inter, self.half_union),
                "head_person_share": self._ratio(self.head_pixels, self.pixels),
                "teacher_person_share": self._ratio(self.teacher_pixels, self.pixels)}


def fit_person_probe(features: list[torch.Tensor], teacher: list[torch.Tensor], grid: tuple[int, int],
                     thresholds: tuple[float, float] = (0.2, 0.7), steps: int = 1500, seed: int = 0):
    """A linear person-vs-rest probe fitted (logistic loss, Adam) on the teacher's confident cells of
    the given frames: features [T, N, C] and teacher probability [T, h, w] per video. Fitted on
    the frames it is then scored on, it shows what a linear head at this feature grid can reach,
    not what a trained head generalises to. Returns features [T, N, C] -> logits [T, 1, gh, gw]."""
    lo, hi = thresholds
    xs, ys = [], []
    for f, p in zip(features, teacher):
        cells = F.adaptive_avg_pool2d(p[:, None].float(), grid)[:, 0].flatten(1)  # [T, N]
        keep = (cells >= hi) | (cells <= lo)
        xs.append(f.float()[keep])
        ys.append((cells[keep] >= hi).float())
    x, y = torch.cat(xs), torch.cat(ys)
    mean, std = x.mean(0), x.std(0) + 1e-5
    g = torch.Generator().manual_seed(seed)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.01, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            i = torch.randint(0, len(x), (4096,), generator=g)
            loss = F.binary_cross_entropy_with_logits(((x[i] - mean) / std) @ weight + bias, y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weight, bias = weight.detach(), bias.detach()

    def probe(f: torch.Tensor) -> torch.Tensor:
        return (((f.float() - mean) / std) @ weight + bias).unflatten(1, grid)[:, None]
    return probe


def fit_subcell_person_probe(features: list[torch.Tensor], teacher: list[torch.Tensor], grid: tuple[int, int],
                             size: tuple[int, int], thresholds: tuple[float, float] = (0.2, 0.7), kernel: int = 3,
                             steps: int = 2000, batch: int = 64, seed: int = 0):
    """A person probe that sees each cell's ``kernel x kernel`` neighbourhood and gives every cell
    its own sub-cell pattern (a conv to ``s x s`` logits per cell, then pixel shuffle, with ``s``
    the label size over the grid), fitted (logistic loss on the teacher's confident *pixels*,
    Adam) on the given frames, one video a step in turn. Still linear in the features, but not
    held to one value per cell as the heads are: fitted in sample, it shows how much a finer read
    of this feature grid could recover of people smaller than a cell. Returns features [T, N, C]
    -> logits [T, 1, *size]."""
    lo, hi = thresholds
    sub = max(1, size[0] // grid[0])
    every = torch.cat([f.float().flatten(0, 1) for f in features])
    mean, std = every.mean(0), every.std(0) + 1e-5
    with torch.random.fork_rng(devices=[]):  # a seeded start that leaves the caller's random stream as it was
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d(every.shape[1], sub * sub, kernel, padding=kernel // 2)
    g = torch.Generator().manual_seed(seed)

    def probe(f: torch.Tensor) -> torch.Tensor:
        maps = ((f.float() - mean) / std).transpose(1, 2).unflatten(2, grid)
        return upsample_bilinear(F.pixel_shuffle(conv(maps), sub), size)

    opt = torch.optim.Adam(conv.parameters(), lr=3e-3, weight_decay=1e-4)
    with torch.enable_grad():
        for step in range(steps):
            f, p = features[step % len(features)], teacher[step % len(features)]
            i = torch.randint(0, len(f), (batch,), generator=g)
            target = p[i].float()
            weight = ((target >= hi) | (target <= lo)).float()
            loss = F.binary_cross_entropy_with_logits(probe(f[i])[:, 0], (target >= hi).float(), weight=weight,
                                                      reduction="sum") / weight.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    conv.requires_grad_(False)
    return probe
