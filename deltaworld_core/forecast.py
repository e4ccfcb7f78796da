"""Runs the streaming forecaster over a video and writes a picture per forecast.

    python -m deltaworld_core.forecast --video PATH --out DIR [--config default] [--max-frames N]
        [--threads N] [key.path=value ...]

Each picture (``DIR/forecast_NNNN.png``) shows the input with a legend (K and which samples are
drawn, class colours and names, the depth colour bar in metres), per step the semantic mode and
where the hypotheses disagree, the frame the video really shows at each target time beside the
mode drawn over it, and for the first hypotheses their semantic and depth futures; every label
gives its time in seconds after the input frame. A picture is written once the video has passed
its last target time (or the video ends: steps after its end say "not recorded"). Prints one
JSON summary line; bad input (a missing video, a bad config or override, unreadable weights) is
one line on stderr and exit status 2; a video too short for any forecast exits 1.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import statistics
import sys
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from .checkpoint import atomic_write
from .cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from .data import open_video
from .data.media import MediaError, expand_media, iter_frames
from .data.video import opens_directly
from .forecaster import Forecaster
from .viz import forecast_grid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True,
                        help="a recording: video file, folder of frames, rosbag2 bag (.mcap, .db3 or its folder), "
                             "tar shard sample, or a .txt/.csv list naming one (what train and evaluate take)")
    parser.add_argument("--topic", default=None,
                        help="a bag's image topic (default: the bag's only Image/CompressedImage topic)")
    parser.add_argument("--out", required=True, help="output folder for the PNGs (created if missing)")
    parser.add_argument("--config", default="default",
                        help="config name (deltaworld_core/configs/NAME.yaml) or YAML path")
    parser.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors "
                        "(default: the config's)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="read at most N frames of the video (the first forecast comes at frame `context`)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="write every N-th forecast")
    parser.add_argument("--fps", type=float, default=None, help="frame rate for a folder without timestamps")
    parser.add_argument("--hypotheses", type=int, default=4, metavar="N",
                        help="draw the first N of the K samples per picture")
    add_threads_argument(parser)
    add_overrides_argument(parser)
    return parser


class FutureFrames:
    """The recent frames of a recording, to show what really followed a forecast.

    A forecast is held until the video has passed its last target time, then each target gets
    the frame nearest to it (within half the frame interval, else None)."""

    def __init__(self, keep_s: float):
        self.keep_s = keep_s
        self.stamps: deque[float] = deque()
        self.images: deque[np.ndarray] = deque()

    def add(self, image: np.ndarray, stamp: float) -> None:
        self.stamps.append(stamp)
        self.images.append(image)
        while self.stamps and stamp - self.stamps[0] > self.keep_s:
            self.stamps.popleft()
            self.images.popleft()

    def covers(self, t: float) -> bool:
        return bool(self.stamps) and self.stamps[-1] >= t

    def nearest(self, targets) -> list[np.ndarray | None]:
        stamps = list(self.stamps)
        gap = statistics.median(np.diff(stamps)) if len(stamps) > 2 else float("inf")
        found = []
        for t in targets:
            i = bisect.bisect_left(stamps, t)
            best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t), default=None)
            found.append(self.images[best] if best is not None and abs(stamps[best] - t) <= gap / 2 + 1e-6 else None)
        return found


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(png.tobytes()))


def open_recording(entry: str, fps: float | None, topic: str | None):
    """The ``(rgb, stamp)`` frames of one recording: a video file or frame folder as before
    (``fps`` for a folder without timestamps), anything else through the readers train and
    evaluate use (:func:`~deltaworld_core.data.media.expand_media`), which must name exactly one
    stream. Raises ValueError (MediaError) naming what is wrong."""
    path = Path(entry)
    if opens_directly(path):
        return open_video(path, fps=fps)
    refs = expand_media([entry], topic)
    if len(refs) != 1:
        raise MediaError(f"{entry}: names {len(refs)} recordings ({', '.join(r.name for r in refs[:4])}"
                         f"{', ...' if len(refs) > 4 else ''}); forecast reads one: name it (or --topic)")
    return iter_frames(refs[0])


def run(args: argparse.Namespace) -> int:
    for name in ("max_frames", "every", "hypotheses"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not Path(args.video).exists():
        raise FileNotFoundError(f"video not found: {args.video}")
    overrides = parse_overrides(args.overrides)
    video = open_recording(args.video, args.fps, args.topic)  # fails on an unreadable one before the model loads
    forecaster = Forecaster.from_config(args.config, device=args.device, overrides=overrides, weights=args.weights,
                                        threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recent = FutureFrames(keep_s=forecaster.horizon * forecaster.step_s + 1.0)
    pending: deque = deque()  # (index, input image, forecast) waiting for the frames after them
    frames = forecasts = written = 0
    latencies = []

    def flush(until: float | None) -> None:
        nonlocal written
        while pending and (until is None or recent.covers(pending[0][2].stamps[-1])):
            index, image, forecast = pending.popleft()
            grid = forecast_grid(image, forecast, max_hypotheses=args.hypotheses,
                                 future_frames=recent.nearest(forecast.stamps))
            write_png(out / f"forecast_{index:04d}.png", grid)
            written += 1

    for image, stamp in video:
        if args.max_frames is not None and frames >= args.max_frames:
            break
        frames += 1
        recent.add(image, stamp)
        flush(stamp)
        forecast = forecaster.step(image, stamp)
        if forecast is None:
            continue
        latencies.append(forecast.timings["total"])
        if forecasts % args.every == 0:
            pending.append((forecasts, image, forecast))
        forecasts += 1
    flush(None)
    summary = {
        "frames": frames,
        "forecasts": forecasts,
        "pictures": written,
        "median_ms": statistics.median(latencies) if latencies else None,
        "threads": forecaster.threads,
        "resets": forecaster.resets,
        "out": str(out),
    }
    print(json.dumps(summary))
    if not forecasts:
        print(f"{args.prog}: no forecast: {frames} frames read, the first forecast needs context = "
              f"{forecaster.context}", file=sys.stderr)
    return 0 if forecasts else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body(args: argparse.Namespace) -> int:
        args.prog = parser.prog
        return run(args)

    return run_cli(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
