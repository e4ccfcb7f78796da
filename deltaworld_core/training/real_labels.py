"""Real frames labelled by a teacher, as a second pool of the heads stage.

``real_labels:`` of a training YAML names recordings (train sources only, data_split.yaml) whose
teacher labels (:mod:`deltaworld_core.teachers.labels`) teach the segmentation head on real video:

* ``sources`` / ``paths``: the teacher's confident person pixels teach ``person`` and its confident
  background teaches "not person" (:data:`~.partial_labels.NOT_CLASS`); the band between the two
  thresholds is unknown;
* ``negatives_only``: only "not person" is taken: for recordings where the teacher's positives
  are known to be wrong (the person model calls a cube or a bird a person where no one is), its
  confident background is still real evidence;
* ``agree`` (``opencv_people``): a second teacher must agree. Each connected component of the
  teacher's confident person pixels stays ``person`` only where it overlaps one of the second
  teacher's boxes (a face or a body, grown by ``agree_grow`` of its size on each side); a
  component no box touches becomes unknown, never "not person", and confident background stays
  "not person" (:func:`person_codes`).

Nothing else on a real frame is labelled: every other class, and depth, is learnt from the
synthetic world only. Each pool item is the whole frame's VFM features (the frame shrunk to
``max_side`` first, then resized by the VFM as at inference) through the feature cache, with the
label codes resized to the heads' label size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import cv2
import numpy as np
import torch

from ..config import ConfigError
from ..data.windows import Window
from ..features import FeatureCache
from ..teachers.agreement import teacher_probability
from ..teachers.boxes import BoxStore, ClipBoxes
from ..teachers.labels import ClipLabels, LabelClip, LabelSettings, LabelStore, label_clips
from ..teachers.opencv_people import NAME as OPENCV_PEOPLE
from ..teachers.opencv_people import PeopleDetector
from ..teachers.packages import fetch_teacher
from ..teachers.selfie import PersonSegmenter
from .box_labels import core_mask
from .partial_labels import IGNORE, not_class
from .pasted_people import PasteConfig, pasted_window

log = logging.getLogger(__name__)


@dataclass
class RealLabelsConfig:
    sources: list[str] = field(default_factory=list)  # named train sources/clips: person and "not person"
    negatives_only: list[str] = field(default_factory=list)  # named train sources/clips: "not person" only
    paths: list[str] = field(default_factory=list)  # media files/folders/bags, like ``sources``
    topic: Any = None  # bags in ``paths``: the image topic
    fraction: float = 0.0  # share of each heads batch drawn from this pool (0 = synthetic only)
    person_weight: float = 1.0  # loss weight of a pixel labelled person (synthetic or real) against 1 for the rest
    person: tuple[float, float] = (0.2, 0.7)  # teacher probability: <= lo "not person", >= hi person, between unknown
    label: LabelSettings = field(default_factory=LabelSettings)  # how the clips are (or were) labelled
    cache: str | None = None  # teacher cache; None = $DELTAWORLD_TEACHERS or ~/.cache/deltaworld/teachers
    paste: PasteConfig = field(default_factory=PasteConfig)  # people pasted small into people-less frames
    label_missing: bool = True  # run the teacher on clips without labels (needs its optional runtime)
    max_side: int = 448  # frames are shrunk to this before the VFM
    vehicles: list[str] = field(default_factory=list)  # named train sources/clips: car in box-teacher vehicle cores
    vehicle_label: LabelSettings = field(default_factory=lambda: LabelSettings(teacher="centernet", stride=3))
    vehicle_score: float = 0.3  # vehicle boxes that teach score at least this
    vehicle_core: float = 0.5  # core side / box side (training.box_labels)
    agree: str | None = None  # a second person teacher whose boxes must confirm each person component
    agree_grow: float = 0.1  # its boxes grown by this share of their width and height on each side

    @property
    def enabled(self) -> bool:
        return bool(self.sources or self.negatives_only or self.paths or self.vehicles)

    def validate(self) -> None:
        self.label.validate("real_labels.label.")
        lo, hi = self.person
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"real_labels.person must be 0 <= lo < hi <= 1, got {self.person}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"real_labels.fraction must lie in [0, 1], got {self.fraction}")
        if self.fraction > 0 and not self.enabled:
            raise ConfigError("real_labels.fraction > 0 needs real_labels.sources, negatives_only or paths")
        if not 0.0 < self.person_weight < float("inf"):
            raise ConfigError(f"real_labels.person_weight must be a number > 0, got {self.person_weight}")
        if self.max_side < 14:
            raise ConfigError(f"real_labels.max_side must be >= 14, got {self.max_side}")
        self.vehicle_label.validate("real_labels.vehicle_label.")
        if not (0.0 <= self.vehicle_score <= 1.0 and 0.0 < self.vehicle_core <= 1.0):
            raise ConfigError(f"real_labels.vehicle_score must lie in [0, 1] and vehicle_core in (0, 1], got "
                              f"{self.vehicle_score}, {self.vehicle_core}")
        if self.agree not in (None, OPENCV_PEOPLE):
            raise ConfigError(f"real_labels.agree must be {OPENCV_PEOPLE} or null, got {self.agree!r}")
        self.paste.validate()
        if not 0.0 <= self.agree_grow < float("inf"):
            raise ConfigError(f"real_labels.agree_grow must be a number >= 0, got {self.agree_grow}")

    @property
    def agree_label(self) -> LabelSettings:
        """How the second teacher's box files are (or were) made: the person labels' frames."""
        return replace(self.label, teacher=self.agree)


def person_codes(person: torch.Tensor, size: tuple[int, int], person_id: int, thresholds: tuple[float, float],
                 positives: bool = True, support: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher probability x 255 uint8 [T, h, w] -> label codes uint8 [T, *size]: ``person_id``
    at >= hi (if ``positives``), "not person" at <= lo, :data:`IGNORE` between. ``support`` (bool
    [T, *size], a second teacher's boxes): a connected component of person pixels that no
    support pixel touches becomes :data:`IGNORE`."""
    lo, hi = thresholds
    prob = teacher_probability(person, size)
    codes = torch.full(prob.shape, IGNORE, dtype=torch.uint8)
    codes[prob <= lo] = not_class(person_id)
    if positives:
        sure = prob >= hi
        codes[sure if support is None else confirmed_components(sure, support)] = person_id
    return codes


