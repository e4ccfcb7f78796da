"""Frame folders: image files (``IMAGE_EXTS``) in file-name order, stamped by the folder's
``timestamps.txt`` (one time in seconds per frame)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..imaging import ImageError, compressed_kind, decode_image, file_header
from .refs import IMAGE_EXTS, MediaError, MediaRef, in_window, record_skip

log = logging.getLogger(__name__)


def image_files(path: Path) -> list[Path]:
    """The image files of a folder, sorted by name ([] for an unreadable folder)."""
    try:
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    except OSError:
        return []


HEADER_BYTES = 64 << 10  # enough for a PNG or PNM header and most JPEGs' (EXIF may push it further)


def frame_header_error(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be a frame, from its header alone (an empty file,
    another format, a declared size over the bounds), or None if its header is sound."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            try:
                file_header(head)
                return None
            except ImageError:
                if compressed_kind(head) != "jpeg" or len(head) < HEADER_BYTES:
                    raise
            file_header(head + f.read())  # a JPEG whose frame header lies past the first 64 KB
            return None
    except (OSError, ImageError) as err:
        return str(err)


def sound_frames(folder: Path, files: list[Path]) -> list[int]:
    """Indices of the ``files`` whose headers are sound (:func:`frame_header_error`); the others
    are logged in one line naming the folder and the first few files, and left out."""
    bad = [(i, why) for i, f in enumerate(files) if (why := frame_header_error(f)) is not None]
    if bad:
        shown = "; ".join(f"{files[i].name}: {why}" for i, why in bad[:3])
        log.warning("%s: skipped %d frame(s) that cannot be decoded (%s%s)", folder, len(bad), shown,
                    "; ..." if len(bad) > 3 else "")
    skip = {i for i, _ in bad}
    return [i for i in range(len(files)) if i not in skip]


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
        except (OSError, ImageError) as err:
            record_skip(ref, f"frame {f} ({err})")
            continue
        yield rgb, float(t)
