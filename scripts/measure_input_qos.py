"""How many camera frames reach forecast_node over DDS, per camera setting and image size.

Starts the real node with its shipped input settings (a tiny random-weight model, so the model
never limits what the callback sees, yet it forecasts every frame it can), publishes frames of
each size at a fixed rate from this process the way a camera driver would, and reads the node's own
/diagnostics counters: frames_received (what reached the subscription callback) and
frames_lost_by_dds (what Fast DDS reported lost).

One setup per run (``--publisher``, ``--compressed``, ``--transports``, ``--publisher-profile``,
``--node-reliability``) prints one JSON line per size; ``--all`` runs every documented setup (the
shipped node against reliable and best-effort cameras, and the remedies for best-effort ones),
each in a fresh pair of processes, and writes them with the machine, date, load and command to
``--out``.

Run: nice -n 5 .venv/bin/python scripts/measure_input_qos.py --all --frames 90 --out results/input_qos.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = ("640x480", "1280x720", "1920x1080")
SHM_PROFILE = REPO / "config" / "fastdds_shm_large_segment.xml"
TINY = {
    "weights": None, "forecast.quantize": "none", "forecast.k": 2, "forecast.horizon": 1,
    "forecast.output_size": [24, 32], "vfm.weights": "random", "vfm.backend": "torch", "vfm.embed_dim": 48,
    "vfm.depth": 1, "vfm.num_heads": 2, "vfm.image_size": [56, 112], "tokenizer.dim": 32,
    "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "tokenizer.num_heads": 2, "tokenizer.mlp_hidden": 64,
    "world.dim": 32, "world.depth": 1, "world.num_heads": 2, "heads.depth_bins": 16,
}
# name -> command-line options of one setup: what --all measures (docs/camera-input.md cites them).
SETUPS = {
    "reliable camera (ROS 2 default QoS), shipped node": [],
    "best-effort camera, shipped node": ["--publisher", "best_effort"],
    "best-effort camera + shared-memory profile on the camera only": [
        "--publisher", "best_effort", "--publisher-profile", str(SHM_PROFILE)],
    "best-effort camera, LARGE_DATA transports on both ends": ["--publisher", "best_effort",
                                                               "--transports", "LARGE_DATA"],
    "best-effort camera, compressed topic (jpeg), use_compressed": ["--publisher", "best_effort", "--compressed"],
    "reliable camera, node forced to best_effort (the old default)": ["--node-reliability", "best_effort"],
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90, help="frames per size (default 90: 3 s at 30 Hz)")
    parser.add_argument("--rate", type=float, default=30.0, help="publish rate in Hz")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT ...")
    parser.add_argument("--publisher", choices=["reliable", "best_effort"], default="reliable",
                        help="camera QoS: reliable = ROS 2 default QoS (depth 10); best_effort = sensor-data QoS")
    parser.add_argument("--node-reliability", choices=["best_available", "best_effort", "reliable"],
                        help="force the node's input_reliability (default: the shipped value)")
    parser.add_argument("--compressed", action="store_true",
                        help="publish jpeg sensor_msgs/CompressedImage on <topic>/compressed; use_compressed:=true")
    parser.add_argument("--transports", choices=["default", "LARGE_DATA"], default="default",
                        help="LARGE_DATA: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the camera AND the node")
    parser.add_argument("--publisher-profile", type=Path,
                        help="Fast DDS XML profile for the camera process only (the node stays on the defaults)")
    parser.add_argument("--all", action="store_true", help="run every setup of SETUPS, each in fresh processes")
    parser.add_argument("--out", type=Path, help="write the results as JSON (with machine, date, load, command)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    except ValueError:
        parser.error(f"--sizes takes WIDTHxHEIGHT values, got {args.sizes}")
    return args


def camera_frames(width: int, height: int, count: int = 10) -> list[np.ndarray]:
    """Real street frames (bikes.mp4) resized to the camera size: jpeg sizes like a real camera's."""
    import cv2

    from deltaworld_core.data.video import VideoReader, sample_video_paths

    frames = VideoReader(sample_video_paths()["bikes.mp4"]).read_all(max_frames=count, stride=5)[0]
    return [np.ascontiguousarray(cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)) for f in frames]


