"""Streaming forecaster: camera frames in, K plausible futures of semantics and depth out.

The context is laid out as the released predictor was trained and evaluated: for the newest
``context`` frames, the oldest one's *whole-frame token* (that frame encoded against an all-black
frame, at that frame's time) followed by the true delta tokens of the others (each frame encoded
against the one before it). Per new frame the work is constant: one VFM forward and one DeltaTok
encode call of at most two pairs (the new frame against its predecessor and, once the window is
full, the new oldest frame against black), and the predictor's keys/values of those two tokens.
The kept frames' features, the tokens, their times and the predictor's per-layer keys/values live
in a rolling buffer on the forecaster's device, so nothing else about the past is recomputed. A
forecast is :func:`deltaworld_core.rollout.rollout` (shared with evaluation) over that context.
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

from .checkpoint import CheckpointNotFoundError, load_module
from .config import ModelConfig, load_config
from .deltatok import DeltaTok
from .heads import TaskHeads, recorded_class_names
from .rollout import features_from_residuals, rollout_residuals, spread_reference
from .threads import apply_threads
from .vfm import build_vfm
from .world import DeltaWorld

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
    semantic: np.ndarray  # [K, H, h, w] uint8 class ids
    depth: np.ndarray  # [K, H, h, w] float32 metres
    class_names: list[str]
    summary: ForecastSummary
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    # The decoder's residuals [K, H, n, C] at its pooled grid, and how to build full features from them
    residuals: torch.Tensor | None = field(default=None, repr=False)
    build_features: Callable[[], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def features(self) -> torch.Tensor:
        """[K, H, N, C] predicted VFM features, built on first access: the maps above never need
        them at full resolution, so a forecast does not pay for them unless asked."""
        if self.build_features is None:
            raise ValueError("this forecast carries no features")
        return self.build_features()

    @property
    def k(self) -> int:
        return self.semantic.shape[0]

    @property
    def horizon(self) -> int:
        return self.semantic.shape[1]


def summarize(semantic: torch.Tensor, depth: torch.Tensor, num_classes: int) -> ForecastSummary:
    """semantic [K, H, h, w] (int), depth [K, H, h, w] -> per-step mode/agreement/mean/std."""
    k = semantic.shape[0]
    counts = torch.zeros((num_classes, *semantic.shape[1:]), dtype=torch.int32, device=semantic.device)
    counts.scatter_add_(0, semantic.long(), torch.ones_like(semantic, dtype=torch.int32))
    top, mode = counts.max(dim=0)
    depth = depth.float()
    mean = depth.mean(0)
    # Spelled out: torch's std/var_mean over the leading dim took 30x longer here (bench).
    std = (depth - mean).square().mean(0).sqrt()
    return ForecastSummary(
        semantic_mode=mode.to(torch.uint8).cpu().numpy(),
        agreement=(top.float() / k).cpu().numpy(),
        depth_mean=mean.cpu().numpy(),
        depth_std=std.cpu().numpy(),
    )


def future_maps(heads: TaskHeads, tokenizer: DeltaTok, last: torch.Tensor, residuals: torch.Tensor,
                grid: tuple[int, int], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads on K x H futures given as decoder residuals: last features [1, N, C], residuals
    [K, H, n, C] -> (class ids [K, H, h, w] uint8, depth [K, H, h, w] metres).

    The heads are linear up to their last step and the decoder adds upsampled residuals, so each
    future's logits are the last frame's plus its residuals' logits, upsampled and summed along
    the horizon: the heads read [K*H, n, C] at the decoder's grid instead of [K*H, N, C]."""
    k, horizon = residuals.shape[:2]
    affine = heads.affine()  # the BatchNorms folded once for both uses
    change = heads.logits_change(residuals.flatten(0, 1), affine)  # [K*H, n, L]
    change = tokenizer.upsample_residual(change, grid).unflatten(0, (k, horizon))  # [K, H, N, L]
    logits = heads.logits(last, affine)[:, None] + change.cumsum(dim=1)  # [K, H, N, L]
    semantic, depth = heads.maps(logits.flatten(0, 1), grid, size)
    return semantic.unflatten(0, (k, horizon)), depth.unflatten(0, (k, horizon))


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
        self.max_gap_s = fc.max_gap_s
        self.output_size = tuple(fc.output_size or cfg.vfm.image_size)
        self.class_names = list(cfg.heads.class_names)
        self.grid = tuple(vfm.grid)
        self.generator = torch.Generator(device=self.device)
        # Per-stage timings wait for the GPU (CUDA-synchronised); False lets the host queue a
        # whole step ahead, and then only the published maps wait for the device.
        self.sync_timings = self.device.type == "cuda"
        self.resets = 0
        self.last_reset_reason: str | None = None
        self.reset()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, name_or_path: str | Path = "default", device: str | torch.device = "cpu",
                    overrides: dict[str, Any] | None = None, weights: str | Path | None = None,
                    dtype: torch.dtype = torch.float32, threads: int | None = None) -> "Forecaster":
        """Builds from a named config (``deltaworld_core/configs/NAME.yaml``) or a YAML path.
        ``weights`` (a folder of tokenizer/world/heads .safetensors) overrides the config's.
        ``threads``: CPU threads of the process's torch and the VFM's ONNX Runtime session
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
        # On CUDA, forecast.quantize: bf16 also runs the VFM under bfloat16 autocast: measured on
        # CPU with the shipped default, mIoU -0.06% and depth RMSE +0.00% of fp32 (README, GPU).
        amp = torch.bfloat16 if torch.device(device).type == "cuda" and cfg.forecast.quantize == "bf16" else None
        vfm = build_vfm(cfg.vfm, device=device, dtype=dtype, autocast=amp)
        return cls(cfg, vfm, *models, device=device)

    # ------------------------------------------------------------------ streaming
    def reset(self, reason: str | None = None) -> None:
        """Clears the rolling buffer and re-seeds sampling (a run after reset is reproducible)."""
        self._tokens: torch.Tensor | None = None  # [S, Dt]: whole-frame token, then S - 1 deltas
        self._times: list[float] = []  # seconds relative to self._origin, one per kept frame
        self._time_tensor: torch.Tensor | None = None  # [1, S] float64 on the device: the same times
        self._kv = None  # per layer (keys, values) [1, heads, S, d]
        self._frames: torch.Tensor | None = None  # [S, N, C] features of the kept frames, oldest first
        self._features: torch.Tensor | None = None  # [1, N, C] newest frame
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
        return len(self._times)

    def _check_input(self, image: Any, stamp: Any) -> float:
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image must be HxWx3, got shape {image.shape}")
        try:
            stamp = float(stamp)
        except (TypeError, ValueError) as err:
            raise ValueError(f"stamp must be a number of seconds, got {stamp!r}") from err
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        return stamp

    def _maybe_reset(self, shape: tuple[int, ...], stamp: float) -> None:
        if self._last_stamp is None:
            return
        if shape != self._image_shape:
            self.reset(f"image size changed from {self._image_shape[:2]} to {shape[:2]}")
        elif stamp <= self._last_stamp:
            self.reset(f"stamp {stamp:.6f} s does not increase (last {self._last_stamp:.6f} s)")
        elif stamp - self._last_stamp > self.max_gap_s:
            self.reset(f"gap {stamp - self._last_stamp:.3f} s exceeds max_gap_s {self.max_gap_s}")

    def step(self, image: np.ndarray, stamp: float) -> Forecast | None:
        """Adds one frame (HxWx3 uint8 RGB, ``stamp`` seconds). Returns None until ``context``
        frames are buffered, then a :class:`Forecast` from the newest ``context`` frames."""
        stamp = self._check_input(image, stamp)
        self.last_reset_reason = None
        self._maybe_reset(image.shape, stamp)
        timings: dict[str, float] = {}
        with torch.inference_mode():
            t0 = self._tick()
            features = self.vfm(image[None])  # [1, N, C]
            t1 = self._tick()
            self._push(features, stamp, image.shape)  # encode(s) and the new tokens' K/V
            t2 = self._tick()
            timings.update(vfm=(t1 - t0) * 1e3, encode=(t2 - t1) * 1e3)
            if self.buffered < self.context:
                return None
            forecast = self._forecast(stamp, timings)
        forecast.timings["total"] = (self._tick() - t0) * 1e3
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
        timings: dict[str, float] = {}
        with torch.inference_mode():
            t0 = self._tick()
            features = self.vfm(np.stack(images))  # [context, N, C]
            t1 = self._tick()
            prev = torch.cat((self.vfm.black_features(1), features[:-1]))
            tokens = self.tokenizer.encode(prev, features, self.grid)  # [context, Dt]: whole, deltas
            self.reset()
            self._origin = stamps[0]
            rel = [s - stamps[0] for s in stamps]
            times = torch.tensor([rel], dtype=torch.float64, device=self.device)
            kv = self.world.context_kv(tokens[None], times)
            t2 = self._tick()
            self._set_buffer(tokens, rel, times, kv, features, stamps[-1], images[-1].shape)
            timings.update(vfm=(t1 - t0) * 1e3, encode=(t2 - t1) * 1e3)
            forecast = self._forecast(stamps[-1], timings)
        forecast.timings["total"] = (self._tick() - t0) * 1e3
        return forecast

    def _push(self, features: torch.Tensor, stamp: float, shape) -> None:
        """Adds the newest frame's features [1, N, C] to the rolling buffer in the release's
        layout. Only the new tokens are encoded and only their K/V computed; the rest is cached."""
        if self._origin is None:
            self._origin = stamp
        rel = stamp - self._origin
        black = self.vfm.black_features(1)
        # Filled on the device from a host scalar: no host-to-device copy, so no wait on the GPU.
        times = torch.full((1, 1), rel, dtype=torch.float64, device=self.device)
        if self._frames is None or self.context == 1:  # the only frame: its whole-frame token
            token = self.tokenizer.encode(black, features, self.grid)  # [1, Dt]
            self._set_buffer(token, [rel], times, self.world.context_kv(token[None], times), features, stamp, shape)
            return
        if self.buffered < self.context:  # the window grows: one more true delta
            delta = self.tokenizer.encode(self._frames[-1:], features, self.grid)  # [1, Dt]
            kv = [(torch.cat((k, nk), 2), torch.cat((v, nv), 2))
                  for (k, v), (nk, nv) in zip(self._kv, self.world.context_kv(delta[None], times))]
            self._set_buffer(torch.cat((self._tokens, delta)), self._times + [rel],
                             torch.cat((self._time_tensor, times), 1), kv, torch.cat((self._frames, features)),
                             stamp, shape)
            return
        # The window slides: the oldest frame leaves, the next one becomes the first token and is
        # re-encoded against black at its own time; its old delta token and K/V are replaced.
        frames, kept_times = torch.cat((self._frames[1:], features)), self._times[1:] + [rel]
        pair = self.tokenizer.encode(torch.cat((black, self._frames[-1:])), torch.cat((frames[:1], features)),
                                     self.grid)  # [2, Dt]: whole-frame token of the new oldest, new delta
        pair_times = torch.cat((self._time_tensor[:, 1:2], times), 1)  # [1, 2]: the new oldest's, the new
        pair_kv = self.world.context_kv(pair[None], pair_times)  # per layer [1, heads, 2, d]
        kv = [(torch.cat((nk[:, :, :1], k[:, :, 2:], nk[:, :, 1:]), 2),
               torch.cat((nv[:, :, :1], v[:, :, 2:], nv[:, :, 1:]), 2))
              for (k, v), (nk, nv) in zip(self._kv, pair_kv)]
        tokens = torch.cat((pair[:1], self._tokens[2:], pair[1:]))
        self._set_buffer(tokens, kept_times, torch.cat((self._time_tensor[:, 1:], times), 1), kv, frames, stamp,
                         shape)

    def _set_buffer(self, tokens: torch.Tensor, times: list[float], time_tensor: torch.Tensor, kv,
                    frames: torch.Tensor, stamp: float, shape) -> None:
        """The rolling buffer, all fields together (at most ``context`` entries, oldest first):
        tokens [S, Dt] (the oldest frame's whole-frame token, then deltas), their times (seconds
        since the origin; as a list and as ``time_tensor`` [1, S] float64 on the device), the
        predictor's K/V of them (per layer [1, heads, S, d]), the kept
        frames' features [S, N, C], and the newest frame's stamp and image shape."""
        if tokens.shape[0] > self.context or len(times) != tokens.shape[0] or frames.shape[0] != tokens.shape[0]:
            raise AssertionError(f"rolling buffer out of step: {tokens.shape[0]} tokens, {len(times)} times, "
                                 f"{frames.shape[0]} frames, context {self.context}")
        self._tokens, self._times, self._time_tensor, self._kv = tokens, times, time_tensor, kv
        self._frames, self._features = frames, frames[-1:]
        self._last_stamp, self._image_shape = stamp, shape

    def _forecast(self, stamp: float, timings: dict[str, float]) -> Forecast:
        k, horizon = self.k, self.horizon
        rel = stamp - self._origin
        # Built on the device (no host-to-device copies inside a step)
        target = torch.arange(1, horizon + 1, dtype=torch.float64, device=self.device)[None] * self.step_s + rel
        times = self._time_tensor
        last, grid = self._features, self.grid
        two = self._frames.shape[0] >= 2
        reference = spread_reference(self.cfg.forecast, self._frames[-2:-1] if two else None, last,
                                     self._times[-1] - self._times[-2] if two else 0.0, self.step_s)
        residuals = rollout_residuals(self.tokenizer, self.world, self._tokens[None], times, last, target, k,
                                      self.generator, grid, kv=self._kv, timings=timings, tick=self._tick,
                                      spread=self.cfg.forecast.spread, mean_scale=self.cfg.forecast.mean_scale,
                                      spread_reference=reference)[0]
        t0 = self._tick()
        semantic, depth = future_maps(self.heads, self.tokenizer, last, residuals, grid, self.output_size)
        summary = summarize(semantic, depth, len(self.class_names))
        semantic_np, depth_np = semantic.cpu().numpy(), depth.float().cpu().numpy()
        timings["heads"] = (self._tick() - t0) * 1e3
        return Forecast(
            stamp=stamp,
            stamps=np.asarray([stamp + self.step_s * (h + 1) for h in range(horizon)], dtype=np.float64),
            semantic=semantic_np,
            depth=depth_np,
            class_names=list(self.class_names),
            summary=summary,
            timings=timings,
            residuals=residuals,
            build_features=lambda: features_from_residuals(self.tokenizer, last, residuals[None], grid)[0],
        )

    def _tick(self) -> float:
        if self.sync_timings and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


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
    if cfg.forecast.quantize == "int8":
        if torch.device(device).type != "cpu" or dtype != torch.float32:
            raise ValueError("forecast.quantize: int8 runs on CPU in float32 only")
        with warnings.catch_warnings():  # torch.ao's deprecation notice: still the built-in CPU path
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            models[:2] = [quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8) for m in models[:2]]
    elif cfg.forecast.quantize == "bf16":
        if torch.device(device).type == "cpu" and not _cpu_has_bf16():
            log.warning("forecast.quantize: bf16 on a CPU without native bfloat16 (AVX512-BF16/AMX) is emulated "
                        "and slow; int8 or none will be faster here")
        # DeltaTok casts its inputs to its own dtype and its outputs back, so the rest stays as is.
        models[0] = models[0].to(torch.bfloat16)
    return tuple(models)


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe: absent in some builds
        return False


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
    missing = [part for part in modules if not (folder / WEIGHT_FILES[part]).is_file()]
    if missing and len(missing) < len(modules):  # a training run that has not finished every stage
        raise CheckpointNotFoundError(
            f"{folder} has no {', '.join(WEIGHT_FILES[p] for p in missing)}: stage(s) {', '.join(missing)} not "
            f"trained yet (train them into this folder, e.g. python -m deltaworld_core.train --config "
            f"deltaworld_core/configs/train_{missing[0]}.yaml out={folder})")
    if missing:
        raise CheckpointNotFoundError(f"weights folder {folder} holds none of "
                                      f"{', '.join(WEIGHT_FILES[p] for p in missing)}")
    for part, module in modules.items():
        load_module(module, folder / WEIGHT_FILES[part])
