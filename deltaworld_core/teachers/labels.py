"""Per-frame teacher labels of real recordings, cached outside the repository.

A clip (a named source clip of :mod:`deltaworld_core.data.sources`, or any video file, frame
folder or rosbag2 topic :func:`~deltaworld_core.data.media.expand_media` reads) is labelled every
``stride``-th frame. One safetensors file per clip and :class:`LabelSettings` under
``<teacher cache>/labels/<teacher>/`` holds

* ``frames`` int64 ``[T]``: the labelled frames' indices in the clip's decoded order,
* ``stamps`` float64 ``[T]``: their stamps in seconds,
* ``person`` uint8 ``[T, h, w]``: the teacher's person probability x 255 over the whole frame
  (its aspect ratio kept, longer side ``max_side``),

and its metadata records the teacher's package, registry, version, licence, the sha256 of its
model files, the clip's identity and the settings. The file name is a hash of the teacher's
package and version, the clip's identity (path, size, mtime) and the settings, so a changed
video, teacher or setting is a new file, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..checkpoint import atomic_write
from ..config import ConfigError
from ..data.media import MediaError, MediaRef, expand_media, iter_frames
from ..data.sources import resolve_clips
from ..data.video import open_video
from ..features import file_identity
from .packages import get_teacher, read_manifest, teacher_folder, teacher_root

LABEL_FORMAT = 1


@dataclass
class LabelSettings:
    """How a clip is labelled (every field is part of the label file's key)."""

    teacher: str = "selfie"
    model: str = "auto"  # selfie variant: auto | general | landscape
    tiles: int = 3  # views: the whole frame plus tiles x tiles overlapping crops (0 = whole frame only)
    tile_frac: float = 0.6  # crop side / frame side
    stride: int = 5  # every stride-th decoded frame
    max_frames: int = 0  # labelled frames per clip, 0 = all
    max_side: int = 256  # stored label size: the frame's aspect, longer side this

    def validate(self, where: str = "") -> "LabelSettings":
        get_teacher(self.teacher)
        if self.stride < 1 or self.max_frames < 0 or self.max_side < 8 or self.tiles < 0:
            raise ConfigError(f"{where}stride must be >= 1, max_frames >= 0, max_side >= 8, tiles >= 0")
        if not 0.0 < self.tile_frac < 1.0:
            raise ConfigError(f"{where}tile_frac must lie in (0, 1), got {self.tile_frac}")
        return self


@dataclass(frozen=True)
class LabelClip:
    """One recording to label: a named source clip (``fps`` for frame folders) or a media ref."""

    name: str
    path: Path
    fps: float | None = None
    ref: MediaRef | None = None

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(RGB uint8 [H, W, 3], stamp s) in decoded order."""
        if self.ref is not None:
            yield from iter_frames(self.ref)
        else:
            yield from open_video(self.path, self.fps)

    def identity(self) -> dict:
        ident = file_identity(self.path) if self.path.is_file() else {"path": str(self.path.resolve())}
        if self.path.is_dir():
            ident["files"] = sorted(p.name for p in self.path.iterdir())
            ident["mtime_ns"] = max((p.stat().st_mtime_ns for p in self.path.iterdir()), default=0)
        return {**ident, "topic": self.ref.topic if self.ref is not None else None}


def label_clips(sources: list[str] = (), paths: list[str] = (), topic=None,
                media_cache: str | None = None) -> list[LabelClip]:
    """Named sources/clips (``visp``, ``pose2sim/trial1-cam1``) and media paths -> clips.
    Raises ConfigError in one line for an unknown name, an unfetched source or unreadable media."""
    out: list[LabelClip] = []
    try:
        clips = resolve_clips(list(sources), media_cache)
    except (KeyError, FileNotFoundError) as err:
        raise ConfigError(f"{err.args[0] if err.args else err}") from err
    out += [LabelClip(c.full_name, c.path, c.fps) for c in clips]
    for entry in paths:
        try:
            refs = expand_media([entry], topic)
        except MediaError as err:
            raise ConfigError(str(err)) from err
        out += [LabelClip(r.name, Path(r.path), None, r) for r in refs]
    return out


@dataclass
class ClipLabels:
    frames: torch.Tensor  # int64 [T]
    stamps: torch.Tensor  # float64 [T]
    person: torch.Tensor  # uint8 [T, h, w]: probability x 255
    meta: dict

    @property
    def person_share(self) -> float:
        """Share of labelled pixels the teacher calls person (probability >= 0.5)."""
        return float((self.person >= 128).float().mean()) if len(self.person) else 0.0


def label_hw(frame_hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = frame_hw
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


class LabelStore:
    """Label files of one teacher under ``<teacher cache>/labels/<teacher>/``."""

    def __init__(self, settings: LabelSettings, cache: str | Path | None = None):
        self.settings = settings.validate()
        self.teacher = get_teacher(settings.teacher)
        self.cache = cache
        self.root = teacher_root(cache) / "labels" / settings.teacher

    def path(self, clip: LabelClip) -> Path:
        key = json.dumps({"teacher": self.teacher.identity(), "clip": clip.identity(),
                          "settings": asdict(self.settings), "format": LABEL_FORMAT}, sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.root / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', clip.name)[:80]}-{digest}.safetensors"

    def read(self, clip: LabelClip) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The clip's file as (tensors, metadata), or None when not labelled yet (or unreadable)."""
        path = self.path(clip)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("labels", "{}"))
        except (SafetensorError, OSError, ValueError):
            return None
        return tensors, meta

    def metadata(self, clip: LabelClip) -> dict:
        """What a label file records: the teacher, its model files' sha256, the clip and the settings."""
        manifest = read_manifest(teacher_folder(self.teacher, self.cache)) or {}
        return {**self.teacher.identity(), "model_files": manifest.get("files", {}), "clip": clip.name,
                "media": clip.identity(), "settings": asdict(self.settings), "format": LABEL_FORMAT}

    def write(self, clip: LabelClip, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Saves the clip's file atomically."""
        atomic_write(self.path(clip), lambda p: save_file(tensors, p, metadata={"labels": json.dumps(meta, default=str)}))

    def load(self, clip: LabelClip) -> ClipLabels | None:
        """The clip's labels, or None when not labelled yet (or the file is unreadable)."""
        read = self.read(clip)
        if read is None:
            return None
        tensors, meta = read
        return ClipLabels(tensors["frames"], tensors["stamps"], tensors["person"], meta)

    def label(self, clip: LabelClip, segmenter) -> ClipLabels:
        """Runs ``segmenter`` (a :class:`~deltaworld_core.teachers.selfie.PersonSegmenter` or any
        object with its ``views``) over the clip and saves the labels atomically."""
        s = self.settings
        frames, stamps, person = [], [], []
        for i, (rgb, t) in enumerate(clip.frames()):
            if i % s.stride:
                continue
            hw = label_hw(rgb.shape[:2], s.max_side)
            prob = segmenter.views(rgb, hw, s.tiles, s.tile_frac)
            if person and prob.shape != person[0].shape:
                raise ConfigError(f"{clip.name}: frame {i} is {rgb.shape[1]}x{rgb.shape[0]}, unlike the frames before")
            frames.append(i)
            stamps.append(t)
            person.append(np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8))
            if s.max_frames and len(frames) == s.max_frames:
                break
        if not frames:
            raise ConfigError(f"{clip.name}: no frames to label")
        labels = ClipLabels(torch.tensor(frames, dtype=torch.int64), torch.tensor(stamps, dtype=torch.float64),
                            torch.from_numpy(np.stack(person)), self.metadata(clip))
        self.write(clip, {"frames": labels.frames, "stamps": labels.stamps, "person": labels.person.contiguous()},
                   labels.meta)
        return labels
