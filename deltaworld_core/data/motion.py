"""Camera motion over real frames: a virtual camera moving inside a real (high-resolution) frame.

Robot video is dominated by ego-motion, which the few real clips offline show little of. A clip
here is made by moving a crop window along a smooth trajectory (pan, zoom, roll, a perspective
tilt) over a real still frame, or over a real clip on top of its own motion, with a slow
photometric drift (exposure, contrast, white balance). Every frame is a real texture, and the
change between frames is a plausible camera motion, so the codec and the predictor see unlimited
real content under the motion they must model.

A trajectory is drawn once per clip from a seeded generator (:func:`sample_trajectory`) and is a
deterministic function of time, so the same (seed, source) always renders the same frames (the
feature cache relies on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionConfig:
    """Ranges of the virtual camera's motion; rates are per second, so any fps gives the same motion.

    ``pan_speed``: crop-centre speed, fraction of the crop size per second; ``zoom_rate``: log-scale
    change per second; ``roll_speed``: degrees per second; ``perspective``: largest tilt (fraction
    of the crop's corner offsets); ``wobble``: amplitude of the hand-held shake on top (fraction of
    the crop size); ``crop_scale``: the crop's side as a fraction of the frame's shorter side;
    ``photometric``: largest exposure/contrast/colour drift over a clip (fraction).
    """

    pan_speed: tuple[float, float] = (0.0, 0.35)
    zoom_rate: float = 0.25
    roll_speed: float = 6.0
    perspective: float = 0.06
    wobble: float = 0.015
    crop_scale: tuple[float, float] = (0.45, 0.8)
    photometric: float = 0.08

    def validate(self) -> "MotionConfig":
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"motion.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 <= self.pan_speed[0] <= self.pan_speed[1] <= 2:
            raise ValueError(f"motion.pan_speed must satisfy 0 <= low <= high <= 2, got {self.pan_speed}")
        for key, top in (("zoom_rate", 1.0), ("roll_speed", 45.0), ("perspective", 0.3), ("wobble", 0.1),
                         ("photometric", 0.5)):
            if not 0 <= getattr(self, key) <= top:
                raise ValueError(f"motion.{key} must be in [0, {top}], got {getattr(self, key)}")
        return self


@dataclass(frozen=True)
class Trajectory:
    """The virtual camera as a function of time ``t`` (seconds from the clip's start)."""

    centre: tuple[float, float]  # start, fraction of the frame (x, y)
    velocity: tuple[float, float]  # crop sizes per second (x, y)
    side: float  # crop side, fraction of the frame's shorter side
    zoom_rate: float  # d log(scale) / dt
    roll0: float  # degrees
    roll_speed: float  # degrees per second
    tilt: tuple[float, float]  # perspective at t = 0 and its change per second
    wobble: tuple[float, float, float, float]  # amplitude, frequency (Hz), phase x, phase y
    gain: tuple[float, float, float]  # exposure drift per second, contrast drift per second, colour drift
    colour: tuple[float, float, float]  # per-channel gains at t = 0
    flip: bool

    def homography(self, t: float, src_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
        """3x3 map from output pixels to source pixels at time ``t``."""
        H, W = src_hw
        h, w = out_hw
        side = self.side * min(H, W) * math.exp(self.zoom_rate * t)
        amp, freq, px, py = self.wobble
        cx = (self.centre[0] * W + side * (self.velocity[0] * t + amp * math.sin(2 * math.pi * freq * t + px)))
        cy = (self.centre[1] * H + side * (self.velocity[1] * t + amp * math.sin(2 * math.pi * freq * t + py)))
        # Keep the crop inside the frame (clamped, not wrapped: a camera that reaches the edge stops).
        half = side / 2 * math.sqrt(2)  # room for any roll
        cx = min(max(cx, half), W - half) if W > 2 * half else W / 2
        cy = min(max(cy, half), H - half) if H > 2 * half else H / 2
        a = math.radians(self.roll0 + self.roll_speed * t)
        tilt = self.tilt[0] + self.tilt[1] * t
        # Output corners -> source corners: a rotated square crop, one side pinched by the tilt.
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
        corners[:, 0] *= 1 + tilt * corners[:, 1]  # top narrower than bottom (or the reverse): a tilt
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        src = (corners @ rot.T) * (side / 2) + [cx, cy]
        dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
        if self.flip:
            dst = dst[[1, 0, 3, 2]]
        return cv2.getPerspectiveTransform(dst.astype(np.float32), src.astype(np.float32))

    def photometric(self, t: float) -> tuple[float, float, np.ndarray]:
        """(exposure gain, contrast, per-channel gains) at ``t``."""
        exposure = 1.0 + self.gain[0] * t
        contrast = 1.0 + self.gain[1] * t
        colour = np.asarray(self.colour) * (1.0 + self.gain[2] * t)
        return exposure, contrast, colour


def sample_trajectory(rng: np.random.Generator, cfg: MotionConfig, duration: float) -> Trajectory:
    """A random smooth trajectory lasting ``duration`` seconds (drifts scaled so the whole clip
    stays within the configured ranges)."""
    speed = rng.uniform(*cfg.pan_speed)
    angle = rng.uniform(0, 2 * math.pi)
    side = rng.uniform(*cfg.crop_scale)
    d = max(duration, 1e-3)
    p = cfg.photometric
    return Trajectory(
        centre=(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)),
        velocity=(speed * math.cos(angle), speed * math.sin(angle)),
        side=side,
        zoom_rate=rng.uniform(-cfg.zoom_rate, cfg.zoom_rate),
        roll0=rng.uniform(-cfg.roll_speed, cfg.roll_speed) * 0.3,
        roll_speed=rng.uniform(-cfg.roll_speed, cfg.roll_speed),
        tilt=(rng.uniform(-cfg.perspective, cfg.perspective), rng.uniform(-cfg.perspective, cfg.perspective) / d),
        wobble=(rng.uniform(0, cfg.wobble), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
        gain=(rng.uniform(-p, p) / d, rng.uniform(-p, p) / d, rng.uniform(-p, p) / d),
        colour=tuple(rng.uniform(1 - p / 2, 1 + p / 2, 3)),
        flip=bool(rng.random() < 0.5),
    )


def render(frames: np.ndarray, stamps: np.ndarray, traj: Trajectory, out_hw: tuple[int, int]) -> np.ndarray:
    """Renders the virtual camera over real frames.

    Args:
        frames: uint8 RGB ``[T, H, W, 3]`` (one frame repeated for a still, or a real clip).
        stamps: seconds ``[T]`` from the clip's start (the trajectory's time).
        out_hw: output (h, w).
    Returns:
        uint8 ``[T, h, w, 3]``.
    """
    h, w = out_hw
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for i, (frame, t) in enumerate(zip(frames, stamps)):
        src, scale = _prescale(frame, traj.side * math.exp(traj.zoom_rate * float(t)), out_hw)
        m = traj.homography(float(t), frame.shape[:2], out_hw)
        m = np.diag([scale, scale, 1.0]) @ m
        img = cv2.warpPerspective(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        exposure, contrast, colour = traj.photometric(float(t))
        mean = img.mean()
        img = ((img - mean) * contrast + mean) * exposure * colour
        out[i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out


def _prescale(frame: np.ndarray, side_frac: float, out_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Area-downscales a large source so the crop spans ~1.5x the output: no aliasing from the warp.
    Returns (source, factor applied to source coordinates)."""
    H, W = frame.shape[:2]
    crop = side_frac * min(H, W)
    scale = min(1.0, 1.5 * max(out_hw) / max(crop, 1.0))
    if scale >= 0.95:
        return frame, 1.0
    small = cv2.resize(frame, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / W


def motion_energy(features) -> float:
    """Mean squared change between consecutive feature frames ``[T, N, C]``: how much a window moves
    (used to down-weight windows where nothing happens)."""
    f = features.float()
    if len(f) < 2:
        return 0.0
    return float((f[1:] - f[:-1]).pow(2).mean())
