"""Model files: safetensors written atomically, loaded strictly with clear errors.

Nothing here executes code from a file: safetensors only, or ``torch.load(weights_only=True)``
for the ``.pth``/``.bin`` formats other projects publish.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model; the message says how."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The model file does not exist (also a FileNotFoundError, for callers that catch that)."""


def missing_weights(folder: str | Path, files: dict[str, str]) -> str | None:
    """Why ``folder`` cannot give every part of ``files`` (part -> file name, e.g. tokenizer ->
    tokenizer.safetensors), in one line naming what is missing, or None when every file is there."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"weights folder {folder} does not exist (or is not a folder)"
    missing = [part for part, name in files.items() if not (folder / name).is_file()]
    if not missing:
        return None
    names = ", ".join(files[part] for part in missing)
    if len(missing) == len(files):
        return f"weights folder {folder} holds none of {names}"
    # a training run that has not finished every stage
    return (f"{folder} has no {names}: stage(s) {', '.join(missing)} not trained yet (train them into this "
            f"folder, e.g. python -m deltaworld_core.train --config deltaworld_core/configs/train_{missing[0]}.yaml "
            f"out={folder})")


# The temporary name atomic_write gives a file before renaming it: ".NAME.XXXXXXXX.tmp", the X
# drawn by tempfile.mkstemp from [a-z0-9_]. A process killed between the two (kill -9, power loss)
# leaves one behind; remove_atomic_leftovers finds them by this name.
_ATOMIC_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


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


def remove_atomic_leftovers(folder: str | Path) -> list[Path]:
    """Deletes the temporary files that :func:`atomic_write` left in ``folder`` (not its subfolders)
    when its process was killed mid-write; returns them. Only for a folder whose writer is not
    running: a live write's temporary file looks the same."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = sorted(p for p in folder.iterdir() if _ATOMIC_TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink())
    for tmp in gone:
        tmp.unlink(missing_ok=True)
    return gone


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


_ADVICE = ("weights_only", "torch.load", "trust", "safe_globals", "documentation", "Weights only load failed")


def _load_error(err: BaseException) -> str:
    """What went wrong reading a model file, in one line, without torch's advice to retry with
    ``weights_only=False`` or to allow-list globals (either would run code from an untrusted file)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch colours parts of its messages
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in text:
        called = re.search(r"GLOBAL ([\w.]+)", text)
        if called:  # the restricted unpickler refused to import a callable
            return ("refused: it holds pickled Python objects, not only tensors, and loading them would run code "
                    f"from the file (it calls {called[1]}); re-save it as safetensors")
        causes = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in text.splitlines()
                  if line.strip() and not any(word in line for word in _ADVICE)]
        return f"corrupt or unreadable checkpoint (not a valid tensor pickle: {(causes or ['no detail'])[0][:200]})"
    if isinstance(err, SafetensorError):
        return f"not a valid safetensors file, truncated or corrupt ({text.splitlines()[0] if text else 'no detail'})"
    if isinstance(err, MemoryError):
        return "declares more data than fits in memory (corrupt or hostile header)"
    first = next((line.strip() for line in text.splitlines() if line.strip() and not any(w in line for w in _ADVICE)),
                 "")
    return f"corrupt or unreadable checkpoint ({type(err).__name__}{': ' + first[:200] if first else ''})"


def read_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The object stored in a model file, never executing code from it: safetensors, or a
    ``.pth``/``.bin``/``.pt`` through ``torch.load(weights_only=True)``. Every failure is a
    :class:`CheckpointError` naming the file (``what``: how to call it, e.g. "VFM checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{what} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever a hostile file raises, report it the same way
        raise CheckpointError(f"{what} {path}: {_load_error(err)}") from err


def read_state(path: str | Path, containers: tuple[str, ...] = ("state_dict", "model", "module"),
               what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Reads safetensors, or a .pth/.bin/.pt with ``weights_only=True``; unwraps a
    ``{"state_dict": ...}``/``{"model": ...}`` container (``containers``, tried in order)."""
    state = read_file(path, what)
    for container in containers:
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{what} {path}: not a state dict of tensors")
    return state


def check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str,
                  limit: int = 4) -> dict[str, torch.Tensor]:
    """``state`` cast to the dtypes of ``expected`` (the model's own state dict), after checking
    that each tensor is of the model's kind (floating point where the model is, integer where it
    is) and that no value is NaN or infinite after the cast. Keys outside ``expected`` pass through.
    Raises :class:`CheckpointError` naming the first ``limit`` offending keys."""
    wrong_kind, non_finite, cast = [], [], {}
    for key, value in state.items():
        own = expected.get(key)
        if own is None:
            cast[key] = value
            continue
        if value.is_complex() or value.is_floating_point() != own.is_floating_point() or (
                (value.dtype == torch.bool) != (own.dtype == torch.bool)):
            wrong_kind.append(f"{key} is {str(value.dtype).removeprefix('torch.')}, model has "
                              f"{str(own.dtype).removeprefix('torch.')}")
            continue
        value = value.to(own.dtype)
        if value.is_floating_point():
            bad = value.numel() - int(torch.isfinite(value).sum())
            if bad:
                non_finite.append(f"{key} ({bad} of {value.numel()})")
        cast[key] = value
    problems = []
    for label, items in (("wrong dtype", wrong_kind), ("NaN/inf values", non_finite)):
        if items:
            more = f", ... ({len(items)} tensors in all)" if len(items) > limit else ""
            problems.append(f"{label}: " + ", ".join(items[:limit]) + more)
    if problems:
        raise CheckpointError(f"{source}: unusable weights: " + "; ".join(problems))
    return cast


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
    module's. Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys, or
    tensors of the wrong kind or with NaN/inf values (:func:`check_weights`)."""
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
    module.load_state_dict(check_weights(state, expected, source), strict=True)


def load_module(module: nn.Module, path: str | Path) -> nn.Module:
    """``module`` with the state dict of the file at ``path`` loaded strictly (see above)."""
    load_state_strict(module, read_state(path), source=str(path))
    return module
