"""forecast_node's planner outputs without DDS: each does its work only for its subscribers, the
3-D ones only with a camera_info, and /diagnostics' camera_info value says which CameraInfo was used.
The node is a stand-in with the node's parameters and publishers that count subscribers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("rclpy")

from std_msgs.msg import Header  # noqa: E402

from deltaworld_core.camera_model import Pinhole  # noqa: E402
from deltaworld_core.forecaster import Forecast, ForecastSummary  # noqa: E402
from deltaworld_core.runner import Frame  # noqa: E402
from deltaworld_ros.camera_info_input import MapGeometry  # noqa: E402
from deltaworld_ros.futures_msg import seconds_to_time  # noqa: E402
from deltaworld_ros.node_camera import CameraMeta  # noqa: E402
from deltaworld_ros.node_parameters import PARAMETERS  # noqa: E402
from deltaworld_ros.planner_msgs import camera_info_msg  # noqa: E402
from deltaworld_ros.planner_outputs import (LabelInfoOutput, ObstacleClasses, ObstaclesOutput,  # noqa: E402
                                            RiskGridOutput, StepImagesOutput, risk_grid_status)

K, STEPS, H, W = 2, 2, 6, 8
STAMP = 100.0


class Publisher:
    def __init__(self, subscribers: int):
        self.subscribers, self.sent = subscribers, []

    def get_subscription_count(self) -> int:
        return self.subscribers

    def publish(self, msg) -> None:
        self.sent.append(msg)


class StandInNode:
    """The node's parameters at their defaults; a publisher per topic, subscribed when named in ``subscribed``."""

    def __init__(self, subscribed=()):
        self.subscribed, self.publishers = set(subscribed), {}

    def param(self, name: str):
        return PARAMETERS[name][0]

    def get_logger(self):
        return logging.getLogger("test_planner_outputs")

    def create_lifecycle_publisher(self, msg_type, topic: str, qos) -> Publisher:
        self.publishers[topic] = Publisher(int(topic in self.subscribed))
        return self.publishers[topic]

    def sent(self) -> dict[str, int]:
        return {topic: len(p.sent) for topic, p in self.publishers.items() if p.sent}


def forecast() -> Forecast:
    semantic = np.full((K, STEPS, H, W), 7, np.uint8)  # "person" everywhere
    depth = np.full((K, STEPS, H, W), 4.0, np.float32)
    summary = ForecastSummary(semantic_mode=semantic[0], agreement=np.ones((STEPS, H, W), np.float32),
                              depth_mean=depth[0], depth_std=np.zeros((STEPS, H, W), np.float32))
    names = ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car", "person", "pole"]
    return Forecast(stamp=STAMP, stamps=STAMP + 0.2 * np.arange(1, STEPS + 1), semantic=semantic, depth=depth,
                    class_names=names, summary=summary, region=(0, 0, H, W))


def frame(stamp: float = STAMP) -> Frame:
    header = Header(stamp=seconds_to_time(stamp), frame_id="camera_optical_frame")
    return Frame(np.zeros((H, W, 3), np.uint8), stamp, 0.0, meta=CameraMeta(header, H, W))


def geometry_with_info(node, stamp: float | None = STAMP) -> MapGeometry:
    geometry = MapGeometry(node)
    if stamp is not None:
        geometry.cache.add(camera_info_msg(Pinhole(5.0, 5.0, 3.5, 2.5, W, H), frame(stamp).meta.header))
    return geometry


def test_step_images_are_made_only_for_their_subscribers():
    node = StandInNode({"deltaworld/step_2/depth"})
    output = StepImagesOutput(node, STEPS, geometry_with_info(node))
    assert output.active()
    output.publish(forecast(), frame())
    assert node.sent() == {"deltaworld/step_2/depth": 1}
    idle = StandInNode()
    assert not StepImagesOutput(idle, STEPS, geometry_with_info(idle)).active()


def test_obstacles_wait_for_a_subscriber_and_a_camera_info():
    idle = StandInNode()
    assert not ObstaclesOutput(idle, geometry_with_info(idle), ObstacleClasses(idle)).active()
    node = StandInNode({"deltaworld/obstacles"})
    geometry = geometry_with_info(node, stamp=None)
    output = ObstaclesOutput(node, geometry, ObstacleClasses(node))
    output.publish(forecast(), frame())
    assert node.sent() == {} and geometry.status().startswith("no camera_info received")
    geometry.cache.add(camera_info_msg(Pinhole(5.0, 5.0, 3.5, 2.5, W, H), frame().meta.header))
    output.publish(forecast(), frame())
    cloud = node.publishers["deltaworld/obstacles"].sent[-1]
    assert cloud.width == STEPS * H * W and geometry.status() == "ok"


def test_a_camera_info_of_another_stamp_stands_in_and_diagnostics_say_so():
    node = StandInNode({"deltaworld/step_1/camera_info"})
    geometry = geometry_with_info(node, stamp=STAMP - 0.5)
    StepImagesOutput(node, STEPS, geometry).publish(forecast(), frame())
    assert node.sent() == {"deltaworld/step_1/camera_info": 1}
    assert geometry.status() == "ok (the newest; none had the image's stamp)"


def test_class_names_are_sent_once_per_list():
    node = StandInNode()
    output = LabelInfoOutput(node)
    assert output.active()  # latched: sent whoever listens now
    for _ in range(3):
        output.publish(forecast(), frame())
    assert node.sent() == {"deltaworld/label_info": 1}


class TransformBuffer:
    """Stands in for tf2_ros.Buffer: the camera's pose once ``pose`` is set, tf2's error before."""

    def __init__(self):
        self.pose = None

    def lookup_transform(self, target: str, source: str, stamp, timeout):
        if self.pose is None:
            raise LookupError(f'"{target}" passed to lookupTransform argument target_frame does not exist.\n')
        return self.pose


def test_a_risk_grid_without_the_camera_pose_says_why_until_one_is_made():
    from geometry_msgs.msg import Quaternion, TransformStamped

    node = StandInNode({"deltaworld/risk_grid"})
    node.param = lambda name: False if name == "risk_grid_use_tf" else PARAMETERS[name][0]
    output = RiskGridOutput(node, geometry_with_info(node), ObstacleClasses(node))
    assert risk_grid_status([]) == "off" and risk_grid_status([output]) == "ok"
    output.tf_buffer = TransformBuffer()
    output.publish(forecast(), frame())
    assert node.sent() == {}
    assert risk_grid_status([output]) == ("no transform from 'camera_optical_frame' to 'base_link': "
                                          '"base_link" passed to lookupTransform argument target_frame does not exist.')
    output.tf_buffer.pose = TransformStamped()
    output.tf_buffer.pose.transform.rotation = Quaternion(x=-0.5, y=0.5, z=-0.5, w=0.5)  # optical frame looking along +x
    output.publish(forecast(), frame())
    assert node.sent() == {"deltaworld/risk_grid": 1} and risk_grid_status([output]) == "ok"
