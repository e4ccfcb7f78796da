"""Predicted obstacle points and the risk grid (deltaworld_core.planning) on scenes of known
depth and classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deltaworld_core.camera_model import Pinhole, back_project
from deltaworld_core.planning import Transform, obstacle_points, risk_grid, stride_for

CAMERA = Pinhole(fx=40.0, fy=40.0, cx=31.5, cy=23.5, width=64, height=48)
PERSON = 3
# The optical frame (z forward, x right, y down) in a base frame (x forward, y left, z up): REP 103.
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)


def plane_scene(k: int = 4, steps: int = 2, z: float = 3.0, box=(10, 20, 30, 40), in_futures: int = 3):
    """A wall at ``z`` metres; class PERSON in ``box`` = (v0, u0, v1, u1) in the first ``in_futures``
    of the K futures at every step, class 1 elsewhere."""
    semantic = np.ones((k, steps, CAMERA.height, CAMERA.width), np.uint8)
    v0, u0, v1, u1 = box
    semantic[:in_futures, :, v0:v1, u0:u1] = PERSON
    return semantic, np.full(semantic.shape, z, np.float32)


def test_points_lie_on_the_wall_where_the_obstacle_is():
    semantic, depth = plane_scene()
    pts = obstacle_points(semantic, depth, CAMERA, [PERSON], t_ahead=[0.2, 0.4])
    assert len(pts) == 2 * 20 * 20  # the box at both steps, every pixel (stride 1)
    v, u = np.mgrid[10:30, 20:40]
    expected = back_project(u, v, np.full(u.shape, 3.0), CAMERA).reshape(-1, 3)
    np.testing.assert_allclose(pts.xyz[pts.step == 1], expected, rtol=1e-6)
    assert set(pts.step) == {1, 2}
    np.testing.assert_allclose(pts.t_ahead[pts.step == 2], 0.4)
    np.testing.assert_allclose(pts.p, 0.75)  # 3 of the 4 futures
    assert (pts.cls == PERSON).all()
    assert pts.xyz.dtype == np.float32 and pts.step.dtype == np.uint8 and pts.cls.dtype == np.uint8


def test_min_p_and_obstacle_classes_select_points():
    semantic, depth = plane_scene()
    assert len(obstacle_points(semantic, depth, CAMERA, [PERSON], [0.2, 0.4], min_p=0.8)) == 0
    assert len(obstacle_points(semantic, depth, CAMERA, [PERSON], [0.2, 0.4], min_p=0.75)) == 800
    assert len(obstacle_points(semantic, depth, CAMERA, [7], [0.2, 0.4])) == 0
    everything = obstacle_points(semantic, depth, CAMERA, [1, PERSON], [0.2, 0.4])
    assert len(everything) == 2 * 64 * 48 and everything.p.min() == 1.0
    # in the box 3 futures say PERSON and one says 1: the point's class is the most frequent
    assert (everything.cls == PERSON).sum() == 800


def test_invalid_depth_is_no_obstacle_and_the_depth_is_the_obstacle_futures_mean():
    semantic, depth = plane_scene()
    depth[0] = np.nan
    depth[1] = 5.0
    pts = obstacle_points(semantic, depth, CAMERA, [PERSON], [0.2, 0.4])
    np.testing.assert_allclose(pts.p, 0.5)
    np.testing.assert_allclose(pts.xyz[:, 2], 4.0)


def test_stride_bounds_the_point_count():
    for steps, h, w, budget in [(3, 112, 112, 5000), (5, 480, 640, 20000), (1, 7, 9, 1), (4, 448, 448, 1000)]:
        s = stride_for(steps, h, w, budget)
        assert steps * len(range(s // 2, h, s)) * len(range(s // 2, w, s)) <= budget
        assert s == 1 or steps * len(range((s - 1) // 2, h, s - 1)) * len(range((s - 1) // 2, w, s - 1)) > budget
    semantic, depth = plane_scene()
    pts = obstacle_points(semantic, depth, CAMERA, [1, PERSON], [0.2, 0.4], stride=4)
    assert len(pts) == 2 * 12 * 16
    np.testing.assert_array_equal(np.unique(pts.xyz[:, 0]), np.unique(((np.arange(2, 64, 4) - 31.5) * 3 / 40)
                                                                       .astype(np.float32)))


def test_transforms():
    mount = Transform.from_rpy([0.1, 0.2, 1.0], OPTICAL_RPY)
    # optical z (forward) -> base x, optical x (right) -> base -y, optical y (down) -> base -z
    np.testing.assert_allclose(mount.apply(np.array([[0, 0, 2.0], [1.0, 0, 0], [0, 1.0, 0]])),
                               [[2.1, 0.2, 1.0], [0.1, -0.8, 1.0], [0.1, 0.2, 0.0]], atol=1e-12)
    q = Transform.from_quaternion([0.1, 0.2, 1.0], [-0.5, 0.5, -0.5, 0.5])  # the same rotation
    np.testing.assert_allclose(q.rotation, mount.rotation, atol=1e-12)
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(mount.inverse_apply(mount.apply(p)), p, atol=1e-12)


def test_risk_grid_marks_the_cells_where_the_obstacle_stands():
    """Camera 1 m above the ground looking along base x at a wall 3 m ahead; a person in image
    columns 20-39 of 3 of 4 futures. Cells: 0.25 m, a 10 m window centred on the camera."""
    semantic, depth = plane_scene(box=(0, 20, 48, 40))
    mount = Transform.from_rpy([0.0, 0.0, 1.0], OPTICAL_RPY)
    grid = risk_grid(semantic, depth, CAMERA, [PERSON], mount, resolution=0.25, size_m=10.0)
    assert grid.values.shape == (40, 40) and (grid.origin_x, grid.origin_y) == (-5.0, -5.0)
    # the person spans camera x = (u - 31.5) * 3 / 40 for u in 20..39: base y from -0.6 to +0.86
    y_lo, y_hi = -(39 - 31.5) * 3 / 40, -(20 - 31.5) * 3 / 40
    rows = np.arange(math.floor((y_lo + 5) / 0.25), math.floor((y_hi + 5) / 0.25) + 1)  # 17..23
    col = int((3.0 + 5) / 0.25)  # the cell holding x = 3 m
    np.testing.assert_array_equal(np.argwhere(grid.values == 75), np.stack([rows, np.full_like(rows, col)], 1))
    assert set(np.unique(grid.values)) == {-1, 0, 75}
    # in view in front of the wall: free; behind the camera and behind the wall: unknown
    row0 = int((0.0 - grid.origin_y) / 0.25)
    assert grid.values[row0, int((2.0 - grid.origin_x) / 0.25)] == 0
    assert grid.values[row0, int((-2.0 - grid.origin_x) / 0.25)] == -1
    assert grid.values[row0, int((4.0 - grid.origin_x) / 0.25)] == -1


def test_risk_grid_counts_each_future_once():
    semantic, depth = plane_scene(k=4, steps=3, in_futures=1)
    mount = Transform.from_rpy([0.0, 0.0, 1.0], OPTICAL_RPY)
    grid = risk_grid(semantic, depth, CAMERA, [PERSON], mount, resolution=0.5, size_m=8.0, stride=2)
    assert grid.values.max() == 25  # 1 of 4 futures, though at 3 steps and many pixels per cell


@pytest.mark.parametrize("resolution, size", [(0.0, 1.0), (1.0, 0.5)])
def test_bad_grid_window(resolution, size):
    semantic, depth = plane_scene()
    with pytest.raises(ValueError, match="resolution"):
        risk_grid(semantic, depth, CAMERA, [PERSON], Transform.from_rpy([0, 0, 1], OPTICAL_RPY), resolution, size)
