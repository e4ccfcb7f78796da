"""forecast_node's planner-facing outputs (see node_outputs for the Output interface): per-step
depth / depth_std / labels / camera_info images, predicted obstacles as a PointCloud2, a risk
OccupancyGrid and the class names. Each is behind a parameter and does its work only while
someone subscribes. Every message carries the observation's header (the newest camera image's
stamp and frame_id: TF never has to extrapolate into the future); the horizon is in the data.

The 3-D outputs need the maps' intrinsics, from the camera's CameraInfo (:class:`MapGeometry`);
without one they stay silent and :meth:`MapGeometry.status` says why (/diagnostics shows it).
"""

from __future__ import annotations

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time as RclpyTime
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from deltaworld_core.planning import Transform, obstacle_points, risk_grid, stride_for
from deltaworld_ros.camera_info_input import MapGeometry
from deltaworld_ros.image_conversion import array_to_image_msg
from deltaworld_ros.node_outputs import OUTPUT_QOS, Output
from deltaworld_ros.planner_msgs import LabelInfo, camera_info_msg, grid_to_msg, label_info_msg, obstacles_to_cloud

try:  # TF where a ROS install provides tf2_ros; a static mount from parameters otherwise
    import tf2_ros
except ImportError:
    tf2_ros = None

# Class names and the risk grid: kept for late subscribers, as map_server publishes a map (Nav2's
# static layer and costmap filters subscribe transient local and would not match a volatile one).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
STEP_KINDS = ("depth", "depth_std", "labels", "camera_info")


def _observation(header: Header) -> Header:
    return Header(stamp=header.stamp, frame_id=header.frame_id)


class StepImagesOutput(Output):
    """Per step n = 1..horizon: ``deltaworld/step_<n>/depth`` (32FC1 metres, the mean over K; REP
    118), ``depth_std``, ``labels`` (mono8, the mode over K) and ``camera_info``, as one camera
    namespace per step for depth_image_proc and RViz. Each image is made only for its subscribers."""

    def __init__(self, node, horizon: int, geometry: MapGeometry):
        self.node, self.geometry = node, geometry
        types = {"depth": Image, "depth_std": Image, "labels": Image, "camera_info": CameraInfo}
        self.publishers = [{kind: node.create_lifecycle_publisher(types[kind], f"deltaworld/step_{n}/{kind}",
                                                                  OUTPUT_QOS)
                            for kind in STEP_KINDS} for n in range(1, horizon + 1)]

    def active(self) -> bool:
        return any(p.get_subscription_count() > 0 for step in self.publishers for p in step.values())

    def publish(self, forecast, frame) -> None:
        header = _observation(frame.meta.header)
        s = forecast.summary
        for n, pubs in enumerate(self.publishers[:forecast.horizon]):
            if pubs["depth"].get_subscription_count():
                pubs["depth"].publish(array_to_image_msg(s.depth_mean[n], "32FC1", header))
            if pubs["depth_std"].get_subscription_count():
                pubs["depth_std"].publish(array_to_image_msg(s.depth_std[n], "32FC1", header))
            if pubs["labels"].get_subscription_count():
                pubs["labels"].publish(array_to_image_msg(s.semantic_mode[n], "mono8", header))
            if pubs["camera_info"].get_subscription_count():
                camera = self.geometry.camera(forecast, frame)
                if camera is not None:  # no invented intrinsics
                    pubs["camera_info"].publish(camera_info_msg(camera, header))

    def destroy(self) -> None:
        for step in self.publishers:
            for publisher in step.values():
                self.node.destroy_lifecycle_publisher(publisher)


class ObstacleClasses:
    """The ids of the ``obstacle_classes`` parameter's names among a forecast's class names,
    looked up when either changes. Names a model lacks are skipped (one list serves models with
    different classes); a list that matches none of them is warned about."""

    def __init__(self, node):
        self.node = node
        self._ids: tuple[tuple, list[int]] = ((), [])

    def ids(self, class_names) -> list[int]:
        names, wanted = list(class_names), list(self.node.param("obstacle_classes"))
        key = (tuple(names), tuple(wanted))
        if self._ids[0] != key:
            ids = [names.index(n) for n in wanted if n in names]
            if not ids:
                self.node.get_logger().warning(
                    f"none of obstacle_classes ({', '.join(wanted) or 'empty'}) is among the model's classes "
                    f"({', '.join(names)}): no obstacles are predicted")
            self._ids = (key, ids)
        return self._ids[1]


