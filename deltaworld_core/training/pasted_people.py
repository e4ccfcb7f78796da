"""People pasted small into people-less real frames: the distant people the train recordings lack.

The registry recordings with people show them near the camera (a lab, a webcam, photos); a robot
also meets people across a street, smaller than a cell of the feature grid. ``real_labels.paste``
makes that case from real pixels:

* **cutouts**: connected components of the person teacher's confident mask (>= hi) on labelled
  frames of ``real_labels.sources`` (the recordings whose masks were checked), with a soft alpha
  from the teacher's probability;
* **backgrounds**: labelled frames of ``real_labels.negatives_only`` (no one in view);
* **composites**: 1 to ``max_people`` cutouts per background, each scaled to a height drawn
  log-uniformly between ``min_height`` and ``max_height`` of the frame, standing in its lower part.

Labels: person where a cutout covers (alpha >= 0.5), unknown on its soft edge, "not person" where
the background's teacher is confident background, unknown elsewhere (its invented people). The
composites and their VFM features are cached like any other real frames.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.windows import Window
from ..features import FeatureCache
from ..teachers.labels import ClipLabels, LabelClip
from .partial_labels import IGNORE, not_class

UNSURE = 0.5  # a composite's label probability: neither person nor "not person"


@dataclass
class PasteConfig:
    count: int = 0  # composites (0 = none)
    min_height: float = 0.05  # pasted person height / frame height, drawn log-uniformly in [min, max]
    max_height: float = 0.4
    max_people: int = 4  # people per composite: 1..max_people
    frames_per_clip: int = 40  # labelled frames read per clip, evenly spaced (cutouts and backgrounds)
    min_pixels: int = 600  # a cutout's least area in frame pixels (smaller components are left out)
    weight: float = 1.0  # how often the composites are drawn, in recordings' worth (each real recording counts 1)
    size: tuple[int, int] = (336, 448)  # composite frame height, width
    seed: int = 0

    def validate(self) -> None:
        if self.count < 0 or self.max_people < 1 or self.frames_per_clip < 1 or self.min_pixels < 1:
            raise ConfigError("real_labels.paste: count must be >= 0, max_people, frames_per_clip and min_pixels >= 1")
        if not 0.0 < self.min_height <= self.max_height <= 1.0:
            raise ConfigError(f"real_labels.paste: need 0 < min_height <= max_height <= 1, got "
                              f"{self.min_height}, {self.max_height}")
        if not 0.0 < self.weight < float("inf"):
            raise ConfigError(f"real_labels.paste.weight must be a number > 0, got {self.weight}")
        if len(self.size) != 2 or min(self.size) < 14:
            raise ConfigError(f"real_labels.paste.size must be [height, width], each >= 14, got {self.size}")


def labelled_frames(clip: LabelClip, labels: ClipLabels, count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` evenly spaced labelled frames of ``clip``: (RGB uint8 [H, W, 3], teacher
    person probability float32 [H, W] at the frame's size)."""
    labelled = labels.frames.tolist()
    keep = {int(labelled[i]): i for i in np.linspace(0, len(labelled) - 1, min(count, len(labelled))).round().astype(int)}
    last = max(keep, default=-1)
    for index, (rgb, _) in enumerate(clip.frames()):
        if index in keep:
            h, w = rgb.shape[:2]
            prob = labels.person[keep[index]].numpy().astype(np.float32) / 255.0
            yield rgb, cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        if index >= last:
            return