def confirmed_components(mask: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """bool [T, h, w] -> bool [T, h, w]: the 8-connected components of each frame's ``mask`` that
    overlap ``support`` (bool [T, h, w]) somewhere, whole."""
    out = torch.zeros_like(mask)
    for t in range(len(mask)):
        count, parts = cv2.connectedComponents(mask[t].numpy().astype(np.uint8), connectivity=8)
        parts = torch.from_numpy(parts.astype(np.int64))
        kept = torch.unique(parts[support[t] & mask[t]])
        out[t] = torch.isin(parts, kept[kept > 0])
    return out


def box_support(boxes: ClipBoxes, frames: torch.Tensor, size: tuple[int, int], grow: float) -> torch.Tensor:
    """The second teacher's boxes on the person labels' ``frames`` (int64 [T]) -> bool [T, *size]:
    cells inside a box grown by ``grow`` of its sides on each side. Raises ConfigError when a
    frame has no box record (the two teachers labelled different frames)."""
    where = {int(f): i for i, f in enumerate(boxes.frames.tolist())}
    missing = [int(f) for f in frames.tolist() if int(f) not in where]
    if missing:
        raise ConfigError(f"{boxes.meta.get('clip')}: {boxes.meta.get('teacher')} boxes lack frame {missing[0]}: "
                          f"label both teachers with the same --stride and --max-frames")
    out = torch.zeros((len(frames), *size), dtype=torch.bool)
    for t, f in enumerate(frames.tolist()):
        found, _, _ = boxes.of_frame(where[int(f)])
        if len(found):
            out[t] = core_mask(found, size, 1.0 + 2.0 * grow).any(dim=0)
    return out


def fit_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side`` (area-averaged: no aliasing)."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def frame_features(clip: LabelClip, frames: list[int], cache: FeatureCache, max_side: int) -> torch.Tensor:
    """VFM features [T, N, C] of the clip's frames ``frames`` (decoded order), through the cache."""
    wanted = set(frames)
    source = {"kind": "teacher_frames", "clip": clip.identity(), "name": clip.name, "frames": list(frames),
              "max_side": max_side}

    def load():
        picked = [fit_side(rgb, max_side) for i, (rgb, _) in enumerate(clip.frames()) if i in wanted]
        if len(picked) != len(frames):
            raise ConfigError(f"{clip.name}: read {len(picked)} of its {len(frames)} labelled frames (changed on disk?)")
        return {"frames": np.stack(picked)}

    return cache.get(source, load)["features"]


def clip_labels(store: LabelStore, clip: LabelClip, label_missing: bool, segmenter: list,
                make: Callable[[], Any] | None = None) -> ClipLabels | ClipBoxes:
    """The clip's labels from the store, labelling it now if allowed (``segmenter``: a one-item
    list holding the lazily built teacher, shared across calls; ``make`` builds it, default the
    selfie model)."""
    labels = store.load(clip)
    if labels is not None:
        return labels
    teacher = store.settings.teacher
    if not label_missing:
        raise ConfigError(f"{clip.name} has no {teacher} labels: run `python -m deltaworld_core.teachers label "
                          f"{'' if teacher == 'selfie' else f'--teacher {teacher} '}--sources {clip.name} "
                          f"--stride {store.settings.stride}`")
    if not segmenter:
        segmenter.append(make() if make else PersonSegmenter(fetch_teacher(teacher, store.cache), store.settings.model))
    return store.label(clip, segmenter[0])


def real_windows(rc: RealLabelsConfig, cache: FeatureCache, label_size: tuple[int, int], class_names: list[str],
                 media_cache: str | None = None) -> list[Window]:
    """One :class:`Window` per labelled clip: features [T, N, C] fp16 and label codes
    ``semantic`` [T, *label_size] uint8 (no depth)."""
    if not rc.enabled:
        return []
    if "person" not in class_names:
        raise ConfigError(f"real_labels: the heads have no 'person' class ({', '.join(class_names)})")
    person_id = class_names.index("person")
    store = LabelStore(rc.label, rc.cache)
    clips = [(c, True) for c in label_clips(rc.sources, rc.paths, rc.topic, media_cache)]
    clips += [(c, False) for c in label_clips(rc.negatives_only, [], None, media_cache)]
    agree_store = BoxStore(rc.agree_label, rc.cache) if rc.agree else None
    segmenter: list = []
    detector: list = []
    out, labelled = [], []
    for clip, positives in clips:
        labels = clip_labels(store, clip, rc.label_missing, segmenter)
        labelled.append((clip, labels, positives))
        feats = frame_features(clip, labels.frames.tolist(), cache, rc.max_side)
        support = None
        if agree_store is not None and positives:
            boxes = clip_labels(agree_store, clip, rc.label_missing, detector,
                                lambda: PeopleDetector(fetch_teacher(rc.agree, rc.cache)))
            support = box_support(boxes, labels.frames, tuple(label_size), rc.agree_grow)
        codes = person_codes(labels.person, label_size, person_id, rc.person, positives, support)
        steps = labels.stamps.diff()
        fps = float(1.0 / steps.median()) if len(steps) and float(steps.median()) > 0 else 0.0
        out.append(Window(feats.half(), fps, f"teacher:{clip.name}", semantic=codes))
        log.info("real labels: %s, %d frames, person %.1f%% / not person %.1f%% of pixels%s", clip.name, len(codes),
                 100 * float((codes == person_id).float().mean()),
                 100 * float((codes == not_class(person_id)).float().mean()), "" if positives else " (negatives only)")
    if rc.paste.count:
        out.append(pasted_window(rc.paste, [(c, l) for c, l, p in labelled if p], [(c, l) for c, l, p in labelled if not p],
                                 tuple(rc.person), cache, tuple(label_size), person_id))
        log.info("real labels: %d composites with people pasted into people-less frames", rc.paste.count)
    return out
