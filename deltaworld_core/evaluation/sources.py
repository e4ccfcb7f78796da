"""Where evaluation clips come from, each frame's VFM features computed once (through the
feature cache when one is given): recordings (video files, frame folders, and anything
:func:`~deltaworld_core.data.media.expand_media` reads: bags, shards, lists, folders), the
fetched registry sources, synthetic scenes with exact labels and the public labelled datasets."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch

from ..config import ModelConfig
from ..data.datasets import CityscapesClips, KittiDepthClips, VSPWClips
from ..data.media import MediaError, expand_media
from ..data.sources import split_sources
from ..data.synthetic import SyntheticWorld
from ..data.video import opens_directly
from ..features import FeatureCache, file_identity
from .clips import Clip, EvaluationError
from .frame_features import FrameFeatures
from .windows import media_windows, video_windows

log = logging.getLogger(__name__)
DATASETS = ("cityscapes", "kitti", "vspw")
DATASET_CLIPS = {"cityscapes": CityscapesClips, "kitti": KittiDepthClips, "vspw": VSPWClips}


def _read_label(folder: Path, index: int, kind: str) -> np.ndarray | None:
    for ext in (".png", ".npy"):
        p = folder / kind / f"{index:06d}{ext}"
        if not p.is_file():
            continue
        if ext == ".npy":
            return np.load(p).astype(np.uint8 if kind == "semantic" else np.float32)
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise EvaluationError(f"unreadable label {p}")
        if kind == "semantic":
            return img if img.ndim == 2 else img[..., 0]
        return img.astype(np.float32) / 256.0
    return None


class ClipSource:
    """Turns the command line's sources into :class:`Clip` objects, computing each frame's VFM
    features once (through the on-disk feature cache when one is given)."""

    def __init__(self, vfm, cfg: ModelConfig, context: int, horizon: int, step_s: float,
                 cache_dir: Path | None = None, vfm_seed: int = 0, batch_frames: int = 16):
        self.vfm, self.cfg = vfm, cfg
        self.context, self.horizon, self.step_s = context, horizon, step_s
        self.length = context + horizon
        self.cache = None
        if cache_dir is not None:
            self.cache = FeatureCache(cache_dir, vfm, cfg.vfm, seed=vfm_seed, batch_size=batch_frames)
        self.batch_frames = batch_frames

    def _features(self, source: dict[str, Any], load) -> dict[str, Any]:
        if self.cache is not None:
            return self.cache.get(source, load)
        return self._compute(load)

    def _compute(self, load) -> dict[str, Any]:
        data = dict(load())
        frames = torch.from_numpy(np.ascontiguousarray(data.pop("frames")))
        with torch.no_grad():
            feats = torch.cat([self.vfm(frames[i:i + self.batch_frames]).float().cpu()
                               for i in range(0, len(frames), self.batch_frames)])
        return {"features": feats, **{k: torch.as_tensor(v) for k, v in data.items()}}

    def black(self) -> torch.Tensor:
        """[N, C] features of an all-black frame, at the same precision as the clips'."""
        if self.cache is not None:
            return self.cache.black()
        return self.vfm.black_features(1)[0].float().cpu()

    def videos(self, paths: list, labels: Path | None, stride: int, fps: float | None = None,
               segment: tuple[float, float] = (0.0, 1.0), names: list[str] | None = None,
               rates: list[float | None] | None = None, refused: dict[str, str] | None = None) -> Iterator[Clip]:
        """Clips of each video; ``names`` (default: file names) label the per-video results and
        seed their sampling, ``rates`` give each frame folder its own frame rate (default: ``fps``).
        A ``paths`` item is a video file or frame folder, or a :class:`~deltaworld_core.data.media.MediaRef`
        (a bag topic or shard sample is streamed through media.iter_frames; a video or frame folder
        ref is read as its path is). Each frame's features are computed once per recording
        (:class:`FrameFeatures`); the feature cache keeps whole windows, so it serves windows that
        do not overlap and whose frames share one size.

        ``refused`` (a dict): a recording that cannot be read is logged in one line, recorded
        there by name, and the next recording is read (None: the error is raised)."""
        for v, item in enumerate(paths):
            ref = item if hasattr(item, "kind") else None
            name = names[v] if names else ref.name if ref is not None else Path(item).name
            clips = self._recording(item, name, labels, stride, rates[v] if rates and rates[v] else fps, segment)
            try:
                yield from clips
            except (EvaluationError, MediaError, ValueError, OSError) as err:
                if refused is None:
                    raise
                line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                line = line if name in line or str(getattr(ref, "path", item)) in line else f"{name}: {line}"
                log.warning("refused %s", line)
                refused[name] = line

    def _recording(self, item, name: str, labels: Path | None, stride: int, fps_v: float | None,
                   segment: tuple[float, float]) -> Iterator[Clip]:
        ref = item if hasattr(item, "kind") else None
        path = Path(ref.path) if ref is not None else Path(item)
        label_dir = None
        if labels is not None:
            label_dir = labels / path.stem if (labels / path.stem).is_dir() else labels
        streamed = ref is not None and ref.kind not in ("video", "frames")
        if streamed:
            windows = media_windows(ref, self.length, stride, self.step_s, segment)
            # the container's identity, and which stream inside it (a bag's topic, a shard's sample)
            identity = {"kind": ref.kind, **file_identity(_identity_file(path)), "topic": ref.topic,
                        "member": ref.member}
        else:
            windows = video_windows(path, self.length, stride, self.step_s, fps_v, segment)
            identity = {"kind": "video", **file_identity(path)}
        memo = FrameFeatures(self._encode, self.batch_frames)
        for clip_index, window in enumerate(windows):
            indices = [w[0] for w in window]
            stamps = np.array([w[2] for w in window], np.float64)
            if self.cache is not None and stride >= self.length and len({w[1].shape for w in window}) == 1:
                source = {**identity, "frames": indices}
                feats = self.cache.get(source, lambda: {"frames": np.stack([w[1] for w in window])})["features"]
            else:
                feats = memo.window(window)
            sem = [None] * self.horizon
            dep = [None] * self.horizon
            if label_dir is not None:
                for h, index in enumerate(indices[self.context:]):
                    sem[h] = _read_label(label_dir, index, "semantic")
                    dep[h] = _read_label(label_dir, index, "depth")
            yield Clip(feats, stamps, sem, dep, f"{name}@{indices[0]}", stream=name, index=clip_index)

    @torch.no_grad()
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> ``[B, N, C]`` float32 on the CPU."""
        return self.vfm(torch.from_numpy(np.ascontiguousarray(frames))).float().cpu()

    def synthetic(self, seeds: range, size: tuple[int, int] | None = None) -> Iterator[Clip]:
        size = tuple(size or self.cfg.vfm.image_size)
        stamps = np.arange(self.length, dtype=np.float64) * self.step_s
        for seed in seeds:
            source = {"kind": "synthetic", "seed": int(seed), "stamps": stamps.tolist(), "image_size": list(size)}

            def load(seed=seed):
                out = SyntheticWorld(int(seed), size).render(stamps)
                return {"frames": out["frames"], "semantic": out["semantic"], "depth": out["depth"]}

            data = self._features(source, load)
            sem = np.asarray(data["semantic"])[self.context:]
            dep = np.asarray(data["depth"], dtype=np.float32)[self.context:]
            yield Clip(data["features"], stamps, list(sem), list(dep), f"synthetic:{seed}",
                       stream=f"synthetic:{seed}", index=0)

    def dataset(self, name: str, root: Path, split: str = "val", size: tuple[int, int] | None = None,
                depth_root: Path | None = None, split_file: Path | None = None) -> Iterator[Clip]:
        """Public labelled formats (``deltaworld_core.data``'s loaders): clips that end on the
        labelled frame, frames ``round(step_s * fps)`` source frames apart (the paper's strides:
        Cityscapes 3 at 17 fps, KITTI 2 at 10 fps, VSPW 3 at 15 fps)."""
        cls = DATASET_CLIPS[name]
        fps = float(inspect.signature(cls.__init__).parameters["fps"].default)
        stride = max(1, round(self.step_s * fps))
        common = dict(context=self.context, horizon=self.horizon, stride=stride, size=size)
        try:
            if name == "kitti":
                if depth_root is None or split_file is None:
                    raise EvaluationError("--dataset kitti needs --depth-root DIR and --split-file FILE "
                                          "(--root is the KITTI raw folder)")
                hc = self.cfg.heads
                items = cls(root, depth_root, split_file, min_depth=hc.min_depth, max_depth=hc.max_depth, **common)
            else:
                items = cls(root, split=split, **common)
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(f"--dataset {name}: {err}") from err
        heads_classes = list(self.cfg.heads.class_names)
        if items.class_names and list(items.class_names) != heads_classes:
            raise EvaluationError(f"--dataset {name} has {len(items.class_names)} classes "
                                  f"({', '.join(items.class_names[:4])}, ...) but the config's heads have "
                                  f"{len(heads_classes)} ({', '.join(heads_classes[:4])}, ...): use a config "
                                  f"whose heads were trained on {name}'s classes")
        base = {"kind": name, "root": str(Path(root).resolve()), "split": split, "stride": stride,
                "size": list(size) if size else None, "count": len(items), "length": self.length}
        for i in range(len(items)):
            def load(i=i):
                item = items[i]
                out = {"frames": np.asarray(item["frames"]), "stamps": np.asarray(item["stamps"], np.float64)}
                for kind in ("semantic", "depth"):
                    if item.get(kind) is not None:
                        out[kind] = np.asarray(item[kind])
                return out

            data_i = self._features({**base, "index": i}, load)
            sem: list[np.ndarray | None] = [None] * self.horizon
            dep: list[np.ndarray | None] = [None] * self.horizon
            if "semantic" in data_i:
                sem[-1] = np.asarray(data_i["semantic"]).astype(np.uint8)
            if "depth" in data_i:
                dep[-1] = np.asarray(data_i["depth"], np.float32)
            yield Clip(data_i["features"], np.asarray(data_i["stamps"], np.float64), sem, dep, f"{name}:{i}",
                       stream=f"{name}:{split}", index=i)


def _identity_file(path: Path) -> Path:
    """The file whose size and mtime stand for a recording in the feature cache's key: the file
    itself, or a bag folder's ``metadata.yaml`` (rewritten whenever the bag is)."""
    return path / "metadata.yaml" if path.is_dir() and (path / "metadata.yaml").is_file() else path


def expand_videos(entries: list[str], topic: list[str] | None = None,
                  refused: dict[str, str] | None = None) -> tuple[list, list[str]]:
    """``--video`` entries -> (the recordings to read, their names). A video file or frame folder
    given directly stays a path named by its file name (as before); anything else goes through
    :func:`deltaworld_core.data.media.expand_media` and keeps the name it gives. Two recordings that
    would share a name are both named in full instead. ``refused`` (a dict): an entry (or a
    recording inside a folder or list) that cannot be used is recorded there, one line each,
    and the others are kept (None: the first is raised)."""
    items: list = []
    names: list[str] = []
    for entry in entries:
        path = Path(entry)
        if opens_directly(path):  # read as before: a video file, or a frame folder (its rate may come from --fps)
            items.append(path)
            names.append(path.name)
            continue
        errors: list[str] | None = None if refused is None else []
        try:
            refs = expand_media([entry], topic, errors=errors)
        except MediaError as err:
            raise EvaluationError(str(err) if path.exists() else f"video not found: {entry} ({err})") from err
        for line in errors or []:
            refused[line.split(": ", 1)[0]] = line if path.exists() else f"video not found: {entry} ({line})"
        items += refs
        names += [r.name for r in refs]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    for i, name in enumerate(names):
        if counts[name] > 1:  # e.g. two cameras' recordings both called front.mp4
            names[i] = str(items[i]) if isinstance(items[i], Path) else items[i].name
    if len(set(names)) < len(names):
        raise EvaluationError(f"--video names the same recording twice: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    return items, names


def held_out_sources() -> list[str]:
    """The held-out sources of deltaworld_core/configs/data_split.yaml (whole videos no training
    stage saw)."""
    return split_sources("held_out")
