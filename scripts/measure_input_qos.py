"""How many camera frames reach forecast_node over DDS, per image size and input QoS.

Starts the real node (a tiny random-weight model, so the model never limits what the callback
sees) once per reliability setting, publishes rgb8 frames of each size at a fixed rate with the
matching publisher QoS, and reads the node's own /diagnostics counters: frames_received (what
reached the subscription callback) and frames_lost_by_dds (what Fast DDS reported lost). Uses the
shipped DDS set-up (the ROS 2 defaults: Fast DDS builtin transports) or, with --transports
LARGE_DATA, the opt-in LARGE_DATA transports for both ends. One JSON line per (reliability, size) on
stdout, and all of them in --out.

Run: .venv/bin/python scripts/measure_input_qos.py [--frames 60] [--rate 30] [--out results/input_qos.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = ((640, 480), (1280, 720), (1920, 1080), (4000, 3000))  # (width, height)
TINY = {
    "weights": None, "forecast.quantize": "none", "forecast.k": 2, "forecast.horizon": 1,
    "forecast.output_size": [24, 32], "vfm.weights": "random", "vfm.backend": "torch", "vfm.embed_dim": 48,
    "vfm.depth": 1, "vfm.num_heads": 2, "vfm.image_size": [56, 112], "tokenizer.dim": 32,
    "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "tokenizer.num_heads": 2, "tokenizer.mlp_hidden": 64,
    "world.dim": 32, "world.depth": 1, "world.num_heads": 2, "heads.depth_bins": 16,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per size (default 60: 2 s at 30 Hz)")
    parser.add_argument("--rate", type=float, default=30.0, help="publish rate in Hz")
    parser.add_argument("--reliability", nargs="+", default=["best_effort", "reliable"],
                        choices=["best_effort", "reliable"])
    parser.add_argument("--transports", choices=["default", "LARGE_DATA"], default="default",
                        help="default: the ROS 2 defaults the node ships with; LARGE_DATA: the opt-in transports")
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in SIZES], help="WIDTHxHEIGHT ...")
    parser.add_argument("--out", type=Path, help="also write the results as one JSON list")
    args = parser.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    except ValueError:
        parser.error(f"--sizes takes WIDTHxHEIGHT values, got {args.sizes}")

    from deltaworld_ros.ros_env import ros_environment

    env = ros_environment(domain_id=1 + os.getpid() % 200, defaults=True, large_data=args.transports == "LARGE_DATA")
    os.environ.update(env)

    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from deltaworld_core import load_config
    from deltaworld_ros.futures_msg import seconds_to_time
    from deltaworld_ros.image_conversion import array_to_image_msg

    workdir = Path(tempfile.mkdtemp(prefix="input_qos_"))
    model = workdir / "tiny.yaml"
    model.write_text(yaml.safe_dump(json.loads(json.dumps(load_config("default", TINY).to_dict()))))
    rclpy.init()
    probe = rclpy.create_node("input_qos_probe")
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

    def counters() -> tuple[int, int]:
        with lock:
            return int(latest.get("frames_received", 0)), int(latest.get("frames_lost_by_dds", 0))

    results = []
    for reliability in args.reliability:
        params = workdir / f"{reliability}.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
            "model_config": str(model), "input_reliability": reliability, "diagnostics_period_s": 0.2}}}))
        log = (workdir / f"{reliability}.log").open("w")
        node = subprocess.Popen([sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args", "--params-file",
                                 str(params)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliability == "reliable" \
            else qos_profile_sensor_data
        camera = probe.create_publisher(Image, "/camera/image_raw", qos)
        try:
            deadline = time.monotonic() + 120
            while probe.count_subscribers("/camera/image_raw") == 0 or not latest:
                if time.monotonic() > deadline or node.poll() is not None:
                    raise SystemExit(f"the node did not start: see {log.name}")
                time.sleep(0.1)
            time.sleep(1.0)
            for width, height in sizes:
                rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
                template = array_to_image_msg(rgb, "rgb8")
                received0, lost0 = counters()
                publish_ms, start = [], time.monotonic()
                for i in range(args.frames):
                    due = start + i / args.rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    template.header = Header(stamp=seconds_to_time(time.time()), frame_id="camera")
                    t0 = time.perf_counter()
                    camera.publish(template)
                    publish_ms.append((time.perf_counter() - t0) * 1e3)
                sent_s = time.monotonic() - start
                time.sleep(2.0)  # let deliveries and two diagnostics periods finish
                received, lost = counters()
                row = dict(reliability=reliability, transports=args.transports, size=f"{width}x{height}",
                           mb_per_frame=round(len(template.data) / 1e6, 2), sent=args.frames,
                           rate_hz=round(args.frames / sent_s, 1), received=received - received0,
                           lost_reported=lost - lost0, publish_ms_median=round(float(np.median(publish_ms)), 1))
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            probe.destroy_publisher(camera)
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.kill()
            log.close()
            with lock:
                latest.clear()
            time.sleep(1.0)
    executor.shutdown(timeout_sec=2)
    probe.destroy_node()
    rclpy.try_shutdown()
    if args.out:
        from deltaworld_core.checkpoint import atomic_write

        atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(results, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
