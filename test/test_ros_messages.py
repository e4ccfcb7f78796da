"""deltaworld_ros/msg types: generated, importable, and round-tripping over real DDS between two
processes (a ~2 MB Futures message, the size the default config publishes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from deltaworld_ros.futures_msg import decode_futures, forecast_to_msg, seconds_to_time  # noqa: E402
from deltaworld_ros.msg import Futures, HorizonSummary, Hypothesis  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
from test_ros_conversion import fake_forecast  # noqa: E402  (pytest puts test/ on sys.path)
from conftest import stop_process  # noqa: E402

# Republishes every Futures it gets on /rt/in to /rt/out, unchanged.
ECHO = textwrap.dedent("""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from deltaworld_ros.msg import Futures
    rclpy.init()
    node = rclpy.create_node("futures_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Futures, "/rt/out", qos)
    node.create_subscription(Futures, "/rt/in", pub.publish, qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
""")


def test_message_definitions_match_the_contract():
    fields = {t.__name__: t.get_fields_and_field_types() for t in (Futures, Hypothesis, HorizonSummary)}
    assert fields == {
        "Futures": {"header": "std_msgs/Header", "target_stamps": "sequence<builtin_interfaces/Time>",
                    "class_names": "sequence<string>", "hypotheses": "sequence<deltaworld_ros/Hypothesis>",
                    "summary": "sequence<deltaworld_ros/HorizonSummary>",
                    "camera_info": "sensor_msgs/CameraInfo"},
        "Hypothesis": {"semantic": "sequence<sensor_msgs/Image>", "depth": "sequence<sensor_msgs/Image>"},
        "HorizonSummary": {"semantic_mode": "sensor_msgs/Image", "semantic_agreement": "sensor_msgs/Image",
                           "depth_mean": "sensor_msgs/Image", "depth_std": "sensor_msgs/Image"},
    }


def test_futures_round_trip_between_processes(ros_env, ros_node):
    forecast = fake_forecast(k=8, horizon=3, h=112, w=112)
    header = Header(stamp=seconds_to_time(forecast.stamp), frame_id="camera")
    msg = forecast_to_msg(forecast, header)
    echo = subprocess.Popen([sys.executable, "-c", ECHO], cwd=REPO, env=ros_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received = []
        pub = ros_node.create_publisher(Futures, "/rt/in", qos)
        ros_node.create_subscription(Futures, "/rt/out", lambda m: received.append((time.perf_counter(), m)), qos)
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_node.context)
        executor.add_node(ros_node)
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 or ros_node.count_publishers("/rt/out") == 0:
            assert time.monotonic() < deadline and echo.poll() is None, "echo process did not come up"
            time.sleep(0.05)
        time.sleep(0.3)
        round_trips = []
        for _ in range(10):
            sent = time.perf_counter()
            pub.publish(msg)
            count = len(received)
            while len(received) == count:
                assert time.monotonic() < deadline + 30, "a Futures message did not come back"
                executor.spin_once(timeout_sec=0.05)
            round_trips.append(received[-1][0] - sent)
        back = decode_futures(received[-1][1])
        np.testing.assert_array_equal(back.semantic, forecast.semantic)
        np.testing.assert_array_equal(back.depth, forecast.depth)
        np.testing.assert_array_equal(back.agreement, forecast.summary.agreement)
        assert received[-1][1].header == msg.header and list(received[-1][1].target_stamps) == list(msg.target_stamps)
        size_mb = sum(len(i.data) for h in msg.hypotheses for i in (*h.semantic, *h.depth)) / 1e6
        print(f"\nFutures K=8 H=3 112x112 (~{size_mb:.1f} MB of images): round trip median "
              f"{np.median(round_trips) * 1e3:.1f} ms over DDS ({ros_env.get('FASTDDS_BUILTIN_TRANSPORTS', 'default transports')})")
        assert np.median(round_trips) < 1.0
    finally:
        stop_process(echo)  # SIGINT, then SIGKILL: a child stuck in rcl_wait must not hang teardown