def cutouts(rgb: np.ndarray, prob: np.ndarray, thresholds: tuple[float, float],
            min_pixels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The confident person components of one frame: (RGB uint8 [h, w, 3], alpha float32 [h, w])
    each, alpha rising from 0 at the teacher's ``lo`` to 1 at its ``hi`` inside the component."""
    lo, hi = thresholds
    n, comp, stats, _ = cv2.connectedComponentsWithStats((prob >= hi).astype(np.uint8))
    out = []
    for c in range(1, n):
        x, y, w, h, area = stats[c]
        if area < min_pixels:
            continue
        box = np.s_[y:y + h, x:x + w]
        alpha = np.clip((prob[box] - lo) / (hi - lo), 0.0, 1.0) * (comp[box] == c)
        out.append((rgb[box].copy(), alpha.astype(np.float32)))
    return out


def composite(rng: random.Random, background: np.ndarray, background_prob: np.ndarray,
              cuts: list[tuple[np.ndarray, np.ndarray]], cfg: PasteConfig,
              thresholds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One composite at ``cfg.size``: (RGB uint8 [H, W, 3], label probability float32 [H, W]:
    1 person, 0 "not person", :data:`UNSURE` unknown)."""
    height, width = cfg.size
    image = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    label = np.where(cv2.resize(background_prob, (width, height)) <= thresholds[0], 0.0, UNSURE).astype(np.float32)
    for _ in range(rng.randint(1, cfg.max_people)):
        rgb, alpha = cuts[rng.randrange(len(cuts))]
        h = round(height * float(np.exp(rng.uniform(np.log(cfg.min_height), np.log(cfg.max_height)))))
        w = max(1, round(rgb.shape[1] * h / rgb.shape[0]))
        if h < 2 or w >= width:
            continue
        person = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
        x = rng.randrange(0, width - w + 1)
        y = max(0, rng.randint(int(0.4 * height), height) - h)
        person, a = person[:height - y], a[:height - y]
        region = np.s_[y:y + len(a), x:x + w]
        image[region] = image[region] * (1.0 - a[..., None]) + person * a[..., None]
        label[region] = np.where(a >= 0.5, 1.0, np.where(a > 0.05, UNSURE, label[region]))
    return image.clip(0, 255).astype(np.uint8), label


def label_codes(prob: torch.Tensor, size: tuple[int, int], person_id: int) -> torch.Tensor:
    """Composite label probability float [T, H, W] -> codes uint8 [T, *size] (nearest)."""
    prob = F.interpolate(prob[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    codes = torch.full(prob.shape, IGNORE, dtype=torch.uint8)
    codes[prob == 1.0] = person_id
    codes[prob == 0.0] = not_class(person_id)
    return codes


def pasted_window(cfg: PasteConfig, people: list[tuple[LabelClip, ClipLabels]],
                  backgrounds: list[tuple[LabelClip, ClipLabels]], thresholds: tuple[float, float],
                  cache: FeatureCache, label_size: tuple[int, int], person_id: int) -> Window:
    """``cfg.count`` composites as one pool window: features [count, N, C] fp16 and codes."""
    if not people or not backgrounds:
        raise ConfigError("real_labels.paste needs real_labels.sources (people to cut out) and "
                          "real_labels.negatives_only (frames without anyone to paste them into)")
    settings = {k: v for k, v in vars(cfg).items() if k != "weight"}  # the draw, not the composites
    source = {"kind": "pasted_people", "settings": settings, "thresholds": list(thresholds),
              "label_size": list(label_size), "person_id": person_id,
              "people": [(c.identity(), l.meta) for c, l in people],
              "backgrounds": [(c.identity(), l.meta) for c, l in backgrounds]}

    def load():
        cuts = [cut for clip, labels in people for rgb, prob in labelled_frames(clip, labels, cfg.frames_per_clip)
                for cut in cutouts(rgb, prob, thresholds, cfg.min_pixels)]
        if not cuts:
            raise ConfigError(f"real_labels.paste: no confident person of at least {cfg.min_pixels} pixels in "
                              f"{', '.join(c.name for c, _ in people)}")
        scenes = [frame for clip, labels in backgrounds for frame in labelled_frames(clip, labels, cfg.frames_per_clip)]
        rng = random.Random(cfg.seed)
        images, probs = zip(*(composite(rng, *scenes[rng.randrange(len(scenes))], cuts, cfg, thresholds)
                              for _ in range(cfg.count)))
        return {"frames": np.stack(images), "codes": label_codes(torch.from_numpy(np.stack(probs)), label_size, person_id)}

    data = cache.get(source, load)
    return Window(data["features"].half(), 0.0, "teacher:pasted_people", semantic=data["codes"], weight=cfg.weight)
