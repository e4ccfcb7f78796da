"""The messages planners read (deltaworld_ros.planner_msgs, camera_info_input) and the Python API
on Futures (decode_futures(...).points): field layouts, CameraInfo scaling, stamp matching."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from deltaworld_core.camera_model import Pinhole, back_project  # noqa: E402
from deltaworld_core.planning import ObstaclePoints, RiskGrid  # noqa: E402
from deltaworld_ros.camera_info_input import CameraInfoCache, camera_info_topic  # noqa: E402
from deltaworld_ros.futures_msg import decode_futures, forecast_to_msg  # noqa: E402
from deltaworld_ros.planner_msgs import (camera_info_msg, grid_to_msg, label_info_msg, obstacles_to_cloud,  # noqa: E402
                                         pinhole_from_camera_info, read_cloud)

from test_ros_conversion import fake_forecast  # noqa: E402

HEADER = Header(stamp=Time(sec=1700000000, nanosec=250_000_000), frame_id="camera_optical")


def camera_info(fx=500.0, fy=480.0, cx=319.5, cy=237.0, width=640, height=480, stamp=HEADER.stamp, p=True,
                d=(0.0,) * 5) -> CameraInfo:
    info = CameraInfo(header=Header(stamp=stamp, frame_id="camera_optical"), width=width, height=height,
                      distortion_model="plumb_bob")
    info.d = list(d)
    info.k = [fx + (7.0 if p else 0.0), 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]  # K differs: P must win
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0] if p else [0.0] * 12
    return info


def test_obstacle_cloud_fields_are_the_contract():
    pts = ObstaclePoints(xyz=np.array([[1, 2, 3], [-1, 0.5, 4]], np.float32), step=np.array([1, 3], np.uint8),
                         t_ahead=np.array([0.2, 0.6], np.float32), p=np.array([1.0, 0.25], np.float32),
                         cls=np.array([11, 12], np.uint8))
    msg = obstacles_to_cloud(pts, HEADER)
    assert msg.header == HEADER and (msg.height, msg.width) == (1, 2) and msg.is_dense
    assert [(f.name, f.datatype, f.count) for f in msg.fields] == [
        ("x", PointField.FLOAT32, 1), ("y", PointField.FLOAT32, 1), ("z", PointField.FLOAT32, 1),
        ("step", PointField.UINT8, 1), ("t_ahead", PointField.FLOAT32, 1), ("p", PointField.FLOAT32, 1),
        ("class", PointField.UINT8, 1)]
    # read back by hand from the declared offsets, independently of read_cloud
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(2, msg.point_step)
    offset = {f.name: f.offset for f in msg.fields}
    np.testing.assert_array_equal(raw[:, offset["z"]:offset["z"] + 4].copy().view(np.float32)[:, 0], [3, 4])
    np.testing.assert_array_equal(raw[:, offset["class"]], [11, 12])
    np.testing.assert_array_equal(raw[:, offset["step"]], [1, 3])
    cloud = read_cloud(msg)
    np.testing.assert_array_equal(cloud["p"], [1.0, 0.25])
    np.testing.assert_array_equal(cloud["t_ahead"], np.float32([0.2, 0.6]))


def test_read_cloud_skips_row_padding():
    pts = ObstaclePoints(np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.uint8), np.zeros(2, np.float32),
                         np.ones(2, np.float32), np.zeros(2, np.uint8))
    msg = obstacles_to_cloud(pts, HEADER)
    msg.height, msg.width, msg.row_step = 2, 1, msg.point_step + 8
    row = bytes(msg.data)
    msg.data = row[:24] + b"\xab" * 8 + row[24:] + b"\xab" * 8
    np.testing.assert_array_equal(read_cloud(msg)["x"], [0, 3])
    msg.data = row[:30]
    with pytest.raises(ValueError, match="does not fit"):
        read_cloud(msg)


def test_grid_message():
    grid = RiskGrid(np.array([[0, 100, -1], [25, 0, 0]], np.int8), origin_x=-1.5, origin_y=2.0, resolution=0.5)
    msg = grid_to_msg(grid, Header(stamp=HEADER.stamp, frame_id="base_link"))
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (3, 2, 0.5)
    assert (msg.info.origin.position.x, msg.info.origin.position.y, msg.info.origin.orientation.w) == (-1.5, 2.0, 1.0)
    assert msg.data == array.array("b", [0, 100, -1, 25, 0, 0]) and msg.header.frame_id == "base_link"


def test_camera_info_round_trip_and_scaling():
    cam = Pinhole(fx=87.5, fy=112.0, cx=55.5, cy=55.3, width=112, height=112)
    msg = camera_info_msg(cam, HEADER)
    assert list(msg.d) == [0.0] * 5 and list(msg.r) == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    assert list(msg.k) == [87.5, 0, 55.5, 0, 112.0, 55.3, 0, 0, 1] and msg.p[2] == 55.5 and msg.p[3] == 0.0
    assert pinhole_from_camera_info(msg, 112, 112) == cam
    # P is used (the rectified image), K only where P is unset
    assert pinhole_from_camera_info(camera_info(), 480, 640) == Pinhole(500.0, 480.0, 319.5, 237.0, 640, 480)
    assert pinhole_from_camera_info(camera_info(p=False), 480, 640).fx == 500.0
    # binning 2 and a region of interest: the delivered 160x120 image is the ROI averaged 2x2
    info = camera_info()
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 320, 240
    binned = pinhole_from_camera_info(info, 120, 160)
    assert binned == Pinhole(250.0, 240.0, (319.5 - 100 + 0.5) / 2 - 0.5, (237.0 - 40 + 0.5) / 2 - 0.5, 160, 120)
    # a frame the node decoded at a quarter of its size (1281x961: the last partial block kept)
    quarter = pinhole_from_camera_info(camera_info(width=1281, height=961), 241, 321)
    assert quarter == Pinhole(125.0, 120.0, (319.5 + 0.5) / 4 - 0.5, (237.0 + 0.5) / 4 - 0.5, 321, 241)


@pytest.mark.parametrize("change, error", [
    (dict(fx=0.0, fy=0.0, p=False), "uncalibrated"),
    (dict(width=0, height=0), "no image size"),
    (dict(width=1000, height=960), "describes 1000x960 images, the camera sends 640x480"),
])
def test_unusable_camera_info_says_why(change, error):
    with pytest.raises(ValueError, match=error):
        pinhole_from_camera_info(camera_info(**change), 480, 640)


def test_camera_info_cache_matches_stamps_and_warns_once_about_distortion():
    warnings = []
    cache = CameraInfoCache(warnings.append, kept=3)
    assert cache.intrinsics(1, 480, 640) is None and cache.problem == "no camera_info received"
    for sec, fx in [(1, 500.0), (2, 510.0), (3, 520.0)]:
        cache.add(camera_info(fx=fx, stamp=Time(sec=sec), d=(0.1, 0, 0, 0, 0)))
    assert len(warnings) == 1 and "rectified" in warnings[0]
    assert cache.intrinsics(2 * 10**9, 480, 640).fx == 510.0 and cache.exact
    assert cache.intrinsics(9 * 10**9, 480, 640).fx == 520.0 and not cache.exact  # the newest stands in
    cache.add(camera_info(fx=530.0, stamp=Time(sec=4)))
    assert cache.intrinsics(1 * 10**9, 480, 640).fx == 530.0 and not cache.exact  # the oldest was dropped
    assert cache.intrinsics(4 * 10**9, 200, 300) is None and "describes 640x480" in cache.problem


@pytest.mark.parametrize("image_topic, info_topic", [
    ("camera/image_raw", "camera/camera_info"), ("/robot/cam/image_rect", "/robot/cam/camera_info"),
    ("image", "camera_info")])
def test_camera_info_topic_is_beside_the_image(image_topic, info_topic):
    assert camera_info_topic(image_topic) == info_topic


def test_label_info_fields():
    msg = label_info_msg(["road", "person"], HEADER)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "road"), (1, "person")]
    assert set(type(msg).get_fields_and_field_types()) == {"header", "class_map", "threshold"}


def test_futures_carry_the_maps_camera_info_and_give_points():
    forecast = fake_forecast(k=3, horizon=2, h=4, w=5)
    cam = Pinhole(fx=4.0, fy=4.5, cx=2.0, cy=1.5, width=5, height=4)
    msg = forecast_to_msg(forecast, HEADER, cam)
    assert msg.camera_info.header == HEADER and (msg.camera_info.width, msg.camera_info.height) == (5, 4)
    futures = decode_futures(msg)
    assert futures.camera == cam
    assert futures.depth.shape == (3, 2, 4, 5) and futures.depth.flags.c_contiguous
    v, u = np.mgrid[0:4, 0:5]
    z = futures.depth[1, 0]
    np.testing.assert_array_equal(futures.points(u, v, z), back_project(u, v, z, cam))
    np.testing.assert_allclose(futures.points(u, v, z)[..., 0], (u - 2.0) * z / 4.0, rtol=1e-6)
    without = decode_futures(forecast_to_msg(forecast, HEADER))
    assert without.camera is None and msg.camera_info.width == 5
    with pytest.raises(ValueError, match="no camera_info"):
        without.points(u, v, z)