class ObstaclesOutput(Output):
    """``deltaworld/obstacles`` (sensor_msgs/PointCloud2 in the camera's optical frame): x y z,
    step, t_ahead, p, class per point; ``obstacle_classes``, ``obstacle_min_p`` and at most
    ``obstacle_max_points`` points (a stride over the maps)."""

    def __init__(self, node, geometry: MapGeometry, classes: ObstacleClasses):
        super().__init__(node, PointCloud2, "deltaworld/obstacles")
        self.geometry, self.classes = geometry, classes

    def publish(self, forecast, frame) -> None:
        camera = self.geometry.camera(forecast, frame)
        if camera is None:
            return
        k, steps, h, w = forecast.semantic.shape
        points = obstacle_points(forecast.semantic, forecast.depth, camera, self.classes.ids(forecast.class_names),
                                 t_ahead=np.asarray(forecast.stamps) - forecast.stamp,
                                 min_p=self.node.param("obstacle_min_p"),
                                 stride=stride_for(steps, h, w, self.node.param("obstacle_max_points")))
        self.publisher.publish(obstacles_to_cloud(points, _observation(frame.meta.header)))


class RiskGridOutput(Output):
    """``deltaworld/risk_grid`` (nav_msgs/OccupancyGrid in ``risk_grid_frame``, a window of
    ``risk_grid_size`` m centred on the camera): 100 x the fraction of the K futures in which an
    obstacle lands in a cell within the horizon, -1 where the camera sees nothing. The camera's
    pose comes from TF where tf2_ros is installed, else from ``camera_mount_xyz``/``_rpy``.
    ``problem``: why the newest try made no grid (the pose lookup failed), None once one is made."""

    def __init__(self, node, geometry: MapGeometry, classes: ObstacleClasses):
        super().__init__(node, OccupancyGrid, "deltaworld/risk_grid", LATCHED_QOS)
        self.geometry, self.classes = geometry, classes
        self.problem: str | None = None
        self.tf_buffer = None
        if tf2_ros is not None and node.param("risk_grid_use_tf"):
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)

    def mount(self, header: Header) -> Transform | None:
        """The camera's pose in ``risk_grid_frame`` at ``header``'s stamp; None (and ``problem``
        says why) when TF has none."""
        if self.tf_buffer is None:
            return Transform.from_rpy(self.node.param("camera_mount_xyz"), self.node.param("camera_mount_rpy"))
        grid_frame = self.node.param("risk_grid_frame")
        try:
            t = self.tf_buffer.lookup_transform(grid_frame, header.frame_id,
                                                RclpyTime.from_msg(header.stamp), Duration(seconds=0.1)).transform
        except Exception as err:  # noqa: BLE001 - tf2's lookup, connectivity and extrapolation errors: no grid
            reason = " ".join(str(err).split()) or type(err).__name__
            self.problem = f"no transform from {header.frame_id!r} to {grid_frame!r}: {reason}"
            return None
        return Transform.from_quaternion([t.translation.x, t.translation.y, t.translation.z],
                                         [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])

    def publish(self, forecast, frame) -> None:
        header = frame.meta.header
        camera = self.geometry.camera(forecast, frame)
        mount = None if camera is None else self.mount(header)
        if mount is None:
            return
        k, steps, h, w = forecast.semantic.shape
        grid = risk_grid(forecast.semantic, forecast.depth, camera, self.classes.ids(forecast.class_names), mount,
                         resolution=self.node.param("risk_grid_resolution"), size_m=self.node.param("risk_grid_size"),
                         stride=stride_for(k * steps, h, w, self.node.param("risk_grid_max_points")))
        grid_frame = self.node.param("risk_grid_frame")
        self.publisher.publish(grid_to_msg(grid, Header(stamp=header.stamp, frame_id=grid_frame)))
        self.problem = None


class LabelInfoOutput(Output):
    """``deltaworld/label_info``: the class names (vision_msgs/LabelInfo where installed, the
    package's equivalent otherwise), sent when they change and kept for late subscribers."""

    def __init__(self, node):
        super().__init__(node, LabelInfo, "deltaworld/label_info", LATCHED_QOS)
        self._sent: tuple | None = None

    def active(self) -> bool:
        return True

    def publish(self, forecast, frame) -> None:
        names = tuple(forecast.class_names)
        if names != self._sent:
            self.publisher.publish(label_info_msg(names, _observation(frame.meta.header)))
            self._sent = names


def risk_grid_status(outputs: list[Output]) -> str:
    """For /diagnostics: ``off`` without a risk grid output among ``outputs``, else ``ok`` or why
    the newest grid was not made."""
    grids = [o for o in outputs if isinstance(o, RiskGridOutput)]
    if not grids:
        return "off"
    return grids[0].problem or "ok"


def make_planner_outputs(node, horizon: int, geometry: MapGeometry) -> list[Output]:
    """The planner-facing outputs the node's parameters ask for."""
    outputs: list[Output] = [LabelInfoOutput(node)]
    if node.param("publish_step_images"):
        outputs.append(StepImagesOutput(node, horizon, geometry))
    classes = ObstacleClasses(node)
    if node.param("publish_obstacles"):
        outputs.append(ObstaclesOutput(node, geometry, classes))
    if node.param("publish_risk_grid"):
        outputs.append(RiskGridOutput(node, geometry, classes))
    return outputs
