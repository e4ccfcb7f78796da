"""Per-frame teacher boxes of real recordings, cached beside the person labels.

:class:`BoxStore` is :class:`~deltaworld_core.teachers.labels.LabelStore` for a box teacher
(``centernet``): the same file naming (teacher package and version, clip identity, settings) and
the same metadata (package, registry, version, licence, model files' sha256, clip, settings), but
its safetensors file holds

* ``frames`` int64 ``[T]`` and ``stamps`` float64 ``[T]``: the labelled frames, as for masks,
* ``box_frame`` int64 ``[N]``: which labelled frame (0 .. T-1) each box belongs to,
* ``boxes`` float32 ``[N, 4]``: ``x1, y1, x2, y2`` as fractions of the frame's width and height,
* ``scores`` float32 ``[N]`` and ``classes`` int64 ``[N]`` (0-based COCO class),

and its metadata also records the frame size (``frame_hw``) and the detector's ``min_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError
from .labels import LabelClip, LabelStore


@dataclass
class ClipBoxes:
    frames: torch.Tensor  # int64 [T]
    stamps: torch.Tensor  # float64 [T]
    box_frame: torch.Tensor  # int64 [N]
    boxes: torch.Tensor  # float32 [N, 4]: corners as fractions of the frame
    scores: torch.Tensor  # float32 [N]
    classes: torch.Tensor  # int64 [N]: 0-based COCO
    meta: dict

    def of_frame(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labelled frame ``t``'s (boxes [n, 4], scores [n], classes [n])."""
        keep = self.box_frame == t
        return self.boxes[keep], self.scores[keep], self.classes[keep]

    def count(self, classes: set[int], min_score: float) -> int:
        """Boxes of these classes scoring at least ``min_score``."""
        wanted = torch.tensor(sorted(classes), dtype=torch.int64)
        return int((torch.isin(self.classes, wanted) & (self.scores >= min_score)).sum())


class BoxStore(LabelStore):
    """Box files of one box teacher under ``<teacher cache>/labels/<teacher>/``."""

    def load(self, clip: LabelClip) -> ClipBoxes | None:
        """The clip's boxes, or None when not labelled yet (or the file is unreadable)."""
        read = self.read(clip)
        if read is None:
            return None
        t, meta = read
        try:
            return ClipBoxes(t["frames"], t["stamps"], t["box_frame"], t["boxes"], t["scores"], t["classes"], meta)
        except KeyError:
            return None

    def label(self, clip: LabelClip, detector) -> ClipBoxes:
        """Runs ``detector`` (a :class:`~deltaworld_core.teachers.centernet.BoxDetector` or any object
        whose ``detect(rgb)`` gives float32 [n, 6] pixel boxes) over the clip; saves atomically."""
        s = self.settings
        frames, stamps, rows, owner = [], [], [], []
        frame_hw = None
        for i, (rgb, t) in enumerate(clip.frames()):
            if i % s.stride:
                continue
            if frame_hw is not None and rgb.shape[:2] != frame_hw:
                raise ConfigError(f"{clip.name}: frame {i} is {rgb.shape[1]}x{rgb.shape[0]}, unlike the frames before")
            frame_hw = rgb.shape[:2]
            found = np.asarray(detector.detect(rgb), np.float32).reshape(-1, 6)
            rows.append(found)
            owner.append(np.full(len(found), len(frames), np.int64))
            frames.append(i)
            stamps.append(t)
            if s.max_frames and len(frames) == s.max_frames:
                break
        if not frames:
            raise ConfigError(f"{clip.name}: no frames to label")
        found = np.concatenate(rows)
        h, w = frame_hw
        corners = np.clip(found[:, :4] / np.array([w, h, w, h], np.float32), 0.0, 1.0)
        meta = {**self.metadata(clip), "frame_hw": list(frame_hw), "min_score": getattr(detector, "min_score", None)}
        boxes = ClipBoxes(torch.tensor(frames, dtype=torch.int64), torch.tensor(stamps, dtype=torch.float64),
                          torch.from_numpy(np.concatenate(owner)), torch.from_numpy(corners.copy()),
                          torch.from_numpy(found[:, 4].copy()), torch.from_numpy(found[:, 5].round().astype(np.int64)),
                          meta)
        self.write(clip, {"frames": boxes.frames, "stamps": boxes.stamps, "box_frame": boxes.box_frame,
                          "boxes": boxes.boxes.contiguous(), "scores": boxes.scores, "classes": boxes.classes}, meta)
        return boxes
