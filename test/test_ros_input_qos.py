"""Camera frames reach forecast_node, on real DDS with the shipped input settings: a camera on
ROS 2 default QoS (reliable) at 30 Hz delivers its 640x480 rgb8 frames (a best-effort
subscription got 0-5 of 90 of them), a best-effort camera is matched whenever it starts, frames
DDS loses are reported in /diagnostics with what to change, and so are frames lost before the
node's callback (counted from the camera's stamps), with the advice for the camera of the moment.

The node runs in its own process on the tiny random-weight model; this process is the camera."""

from __future__ import annotations

import itertools
import time

import cv2
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from deltaworld_ros.futures_msg import seconds_to_time  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from deltaworld_ros.node_camera import StampGaps  # noqa: E402
from ros_harness import TINY, Harness, NodeProcess, smooth_frame, write_model_config  # noqa: E402

TOPIC = "/camera/image_raw"
FAST = dict(k=2, horizon=1, output_size=[24, 32], diagnostics_period_s=0.2)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model") / "tiny.yaml", TINY)


def publish_at(harness: Harness, camera, rgb, count: int, rate_hz: float, stamps=None) -> None:
    """``count`` frames at ``rate_hz``, stamped from ``stamps`` (default: the harness's, 0.1 s apart)."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / rate_hz - time.monotonic()))
        header = harness.next_header()
        if stamps is not None:
            header.stamp = seconds_to_time(next(stamps))
        camera.publish(array_to_image_msg(rgb, "rgb8", header))


def own_subscription_reliability(harness: Harness):
    return [i.qos_profile.reliability for i in harness.node.get_subscriptions_info_by_topic(TOPIC)
            if i.node_name == "forecast_node"]


def accounted(values: dict) -> int:
    """Camera frames the node received or counted as lost before its callback."""
    return int(values["frames_received"]) + int(values["frames_lost_before_node"])


def test_a_default_qos_camera_delivers_640x480_frames_at_30_hz(tmp_path, ros_env, ros_node, tiny_config):
    """The common case: a driver on ROS 2 default QoS (reliable, depth 10). The subscription is
    reliable, DDS reports no loss, most frames arrive (with the shipped best-effort subscription
    0-5 of 90 reached the callback), and every frame is accounted for: received, or counted from
    the camera's stamps as lost before the callback. Every frame arrives on an idle machine
    (results/input_qos.json); on a loaded CPU the node's callback can fall behind and its keep-last
    queue overwrite frames, which no DDS event reports: those are the ones counted."""
    harness = Harness(ros_node)
    camera = ros_node.create_publisher(Image, TOPIC, QoSProfile(depth=10))  # ROS 2 default QoS
    ros_node.destroy_publisher(harness.camera)  # only the default-QoS camera on the topic
    # A stall of the callback longer than the model's max_gap_s would be a break in the stream,
    # not a loss: made long enough that every loss is counted.
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), max_gap_s=30.0, **FAST)
    try:
        harness.wait_for(lambda: camera.get_subscription_count() > 0 and harness.statuses(), 90, "the node", node)
        time.sleep(0.5)
        assert own_subscription_reliability(harness) == [ReliabilityPolicy.RELIABLE]
        rgb, stamps = cv2.resize(smooth_frame(), (640, 480)), (harness.stamp + i / 30 for i in itertools.count(1))
        publish_at(harness, camera, rgb, 5, 5.0, stamps)  # slowly: the camera's period, learnt with nothing lost
        publish_at(harness, camera, rgb, 60, 30.0, stamps)
        time.sleep(1.0)
        publish_at(harness, camera, rgb, 1, 30.0, stamps)  # its interval shows frames lost at the end of the burst
        sent = 66
        deadline = time.monotonic() + 20
        while accounted(harness.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        values = harness.values()
        assert accounted(values) == sent, values
        assert int(values["frames_received"]) > sent // 2, values
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


def test_stamp_gaps_count_missing_frames_but_not_refused_ones_or_breaks():
    gaps = StampGaps()
    assert [gaps.missing(t, 1.0) for t in (0.0, 0.1, 0.2, 0.3, 0.4)] == [0] * 5  # the period is learnt
    assert gaps.missing(0.7, 1.0) == 2  # 0.5 and 0.6 lost
    assert gaps.missing(1.0, 1.0, refused_between=1) == 1  # one of the two arrived but was refused
    assert gaps.missing(3.0, 1.0) == 0  # longer than max_gap_s: a break in the stream, not a loss
    assert gaps.missing(2.9, 1.0) == 0  # time going backwards
    assert gaps.missing(3.05, 1.0) == 0  # between periods: no whole frame missing


SKIPPED = (6, 9, 12)  # stamp slots the camera skips, once the node has learnt its period


def test_frames_lost_before_the_node_are_reported_with_advice_for_the_camera_of_the_moment(
        tmp_path, ros_env, ros_node, tiny_config):
    """Frames lost before the node's callback (a reliable reader's keep-last overwrites, a camera
    or driver that skips) are reported by no DDS event: the node counts them from the camera's
    stamps at its rate, and /diagnostics says so with the advice that fits the camera's QoS when
    they were lost. A reliable camera, then a best-effort one in its place, then a reliable one
    again: the advice follows, and losses of a camera that has left keep its advice while recent."""
    harness = Harness(ros_node)
    ros_node.destroy_publisher(harness.camera)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), **FAST)
    reliable_advice, best_effort_advice = "arrive faster than this process takes them", "publishes best effort"

    def newest_loss_message() -> str:
        lost = [s for s in harness.statuses() if s.message.startswith("camera frames lost")]
        assert not lost or lost[-1].level == DiagnosticStatus.WARN, lost[-1]
        return lost[-1].message if lost else ""

    def camera_with(qos, reliability):
        camera = ros_node.create_publisher(Image, TOPIC, qos)
        harness.wait_for(lambda: camera.get_subscription_count() > 0
                         and own_subscription_reliability(harness) == [reliability], 90, "the camera matched", node)
        time.sleep(0.3)
        return camera

    def skipping_stream(camera) -> None:
        """15 stamp slots 0.1 s apart at 10 Hz, SKIPPED left out; every slot accounted for."""
        before = harness.values()
        start = harness.stamp
        harness.stamp += 1.5
        stamps = iter([start + 0.1 * k for k in range(15) if k not in SKIPPED])
        publish_at(harness, camera, smooth_frame(), 15 - len(SKIPPED), 10.0, stamps)
        harness.wait_for(lambda: accounted(harness.values()) - accounted(before) == 15, 10, "every slot counted", node)
        lost = int(harness.values()["frames_lost_before_node"]) - int(before["frames_lost_before_node"])
        assert lost >= len(SKIPPED), (before, harness.values())

    try:
        harness.wait_for(lambda: harness.statuses() and harness.node.count_subscribers(TOPIC) > 0, 90, "the node",
                         node)
        camera = camera_with(QoSProfile(depth=10), ReliabilityPolicy.RELIABLE)
        skipping_stream(camera)
        harness.wait_for(lambda: reliable_advice in newest_loss_message(), 5, "the reliable camera's advice", node)
        ros_node.destroy_publisher(camera)
        camera = camera_with(qos_profile_sensor_data, ReliabilityPolicy.BEST_EFFORT)
        skipping_stream(camera)
        harness.wait_for(lambda: best_effort_advice in newest_loss_message(), 5, "the best-effort advice", node)
        ros_node.destroy_publisher(camera)
        camera = camera_with(QoSProfile(depth=10), ReliabilityPolicy.RELIABLE)
        # The best-effort camera's losses are still recent: still its advice, not the new camera's.
        time.sleep(0.5)
        assert best_effort_advice in newest_loss_message(), newest_loss_message()
        skipping_stream(camera)
        harness.wait_for(lambda: reliable_advice in newest_loss_message(), 5, "the reliable camera's advice", node)
        assert "lost before the node took them" in node.log(), node.log()
        assert int(harness.values()["frames_lost_by_dds"]) == 0, harness.values()
    finally:
        harness.close()
        assert node.stop() == 0, node.log()
