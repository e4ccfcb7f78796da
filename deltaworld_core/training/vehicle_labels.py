"""Real frames whose box-teacher vehicle cores teach ``car``: a third part of the heads stage's
real pool, beside the person teacher's (:mod:`.real_labels`).

``real_labels.vehicles`` names recordings (train sources only, data_split.yaml). Their box files
(:mod:`deltaworld_core.teachers.boxes`, made with ``real_labels.vehicle_label``) become label codes
by :func:`~.box_labels.box_codes`: ``car`` in the core of each vehicle box scoring at least
``real_labels.vehicle_score``, unknown everywhere else. Only frames with a core cell join the
pool; a clip also named for the person teacher teaches from two windows, one per teacher.
"""

from __future__ import annotations

import logging

import torch

from ..config import ConfigError
from ..data.windows import Window
from ..features import FeatureCache
from ..teachers.boxes import BoxStore, ClipBoxes
from ..teachers.centernet import BoxDetector
from ..teachers.labels import LabelClip, label_clips
from ..teachers.packages import fetch_teacher
from .box_labels import CAR, box_codes
from .real_labels import RealLabelsConfig, frame_features

log = logging.getLogger(__name__)


def clip_boxes(store: BoxStore, clip: LabelClip, label_missing: bool, detector: list) -> ClipBoxes:
    """The clip's boxes from the store, labelling it now if allowed (``detector``: a one-item list
    holding the lazily started teacher, shared across calls)."""
    boxes = store.load(clip)
    if boxes is not None:
        return boxes
    if not label_missing:
        raise ConfigError(f"{clip.name} has no {store.settings.teacher} boxes: run `python -m deltaworld_core.teachers "
                          f"label --teacher {store.settings.teacher} --sources {clip.name} "
                          f"--stride {store.settings.stride}`")
    if not detector:
        detector.append(BoxDetector(fetch_teacher(store.settings.teacher, store.cache), store.cache))
    return store.label(clip, detector[0])


def vehicle_windows(rc: RealLabelsConfig, cache: FeatureCache, label_size: tuple[int, int], class_names: list[str],
                    media_cache: str | None = None) -> list[Window]:
    """One :class:`Window` per ``rc.vehicles`` clip with any vehicle core: features [T, N, C] fp16 of
    its frames with a core and their codes ``semantic`` [T, *label_size] uint8 (no depth)."""
    if not rc.vehicles:
        return []
    if CAR not in class_names:
        raise ConfigError(f"real_labels.vehicles: the heads have no {CAR!r} class ({', '.join(class_names)})")
    store = BoxStore(rc.vehicle_label, rc.cache)
    detector: list = []
    out = []
    try:
        for clip in label_clips(rc.vehicles, [], None, media_cache):
            boxes = clip_boxes(store, clip, rc.label_missing, detector)
            codes = torch.stack([box_codes(*boxes.of_frame(t), tuple(label_size), class_names, rc.vehicle_score,
                                           rc.vehicle_core) for t in range(len(boxes.frames))])
            keep = (codes == class_names.index(CAR)).flatten(1).any(dim=1)
            log.info("vehicle labels: %s, %d of %d frames with a vehicle core", clip.name, int(keep.sum()), len(keep))
            if not bool(keep.any()):
                continue
            feats = frame_features(clip, boxes.frames.tolist(), cache, rc.max_side)
            out.append(Window(feats[keep].half(), 0.0, f"boxes:{clip.name}", semantic=codes[keep]))
    finally:
        for d in detector:
            d.close()
    return out
