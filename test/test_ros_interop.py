"""forecast_node with ordinary ROS 2 nodes, over real DDS between processes.

Camera drivers and planners are started by nobody with special environment variables. Here every
process runs with a clean environment (PATH, HOME and this run's ROS_DOMAIN_ID for isolation:
no FASTDDS_* / RMW_* variables, i.e. Fast DDS on its defaults) from a folder outside the
repository. The node is the installed executable `lib/deltaworld_ros/forecast_node` (what `ros2 run`
and `ros2 launch` start), so these tests also show that it imports the source tree's deltaworld_ros
and deltaworld_core. The peers are plain rclpy scripts that import nothing of this project except
the message type a planner codes against (`deltaworld_ros.msg.Futures`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from conftest import ros_test_domain_id  # noqa: E402
from deltaworld_core.data.video import sample_video_paths  # noqa: E402
from deltaworld_ros.ros_env import TRANSPORT_VARIABLES  # noqa: E402
from ros_harness import TINY, write_model_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIDEO = str(sample_video_paths()["bikes.mp4"])

# An ordinary camera node: OpenCV frames as sensor_msgs/Image (default QoS, depth 10), 10 Hz,
# stamped with its clock. Reports what it sent and the node's last /diagnostics values.
CAMERA = r"""
import json, sys, time
import cv2, rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

video, topic, count, wait_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rclpy.init()
node = rclpy.create_node("plain_camera")
publisher = node.create_publisher(Image, topic, 10)
diagnostics = {}
def on_diagnostics(msg):
    for status in msg.status:
        if "forecast_node" in status.name:
            diagnostics.update({kv.key: kv.value for kv in status.values})
node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
deadline = time.monotonic() + wait_s
while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
matched = publisher.get_subscription_count() > 0
t_end = time.monotonic() + 0.5
while time.monotonic() < t_end:
    rclpy.spin_once(node, timeout_sec=0.05)
capture, stamps = cv2.VideoCapture(video), []
while len(stamps) < count:
    ok, bgr = capture.read()
    if not ok:
        capture = cv2.VideoCapture(video)
        continue
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=bgr.shape[1] * 3, data=bgr.tobytes())
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = "plain_camera"
    publisher.publish(msg)
    stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
    t_next = time.monotonic() + 0.1
    while time.monotonic() < t_next:
        rclpy.spin_once(node, timeout_sec=0.02)
t_end = time.monotonic() + 3.0  # a few diagnostics periods after the last frame
while time.monotonic() < t_end:
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"matched": matched, "stamps": stamps, "diagnostics": diagnostics}), flush=True)
node.destroy_node()
rclpy.try_shutdown()
"""

# An ordinary planner: subscribes to the Futures with default QoS (reliable, depth 10); prints
# the header stamp and frame_id of each, once `count` arrived or `wait_s` passed.
PLANNER = r"""
import json, sys, time
import rclpy
from deltaworld_ros.msg import Futures

topic, count, wait_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rclpy.init()
node = rclpy.create_node("plain_planner")
received = []
node.create_subscription(Futures, topic, lambda m: received.append(
    (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.header.frame_id, len(m.hypotheses))), 10)
print("ready", flush=True)
deadline = time.monotonic() + wait_s
while len(received) < count and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps(received), flush=True)
node.destroy_node()
rclpy.try_shutdown()
"""


def clean_environment() -> dict[str, str]:
    """What an ordinary node started from a plain shell has, plus this run's domain."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "ROS_DOMAIN_ID": str(ros_test_domain_id())}
    assert not any(name in env for name in TRANSPORT_VARIABLES if name != "ROS_DOMAIN_ID")
    return env


def installed_executable(name: str) -> Path:
    """lib/deltaworld_ros/<name> of the installation this Python belongs to (the venv's prefix in
    the PyPI set-up; the workspace's install prefix in a sourced ROS 2 workspace)."""
    candidates = [Path(sys.prefix) / "lib" / "deltaworld_ros" / name]
    if os.environ.get("AMENT_PREFIX_PATH"):
        from ament_index_python.packages import get_package_prefix

        candidates.insert(0, Path(get_package_prefix("deltaworld_ros")) / "lib" / "deltaworld_ros" / name)
    for path in candidates:
        if path.is_file():
            return path
    pytest.fail(f"{name} is not installed: {[str(c) for c in candidates]} (run ./setup.sh)")


