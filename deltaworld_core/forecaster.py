"""Streaming forecaster: camera frames in, K plausible futures of semantics and depth out.

The context is laid out as the released predictor was trained and evaluated: for the newest
frame's ``context`` frames, the oldest one's *whole-frame token* (that frame encoded against an
all-black frame, at that frame's time) followed by the true delta tokens of the others (each frame
encoded against its predecessor in the context). The predecessor is the frame before
(``forecast.context_spacing: frames``) or the kept frame about ``step_s`` earlier (``step``: the
release's spacing at any camera rate, a forecast still with every frame). Per new frame the work
is constant: one VFM forward (per view), one DeltaTok encode call of at most two pairs per view
(the new frame against its predecessor and, when the context's oldest frame has none yet, that
frame against black), and the predictor's keys/values of those tokens. Each kept frame's
features, tokens and keys/values are cached on the forecaster's device, so nothing else about the
past is recomputed. ``forecast.geometry`` decides how a frame becomes views
(:mod:`deltaworld_core.geometry`); the views run as one batch. A forecast is
:func:`deltaworld_core.rollout.rollout_residuals` (shared with evaluation) over that context; its
maps and summaries are made on the device and copied to the host once.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import geometry
from .checkpoint import CheckpointNotFoundError, load_module, missing_weights
from .config import ModelConfig, load_config
from .context_rules import context_break
from .deltatok import DeltaTok
from .heads import TaskHeads, recorded_class_names, upsample_maps
from .rollout import features_from_residuals, rollout_residuals, spread_reference
from .threads import apply_threads
from .vfm import build_vfm
from .vfm_runtime import cpu_has_native_bf16
from .world import KV, DeltaWorld

log = logging.getLogger(__name__)

WEIGHT_FILES = {"tokenizer": "tokenizer.safetensors", "world": "world.safetensors", "heads": "heads.safetensors"}


@dataclass
class ForecastSummary:
    """Per horizon step, over the K hypotheses."""

    semantic_mode: np.ndarray  # [H, h, w] uint8 most frequent class
    agreement: np.ndarray  # [H, h, w] float32 fraction of hypotheses agreeing with the mode
    depth_mean: np.ndarray  # [H, h, w] float32 metres
    depth_std: np.ndarray  # [H, h, w] float32 metres


@dataclass
class Forecast:
    stamp: float  # seconds, the newest frame used
    stamps: np.ndarray  # [H] float64 seconds of the target frames
    semantic: np.ndarray  # [K, H, h, w] uint8 class ids (K = forecast.publish_k when set)
    depth: np.ndarray  # [K, H, h, w] float32 metres
    class_names: list[str]
    summary: ForecastSummary
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    # The decoder's residuals [K, H, n, C] at its pooled grid ([V, K, H, n, C] with V > 1 views),
    # all K decoded hypotheses, and how to build full features from them
    residuals: torch.Tensor | None = field(default=None, repr=False)
    build_features: Callable[[], torch.Tensor] | None = field(default=None, repr=False, compare=False)
    # (y0, x0, y1, x1) in camera pixels that the maps cover: the whole frame, or with
    # forecast.geometry center_crop the crop
    region: tuple[int, int, int, int] | None = None

    @cached_property
    def features(self) -> torch.Tensor:
        """[K, H, N, C] predicted VFM features ([V, K, H, N, C] with V > 1 views), built on first
        access: the maps above never need them at full resolution, so a forecast does not pay for
        them unless asked."""
        if self.build_features is None:
            raise ValueError("this forecast carries no features")
        return self.build_features()

    @property
    def k(self) -> int:
        return self.semantic.shape[0]

    @property
    def horizon(self) -> int:
        return self.semantic.shape[1]


def summary_tensors(semantic: torch.Tensor, depth: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """semantic [K, H, h, w] (int), depth [K, H, h, w] -> per-step mode (uint8), agreement, depth
    mean and std ([H, h, w] float32), on the maps' device (nothing waits for it)."""
    k = semantic.shape[0]
    counts = torch.zeros((num_classes, *semantic.shape[1:]), dtype=torch.int32, device=semantic.device)
    counts.scatter_add_(0, semantic.long(), torch.ones_like(semantic, dtype=torch.int32))
    top, mode = counts.max(dim=0)
    depth = depth.float()
    mean = depth.mean(0)
    # Spelled out: torch's std/var_mean over the leading dim took 30x longer here (bench).
    std = (depth - mean).square().mean(0).sqrt()
    return {"semantic_mode": mode.to(torch.uint8), "agreement": top.float() / k, "depth_mean": mean,
            "depth_std": std}