def measure(args) -> list[dict]:
    """One setup: this process is the camera, the node runs in a child process."""
    from deltaworld_ros.ros_env import ros_environment, stop_process

    base = ros_environment(domain_id=1 + os.getpid() % 200, defaults=True)
    node_env = ros_environment(base, large_data=args.transports == "LARGE_DATA")
    camera_env = dict(node_env)
    if args.publisher_profile is not None:
        camera_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(args.publisher_profile.resolve())
    os.environ.clear()
    os.environ.update(camera_env)  # before rclpy.init: Fast DDS reads it when the participant is made

    import cv2
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from deltaworld_core import load_config
    from deltaworld_ros.futures_msg import seconds_to_time
    from deltaworld_ros.image_conversion import array_to_image_msg

    workdir = Path(tempfile.mkdtemp(prefix="input_qos_"))
    model = workdir / "tiny.yaml"
    model.write_text(yaml.safe_dump(json.loads(json.dumps(load_config("default", TINY).to_dict()))))
    params = {"model_config": str(model), "diagnostics_period_s": 0.2, "use_compressed": args.compressed}
    if args.node_reliability:
        params["input_reliability"] = args.node_reliability
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))

    rclpy.init()
    probe = rclpy.create_node("input_qos_camera")
    latest: dict[str, str] = {}
    lock = threading.Lock()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "forecast_node" in status.name:
                with lock:
                    latest.update({kv.key: kv.value for kv in status.values})

    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()

    def counters() -> tuple[int, int, int]:
        with lock:
            return tuple(int(latest.get(key, 0)) for key in ("frames_received", "frames_lost_by_dds",
                                                               "forecasts_published"))

    topic, msg_type = ("/camera/image_raw/compressed", CompressedImage) if args.compressed \
        else ("/camera/image_raw", Image)
    qos = QoSProfile(depth=10) if args.publisher == "reliable" else qos_profile_sensor_data
    camera = probe.create_publisher(msg_type, topic, qos)
    log = (workdir / "node.log").open("w")
    node = subprocess.Popen([sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args", "--params-file",
                             str(params_file)], cwd=REPO, env=node_env, stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        deadline = time.monotonic() + 180
        while camera.get_subscription_count() == 0 or not latest:
            if time.monotonic() > deadline or node.poll() is not None:
                raise SystemExit(f"the node did not start: see {log.name}")
            time.sleep(0.1)
        time.sleep(1.0)
        for width, height in args.sizes:
            messages = []
            for rgb in camera_frames(width, height):
                if args.compressed:
                    data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
                    messages.append(CompressedImage(format="jpeg", data=data))
                else:
                    messages.append(array_to_image_msg(rgb, "rgb8"))
            received0, lost0, published0 = counters()
            publish_ms, start = [], time.monotonic()
            for i in range(args.frames):
                due = start + i / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                msg = messages[i % len(messages)]
                msg.header = Header(stamp=seconds_to_time(time.time()), frame_id="camera")
                t0 = time.perf_counter()
                camera.publish(msg)
                publish_ms.append((time.perf_counter() - t0) * 1e3)
            sent_s = time.monotonic() - start
            time.sleep(2.0)  # let deliveries and several diagnostics periods finish
            received, lost, published = counters()
            row = dict(size=f"{width}x{height}", mb_per_frame=round(np.mean([len(m.data) for m in messages]) / 1e6, 3),
                       sent=args.frames, rate_hz=round(args.frames / sent_s, 1), received=received - received0,
                       lost_reported=lost - lost0, forecasts_published=published - published0,
                       publish_ms_median=round(float(np.median(publish_ms)), 2))
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        stop_process(node)
        log.close()
        executor.shutdown(timeout_sec=2)
        probe.destroy_node()
        rclpy.try_shutdown()
    return results


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "rmw": "rmw_fastrtps_cpp (Fast DDS), ROS 2 Kilted wheels from PyPI"}


def run_all(args, argv) -> int:
    common = ["--frames", str(args.frames), "--rate", str(args.rate), "--sizes",
              *[f"{w}x{h}" for w, h in args.sizes]]
    setups = []
    for name, options in SETUPS.items():
        load_before = os.getloadavg()
        proc = subprocess.run([sys.executable, __file__, *options, *common], cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
        setups.append({"setup": name, "options": options, "load_average_1min": [round(load_before[0], 2),
                                                                                round(os.getloadavg()[0], 2)],
                       "exit_status": proc.returncode, "results": rows})
        print(json.dumps(setups[-1]), flush=True)
        time.sleep(2.0)
    if args.out:
        from deltaworld_core.checkpoint import atomic_write

        report = {"command": "nice -n 5 .venv/bin/python scripts/measure_input_qos.py " + " ".join(argv),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine(),
                  "conditions": "camera (this script) and node in two processes on one machine, the node forecasting "
                                "with a tiny random-weight model; other jobs on the machine show in the load: "
                                "load_average_1min is the 1-minute load before and after each setup",
                  "setups": setups}
        atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(report, indent=1) + "\n"))
    return 0 if all(s["exit_status"] == 0 for s in setups) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.all:
        return run_all(args, argv)
    rows = measure(args)
    if args.out:
        from deltaworld_core.checkpoint import atomic_write

        atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(rows, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
