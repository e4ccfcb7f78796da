"""Runs the streaming forecaster over a video and writes a picture per forecast.

    python -m deltaworld_core.forecast --video PATH --out DIR [--config default] [--max-frames N]

Each picture (``DIR/forecast_NNNN.png``) shows the input, the per-step semantic mode and where
the hypotheses disagree, and for the first hypotheses their semantic and depth futures.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import cv2

from .checkpoint import atomic_write
from .config import parse_override
from .data import open_video
from .forecaster import Forecaster
from .viz import forecast_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.forecast", description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="video file (mp4/avi) or folder of frames")
    parser.add_argument("--out", required=True, help="output folder for the PNGs")
    parser.add_argument("--config", default="default", help="config name or YAML path")
    parser.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--every", type=int, default=1, help="write every N-th forecast")
    parser.add_argument("--fps", type=float, default=None, help="frame rate for a folder without timestamps")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. forecast.k=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = dict(parse_override(o) for o in args.overrides)
    forecaster = Forecaster.from_config(args.config, device=args.device, overrides=overrides, weights=args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = forecasts = 0
    latencies = []
    for image, stamp in open_video(args.video, fps=args.fps):
        if args.max_frames is not None and frames >= args.max_frames:
            break
        frames += 1
        forecast = forecaster.step(image, stamp)
        if forecast is None:
            continue
        latencies.append(forecast.timings["total"])
        if forecasts % args.every == 0:
            grid = forecast_grid(image, forecast)
            ok, png = cv2.imencode(".png", grid[..., ::-1])
            atomic_write(out / f"forecast_{forecasts:04d}.png", lambda tmp: Path(tmp).write_bytes(png.tobytes()))
        forecasts += 1
    summary = {
        "frames": frames,
        "forecasts": forecasts,
        "median_ms": statistics.median(latencies) if latencies else None,
        "resets": forecaster.resets,
        "out": str(out),
    }
    print(json.dumps(summary))
    return 0 if forecasts else 1


if __name__ == "__main__":
    sys.exit(main())
