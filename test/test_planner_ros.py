"""The planner-facing outputs on real DDS: a synthetic camera of known intrinsics in front of a
wall of known depth and class, through forecast_node in its own process.

The scene is one the model cannot change: the tiny random-weight model's depth bins all lie in
[3.1, 3.1001] m, so every future's depth is a wall 3.1 m ahead, and its only class is "person",
so every pixel of every future is an obstacle. What the node publishes is then known exactly:
the per-step camera_info is the camera's K scaled and cropped per forecast.geometry, every cloud
point is a pixel of the map back-projected to the wall, and the risk grid marks the cells where
the wall stands for the given camera mount.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from deltaworld_ros.futures_msg import seconds_to_time, time_to_ns  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from deltaworld_ros.msg import Futures  # noqa: E402
from deltaworld_ros.planner_msgs import LabelInfo, read_cloud  # noqa: E402
from ros_harness import TINY, NodeProcess, smooth_frame, write_model_config  # noqa: E402

WALL = 3.1  # metres
SCENE = {**TINY, "heads.class_names": ["person"], "heads.min_depth": WALL, "heads.max_depth": WALL + 1e-4}
FRAME = (60, 160)  # camera h, w
FX, FY, CX, CY = 70.0, 72.0, 79.5, 29.0  # the camera's (rectified) intrinsics
OUTPUT = (24, 48)  # output_size h, w
HORIZON = 2
# The camera window each geometry's maps cover and the maps' size, from forecast.geometry's rules
# for a 160 x 60 frame and the tiny model's 112 x 56 (2:1) input: squash the whole frame at
# output_size; center_crop the central 120 x 60 window; two_squares the whole frame at the
# canvas whose short side is output_size's (24 px high: 160 x 60 at 0.4 = 64 x 24).
WINDOWS = {"squash": ((0, 0, 60, 160), (24, 48)), "center_crop": ((0, 20, 60, 140), (24, 48)),
           "two_squares": ((0, 0, 60, 160), (24, 64))}
OPTICAL_RPY = [-math.pi / 2, 0.0, -math.pi / 2]
MOUNT_XYZ = [0.0, 0.0, 1.0]  # 1 m above base_link's origin, looking along +x
GRID = dict(resolution=0.25, size=10.0)


def expected_k(geometry: str) -> list[float]:
    """The map's K for ``geometry``: the window's pixels resampled to the map (pixel centres at
    integer coordinates)."""
    (y0, x0, y1, x1), (h, w) = WINDOWS[geometry]
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    return [FX * sx, 0.0, (CX - x0 + 0.5) * sx - 0.5, 0.0, FY * sy, (CY - y0 + 0.5) * sy - 0.5, 0.0, 0.0, 1.0]


def camera_info(header: Header) -> CameraInfo:
    info = CameraInfo(header=header, height=FRAME[0], width=FRAME[1], distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class Camera:
    """Publishes frames and (optionally) their CameraInfo like a camera driver; collects what the
    node's planner outputs send back."""

    def __init__(self, node):
        self.node = node
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image = node.create_publisher(Image, "/camera/image_raw", qos)
        self.info = node.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topics = [(f"/deltaworld/step_{n}/{kind}", CameraInfo if kind == "camera_info" else Image, qos)
                  for n in range(1, HORIZON + 1) for kind in ("camera_info", "depth", "labels")]
        topics += [("/deltaworld/futures", Futures, qos), ("/deltaworld/obstacles", PointCloud2, qos), ("/deltaworld/risk_grid", OccupancyGrid, latched),
                   ("/deltaworld/label_info", LabelInfo, latched)]
        for topic, msg_type, profile in topics:
            node.create_subscription(msg_type, topic, lambda m, t=topic: self._on(t, m), profile)
        self.stamp = time.time()

    def _on(self, topic: str, msg) -> None:
        with self._lock:
            self.received.setdefault(topic, []).append(msg)

    def got(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def send(self, with_info: bool) -> Header:
        self.stamp += 0.1
        header = Header(stamp=seconds_to_time(self.stamp), frame_id="camera_optical_frame")
        if with_info:
            self.info.publish(camera_info(header))
        self.image.publish(array_to_image_msg(smooth_frame(*FRAME), "rgb8", header))
        return header

    def send_until(self, predicate, what: str, node: NodeProcess, with_info: bool = True, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert node.alive(), f"node exited:\n{node.log()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{node.log()}"
            self.send(with_info)
            time.sleep(0.15)


@pytest.fixture
def camera(ros_node):
    from rclpy.executors import SingleThreadedExecutor

    cam = Camera(ros_node)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield cam
    executor.shutdown(timeout_sec=2)


def start_node(tmp_path, ros_env, geometry: str, **params) -> NodeProcess:
    config = write_model_config(tmp_path / "wall.yaml", SCENE)
    return NodeProcess(tmp_path, ros_env, model_config=str(config), k=3, horizon=HORIZON, step_s=0.2,
                       output_size=list(OUTPUT), geometry=geometry, input_reliability="reliable",
                       obstacle_classes=["person"], diagnostics_period_s=0.5, **params)


def wait_connected(camera: Camera, node: NodeProcess) -> None:
    deadline = time.monotonic() + 90
    while camera.image.get_subscription_count() == 0 or camera.info.get_subscription_count() == 0:
        assert node.alive() and time.monotonic() < deadline, f"the node did not subscribe:\n{node.log()}"
        time.sleep(0.05)
    time.sleep(0.3)


def check_cloud(cloud: PointCloud2, geometry: str) -> None:
    """Every map pixel of every step is a point, within 1% of where the wall is at that pixel."""
    (y0, x0, y1, x1), (h, w) = WINDOWS[geometry]
    points = read_cloud(cloud)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "step", "t_ahead", "p", "class"]
    assert len(points) == HORIZON * h * w
    assert set(points["step"]) == set(range(1, HORIZON + 1))
    np.testing.assert_allclose(points["t_ahead"], 0.2 * points["step"], rtol=1e-6)
    assert (points["p"] == 1.0).all() and (points["class"] == 0).all()
    # The true point of map pixel (u, v): the camera pixel at its centre, on the wall.
    v, u = np.mgrid[0:h, 0:w]
    cam_u = x0 + (u + 0.5) * (x1 - x0) / w - 0.5
    cam_v = y0 + (v + 0.5) * (y1 - y0) / h - 0.5
    truth = np.stack([(cam_u - CX) * WALL / FX, (cam_v - CY) * WALL / FY, np.full(u.shape, WALL)], -1).reshape(-1, 3)
    for step in range(1, HORIZON + 1):
        got = np.stack([points[a][points["step"] == step] for a in "xyz"], -1).astype(np.float64)
        # points are in row-major pixel order; match each to its nearest true point to be order-free
        nearest = np.argmin(((got[:, None, :2] - truth[None, :, :2]) ** 2).sum(-1), axis=1)
        assert len(set(nearest)) == h * w, "two points claim the same pixel"
        error = np.linalg.norm(got - truth[nearest], axis=1) / np.linalg.norm(truth[nearest], axis=1)
        assert error.max() < 0.01, f"{geometry}: a point {error.max():.2%} off its true position"


@pytest.mark.parametrize("geometry", ["squash", "center_crop", "two_squares"])
def test_camera_info_and_obstacles_follow_the_geometry(tmp_path, ros_env, camera, geometry):
    node = start_node(tmp_path, ros_env, geometry)
    try:
        wait_connected(camera, node)
        camera.send_until(lambda: camera.got("/deltaworld/obstacles") and camera.got("/deltaworld/step_2/camera_info"),
                          "the cloud and the per-step camera_info", node)
        for n in range(1, HORIZON + 1):
            info = camera.got(f"/deltaworld/step_{n}/camera_info")[-1]
            _, (h, w) = WINDOWS[geometry]
            assert (info.height, info.width) == (h, w)
            assert list(info.k) == pytest.approx(expected_k(geometry), rel=1e-12, abs=1e-12)
            assert list(info.d) == [0.0] * 5 and info.header.frame_id == "camera_optical_frame"
        # the Futures message carries the same intrinsics (for planners that decode it themselves)
        futures = [f for f in camera.got("/deltaworld/futures") if f.camera_info.width]
        assert futures and list(futures[-1].camera_info.k) == pytest.approx(expected_k(geometry), rel=1e-12)
        cloud = camera.got("/deltaworld/obstacles")[-1]
        assert cloud.header.frame_id == "camera_optical_frame"
        # stamped at the observation: the stamp of an image the camera sent (a 0.1 s grid after start)
        depth = camera.got("/deltaworld/step_1/depth")
        assert depth and any(time_to_ns(d.header.stamp) == time_to_ns(cloud.header.stamp) for d in depth)
        check_cloud(cloud, geometry)
    finally:
        node.stop()


def test_without_camera_info_the_3d_outputs_stay_silent_and_diagnostics_say_why(tmp_path, ros_env, camera):
    from diagnostic_msgs.msg import DiagnosticArray

    statuses = []
    camera.node.create_subscription(DiagnosticArray, "/diagnostics", statuses.append, 50)
    node = start_node(tmp_path, ros_env, "squash")
    try:
        wait_connected(camera, node)
        camera.send_until(lambda: len(camera.got("/deltaworld/step_1/depth")) >= 3, "per-step depth", node,
                          with_info=False)
        assert not camera.got("/deltaworld/obstacles") and not camera.got("/deltaworld/step_1/camera_info")
        depth = camera.got("/deltaworld/step_1/depth")[-1]
        assert depth.encoding == "32FC1" and (depth.height, depth.width) == OUTPUT
        np.testing.assert_allclose(np.frombuffer(bytes(depth.data), np.float32), WALL, rtol=1e-4)
        values = lambda: {kv.key: kv.value for a in list(statuses) for s in a.status if "forecast_node" in s.name
                          for kv in s.values}  # noqa: E731
        camera.send_until(lambda: "no camera_info received" in values().get("camera_info", ""),
                          "/diagnostics naming the missing camera_info", node, with_info=False)
        labels = camera.got("/deltaworld/label_info")
        assert labels and [c.class_name for c in labels[-1].class_map] == ["person"]
    finally:
        node.stop()


def test_camera_info_is_remappable(tmp_path, ros_env, camera):
    """``-r camera/camera_info:=...`` moves the node's CameraInfo input, as with any camera node."""
    default_info = camera.info
    camera.info = camera.node.create_publisher(CameraInfo, "/calibration/info",
                                               QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    node = start_node(tmp_path, ros_env, "squash", ros_args=("-r", "camera/camera_info:=/calibration/info"))
    try:
        wait_connected(camera, node)
        camera.send_until(lambda: camera.got("/deltaworld/step_1/camera_info"), "the per-step camera_info", node)
        assert default_info.get_subscription_count() == 0
        assert list(camera.got("/deltaworld/step_1/camera_info")[-1].k) == pytest.approx(expected_k("squash"))
    finally:
        node.stop()


def test_risk_grid_marks_the_wall_for_the_mount(tmp_path, ros_env, camera):
    node = start_node(tmp_path, ros_env, "squash", publish_risk_grid=True, risk_grid_frame="base_link",
                      risk_grid_resolution=GRID["resolution"], risk_grid_size=GRID["size"],
                      camera_mount_xyz=MOUNT_XYZ, camera_mount_rpy=OPTICAL_RPY)
    try:
        wait_connected(camera, node)
        camera.send_until(lambda: camera.got("/deltaworld/risk_grid"), "the risk grid", node)
        grid = camera.got("/deltaworld/risk_grid")[-1]
        res, n = GRID["resolution"], int(GRID["size"] / GRID["resolution"])
        assert grid.header.frame_id == "base_link" and (grid.info.width, grid.info.height) == (n, n)
        assert (grid.info.origin.position.x, grid.info.origin.position.y) == (-5.0, -5.0)
        values = np.array(grid.data, np.int8).reshape(n, n)
        # The wall 3.1 m ahead spans, at the map's pixel centres, base y = -(u - CX) * 3.1 / FX
        # (optical x is base -y) for the camera columns the 48 map columns sample.
        cam_u = (np.arange(OUTPUT[1]) + 0.5) * FRAME[1] / OUTPUT[1] - 0.5
        rows = set(np.floor((-(cam_u - CX) * WALL / FX + 5.0) / res).astype(int))
        col = int(np.floor((WALL + 5.0) / res))
        assert {tuple(c) for c in np.argwhere(values == 100)} == {(r, col) for r in rows}
        assert values.max() == 100 and set(np.unique(values)) <= {-1, 0, 100}
        # behind the camera: unknown; on the ground between the camera and the wall, in view: free
        assert values[n // 2, int((-1.0 + 5.0) / res)] == -1
        assert values[n // 2, int((2.8 + 5.0) / res)] == 0
    finally:
        node.stop()