def stop(proc: subprocess.Popen) -> None:
    from conftest import stop_process

    stop_process(proc)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The installed forecast_node on a tiny model, started from an empty folder, clean environment."""
    folder = tmp_path_factory.mktemp("interop")
    config = write_model_config(folder / "tiny.yaml", TINY)
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "model_config": str(config), "k": 2, "horizon": 2, "output_size": [24, 32], "diagnostics_period_s": 0.5,
        "image_topic": "/interop/image_raw", "futures_topic": "/interop/futures"}}}))
    log_path = folder / "node.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(installed_executable("forecast_node")), "--ros-args", "--params-file", str(params)],
                                cwd=folder, env=clean_environment(), stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    yield proc
    stop(proc)


def node_log(proc) -> str:
    return proc.log_path.read_text()


def run_peer(script: str, *args, cwd: Path, timeout: float = 240) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=cwd, env=clean_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen, timeout: float = 240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail("a peer process did not finish")
    assert proc.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def test_node_receives_camera_frames_from_a_default_node(node, tmp_path):
    camera = run_peer(CAMERA, VIDEO, "/interop/image_raw", 30, 180, cwd=tmp_path)
    result = result_of(camera)
    assert node.poll() is None, node_log(node)
    assert result["matched"], "the node never subscribed to the camera:\n" + node_log(node)
    values = result["diagnostics"]
    assert values, "no /diagnostics from forecast_node reached a default node:\n" + node_log(node)
    # The camera is on ROS 2 default QoS (reliable) and the node's best_available subscription
    # follows it (best effort, the old default, could lose any of them); a node starved of CPU on
    # a loaded machine may still let its keep-last queue drop one.
    assert int(values["frames_received"]) >= len(result["stamps"]) - 2, f"{values}\n{node_log(node)}"
    assert values["state"] == "active"


def test_node_delivers_futures_to_a_default_node(node, tmp_path):
    planner = run_peer(PLANNER, "/interop/futures", 3, 180, cwd=tmp_path)
    assert planner.stdout.readline().strip() == "ready"
    camera = run_peer(CAMERA, VIDEO, "/interop/image_raw", 40, 180, cwd=tmp_path)
    sent = set(result_of(camera)["stamps"])
    futures = result_of(planner)
    assert len(futures) >= 3, f"{len(futures)} Futures reached a default node\n{node_log(node)}"
    assert all(stamp in sent and frame_id == "plain_camera" and k == 2 for stamp, frame_id, k in futures)


def test_replay_feeds_the_node_with_no_environment_variables(node, tmp_path):
    """The README's sequence: the node, then `python -m deltaworld_ros.replay --video ...`, both
    from a plain shell (replay used to switch itself to LARGE_DATA and the node heard nothing)."""
    planner = run_peer(PLANNER, "/interop/futures", 2, 180, cwd=tmp_path)
    assert planner.stdout.readline().strip() == "ready"
    replay = subprocess.run([sys.executable, "-m", "deltaworld_ros.replay", "--video", VIDEO,
                             "--topic", "/interop/image_raw", "--max-frames", "40", "--wait-for-subscriber", "60"],
                            cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=180)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "nobody subscribes" not in replay.stdout + replay.stderr
    assert len(result_of(planner)) >= 2, node_log(node)


def test_the_installation_runs_this_source_tree(tmp_path):
    """From any folder (a user's script, `ros2 run`), deltaworld_core and deltaworld_ros are this
    repository's files, not copies that go stale: the installed package holds generated code only."""
    probe = subprocess.run(
        [sys.executable, "-c", "import json, deltaworld_core, deltaworld_ros, deltaworld_ros.replay as r, "
         "deltaworld_ros.msg as m; print(json.dumps([deltaworld_core.__file__, r.__file__, m.__file__]))"],
        cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    core, replay_module, msg = (Path(p) for p in json.loads(probe.stdout.strip().splitlines()[-1]))
    assert core == REPO / "deltaworld_core" / "__init__.py"
    assert replay_module == REPO / "deltaworld_ros" / "replay.py"
    installed = msg.parent.parent  # the installed deltaworld_ros beside the generated msg/
    if installed != REPO / "deltaworld_ros":
        stale = sorted(p.name for p in installed.glob("*.py") if p.name != "__init__.py")
        assert not stale, f"copies of source modules in {installed}: {stale}"
    for tool in ("forecast_node", "replay", "demo"):
        assert installed_executable(tool).read_text().startswith(f"#!{sys.executable}\n")
