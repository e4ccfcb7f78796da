"""Frame folders: image files (``IMAGE_EXTS``) in file-name order, stamped by the folder's
``timestamps.txt`` (one time in seconds per frame)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..imaging import decode_image
from .refs import IMAGE_EXTS, MediaError, MediaRef, in_window, record_skip


def image_files(path: Path) -> list[Path]:
    """The image files of a folder, sorted by name ([] for an unreadable folder)."""
    try:
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    except OSError:
        return []


def folder_stamps(ref: MediaRef, frames: int) -> np.ndarray:
    """float64 [frames] stamps of a frame folder's ``timestamps.txt`` (MediaError if unusable)."""
    if not frames:
        raise MediaError(f"{ref.name}: no png/jpg frames in the folder")
    try:
        stamps = np.loadtxt(Path(ref.path) / "timestamps.txt", dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as err:
        raise MediaError(f"{ref.name}: unreadable timestamps.txt ({err})") from err
    if len(stamps) != frames:
        raise MediaError(f"{ref.name}: timestamps.txt has {len(stamps)} stamps for {frames} frames")
    return stamps


def folder_span(ref: MediaRef) -> tuple[float, float]:
    """The min and max of ``timestamps.txt``."""
    stamps = folder_stamps(ref, len(image_files(Path(ref.path))))
    return float(stamps.min()), float(stamps.max())


def folder_frames(ref: MediaRef, max_side: int | None, start_s: float | None = None,
                  stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames of a frame folder stamped in ``[start_s, stop_s)`` (the others never read);
    a frame that does not decode is skipped and counted on ``ref``."""
    files = image_files(Path(ref.path))
    stamps = folder_stamps(ref, len(files))
    for f, t in zip(files, stamps):
        if not in_window(float(t), start_s, stop_s):
            continue  # never read from disk
        try:
            rgb = decode_image(np.fromfile(f, np.uint8), max_side)
        except OSError:
            rgb = None
        if rgb is None:
            record_skip(ref, f"frame {f.name} (does not decode)")
            continue
        yield rgb, float(t)
