"""How well forecast person maps agree with the person teacher on the frames that really followed.

A labelled clip (the teacher's frames and the VFM features of the same frames) is cut into
windows of ``context + horizon`` labelled frames about ``step_s`` apart
(:func:`label_windows`). The world model forecasts the horizon from the context, and each
method's features go through the heads: ``copy_last`` (the last context frame, held), ``mean``
(the mean of the K samples' features), ``mode`` (per pixel, the class most of the K samples'
maps give), ``best`` (the sample closest to the true final features, an oracle pick as in the
forecast evaluation) and ``present`` (the true features of the target frame: what the heads
alone reach). Each method's person pixels are scored against the teacher at the target frame
with :class:`~.agreement.PersonAgreement`, per horizon step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.clips import Clip
from ..heads import TaskHeads
from .agreement import PersonAgreement, class_maps

METHODS = ("present", "copy_last", "mean", "mode", "best")


def label_windows(stamps: torch.Tensor, length: int, step_s: float, max_windows: int) -> list[list[int]]:
    """Labelled-frame stamps [T] s -> up to ``max_windows`` windows, each ``length`` indices about
    ``step_s`` apart (the nearest whole number of labelled-frame intervals, at least 1); windows
    start a whole window apart so no two share a target frame."""
    if len(stamps) < 2:
        return []
    interval = float(stamps.diff().median())
    hop = max(1, round(step_s / interval)) if interval > 0 else 1
    span = hop * (length - 1)
    starts = list(range(0, len(stamps) - span, span + hop))
    if max_windows and len(starts) > max_windows:
        starts = [starts[round(i * (len(starts) - 1) / (max_windows - 1))] for i in range(max_windows)] \
            if max_windows > 1 else starts[:1]
    return [[s + hop * i for i in range(length)] for s in starts]


def window_clips(name: str, features: torch.Tensor, stamps: torch.Tensor, windows: list[list[int]]) -> list[Clip]:
    """features [T, N, C] and stamps [T] of a labelled clip -> one :class:`Clip` per window."""
    return [Clip(features[w].float(), stamps[w].double().numpy(), [], [], source=name, stream=name, index=i)
            for i, w in enumerate(windows)]


def mode_classes(ids: torch.Tensor, classes: int) -> torch.Tensor:
    """ids uint8 [K, h, w] -> the most frequent class per pixel [h, w] (the lowest id on ties)."""
    counts = torch.stack([(ids == c).sum(0) for c in range(classes)])
    return counts.argmax(0)


class ForecastPersonAgreement:
    """Per method and horizon step, a :class:`PersonAgreement` of the heads' person pixels."""

    def __init__(self, horizon: int, thresholds: tuple[float, float] = (0.2, 0.7)):
        self.horizon = horizon
        self.acc = {m: [PersonAgreement(*thresholds) for _ in range(horizon)] for m in METHODS}
        self.windows = 0

    def add(self, preds: dict[str, torch.Tensor], teacher: torch.Tensor, heads: TaskHeads,
            grid: tuple[int, int], size: tuple[int, int], person_id: int) -> None:
        """preds: :meth:`~deltaworld_core.evaluation.evaluator.Evaluator.predict` of B windows;
        teacher: probability [B, H, *size] at each window's target frames."""
        classes = len(heads.class_names)
        affine = heads.affine()
        for step in range(self.horizon):
            for method, key in (("present", "truth"), ("copy_last", "copy_last"), ("mean", "mean"), ("best", "best")):
                person = class_maps(heads, preds[key][:, step], grid, size, affine) == person_id
                self.acc[method][step].add(person, teacher[:, step])
            samples = preds["samples"][:, :, step]  # [B, K, N, C]
            ids = class_maps(heads, samples.flatten(0, 1), grid, size, affine).unflatten(0, samples.shape[:2])
            mode = torch.stack([mode_classes(i, classes) for i in ids]) == person_id
            self.acc["mode"][step].add(mode, teacher[:, step])
        self.windows += len(teacher)

    def summary(self) -> dict:
        """{method: [per step {"iou_decided", ...}]} plus the number of windows."""
        return {"windows": self.windows,
                **{m: [a.summary() for a in steps] for m, steps in self.acc.items()}}


def teacher_at(probability: torch.Tensor, windows: list[list[int]], context: int) -> torch.Tensor:
    """Teacher probability [T, h, w] -> [B, H, h, w] at each window's target frames."""
    return torch.stack([probability[np.asarray(w[context:])] for w in windows])
