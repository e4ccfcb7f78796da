"""The replay tool (video and MCAP) and the end-to-end demo, each in its own process on real DDS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from deltaworld_ros.futures_msg import seconds_to_time, time_to_seconds  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg, image_to_array  # noqa: E402
from deltaworld_core.data.video import VideoReader, sample_video_paths  # noqa: E402
from ros_harness import TINY, write_model_config  # noqa: E402  (pytest puts test/ on sys.path)

REPO = Path(__file__).resolve().parents[1]


def collect(ros_node, topic: str, command: list[str], env: dict, timeout: float = 60,
            output: list | None = None) -> tuple[list, int]:
    """Runs ``command`` while collecting (receive time, Image) on ``topic``; returns them and the rc
    (and appends the command's output to ``output``)."""
    received = []
    ros_node.create_subscription(Image, topic, lambda m: received.append((time.monotonic(), m)),
                                 qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    for _ in range(20):  # the last messages in flight
        executor.spin_once(timeout_sec=0.01)
    if proc.poll() is None:
        proc.kill()
        pytest.fail("command did not finish: " + " ".join(command))
    text = proc.stdout.read()
    assert proc.returncode == 0, text
    if output is not None:
        output.append(text)
    return received, proc.returncode


def test_replay_publishes_a_video_at_its_native_rate(ros_env, ros_node):
    frames = list(VideoReader(sample_video_paths()["bikes.mp4"]).read_all(max_frames=20)[0])
    received, _ = collect(ros_node, "/replay_test/image", [
        sys.executable, "-m", "deltaworld_ros.replay", "--video", str(sample_video_paths()["bikes.mp4"]),
        "--topic", "/replay_test/image", "--max-frames", "20", "--rate", "2", "--wait-for-subscriber", "20"], ros_env)
    assert len(received) >= 18  # best effort, like a camera
    msgs = [m for _, m in received]
    assert all((m.encoding, m.width, m.height, m.header.frame_id) == ("rgb8", 640, 272, "camera") for m in msgs)
    index = {f.tobytes(): i for i, f in enumerate(frames)}
    order = [index[image_to_array(m).tobytes()] for m in msgs]  # real frames, in order
    assert order == sorted(order)
    stamps = np.array([time_to_seconds(m.header.stamp) for m in msgs])
    per_frame = np.diff(stamps) / np.diff(order)
    assert np.median(per_frame) == pytest.approx(1 / 25 / 2, abs=0.01)  # 25 fps at rate 2


def test_replay_reads_a_rosbag2_mcap(tmp_path, ros_env, ros_node):
    writer_module = pytest.importorskip("mcap.writer", reason="the PyPI 'mcap' package is not installed")
    bag = tmp_path / "camera.mcap"
    frames = [np.full((4, 6, 3), i * 20, np.uint8) for i in range(6)]
    with bag.open("wb") as stream:
        writer = writer_module.Writer(stream)
        writer.start(profile="ros2", library="deltaworld test")
        schema = writer.register_schema(name="sensor_msgs/msg/Image", encoding="ros2msg",
                                        data=b"std_msgs/Header header\nuint32 height\nuint32 width\n...")
        channel = writer.register_channel(topic="/recorded/image", message_encoding="cdr", schema_id=schema)
        for i, frame in enumerate(frames):
            stamp = 1000.0 + 0.05 * i
            msg = array_to_image_msg(frame, "bgr8")
            msg.header.stamp = seconds_to_time(stamp)
            ns = round(stamp * 1e9)
            writer.add_message(channel_id=channel, log_time=ns, publish_time=ns, data=serialize_message(msg))
        writer.finish()
    received, _ = collect(ros_node, "/recorded/image", [
        sys.executable, "-m", "deltaworld_ros.replay", "--bag", str(bag), "--topic", "/recorded/image",
        "--wait-for-subscriber", "20"], ros_env)
    assert len(received) >= 5
    for _, msg in received:  # republished unchanged, recorded stamps kept
        i = round((time_to_seconds(msg.header.stamp) - 1000.0) / 0.05)
        assert msg.encoding == "bgr8"
        np.testing.assert_array_equal(image_to_array(msg), frames[i])


def test_replay_skips_a_corrupt_mcap_chunk_and_never_publishes_garbage(tmp_path, ros_env, ros_node):
    """Issue 21 item 10: flipped bytes in one chunk of an MCAP. The chunk's CRC fails: its frame
    is skipped with one log line naming the file; every frame published is one that was written;
    a bag with nothing valid left exits 2."""
    from deltaworld_core.data.rosbag import BagWriter, image_message

    frames = [np.full((48, 64, 3), 10 + 20 * i, np.uint8) for i in range(8)]
    good = tmp_path / "good.mcap"
    with BagWriter(good, chunk_size=5_000) as writer:  # one 9 KB frame a chunk
        for i, frame in enumerate(frames):
            writer.write("/recorded/image", image_message(frame, 1000.0 + 0.05 * i))
    data = bytearray(good.read_bytes())
    at = data.index(frames[3].tobytes()[:2000])
    data[at:at + 32] = bytes(b ^ 0xFF for b in data[at:at + 32])
    bad = tmp_path / "corrupt.mcap"
    bad.write_bytes(bytes(data))
    output: list[str] = []
    received, _ = collect(ros_node, "/recorded/image", [
        sys.executable, "-m", "deltaworld_ros.replay", "--bag", str(bad), "--topic", "/recorded/image",
        "--wait-for-subscriber", "20"], ros_env, output=output)
    log = output[0]
    assert "corrupt MCAP chunk" in log and "corrupt.mcap" in log and "skipped 1 corrupt chunk(s)" in log, log
    assert 5 <= len(received) <= 7, log  # 7 valid frames; the 1 s wait after matching can cost the first
    for _, msg in received:
        i = round((time_to_seconds(msg.header.stamp) - 1000.0) / 0.05)
        assert i != 3
        np.testing.assert_array_equal(image_to_array(msg)[..., :3], frames[i])
    # Every chunk damaged: nothing valid to replay, a non-zero exit.
    for frame in frames:
        at = data.index(frame.tobytes()[:2000])
        data[at:at + 32] = bytes(b ^ 0xFF for b in data[at:at + 32])
    bad.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "deltaworld_ros.replay", "--bag", str(bad), "--topic", "/recorded/image"],
                          cwd=REPO, env=ros_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no image messages to replay; skipped 8 corrupt chunk(s)" in proc.stdout + proc.stderr


def test_demo_end_to_end_with_a_tiny_model(tmp_path, ros_env):
    """README command 1 with a tiny random model instead of the embedded default (for speed)."""
    config = write_model_config(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "deltaworld_ros.demo", "--out", str(out), "--max-frames", "40",
         "--param", f"model_config:={config}", "--param", "k:=3", "--camera-topic", "/demo_test/image"],
        cwd=REPO, env=ros_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "incompatible QoS" not in proc.stdout + proc.stderr  # the node subscribes as the camera publishes
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("demo: frames in 40, forecasts out ") and "median latency" in summary
    forecasts = int(summary.split("forecasts out ")[1].split(",")[0])
    pngs = sorted(out.glob("forecast_*.png"))
    assert forecasts >= 1 and len(pngs) == forecasts
    grid = cv2.imread(str(pngs[-1]))
    tile_w = round(112 * 640 / 272)  # tiles keep bikes.mp4's 640x272 aspect ratio
    body = (1 + 1 + 3) * 112  # mode row, the clip's real frames row, K = 3 sample rows; 2 tiles per step
    assert grid.shape[1] == 2 * 3 * tile_w and grid.shape[0] - body >= 112  # input and legend band on top
    video = cv2.VideoCapture(str(out / "forecasts.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == forecasts
    video.release()


def test_replay_warns_when_nobody_subscribed(ros_env):
    """Frames published to nobody (node not running, another domain or other DDS transports) are
    said so, at the first frame and in the summary, instead of passing silently."""
    proc = subprocess.run([sys.executable, "-m", "deltaworld_ros.replay", "--video", str(sample_video_paths()["bikes.mp4"]),
                           "--topic", "/nobody_listens/image", "--max-frames", "3", "--rate", "5"],
                          cwd=REPO, env=ros_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert output.count("nobody subscribes to /nobody_listens/image") == 2, output
    assert "3 frames published and no subscriber ever matched" in output


ROS_MODULES = ("rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "sensor_msgs", "std_msgs",
               "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs", "launch", "launch_ros", "ament_index_python",
               "deltaworld_ros")


def test_the_core_library_imports_nothing_of_ros():
    """deltaworld_core is pure Python/PyTorch: no module of it imports ROS, not even lazily
    inside a function (the node's overhead is measured by deltaworld_ros.bench)."""
    import ast

    offenders = []
    for path in sorted((REPO / "deltaworld_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in ROS_MODULES]
    assert not offenders, offenders


def test_ros_bench_measures_the_node_overhead(tmp_path):
    core_result = tmp_path / "bench.json"
    core_result.write_text(json.dumps({"total": 104.3, "config": {"name": "default"}}))
    out = tmp_path / "node.json"
    overrides = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    proc = subprocess.run([sys.executable, "-m", "deltaworld_ros.bench", "--repeats", "3", "--threads", "1",
                           "--json", str(out), "--update", str(core_result), *overrides, "forecast.k=3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("node_overhead_ms ") and "K=3" in proc.stdout
    result = json.loads(out.read_text())
    parts = result["node_overhead"]
    assert result["node_overhead_ms"] == pytest.approx(parts["convert_ms"] + parts["build_ms"] + parts["serialize_ms"])
    assert min(parts["convert_ms"], parts["build_ms"], parts["serialize_ms"]) > 0
    assert parts["message_bytes"] > 3 * 3 * 56 * 112 * 5  # K=3 x 3 steps of 56x112 maps (uint8 + float32)
    merged = json.loads(core_result.read_text())
    assert merged["total"] == 104.3 and merged["node_overhead_ms"] == result["node_overhead_ms"]
    bad = subprocess.run([sys.executable, "-m", "deltaworld_ros.bench", "--update", str(tmp_path / "missing.json")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
