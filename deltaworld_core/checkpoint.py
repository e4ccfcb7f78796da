"""Model files: safetensors written atomically, loaded strictly with clear errors.

Nothing here executes code from a file: safetensors only, or ``torch.load(weights_only=True)``
for the ``.pth``/``.bin`` formats other projects publish.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model; the message says how."""


def atomic_write(path: str | Path, write) -> Path:
    """Calls ``write(tmp_path)`` then renames onto ``path``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Writes tensors as safetensors (optionally cast, e.g. fp16 for shipping) atomically."""
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads safetensors, or a .pth/.bin/.pt with ``weights_only=True``; unwraps a
    ``{"state_dict": ...}``/``{"model": ...}`` container."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError, Exception) as err:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__}: {err})") from err
    for container in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def mismatch_report(missing: list[str], unexpected: list[str], mismatched: list[str], limit: int = 8) -> str:
    """'missing keys: a, b; unexpected keys: c; shape mismatch: ...' (first ``limit`` of each)."""
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Loads ``state`` into ``module`` requiring identical keys and shapes; casts dtypes to the
    module's. Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: "
                              + mismatch_report(missing, unexpected, mismatched))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_module(module: nn.Module, path: str | Path) -> nn.Module:
    load_state_strict(module, read_state(path), source=str(path))
    return module
