"""Stage ``heads``: segmentation and depth heads on present-frame features of the synthetic world
and, when ``real_labels`` names recordings, of real frames labelled by a teacher.

Each batch item is a synthetic frame, or with probability ``real_labels.fraction`` a real frame of
the teacher-labelled pool (:mod:`.real_labels`). Loss: :func:`~.partial_labels.partial_cross_entropy`
(an exact class, "any class but k" or unknown per pixel; on synthetic frames it is the plain
cross-entropy with label 255 ignored; with a real pool, person pixels weigh
``real_labels.person_weight``) plus ``loss.depth_weight`` x L1 in metres on the expected
depth over the pixels with a depth label (real frames have none), computed by
:class:`~deltaworld_core.heads.DepthHead` itself, i.e. exactly what inference outputs; logits and
depth are upsampled bilinearly to ``data.label_size``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..data.sampling import Sampler
from ..data.windows import Window
from ..heads import TaskHeads
from .config import TrainConfig
from .partial_labels import partial_cross_entropy

log = logging.getLogger(__name__)


class HeadsStage:
    """Draws labelled frames ``{"features": [N, C], "semantic": [h, w], "depth": [h, w]}``.

    Args:
        real: the teacher-labelled real pool (:func:`~.real_labels.real_windows`); empty = synthetic only.
    """

    name = "heads"

    def __init__(self, cfg: TrainConfig, sampler: Sampler, grid: tuple[int, int], real: list[Window] | None = None):
        self.sampler, self.grid, self.depth_weight = sampler, grid, cfg.loss.depth_weight
        self.real = list(real or [])
        self.real_fraction = cfg.real_labels.fraction if self.real else 0.0
        self.person_weight = cfg.real_labels.person_weight if self.real else 1.0
        weights = [w.weight for w in self.real]
        # None: every recording alike, the plain draw, so recipes without weights see the batches they always did
        self.real_weights = torch.tensor(weights, dtype=torch.float64) if len(set(weights)) > 1 else None

    def class_weights(self, class_names: list[str]) -> torch.Tensor | None:
        """[C]: ``real_labels.person_weight`` for person, 1 elsewhere; None when every weight is 1."""
        if self.person_weight == 1.0 or "person" not in class_names:
            return None
        weight = torch.ones(len(class_names))
        weight[class_names.index("person")] = self.person_weight
        return weight

    def real_window(self, g: torch.Generator) -> int:
        """Which real recording the next real item comes from: each alike, or in proportion to the
        windows' ``weight`` when they differ (pasted composites may count as several recordings)."""
        if self.real_weights is None:
            return Sampler.integer(g, len(self.real))
        return int(torch.multinomial(self.real_weights, 1, generator=g))

    def item(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        # The draw for the pool happens only when there is a real pool, so a synthetic-only run sees
        # exactly the batches it always did.
        if self.real_fraction > 0 and Sampler.uniform(g) < self.real_fraction:
            w = self.real[self.real_window(g)]
            j = Sampler.integer(g, len(w.features))
            semantic = w.semantic[j]
            return {"features": w.features[j].float(), "semantic": semantic,
                    "depth": torch.full(semantic.shape, float("nan"))}
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
        seg = partial_cross_entropy(logits, batch["semantic"], self.class_weights(heads.class_names))
        depth = heads.depth(batch["features"], self.grid)  # metres exactly as inference reduces the bins
        depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        target = batch["depth"].float()
        known = torch.isfinite(target)
        if bool(known.all()):
            return seg + self.depth_weight * F.l1_loss(depth, target)
        if not bool(known.any()):
            return seg + 0.0 * depth.sum()
        return seg + self.depth_weight * F.l1_loss(depth[known], target[known])