def summarize(semantic: torch.Tensor, depth: torch.Tensor, num_classes: int) -> ForecastSummary:
    """semantic [K, H, h, w] (int), depth [K, H, h, w] -> per-step mode/agreement/mean/std."""
    return ForecastSummary(**to_host(summary_tensors(semantic, depth, num_classes)))


def to_host(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Device tensors -> numpy arrays with one transfer per dtype and one wait for the device per
    call: on CUDA each dtype's tensors are packed on the device and copied into fresh pinned host
    memory without blocking, then the host waits once (an event). The arrays own their memory
    (the next forecast cannot overwrite them). CPU tensors are returned as they are (no copy)."""
    if all(t.device.type == "cpu" for t in tensors.values()):
        return {name: t.contiguous().numpy() for name, t in tensors.items()}
    out: dict[str, np.ndarray] = {}
    groups: dict[torch.dtype, list[str]] = {}
    for name, t in tensors.items():
        groups.setdefault(t.dtype, []).append(name)
    hosts = []
    for dtype, names in groups.items():
        flat = torch.cat([tensors[n].reshape(-1) for n in names])
        host = torch.empty(flat.shape, dtype=dtype, pin_memory=torch.cuda.is_available())
        host.copy_(flat, non_blocking=True)
        hosts.append((names, host))
    torch.cuda.current_stream(next(iter(tensors.values())).device).synchronize()
    for names, host in hosts:
        offset = 0
        for n in names:
            size = tensors[n].numel()
            out[n] = host[offset:offset + size].view(tensors[n].shape).numpy()
            offset += size
    return out


def upsample_views(logits: torch.Tensor, depth: torch.Tensor, lay: geometry.Layout
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`deltaworld_core.geometry.upsample_views` (class logits [V, B, classes, gh, gw], depth
    [V, B, gh, gw] -> class ids [B, H, W] uint8, depth [B, H, W]); one view, whose map is the
    canvas, through :func:`deltaworld_core.heads.upsample_maps` (the same numbers up to float
    rounding, several times faster on CPU)."""
    if lay.num_views == 1 and tuple(lay.view_size) == tuple(lay.canvas):
        return upsample_maps(logits[0], depth[0], lay.view_size)
    return geometry.upsample_views(logits, depth, lay)


def future_grid_maps(heads: TaskHeads, tokenizer: DeltaTok, last: torch.Tensor, residuals: torch.Tensor,
                     grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads on K x H futures of V views given as decoder residuals, at the feature grid:
    last features [V, N, C], residuals [V, K, H, n, C] -> (class logits [V, K*H, classes, gh, gw],
    depth [V, K*H, gh, gw] metres).

    The heads are linear up to their last step and the decoder adds upsampled residuals, so each
    future's logits are the last frame's plus its residuals' logits summed along the horizon and
    upsampled: the heads read [V*K*H, n, C] at the decoder's grid instead of [V*K*H, N, C], and
    the sum runs at that grid too."""
    v, k, horizon = residuals.shape[:3]
    affine = heads.affine()  # the BatchNorms folded once for both uses
    change = heads.logits_change(residuals, affine).cumsum(dim=2)  # [V, K, H, n, L], summed at the small grid
    change = tokenizer.upsample_residual(change.flatten(0, 2), grid).unflatten(0, (v, k, horizon))  # [V, K, H, N, L]
    logits = heads.logits(last, affine)[:, None, None] + change  # [V, K, H, N, L]
    seg, depth = heads.grid_maps(logits.flatten(0, 2), grid)
    return seg.unflatten(0, (v, k * horizon)), depth.unflatten(0, (v, k * horizon))


def future_maps(heads: TaskHeads, tokenizer: DeltaTok, last: torch.Tensor, residuals: torch.Tensor,
                grid: tuple[int, int], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One view: last features [1, N, C], residuals [K, H, n, C] -> (class ids [K, H, h, w] uint8,
    depth [K, H, h, w] metres) at ``size`` (:func:`future_grid_maps`, upsampled)."""
    k, horizon = residuals.shape[:2]
    seg, depth = future_grid_maps(heads, tokenizer, last, residuals[None], grid)
    semantic, depth = upsample_views(seg, depth, geometry.layout("squash", size, size, size))
    return semantic.unflatten(0, (k, horizon)), depth.unflatten(0, (k, horizon))


@dataclass(eq=False)
class FrameFeatures:
    """One camera frame after the VFM stage (:meth:`Forecaster.frame_features`)."""

    features: torch.Tensor  # [V, N, C] of the frame's views
    shape: tuple[int, ...]  # the camera frame's (H, W, 3)
    ms: float  # the VFM stage's time


@dataclass(eq=False)
class _Kept:
    """One kept frame of the stream: its features and what was computed from them once."""

    stamp: float
    rel: float  # seconds since the stream's origin
    features: torch.Tensor  # [V, N, C]
    delta: torch.Tensor | None = None  # [V, Dt] against its predecessor in the context
    delta_kv: KV | None = None  # per layer [V, heads, 1, d] at its time
    whole: torch.Tensor | None = None  # [V, Dt] against black, once it is a context's oldest
    whole_kv: KV | None = None


# A frame's predecessor under context_spacing "step" lies at least this share of step_s earlier
# (at 25 fps and step_s 0.2, 5 frames back; at 10 fps, 2).
SPACING_TOLERANCE = 0.25


class Forecaster:
    """Holds the models and the rolling context; see the module docstring for the contract."""

    def __init__(self, cfg: ModelConfig, vfm: torch.nn.Module, tokenizer: DeltaTok, world: DeltaWorld,
                 heads: TaskHeads, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.threads = torch.get_num_threads()  # per process; from_config / from_model_config set it
        self.vfm, self.tokenizer, self.world, self.heads = vfm, tokenizer, world, heads
        for module in (tokenizer, world, heads):
            module.eval().requires_grad_(False)
        fc = cfg.forecast
        self.context, self.horizon, self.k, self.step_s = fc.context, fc.horizon, fc.k, fc.step_s
        self.publish_k = min(fc.publish_k or fc.k, fc.k)  # at most K
        self.geometry, self.context_spacing = fc.geometry, fc.context_spacing
        self.max_gap_s = fc.max_gap_s
        self.output_size = tuple(fc.output_size or cfg.vfm.image_size)
        self.summary_size = tuple(fc.summary_size) if fc.summary_size else None
        self.class_names = list(cfg.heads.class_names)
        self.grid = tuple(vfm.grid)
        self.generator = torch.Generator(device=self.device)
        # Per-stage timings wait for the GPU (CUDA-synchronised); False lets the host queue a
        # whole step ahead, and then only the published maps wait for the device.
        self.sync_timings = self.device.type == "cuda"
        self.resets = 0
        self.last_reset_reason: str | None = None
        self._layouts: dict[tuple, tuple[geometry.Layout, geometry.Layout | None]] = {}
        self.captured = False
        if fc.cuda_graphs:
            if self.device.type == "cuda":
                self._capture()
            else:
                log.info("forecast.cuda_graphs applies on CUDA only: %s runs eagerly", self.device)
        self.reset()

    def _capture(self) -> None:
        """The predictor's and the decoder's calls of a streaming step compiled with CUDA graphs
        (torch.compile mode="reduce-overhead"): their shapes are fixed for a given config (the
        predictor's context grows over the horizon: one graph per step). A graph replays into
        the same output memory, so each output is cloned before the next replay reuses it."""
        def capture(fn):
            compiled = torch.compile(fn, mode="reduce-overhead", dynamic=False, fullgraph=False)

            def run(*args, **kwargs):
                if _get_current_dispatch_mode() is not None:  # e.g. bench's FLOP counter: count the eager ops
                    return fn(*args, **kwargs)
                torch.compiler.cudagraph_mark_step_begin()
                out = compiled(*args, **kwargs)
                return [(k.clone(), v.clone()) for k, v in out] if isinstance(out, list) else out.clone()
            return run

        self.world.predict = capture(self.world.predict)
        self.world.context_kv = capture(self.world.context_kv)
        self.tokenizer.decode_residual = capture(self.tokenizer.decode_residual)
        self.captured = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, name_or_path: str | Path = "default", device: str | torch.device = "cpu",
                    overrides: dict[str, Any] | None = None, weights: str | Path | None = None,
                    dtype: torch.dtype = torch.float32, threads: int | None = None) -> "Forecaster":
        """Builds from a named config (``deltaworld_core/configs/NAME.yaml``) or a YAML path.
        ``threads``: CPU threads for the model's kernels in this process
        (None or 0 = :func:`deltaworld_core.threads.auto_threads`, half the cores, 1-4)."""
        apply_threads(threads)  # validated before the slow loading
        cfg = load_config(name_or_path, overrides)
        if weights is not None:
            cfg.weights = str(weights)
        return cls.from_model_config(cfg, device=device, dtype=dtype, threads=threads)

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, threads: int | None = None) -> "Forecaster":
        threads = apply_threads(threads)  # before the VFM: its ONNX Runtime session takes the count
        models = load_models(cfg, device=device, dtype=dtype)
        cuda = torch.device(device).type == "cuda"
        if cuda and cfg.forecast.cuda_precision == "bf16":
            # The release validates with TF32 matmuls: the float32 parts (predictor, heads) use them.
            # Process-wide, as torch has it.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # On CUDA, forecast.quantize: bf16 also runs the VFM under bfloat16 autocast: measured on
        # CPU with the shipped default, mIoU -0.06% and depth RMSE +0.00% of fp32 (README, GPU).
        amp = torch.bfloat16 if cuda and _bf16_tokenizer(cfg, device) else None
        vfm = build_vfm(cfg.vfm, device=device, dtype=dtype, autocast=amp)
        return cls(cfg, vfm, *models, device=device)

    # ------------------------------------------------------------------ streaming
    def reset(self, reason: str | None = None) -> None:
        """Clears the rolling buffer and re-seeds sampling (a run after reset is reproducible)."""
        self._history: list[tuple[_Kept, tuple[_Kept, ...]]] = []  # recent frames and each one's context
        self._chain: tuple[_Kept, ...] = ()  # the newest frame's context, oldest first
        self._tokens: torch.Tensor | None = None  # [S, Dt] ([V, S, Dt] with V > 1 views): whole-frame token, deltas
        self._context_tokens: torch.Tensor | None = None  # [V, S, Dt]
        self._times: list[float] = []  # seconds relative to self._origin, one per context frame
        self._time_tensor: torch.Tensor | None = None  # [1, S] float64 on the device: the same times
        self._kv = None  # per layer (keys, values) [V, heads, S, d]
        self._features: torch.Tensor | None = None  # [V, N, C] newest frame
        self._origin: float | None = None
        self._last_stamp: float | None = None
        self._image_shape: tuple[int, ...] | None = None
        self.generator.manual_seed(self.cfg.forecast.seed)
        if reason is not None:
            self.resets += 1
            self.last_reset_reason = reason
            log.warning("forecaster buffer reset: %s", reason)

    @property
    def buffered(self) -> int:
        """Frames in the newest frame's context (a forecast needs ``context``)."""
        return len(self._times)

    def layout(self, shape: tuple[int, ...]) -> geometry.Layout:
        """The views and published map for camera frames of ``shape`` (H, W[, 3])."""
        return self._layout_pair(shape)[0]

    def _layout_pair(self, shape) -> tuple[geometry.Layout, geometry.Layout | None]:
        key = tuple(shape[:2])
        if key not in self._layouts:
            model = self.cfg.vfm.image_size
            main = geometry.layout(self.geometry, key, model, self.output_size)
            small = None if self.summary_size is None else geometry.layout(self.geometry, key, model,
                                                                             self.summary_size)
            self._layouts[key] = (main, small)
        return self._layouts[key]

    @staticmethod
    def _check_image(image: Any) -> None:
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image must be HxWx3, got shape {image.shape}")

    def _check_input(self, image: Any, stamp: Any) -> float:
        self._check_image(image)
        try:
            stamp = float(stamp)
        except (TypeError, ValueError) as err:
            raise ValueError(f"stamp must be a number of seconds, got {stamp!r}") from err
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        return stamp

    def _maybe_reset(self, shape: tuple[int, ...], stamp: float) -> None:
        # One rule for the live stream and for training data cut from recordings.
        reason = context_break(self._last_stamp, self._image_shape, stamp, shape, self.max_gap_s)
        if reason is not None:
            self.reset(reason)

    def _views(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Frames [T] of one shape -> VFM features [T, V, N, C] of their views."""
        lay = self.layout(images[0].shape)
        cuts = [geometry.cut_views(image, lay) for image in images]
        batch = cuts[0] if len(cuts) == 1 else np.concatenate(cuts)
        return self.vfm(batch).unflatten(0, (len(images), lay.num_views))

    def frame_features(self, image: np.ndarray) -> FrameFeatures:
        """The VFM stage of :meth:`step` alone (HxWx3 uint8 RGB -> :class:`FrameFeatures`). It
        reads no state of the stream, so it may run on another thread while :meth:`step` runs
        (:mod:`deltaworld_core.runner`: the next frame's VFM beside the current frame's rest)."""
        self._check_image(image)
        with torch.inference_mode():
            t0 = self._tick()
            features = self._views([image])[0]  # [V, N, C]
            return FrameFeatures(features, tuple(image.shape), (self._tick() - t0) * 1e3)

    def step(self, image: np.ndarray, stamp: float, features: FrameFeatures | None = None) -> Forecast | None:
        """Adds one frame (HxWx3 uint8 RGB, ``stamp`` seconds). Returns None until the newest
        frame's context holds ``context`` frames, then a :class:`Forecast` from that context.
        ``features``: this frame's :meth:`frame_features`, when already computed (its VFM time
        is then reported as the ``vfm`` stage and counted in ``total``)."""
        stamp = self._check_input(image, stamp)
        if features is not None and features.shape != tuple(image.shape):
            raise ValueError(f"features are of a {features.shape} frame, the image is {tuple(image.shape)}")
        self.last_reset_reason = None
        self._maybe_reset(image.shape, stamp)
        timings: dict[str, float] = {}
        with torch.inference_mode():
            if features is None:
                features = self.frame_features(image)
            t1 = self._tick()
            self._push(features.features, stamp, image.shape)  # encode(s) and the new tokens' K/V
            t2 = self._tick()
            timings.update(vfm=features.ms, encode=(t2 - t1) * 1e3)
            if self.buffered < self.context:
                return None
            forecast = self._forecast(stamp, timings)
        # The frame's model time: its VFM stage (here or on another thread) and the rest
        forecast.timings["total"] = features.ms + (self._tick() - t1) * 1e3
        return forecast

    def forecast_window(self, images: Sequence[np.ndarray], stamps: Sequence[float]) -> Forecast:
        """The batch path, recomputed from scratch as evaluation code does it: the VFM over every
        frame of ``images`` ([context, H, W, 3] uint8, ``stamps`` increasing seconds), the first
        frame encoded against black and every consecutive pair re-encoded, the predictor's context
        K/V rebuilt, then the same rollout as :meth:`step`. The streaming buffer is replaced by
        this window's (the sampler is re-seeded), so streaming may go on from it."""
        if len(images) != self.context or len(stamps) != len(images):
            raise ValueError(f"forecast_window needs context = {self.context} frames and as many stamps, "
                             f"got {len(images)} frames and {len(stamps)} stamps")
        stamps = [self._check_input(image, stamp) for image, stamp in zip(images, stamps)]
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise ValueError(f"stamps must increase, got {stamps}")
        if any(image.shape != images[0].shape for image in images):
            raise ValueError("forecast_window needs frames of one size")
        timings: dict[str, float] = {}
        with torch.inference_mode():
            t0 = self._tick()
            features = self._views(images)  # [context, V, N, C]
            t1 = self._tick()
            c, v = features.shape[:2]
            prev = torch.cat((self.vfm.black_features(v)[None], features[:-1]))
            tokens = self.tokenizer.encode(prev.flatten(0, 1), features.flatten(0, 1), self.grid)
            tokens = tokens.unflatten(0, (c, v)).transpose(0, 1)  # [V, context, Dt]: whole, deltas
            self.reset()
            self._origin = stamps[0]
            rel = [s - stamps[0] for s in stamps]
            times = torch.tensor([rel], dtype=torch.float64, device=self.device).expand(v, -1)
            kv = self.world.context_kv(tokens, times)
            t2 = self._tick()
            kept = []
            for i, (stamp, r) in enumerate(zip(stamps, rel)):
                frame = _Kept(stamp, r, features[i])
                token_kv = [(k[:, :, i:i + 1], val[:, :, i:i + 1]) for k, val in kv]
                if i == 0:
                    frame.whole, frame.whole_kv = tokens[:, 0], token_kv
                else:
                    frame.delta, frame.delta_kv = tokens[:, i], token_kv
                kept.append(frame)
                self._history.append((frame, tuple(kept)))
            self._prune(stamps[-1])
            self._set_context(tuple(kept), stamps[-1], images[-1].shape)
            timings.update(vfm=(t1 - t0) * 1e3, encode=(t2 - t1) * 1e3)
            forecast = self._forecast(stamps[-1], timings)
        forecast.timings["total"] = (self._tick() - t0) * 1e3
        return forecast

    def _predecessor(self, stamp: float) -> tuple[_Kept, tuple[_Kept, ...]] | None:
        """The kept frame the new frame's delta is encoded against, with its context: the previous
        frame (``context_spacing: frames``) or the kept frame whose distance back is nearest
        ``step_s`` among those at least (1 - SPACING_TOLERANCE) x step_s back (``step``); None
        when there is none (the frame starts a context of its own)."""
        if not self._history or self.context == 1:
            return None
        if self.context_spacing == "frames":
            return self._history[-1]
        least = (1 - SPACING_TOLERANCE) * self.step_s
        candidates = [entry for entry in self._history if stamp - entry[0].stamp >= least]
        return min(candidates, key=lambda e: abs(stamp - e[0].stamp - self.step_s), default=None)

    def _prune(self, stamp: float) -> None:
        """Keeps the frames a later frame may still be encoded against (with their contexts)."""
        if self.context_spacing == "frames":
            del self._history[:-1]
        else:  # a predecessor lies about step_s back: frames older than 2 steps never are one again
            self._history = [e for e in self._history if stamp - e[0].stamp <= 2 * self.step_s][-512:]

    def _push(self, features: torch.Tensor, stamp: float, shape) -> None:
        """Adds the newest frame's features [V, N, C] in the release's layout: its context is its
        predecessor's context plus itself (at most ``context`` frames, oldest first); only its
        delta against the predecessor and, when the context's oldest frame has none yet, that
        frame's whole-frame token are encoded (one encode call of at most two pairs per view),
        and only their K/V computed; the rest is cached per frame."""
        if self._origin is None:
            self._origin = stamp
        frame = _Kept(stamp, stamp - self._origin, features)
        parent = self._predecessor(stamp)
        chain = ((*parent[1], frame) if parent is not None else (frame,))[-self.context:]
        v = features.shape[0]
        prev, cur, slots = [], [], []
        if chain[0].whole is None:  # the context's oldest frame as a whole-frame token, at its own time
            prev.append(self.vfm.black_features(v))
            cur.append(chain[0].features)
            slots.append((chain[0], "whole"))
        if len(chain) > 1:
            prev.append(parent[0].features)
            cur.append(features)
            slots.append((frame, "delta"))
        # Filled on the device from host scalars: no host-to-device copy, so no wait on the GPU.
        times = torch.cat([torch.full((v, 1), owner.rel, dtype=torch.float64, device=self.device)
                           for owner, _ in slots], 1)  # [V, pairs]
        tokens = self.tokenizer.encode(torch.cat(prev), torch.cat(cur), self.grid).unflatten(0, (len(slots), v))
        kv = self.world.context_kv(tokens.transpose(0, 1), times)  # per layer [V, heads, pairs, d]
        for i, (owner, kind) in enumerate(slots):
            setattr(owner, kind, tokens[i])
            setattr(owner, f"{kind}_kv", [(k[:, :, i:i + 1], val[:, :, i:i + 1]) for k, val in kv])
        self._history.append((frame, chain))
        self._prune(stamp)
        self._set_context(chain, stamp, shape)

    def _set_context(self, chain: tuple[_Kept, ...], stamp: float, shape) -> None:
        """The newest frame's context, all fields together (oldest first): tokens [V, S, Dt] (the
        oldest frame's whole-frame token, then deltas; ``_tokens`` is [S, Dt] for one view), their
        times (seconds since the origin; as a list and as ``_time_tensor`` [1, S] float64 on the
        device), the predictor's K/V of them (per layer [V, heads, S, d]), the newest frame's
        features, stamp and image shape."""
        if len(chain) > self.context or chain[0].whole is None or any(f.delta is None for f in chain[1:]):
            raise AssertionError(f"rolling buffer out of step: {len(chain)} frames, context {self.context}")
        parts = [(chain[0].whole, chain[0].whole_kv)] + [(f.delta, f.delta_kv) for f in chain[1:]]
        tokens = torch.stack([t for t, _ in parts], dim=1)  # [V, S, Dt]
        self._kv = [(torch.cat([kv[layer][0] for _, kv in parts], 2), torch.cat([kv[layer][1] for _, kv in parts], 2))
                    for layer in range(len(parts[0][1]))]
        self._chain = chain
        self._context_tokens = tokens
        self._tokens = tokens[0] if tokens.shape[0] == 1 else tokens
        self._times = [f.rel for f in chain]
        self._time_tensor = torch.cat([torch.full((1, 1), f.rel, dtype=torch.float64, device=self.device)
                                       for f in chain], 1)
        self._features = chain[-1].features
        self._last_stamp, self._image_shape = stamp, shape

    def _forecast(self, stamp: float, timings: dict[str, float]) -> Forecast:
        k, horizon, n = self.k, self.horizon, self.publish_k
        rel = stamp - self._origin
        last, grid = self._features, self.grid
        v = last.shape[0]
        # Built on the device (no host-to-device copies inside a step)
        target = (torch.arange(1, horizon + 1, dtype=torch.float64, device=self.device)[None] * self.step_s
                  + rel).expand(v, -1)
        times = self._time_tensor.expand(v, -1)
        two = len(self._chain) >= 2
        reference = spread_reference(self.cfg.forecast, self._chain[-2].features if two else None, last,
                                     self._times[-1] - self._times[-2] if two else 0.0, self.step_s)
        residuals = rollout_residuals(self.tokenizer, self.world, self._context_tokens, times, last, target, k,
                                      self.generator, grid, kv=self._kv, timings=timings, tick=self._tick,
                                      spread=self.cfg.forecast.spread, mean_scale=self.cfg.forecast.mean_scale,
                                      spread_reference=reference)  # [V, K, H, n, C]
        t0 = self._tick()
        arrays, region = self._maps(last, residuals)
        timings["heads"] = (self._tick() - t0) * 1e3
        one = residuals[0] if v == 1 else residuals
        return Forecast(
            stamp=stamp,
            stamps=np.asarray([stamp + self.step_s * (h + 1) for h in range(horizon)], dtype=np.float64),
            semantic=arrays.pop("semantic"),
            depth=arrays.pop("depth"),
            class_names=list(self.class_names),
            summary=ForecastSummary(**arrays),
            timings=timings,
            residuals=one,
            build_features=lambda: self._features_of(last, residuals),
            region=region,
        )

    def _features_of(self, last: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        features = features_from_residuals(self.tokenizer, last, residuals, self.grid)  # [V, K, H, N, C]
        return features[0] if features.shape[0] == 1 else features

    def _maps(self, last: torch.Tensor, residuals: torch.Tensor) -> tuple[dict[str, np.ndarray], tuple]:
        """The published maps of one forecast, made on the forecaster's device and copied to the
        host once: the first ``publish_k`` hypotheses' class ids (uint8) and depth (float32) on the
        layout's canvas, and the summaries over all K (at ``summary_size`` when set, then resized
        to the canvas: the mode by nearest neighbour, the rest bilinearly)."""
        k, horizon, n = self.k, self.horizon, self.publish_k
        lay, small = self._layout_pair(self._image_shape)
        seg, depth = future_grid_maps(self.heads, self.tokenizer, last, residuals, self.grid)  # [V, K*H, ...]
        if small is None:  # the summaries need all K maps at the published size: publish a slice of them
            semantic, dep = upsample_views(seg, depth, lay)
            semantic, dep = semantic.unflatten(0, (k, horizon)), dep.unflatten(0, (k, horizon))
            summary = summary_tensors(semantic, dep, len(self.class_names))
            maps = {"semantic": semantic[:n], "depth": dep[:n]}
        else:
            semantic, dep = upsample_views(seg[:, :n * horizon], depth[:, :n * horizon], lay)
            maps = {"semantic": semantic.unflatten(0, (n, horizon)), "depth": dep.unflatten(0, (n, horizon))}
            all_sem, all_dep = upsample_views(seg, depth, small or lay)
            summary = summary_tensors(all_sem.unflatten(0, (k, horizon)), all_dep.unflatten(0, (k, horizon)),
                                      len(self.class_names))
            if small is not None and small.canvas != lay.canvas:
                summary = _resize_summary(summary, lay.canvas)
        maps["depth"] = maps["depth"].float()
        return to_host({**maps, **summary}), lay.region

    def _tick(self) -> float:
        if self.sync_timings and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _resize_summary(summary: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Summaries [H, h, w] -> [H, *size]: the mode (class ids) by nearest neighbour, the rest bilinearly."""
    out = {}
    for name, value in summary.items():
        x = value[:, None].float()
        if name == "semantic_mode":
            out[name] = F.interpolate(x, size=size, mode="nearest")[:, 0].to(torch.uint8)
        else:
            out[name] = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0]
    return out


def resolve_quantize(setting: str, device: str | torch.device = "cpu") -> str:
    """``forecast.quantize`` for ``device``: ``auto`` -> ``bf16`` where bfloat16 is native (a CPU
    with AVX512-BF16 or AMX-BF16, a CUDA device that supports it), else ``none``; any other setting
    as given. Decided on the machine at hand: an AVX2-only CPU emulates bfloat16, and there the
    default's step with a bf16 DeltaTok took about 3.5x the float32 one
    (results/bench_cpu_avx2_quantize_bf16.json against results/bench_cpu_avx2.json)."""
    if setting != "auto":
        return setting
    kind = torch.device(device).type
    if kind == "cpu":
        native = cpu_has_native_bf16()
    else:
        native = kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bf16" if native else "none"


def _bf16_tokenizer(cfg: ModelConfig, device) -> bool:
    """DeltaTok in bfloat16: ``forecast.quantize`` resolving to ``bf16`` anywhere, ``cuda_precision:
    bf16`` on CUDA."""
    return resolve_quantize(cfg.forecast.quantize, device) == "bf16" or (
        torch.device(device).type == "cuda" and cfg.forecast.cuda_precision == "bf16")


def build_models(cfg: ModelConfig) -> tuple[DeltaTok, DeltaWorld, TaskHeads]:
    """The trainable parts, randomly initialised, on CPU in fp32."""
    tokenizer = DeltaTok.from_config(cfg.tokenizer, feature_dim=cfg.vfm.embed_dim)
    world = DeltaWorld.from_config(cfg.world, token_dim=tokenizer.token_dim)
    heads = TaskHeads.from_config(cfg.heads, feature_dim=cfg.vfm.embed_dim)
    return tokenizer, world, heads


def load_models(cfg: ModelConfig, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[DeltaTok, DeltaWorld, TaskHeads]:
    """Tokenizer, world model and heads ready for inference: the config's weights loaded (or, with
    none, the same seeded random init every time), on ``device``/``dtype``, eval, frozen, and with
    ``forecast.quantize: int8`` their linear layers dynamically quantised (CPU only), with
    ``bf16`` the tokenizer in bfloat16."""
    if cfg.weights is not None:
        adopt_class_names(cfg, Path(cfg.weights) / WEIGHT_FILES["heads"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = build_models(cfg)
    if cfg.weights is not None:
        load_weights(cfg.weights, **dict(zip(WEIGHT_FILES, models)))
    else:
        log.warning("config %r has no trained weights: DeltaTok/DeltaWorld/heads are untrained", cfg.name)
    models = [m.to(device=device, dtype=dtype).eval().requires_grad_(False) for m in models]
    if resolve_quantize(cfg.forecast.quantize, device) == "int8":
        if torch.device(device).type != "cpu" or dtype != torch.float32:
            raise ValueError("forecast.quantize: int8 runs on CPU in float32 only")
        with warnings.catch_warnings():  # torch.ao's deprecation notice: still the built-in CPU path
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            models[:2] = [quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8) for m in models[:2]]
    elif _bf16_tokenizer(cfg, device):
        if torch.device(device).type == "cpu" and not cpu_has_native_bf16():
            log.warning("forecast.quantize: bf16 on a CPU without native bfloat16 (AVX512-BF16/AMX) is emulated "
                        "and slow; auto or none will be faster here")
        # DeltaTok casts its inputs to its own dtype and its outputs back, so the rest stays as is.
        models[0] = models[0].to(torch.bfloat16)
    return tuple(models)


def adopt_class_names(cfg: ModelConfig, heads_file: Path) -> None:
    """Class ids mean what the heads were trained on: a heads file that records its class names
    (safetensors metadata ``class_names``, JSON) overrides the config's list. Metadata that is not
    a valid list of names raises :class:`~deltaworld_core.checkpoint.CheckpointError`."""
    if not heads_file.is_file():
        return
    names = recorded_class_names(heads_file)
    if names and names != cfg.heads.class_names:
        log.info("using the %d class names recorded in %s", len(names), heads_file)
        cfg.heads.class_names = list(names)
        cfg.heads.validate()


def load_weights(folder: str | Path, **modules: torch.nn.Module) -> None:
    """Loads ``tokenizer``/``world``/``heads`` from ``folder``/<part>.safetensors strictly."""
    folder = Path(folder)
    problem = missing_weights(folder, {part: WEIGHT_FILES[part] for part in modules})
    if problem:
        raise CheckpointNotFoundError(problem)
    for part, module in modules.items():
        load_module(module, folder / WEIGHT_FILES[part])
