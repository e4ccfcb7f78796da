"""Video input: OpenCV-decoded files, frame folders, the bundled sample clips, clip sampling."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..imaging import ImageError, decode_image
from .folders import image_files, sound_frames
from .refs import IMAGE_EXTS, VIDEO_EXTS
from .samples import sample_video_paths  # noqa: F401 - part of this module's interface


class TruncatedVideoWarning(UserWarning):
    """A video file ended before the frame count its container declares (truncated or corrupt)."""


class VideoReader:
    """A video file (mp4/avi/...) decoded with OpenCV.

    Iterating yields ``(rgb uint8 [H, W, 3], stamp seconds)``; stamps are ``index / fps``. After
    a full pass, ``frames_read`` is how many frames decoded and ``claimed_frames`` how many the
    container declares (None if it does not say); fewer read than claimed warns with
    :class:`TruncatedVideoWarning`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        ok = cap.isOpened()
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) if ok else 0.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        ok = ok and cap.read()[0]
        cap.release()
        if not ok:
            raise ValueError(f"cannot decode video (corrupt or unsupported): {self.path}")
        if not self.fps > 0:
            raise ValueError(f"video has no valid frame rate: {self.path}")
        self._count = self.claimed_frames = count if count > 0 else None
        self.frames_read: int | None = None

    @property
    def num_frames(self) -> int:
        """Frame count; containers may misreport it, so fall back to counting by decoding."""
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / self.fps
                i += 1
            # Only a pass that reached the end gets here (a consumer that stops early does not).
            self.frames_read = i
            if self.claimed_frames is not None and i < self.claimed_frames:
                self._count = i  # what is really there, for num_frames from now on
                warnings.warn(f"{self.path}: truncated or corrupt video: read {i} of the {self.claimed_frames} "
                              "frames its container claims", TruncatedVideoWarning, stacklevel=2)
        finally:
            cap.release()

    def read_all(self, max_frames: int | None = None, stride: int = 1,
                 size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode every ``stride``-th frame (at most ``max_frames`` of them).

        Args:
            size: optional (h, w) to downscale each frame on load (area interpolation).
        Returns:
            frames uint8 [N, H, W, 3], stamps float64 [N].
        """
        return _collect(iter(self), max_frames, stride, size, self.path)


class FrameFolder:
    """A folder of png/jpg frames in sorted file-name order.

    Stamps come from ``timestamps.txt`` in the folder (one float seconds per line, one per
    frame) or, failing that, from ``fps``.
    """

    def __init__(self, path: str | Path, fps: float | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise ValueError(f"no png/jpg frames in {self.path}")
        ts = self.path / "timestamps.txt"
        if ts.is_file():
            self.stamps = np.loadtxt(ts, dtype=np.float64, ndmin=1)
            if len(self.stamps) != len(self.files):
                raise ValueError(f"{ts}: {len(self.stamps)} stamps for {len(self.files)} frames")
            if np.any(np.diff(self.stamps) <= 0):
                raise ValueError(f"{ts}: stamps must increase strictly")
            d = np.diff(self.stamps)
            self.fps = float(1.0 / np.median(d)) if len(d) else float(fps or 0.0)
        elif fps:
            self.fps = float(fps)
            self.stamps = np.arange(len(self.files), dtype=np.float64) / self.fps
        else:
            raise ValueError(f"{self.path}: no timestamps.txt, pass fps=")
        # an empty, foreign or oversized frame is left out (logged once), its stamp with it
        keep = sound_frames(self.path, self.files)
        if not keep:
            raise ValueError(f"{self.path}: none of its {len(self.files)} frames can be decoded")
        self.files, self.stamps = [self.files[i] for i in keep], self.stamps[keep]

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        for f, t in zip(self.files, self.stamps):
            try:
                rgb = read_rgb(f)
            except ValueError as err:  # a sound header over damaged pixels: the frame is lost alone
                warnings.warn(str(err), TruncatedVideoWarning, stacklevel=2)
                continue
            yield rgb, float(t)

    def read_all(self, max_frames: int | None = None, stride: int = 1,
                 size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`VideoReader.read_all`; only the selected files are decoded."""
        sel = list(zip(self.files, self.stamps))[::stride][:max_frames]
        return _collect(((read_rgb(f), t) for f, t in sel), None, 1, size, self.path)


def read_rgb(path: str | Path) -> np.ndarray:
    """Image file -> RGB uint8 [H, W, 3], its header checked before decoding
    (:func:`~deltaworld_core.imaging.decode_image`); raises ValueError naming the file for a
    missing, undecodable or oversized image."""
    try:
        return decode_image(np.fromfile(path, np.uint8))
    except (OSError, ImageError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def _collect(it, max_frames, stride, size, path):
    frames, stamps = [], []
    for i, (img, t) in enumerate(it):
        if max_frames is not None and len(frames) >= max_frames:
            break
        if i % stride:
            continue
        if size is not None and img.shape[:2] != tuple(size):
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(img)
        stamps.append(t)
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return np.stack(frames), np.asarray(stamps, np.float64)


def open_video(path: str | Path, fps: float | None = None) -> VideoReader | FrameFolder:
    """A :class:`FrameFolder` for directories, else a :class:`VideoReader`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, fps)
    return VideoReader(path)


def opens_directly(path: Path) -> bool:
    """Whether :func:`open_video` reads ``path`` as it is: a video file, or a folder of frames that
    is not a rosbag2 bag folder (its frame rate may then come from ``fps``). Anything else, and a
    path the system refuses, goes through :func:`~deltaworld_core.data.recordings.expand_media`,
    which names what is wrong with it."""
    try:
        return (path.is_file() and path.suffix.lower() in VIDEO_EXTS) or (
            path.is_dir() and not (path / "metadata.yaml").is_file() and bool(image_files(path)))
    except OSError:
        return False


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of ``num_frames`` frames sampled from videos held in memory.

    Each video is decoded once (optionally downscaled to ``size`` to save memory). A clip's
    gap between consecutive frames is ``gap`` seconds, or drawn uniformly per gap from
    ``gap_range`` (the paper's tokenizer uses 1/25..1/3 s); gaps are rounded to whole source
    frames, at least 1. Sampling is deterministic per ``(seed, index)``.

    Args:
        videos: paths (files or frame folders).
        num_frames: T.
        gap / gap_range: fixed gap or (min, max) range in seconds; exactly one of them.
        size: optional (h, w) to resize frames to on load.
        segment: (start_frac, end_frac) of each video to draw from (train / held-out split).
        clips_per_video: dataset length per video (clips are random, so any number works).
        seed: base seed.
    Item: dict(frames uint8 [T, H, W, 3], stamps float64 [T], video int).
    """

    def __init__(self, videos: Sequence[str | Path] | str | Path, num_frames: int = 2,
                 gap: float | None = None,
                 gap_range: tuple[float, float] | None = (1 / 25, 1 / 3),
                 size: tuple[int, int] | None = None,
                 segment: tuple[float, float] = (0.0, 1.0), clips_per_video: int = 100,
                 seed: int = 0, fps: float | None = None):
        if isinstance(videos, (str, Path)):
            videos = [videos]
        if gap is not None:
            gap_range = None
        if gap_range is None and gap is None:
            raise ValueError("pass gap= or gap_range=")
        if not 0 <= segment[0] < segment[1] <= 1:
            raise ValueError(f"segment must satisfy 0 <= start < end <= 1, got {segment}")
        self.num_frames, self.gap, self.gap_range = num_frames, gap, gap_range
        self.clips_per_video, self.seed = clips_per_video, seed
        self.videos = []              # (frames, stamps, fps) of the segment
        for p in videos:
            src = open_video(p, fps)
            frames, stamps = src.read_all(size=size)
            n = len(frames)
            a, b = int(round(segment[0] * n)), int(round(segment[1] * n))
            if b - a < num_frames:
                raise ValueError(f"{p}: segment {segment} has {b - a} frames < {num_frames}")
            self.videos.append((frames[a:b], stamps[a:b], src.fps))

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def gaps_in_frames(self, rng: np.random.Generator, fps: float) -> np.ndarray:
        """T-1 gaps as whole source frames (>= 1)."""
        k = self.num_frames - 1
        secs = (np.full(k, self.gap) if self.gap is not None
                else rng.uniform(*self.gap_range, size=k))
        return np.maximum(np.round(secs * fps).astype(np.int64), 1)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        v = index // self.clips_per_video
        frames, stamps, fps = self.videos[v]
        rng = np.random.default_rng([self.seed, index])
        gaps = self.gaps_in_frames(rng, fps)
        # Shrink the gaps if the clip would not fit (short segments), keeping them >= 1.
        while gaps.sum() >= len(frames) and gaps.max() > 1:
            gaps = np.maximum(gaps - 1, 1)
        span = int(gaps.sum())
        start = int(rng.integers(0, len(frames) - span))
        idx = start + np.concatenate([[0], np.cumsum(gaps)])
        return dict(frames=frames[idx], stamps=stamps[idx].astype(np.float64), video=v)
