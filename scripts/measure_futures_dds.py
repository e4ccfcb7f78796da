"""Can a planner on the same machine take the Futures messages at camera rate? Publishes Futures of a
given size through real DDS (the node's QoS: reliable, keep last 2) at a given rate to a subscriber
in another process, and reports how many arrived and how late.

    python scripts/measure_futures_dds.py [--rate 25] [--seconds 6] [--json OUT]
        [--setting NAME=K,H,h,w ...] [--transport default|LARGE_DATA|both]

Each setting is K published hypotheses, H steps and the published canvas h x w (the message carries
K x H class maps (1 B/px) and depth maps (4 B/px), and H x 4 summary maps (13 B/px in all)). The
publisher converts a Forecast-shaped set of arrays with ``forecast_to_msg`` each time (the node's own
conversion) and publishes on a timer; the subscriber stamps the receipt. Latency is receipt minus the
message's header stamp (publish time), median over the received messages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SETTINGS = {
    "embedded_default_112_k8": (8, 3, 112, 112),
    "paper_192_pub4_4x3": (4, 3, 192, 256),
    "paper_192_pub4_16x9": (4, 3, 192, 341),
    "paper_256_pub4_square": (4, 3, 256, 256),
    "paper_256_pub1_16x9": (1, 3, 256, 455),
    "paper_256_pub4_16x9": (4, 3, 256, 455),
    "paper_256_k20_square": (20, 3, 256, 256),
    "paper_512_k20_square": (20, 3, 512, 512),
}


def subscriber(topic: str, seconds: float, out: str) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from deltaworld_ros.msg import Futures

    rclpy.init()
    node = rclpy.create_node("futures_dds_sink")
    got = []
    node.create_subscription(Futures, topic, lambda m: got.append(
        (time.time_ns(), m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)),
        QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    Path(out + ".ready").write_text("1")
    end = time.time() + seconds
    while time.time() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    Path(out).write_text(json.dumps(got))
    node.destroy_node()
    rclpy.shutdown()


def publish(setting: tuple[int, int, int, int], rate: float, seconds: float, topic: str, tmp: Path,
            env: dict) -> dict:
    k, horizon, h, w = setting
    out = str(tmp / f"sink_{k}_{h}_{w}_{env.get('FASTDDS_BUILTIN_TRANSPORTS', 'default')}.json")
    sink = subprocess.Popen([sys.executable, __file__, "--sink", topic, str(seconds + 8), out], env=env)
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Header

    from deltaworld_ros.futures_msg import forecast_to_msg, ns_to_time
    from deltaworld_ros.msg import Futures

    rng = np.random.default_rng(0)
    forecast = SimpleNamespace(
        stamp=0.0, stamps=np.array([0.2 * (i + 1) for i in range(horizon)]), k=k, horizon=horizon,
        semantic=rng.integers(0, 19, (k, horizon, h, w), dtype=np.uint8),
        depth=rng.random((k, horizon, h, w), dtype=np.float32) * 80,
        class_names=[f"c{i}" for i in range(19)],
        summary=SimpleNamespace(semantic_mode=rng.integers(0, 19, (horizon, h, w), dtype=np.uint8),
                                agreement=rng.random((horizon, h, w), dtype=np.float32),
                                depth_mean=rng.random((horizon, h, w), dtype=np.float32),
                                depth_std=rng.random((horizon, h, w), dtype=np.float32)))
    node = rclpy.create_node("futures_dds_source")
    pub = node.create_publisher(Futures, topic, QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.time() + 20
    while not Path(out + ".ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    while pub.get_subscription_count() < 1 and time.time() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent, convert_ms, publish_ms = 0, [], []
    load_before = os.getloadavg()[0]
    start = time.time()
    while time.time() - start < seconds:
        due = start + sent / rate
        time.sleep(max(0.0, due - time.time()))
        t0 = time.perf_counter()
        msg = forecast_to_msg(forecast, Header(stamp=ns_to_time(time.time_ns()), frame_id="camera"))
        t1 = time.perf_counter()
        msg.header.stamp = ns_to_time(time.time_ns())
        pub.publish(msg)
        publish_ms.append((time.perf_counter() - t1) * 1e3)
        convert_ms.append((t1 - t0) * 1e3)
        sent += 1
    elapsed = time.time() - start
    sink.wait(timeout=seconds + 30)
    got = json.loads(Path(out).read_text()) if Path(out).is_file() else []
    node.destroy_publisher(pub)
    node.destroy_node()
    size = k * horizon * h * w * 5 + horizon * h * w * 13
    lat = [(r - s) / 1e6 for r, s in got]
    return {"k": k, "horizon": horizon, "canvas": [h, w], "message_mb": size / 1e6, "rate_hz": rate,
            "transport": env.get("FASTDDS_BUILTIN_TRANSPORTS", "default"), "sent": sent,
            "sent_hz": sent / elapsed, "received": len(got), "received_share": len(got) / max(sent, 1),
            "latency_ms_median": statistics.median(lat) if lat else None,
            "latency_ms_p90": float(np.percentile(lat, 90)) if lat else None,
            "convert_ms_median": statistics.median(convert_ms), "publish_ms_median": statistics.median(publish_ms),
            "load_avg_1min": [load_before, os.getloadavg()[0]]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        subscriber(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--setting", nargs="*", default=list(SETTINGS), help="names of SETTINGS or NAME=K,H,h,w")
    parser.add_argument("--transport", default="both", choices=["default", "LARGE_DATA", "both"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import tempfile

    import rclpy

    settings = {}
    for item in args.setting:
        if "=" in item:
            name, spec = item.split("=", 1)
            settings[name] = tuple(int(v) for v in spec.split(","))
        else:
            settings[item] = SETTINGS[item]
    transports = ["default", "LARGE_DATA"] if args.transport == "both" else [args.transport]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in transports:
            env = dict(os.environ)
            env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
            if transport != "default":
                env["FASTDDS_BUILTIN_TRANSPORTS"] = transport
                os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = transport  # this process's participant too
            else:
                os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
            rclpy.init()
            try:
                for i, (name, setting) in enumerate(settings.items()):
                    row = {"setting": name, **publish(setting, args.rate, args.seconds, f"/futures_dds_{i}",
                                                      Path(tmp), env)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                rclpy.shutdown()
    result = {"rate_hz": args.rate, "seconds": args.seconds, "cores": os.cpu_count(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
