"""Camera frames reach forecast_node (issue 21, "frames arrive"), on real DDS with the shipped
input settings: a camera on ROS 2 default QoS (reliable) at 30 Hz delivers its 640x480 rgb8 frames
(a best-effort subscription got 0-5 of 90 of them), a best-effort camera is matched whenever it
starts, and frames DDS loses are reported in /diagnostics with what to change.

The node runs in its own process on the tiny random-weight model; this process is the camera."""

from __future__ import annotations

import time

import cv2
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from ros_harness import TINY, Harness, NodeProcess, smooth_frame, write_model_config  # noqa: E402

TOPIC = "/camera/image_raw"
FAST = dict(k=2, horizon=1, output_size=[24, 32], diagnostics_period_s=0.2)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model") / "tiny.yaml", TINY)


def publish_at(harness: Harness, camera, rgb, count: int, rate_hz: float) -> None:
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / rate_hz - time.monotonic()))
        camera.publish(array_to_image_msg(rgb, "rgb8", harness.next_header()))


def own_subscription_reliability(harness: Harness):
    return [i.qos_profile.reliability for i in harness.node.get_subscriptions_info_by_topic(TOPIC)
            if i.node_name == "forecast_node"]


def test_a_default_qos_camera_delivers_640x480_frames_at_30_hz(tmp_path, ros_env, ros_node, tiny_config):
    """The common case: a driver on ROS 2 default QoS (reliable, depth 10). With the shipped
    best-effort subscription 0-5 of 90 such frames reached the callback."""
    harness = Harness(ros_node)
    camera = ros_node.create_publisher(Image, TOPIC, QoSProfile(depth=10))  # ROS 2 default QoS
    ros_node.destroy_publisher(harness.camera)  # only the default-QoS camera on the topic
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), **FAST)
    try:
        harness.wait_for(lambda: camera.get_subscription_count() > 0 and harness.statuses(), 90, "the node", node)
        time.sleep(0.5)
        assert own_subscription_reliability(harness) == [ReliabilityPolicy.RELIABLE]
        sent = 60
        publish_at(harness, camera, cv2.resize(smooth_frame(), (640, 480)), sent, 30.0)
        # Every frame on an idle machine (results/input_qos.json); on a loaded CI machine the node's
        # keep-last queue may drop a few while its callback waits for a CPU, so 90% (54 of 60).
        deadline = time.monotonic() + 10
        while int(harness.values()["frames_received"]) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        values = harness.values()
        assert int(values["frames_received"]) >= sent * 9 // 10, values
        assert int(values["frames_lost_by_dds"]) == 0, values
        harness.wait_for(lambda: harness.count() >= 1, 20, "forecasts of them", node)
    finally:
        harness.close()
        assert node.stop() == 0, node.log()


def test_a_best_effort_camera_started_after_the_node_is_matched(tmp_path, ros_env, ros_node, tiny_config):
    """BEST_AVAILABLE is resolved when the subscription is made: with no camera yet it became
    reliable and a best-effort camera started later was incompatible (nothing arrived). The node
    re-makes the subscription to match the cameras it finds."""
    harness = Harness(ros_node)
    ros_node.destroy_publisher(harness.camera)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), **FAST)
    try:
        harness.wait_for(lambda: harness.node.count_subscribers(TOPIC) > 0 and harness.statuses(), 90,
                         "the node", node)
        time.sleep(0.5)
        assert own_subscription_reliability(harness) == [ReliabilityPolicy.RELIABLE]  # no camera: reliable
        harness.camera = ros_node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        harness.wait_for(lambda: own_subscription_reliability(harness) == [ReliabilityPolicy.BEST_EFFORT], 10,
                         "the subscription re-made best effort", node)
        time.sleep(0.5)
        assert harness.send_until_forecast(node, 20) >= 1
        time.sleep(2.0)  # re-made once, not every second
        assert node.log().count("offer best effort delivery: camera subscription re-made") == 1, node.log()
        assert "incompatible" not in node.log()
    finally:
        harness.close()
        assert node.stop() == 0, node.log()


def test_frames_lost_by_dds_are_reported_with_the_remedy(tmp_path, ros_env, ros_node, tiny_config):
    """A best-effort camera of 1920x1080 rgb8 frames (6.2 MB) on the default transports: DDS
    loses frames; the node says so in /diagnostics (WARN, with what to change) and in its log."""
    harness = Harness(ros_node)  # best effort: sensor-data QoS
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), **FAST)
    try:
        harness.wait_until_connected(node)
        sent = 30
        publish_at(harness, harness.camera, cv2.resize(smooth_frame(), (1920, 1080)), sent, 30.0)
        time.sleep(1.5)
        values = harness.values()
        if int(values["frames_lost_by_dds"]) == 0:
            assert int(values["frames_received"]) == sent, values  # nothing lost: nothing to report
            pytest.skip("this machine's DDS delivered every best-effort 6 MB frame: no loss to report")
        warned = [s for s in harness.statuses() if s.message.startswith("camera frames lost")]
        assert warned and warned[-1].level == DiagnosticStatus.WARN, [s.message for s in harness.statuses()]
        for remedy in ("publish reliably", "use_compressed", "LARGE_DATA"):
            assert remedy in warned[-1].message, warned[-1].message
        assert "camera frames are being lost" in node.log() and "use_compressed" in node.log(), node.log()
        assert int(values["frames_lost_recently"]) > 0, values
    finally:
        harness.close()
        assert node.stop() == 0, node.log()
