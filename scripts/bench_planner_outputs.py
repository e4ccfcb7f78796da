"""What each planner-facing output adds to one forecast: milliseconds and bytes on the wire.

    python scripts/bench_planner_outputs.py [--repeats 20] [--json results/planner_outputs.json]

For the CPU default config's sizes (K 8, 3 steps, 112 x 112 squash maps of a 640 x 480 camera)
and the paper config's (K 20, 4 published, 3 steps, two_squares maps 192 px high of a 1280 x 720
camera), a forecast of known shape is made (smooth random classes, about a fifth of the pixels
obstacle classes; depth 2-20 m) and each output is built exactly as the node builds it, then
serialised as rclpy does when it publishes (``serialize_message``). ms = the median over the
repeats of build + serialise on one thread; bytes = the serialised message(s) of one forecast.
Every output does this work only while someone subscribes to it (``active()``): a node nobody
listens to pays none of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rclpy.serialization import serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from deltaworld_core import load_config  # noqa: E402
from deltaworld_core.camera_model import Pinhole, map_intrinsics  # noqa: E402
from deltaworld_core.forecaster import ForecastSummary  # noqa: E402
from deltaworld_core.geometry import layout  # noqa: E402
from deltaworld_core.planning import Transform, obstacle_points, risk_grid, stride_for  # noqa: E402
from deltaworld_ros.futures_msg import forecast_to_msg, seconds_to_time  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from deltaworld_ros.planner_msgs import camera_info_msg, grid_to_msg, obstacles_to_cloud  # noqa: E402

# name: (config, camera frame (h, w)); the node's defaults for the outputs' parameters
CONFIGS = {"cpu_default": ("default", (480, 640)), "paper": ("paper", (720, 1280))}
OBSTACLE_CLASSES = ("car", "person")
MAX_POINTS, GRID_MAX_POINTS, GRID_RESOLUTION, GRID_SIZE = 20000, 100000, 0.1, 10.0
MOUNT = Transform.from_rpy([0.0, 0.0, 1.2], [-np.pi / 2, 0.0, -np.pi / 2])


def scene(k: int, steps: int, h: int, w: int, classes: list[str], rng) -> SimpleNamespace:
    """A forecast-shaped object: smooth random class regions and depth (the values do not change
    the work, the obstacle share does: about a fifth of the pixels)."""
    field = np.stack([cv2.resize(rng.random((6, 8), dtype=np.float32), (w, h)) for _ in range(k * steps)])
    semantic = np.zeros(field.shape, np.uint8)  # class 0 (sky) by default
    for name, (lo, hi) in zip(OBSTACLE_CLASSES, ((0.0, 0.1), (0.9, 1.0))):
        semantic[(field >= lo) & (field < hi)] = classes.index(name)
    semantic[(field >= 0.1) & (field < 0.5)] = classes.index("road")
    semantic = semantic.reshape(k, steps, h, w)
    depth = (2.0 + 18.0 * field).astype(np.float32).reshape(k, steps, h, w)
    counts = np.stack([(semantic == c).sum(0) for c in range(len(classes))])
    summary = ForecastSummary(semantic_mode=counts.argmax(0).astype(np.uint8),
                              agreement=(counts.max(0) / k).astype(np.float32), depth_mean=depth.mean(0),
                              depth_std=depth.std(0))
    stamp = 1.7e9
    return SimpleNamespace(stamp=stamp, stamps=stamp + 0.2 * np.arange(1, steps + 1), semantic=semantic, depth=depth,
                           class_names=classes, summary=summary, k=k, horizon=steps)


def timed(build, repeats: int) -> tuple[float, int]:
    """(median ms of build + serialise, bytes of one forecast's messages)."""
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = sum(len(serialize_message(m)) for m in build())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), size


def measure(name: str, repeats: int) -> dict:
    config_name, frame = CONFIGS[name]
    cfg = load_config(config_name)
    fc = cfg.forecast
    lay = layout(fc.geometry, frame, tuple(cfg.vfm.image_size), tuple(fc.output_size))
    published = fc.publish_k or fc.k
    forecast = scene(published, fc.horizon, *lay.canvas, list(cfg.heads.class_names), np.random.default_rng(0))
    camera = map_intrinsics(Pinhole(0.8 * frame[1], 0.8 * frame[1], frame[1] / 2 - 0.5, frame[0] / 2 - 0.5,
                                    frame[1], frame[0]), lay)
    header = Header(stamp=seconds_to_time(forecast.stamp), frame_id="camera_optical_frame")
    ids = [cfg.heads.class_names.index(n) for n in OBSTACLE_CLASSES]
    k, steps, h, w = forecast.semantic.shape
    t_ahead = forecast.stamps - forecast.stamp
    s = forecast.summary
    outputs = {
        "step_images": lambda: [m for n in range(steps) for m in (
            array_to_image_msg(s.depth_mean[n], "32FC1", header), array_to_image_msg(s.depth_std[n], "32FC1", header),
            array_to_image_msg(s.semantic_mode[n], "mono8", header), camera_info_msg(camera, header))],
        "obstacles": lambda: [obstacles_to_cloud(obstacle_points(
            forecast.semantic, forecast.depth, camera, ids, t_ahead, stride=stride_for(steps, h, w, MAX_POINTS)),
            header)],
        "risk_grid": lambda: [grid_to_msg(risk_grid(
            forecast.semantic, forecast.depth, camera, ids, MOUNT, GRID_RESOLUTION, GRID_SIZE,
            stride=stride_for(k * steps, h, w, GRID_MAX_POINTS)), Header(stamp=header.stamp, frame_id="base_link"))],
        "futures_camera_info": lambda: [camera_info_msg(camera, header)],
    }
    row = {"config": config_name, "frame": list(frame), "geometry": fc.geometry, "canvas": list(lay.canvas),
           "k": fc.k, "published_k": published, "horizon": steps, "outputs": {}}
    for output, build in outputs.items():
        ms, size = timed(build, repeats)
        row["outputs"][output] = {"ms": round(ms, 3), "bytes": size}
    points = obstacle_points(forecast.semantic, forecast.depth, camera, ids, t_ahead,
                             stride=stride_for(steps, h, w, MAX_POINTS))
    row["outputs"]["obstacles"]["points"] = len(points)
    ms, size = timed(lambda: [forecast_to_msg(forecast, header, camera)], max(3, repeats // 4))
    row["futures"] = {"ms": round(ms, 3), "bytes": size}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write the results here (atomically)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    rows = [measure(name, args.repeats) for name in CONFIGS]
    result = {
        "command": "python scripts/bench_planner_outputs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "repeats": args.repeats,
        "parameters": {"obstacle_classes": list(OBSTACLE_CLASSES), "obstacle_max_points": MAX_POINTS,
                       "risk_grid_max_points": GRID_MAX_POINTS, "risk_grid_resolution": GRID_RESOLUTION,
                       "risk_grid_size": GRID_SIZE},
        "note": "ms: build + serialise per forecast, median, one thread; each output runs only while subscribed",
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
