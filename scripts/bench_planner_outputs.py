"""What each planner-facing output adds to one forecast: milliseconds and bytes on the wire.

    python scripts/bench_planner_outputs.py [--repeats 20] [--json results/planner_outputs.json]

For the CPU default config's sizes (K 8, 3 steps, 112 x 112 squash maps of a 640 x 480 camera)
and the paper config's (K 20, 4 published, 3 steps, two_squares maps of a 1280 x 720 camera), a
forecast of known shape is made (smooth random classes, about a fifth of the pixels obstacle
classes; depth 2-20 m) and handed to the node's own output objects (deltaworld_ros.node_outputs,
planner_outputs) with the node's default parameters, every topic subscribed; each message they
publish is serialised as rclpy does when it publishes (``serialize_message``). ms = the median
over the repeats of publish + serialise on one thread; bytes = the serialised message(s) of one
forecast. Every planner output does this work only while someone subscribes to it (``active()``):
a node nobody listens to pays only the Futures message's camera_info (its own row).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
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
from deltaworld_core.bench import cpu_model  # noqa: E402
from deltaworld_core.camera_model import Pinhole  # noqa: E402
from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.forecaster import ForecastSummary  # noqa: E402
from deltaworld_core.geometry import layout  # noqa: E402
from deltaworld_core.runner import Frame  # noqa: E402
from deltaworld_ros.camera_info_input import MapGeometry  # noqa: E402
from deltaworld_ros.futures_msg import seconds_to_time  # noqa: E402
from deltaworld_ros.node_camera import CameraMeta  # noqa: E402
from deltaworld_ros.node_outputs import FuturesOutput  # noqa: E402
from deltaworld_ros.node_parameters import PARAMETERS  # noqa: E402
from deltaworld_ros.planner_msgs import camera_info_msg  # noqa: E402
from deltaworld_ros.planner_outputs import ObstacleClasses, ObstaclesOutput, RiskGridOutput, StepImagesOutput  # noqa: E402

# name: (config, camera frame (h, w))
CONFIGS = {"cpu_default": ("default", (480, 640)), "paper": ("paper", (720, 1280))}
# The node's defaults, but the camera's pose from the static mount (1.2 m up, looking along +x):
# this bench has no TF.
SETTINGS = {"risk_grid_use_tf": False, "camera_mount_xyz": [0.0, 0.0, 1.2]}


class RecordingPublisher:
    """A lifecycle publisher with one subscriber that keeps what is published."""

    def __init__(self, topic: str):
        self.topic_name, self.messages = topic, []

    def get_subscription_count(self) -> int:
        return 1

    def publish(self, msg) -> None:
        self.messages.append(msg)


class BenchNode:
    """The parts of forecast_node the outputs use: its parameters (defaults with ``settings``) and
    publishers that record."""

    def __init__(self, settings: dict):
        self.values = {**{name: default for name, (default, _) in PARAMETERS.items()}, **settings}
        self.publishers: list[RecordingPublisher] = []

    def param(self, name: str):
        return self.values[name]

    def get_logger(self):
        return logging.getLogger("bench_planner_outputs")

    def create_lifecycle_publisher(self, msg_type, topic: str, qos) -> RecordingPublisher:
        self.publishers.append(RecordingPublisher(topic))
        return self.publishers[-1]

    def destroy_lifecycle_publisher(self, publisher) -> None:
        pass

    def take(self) -> list:
        """Every message published since the last call."""
        messages = [m for p in self.publishers for m in p.messages]
        for p in self.publishers:
            p.messages = []
        return messages


def scene(k: int, steps: int, h: int, w: int, classes: list[str], region, rng) -> SimpleNamespace:
    """A forecast-shaped object: smooth random class regions and depth (the values do not change
    the work, the obstacle share does: about a fifth of the pixels are car or person)."""
    field = np.stack([cv2.resize(rng.random((6, 8), dtype=np.float32), (w, h)) for _ in range(k * steps)])
    semantic = np.zeros(field.shape, np.uint8)  # class 0 (sky) by default
    for name, (lo, hi) in zip(("car", "person"), ((0.0, 0.1), (0.9, 1.0))):
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
                           class_names=classes, summary=summary, k=k, horizon=steps, region=region)


def timed(publish, node: BenchNode, forecast, repeats: int) -> tuple[float, int, list]:
    """(median ms of publish + serialise, bytes of one forecast's messages, those messages). Each
    repeat gets a copy of ``forecast``: nothing computed for one forecast is reused."""
    times, size, messages = [], 0, []
    for _ in range(repeats):
        fresh = copy.copy(forecast)
        t0 = time.perf_counter()
        publish(fresh)
        messages = node.take()
        size = sum(len(serialize_message(m)) for m in messages)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), size, messages


def measure(name: str, repeats: int) -> dict:
    config_name, (fh, fw) = CONFIGS[name]
    cfg = load_config(config_name)
    fc = cfg.forecast
    lay = layout(fc.geometry, (fh, fw), tuple(cfg.vfm.image_size), tuple(fc.output_size))
    published = fc.publish_k or fc.k
    forecast = scene(published, fc.horizon, *lay.canvas, list(cfg.heads.class_names), lay.region,
                     np.random.default_rng(0))
    header = Header(stamp=seconds_to_time(forecast.stamp), frame_id="camera_optical_frame")
    frame = Frame(np.zeros((fh, fw, 3), np.uint8), forecast.stamp, 0.0, meta=CameraMeta(header, fh, fw))
    node = BenchNode(SETTINGS)
    geometry = MapGeometry(node)
    camera = Pinhole(0.8 * fw, 0.8 * fw, fw / 2 - 0.5, fh / 2 - 0.5, fw, fh)  # a 64 degree wide lens
    geometry.cache.add(camera_info_msg(camera, header))
    classes = ObstacleClasses(node)
    outputs = {"step_images": StepImagesOutput(node, fc.horizon, geometry),
               "obstacles": ObstaclesOutput(node, geometry, classes),
               "risk_grid": RiskGridOutput(node, geometry, classes)}
    row = {"config": config_name, "frame": [fh, fw], "geometry": fc.geometry, "canvas": list(lay.canvas),
           "k": fc.k, "published_k": published, "horizon": fc.horizon, "outputs": {}}
    for output_name, output in outputs.items():
        ms, size, messages = timed(lambda f, o=output: o.publish(f, frame), node, forecast, repeats)
        row["outputs"][output_name] = {"ms": round(ms, 3), "bytes": size, "messages": len(messages)}
        if output_name == "obstacles":
            row["outputs"][output_name]["points"] = sum(m.width for m in messages)
        if output_name == "risk_grid":
            row["outputs"][output_name]["cells"] = sum(len(m.data) for m in messages)
    # What every forecast pays, subscribed or not: the maps' intrinsics in the Futures message.
    ms, size, _ = timed(lambda f: node.publishers[-1].publish(camera_info_msg(geometry.camera(f, frame), header)),
                        node, forecast, repeats)
    row["outputs"]["futures_camera_info"] = {"ms": round(ms, 3), "bytes": size, "messages": 1}
    futures = FuturesOutput(node, geometry)
    ms, size, _ = timed(lambda f: futures.publish(f, frame), node, forecast, max(3, repeats // 4))
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
        "cpu": cpu_model(), "cores": os.cpu_count(), "repeats": args.repeats,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "parameters": {name: BenchNode(SETTINGS).param(name) for name in (
            "obstacle_classes", "obstacle_min_p", "obstacle_max_points", "risk_grid_max_points",
            "risk_grid_resolution", "risk_grid_size", "camera_mount_xyz", "camera_mount_rpy")},
        "note": "ms: publish + serialise per forecast, median, one thread; each planner output runs only while "
                "subscribed",
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
