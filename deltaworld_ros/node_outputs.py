"""forecast_node's outputs: each a small object that publishes one kind of message per forecast.

The interface (:class:`Output`), for every output the node has or will have:

- made in :func:`make_outputs` at configure, from the node's parameters, each holding its own
  lifecycle publisher(s) (they publish only while the node is active);
- ``active()``: whether to do the work for this forecast, e.g. whether anyone subscribes (a debug
  image nobody reads is never drawn); the Futures message is always published;
- ``publish(forecast, frame)``: publishes from a :class:`~deltaworld_core.forecaster.Forecast`
  of the camera frame ``frame`` (:class:`~deltaworld_core.runner.Frame`): ``frame.meta`` is the
  camera message's :class:`~deltaworld_ros.node_camera.CameraMeta` (``header``, the
  ``std_msgs/Header`` to stamp outputs with; ``height`` and ``width`` of the camera image as
  sent), ``frame.image`` the frame as converted for the model (HxWx3 uint8 RGB, at most the model's
  size). Runs on the forecast stage's thread: it may take time, and an exception is counted as a
  model error and logged, never fatal;
- ``destroy()``: at cleanup.

To add an output: a subclass with ``active`` and ``publish``, one line in :func:`make_outputs`
(the planner-facing outputs: planner_outputs.make_planner_outputs).
"""

from __future__ import annotations

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from deltaworld_ros.camera_info_input import MapGeometry
from deltaworld_ros.futures_msg import forecast_to_msg
from deltaworld_ros.image_conversion import array_to_image_msg
from deltaworld_ros.msg import Futures

# Reliable so that ~MB messages are not lost to one missing fragment; depth 2 so that a slow
# subscriber gets the newest futures rather than a backlog.
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


class Output:
    """One lifecycle publisher of ``msg_type`` on ``topic`` (see the module docstring)."""

    def __init__(self, node, msg_type, topic: str, qos: QoSProfile = OUTPUT_QOS):
        self.node = node
        self.publisher = node.create_lifecycle_publisher(msg_type, topic, qos)

    def active(self) -> bool:
        return self.publisher.get_subscription_count() > 0

    def publish(self, forecast, frame) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        self.node.destroy_lifecycle_publisher(self.publisher)


class FuturesOutput(Output):
    """deltaworld_ros/Futures on ``futures_topic``: the forecast itself, published whoever listens
    (``forecasts_published`` in /diagnostics counts these), with the maps' intrinsics in
    ``camera_info`` when the camera sends its CameraInfo (``geometry``, a MapGeometry)."""

    def __init__(self, node, geometry: MapGeometry):
        super().__init__(node, Futures, node.param("futures_topic"))
        self.geometry = geometry

    def active(self) -> bool:
        return True

    def publish(self, forecast, frame) -> None:
        self.publisher.publish(forecast_to_msg(forecast, frame.meta.header, self.geometry.camera(forecast, frame)))


class DebugImageOutput(Output):
    """A colour-coded grid of hypotheses x steps (sensor_msgs/Image rgb8) on ``debug_image_topic``,
    drawn only while someone subscribes."""

    def __init__(self, node):
        super().__init__(node, Image, node.param("debug_image_topic"))

    def publish(self, forecast, frame) -> None:
        from deltaworld_core.viz import forecast_grid  # drawing code: loaded once someone watches

        self.publisher.publish(array_to_image_msg(forecast_grid(frame.image, forecast), "rgb8", frame.meta.header))


def make_outputs(node, geometry: MapGeometry) -> list[Output]:
    """The Futures (first) and debug image outputs the node's parameters ask for."""
    outputs: list[Output] = [FuturesOutput(node, geometry)]
    if node.param("publish_debug_image"):
        outputs.append(DebugImageOutput(node))
    return outputs
