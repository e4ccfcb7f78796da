"""Intrinsics of the published maps (deltaworld_core.camera_model): derived from the camera's for
each forecast.geometry, checked against the pipeline's own resampling, and depth_image_proc's
back-projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deltaworld_core.camera_model import Pinhole, back_project, map_intrinsics, project, view_intrinsics
from deltaworld_core.geometry import blend, cut_views, layout

CAMERA = Pinhole(fx=500.0, fy=480.0, cx=319.5, cy=237.0, width=640, height=480)


def test_window_is_scale_then_shift_with_pixel_centres():
    # the window x in [100, 300) resampled to 50 px: 4 camera px per map px
    cam = CAMERA.window((40, 100, 440, 300), (100, 50))
    assert (cam.width, cam.height) == (50, 100)
    assert cam.fx == 500.0 / 4 and cam.fy == 480.0 / 4
    assert cam.cx == (319.5 - 100 + 0.5) / 4 - 0.5 and cam.cy == (237.0 - 40 + 0.5) / 4 - 0.5


@pytest.mark.parametrize("geometry, expected", [
    # squash: the whole 640x480 frame at 112x112
    ("squash", dict(fx=500 * 112 / 640, fy=480 * 112 / 480, cx=(319.5 + 0.5) * 112 / 640 - 0.5,
                    cy=(237.0 + 0.5) * 112 / 480 - 0.5, width=112, height=112)),
    # center_crop: the central 480x480 square (x from 80) at 112x112
    ("center_crop", dict(fx=500 * 112 / 480, fy=480 * 112 / 480, cx=(319.5 - 80 + 0.5) * 112 / 480 - 0.5,
                         cy=(237.0 + 0.5) * 112 / 480 - 0.5, width=112, height=112)),
    # two_squares: the whole frame at the canvas, 149x112 (the 4:3 aspect at the short side's 112)
    ("two_squares", dict(fx=500 * 149 / 640, fy=480 * 112 / 480, cx=(319.5 + 0.5) * 149 / 640 - 0.5,
                         cy=(237.0 + 0.5) * 112 / 480 - 0.5, width=149, height=112)),
])
def test_map_intrinsics_per_geometry(geometry, expected):
    lay = layout(geometry, (480, 640), (224, 224), (112, 112))
    assert map_intrinsics(CAMERA, lay) == Pinhole(**expected)


def test_each_square_of_two_squares_has_its_own_window():
    lay = layout("two_squares", (480, 640), (224, 224), (112, 112))
    left, right = view_intrinsics(CAMERA, lay)
    # the frame resized to 224x299 as the release does, squares at both ends: camera columns
    # [0, 479.5) and [160.5, 640), to the camera pixel
    assert lay.views == ((0, 0, 480, 479), (0, 161, 480, 640))
    assert left == CAMERA.window((0, 0, 480, 479), (112, 112))
    assert right.cx == pytest.approx(left.cx - 161 * 112 / 479) and right.fx == pytest.approx(left.fx)


def _ramp(frame: tuple[int, int]) -> np.ndarray:
    """A frame whose value at each pixel is its camera column (float)."""
    return np.broadcast_to(np.arange(frame[1], dtype=np.float32), frame).copy()


@pytest.mark.parametrize("geometry", ["squash", "center_crop", "two_squares"])
def test_intrinsics_match_the_pipeline_resampling(geometry):
    """A camera column ramp cut and resampled as the pipeline does (bilinear, align_corners=False,
    blended): each map pixel's value is the camera column that the map intrinsics put there."""
    frame = (480, 640)
    lay = layout(geometry, frame, (224, 224), (112, 112))
    views = cut_views(_ramp(frame)[..., None], lay)[..., 0]  # [V, h, w]
    resized = F.interpolate(torch.from_numpy(views)[:, None], size=lay.view_size, mode="bilinear",
                            align_corners=False)  # [V, 1, vh, vw]
    canvas = blend(resized[:, None], lay)[0, 0].numpy()
    cam = map_intrinsics(CAMERA, lay)
    u = np.arange(cam.width)
    expected = (u - cam.cx) / cam.fx * CAMERA.fx + CAMERA.cx  # the camera column of map column u
    inner = slice(2, -2)  # bilinear clamps at the borders
    # squash / center_crop are one resample: exact; two_squares rounds the prepared frame's width
    # and places views to the nearest map pixel (0.53 camera px off here, an eighth of a map pixel;
    # leaving out the half-pixel shift would be 2 px off)
    tolerance = 1e-3 if geometry != "two_squares" else 0.6
    assert np.abs(canvas[56, inner] - expected[inner]).max() < tolerance


def test_back_projection_is_depth_image_proc_pinhole():
    u, v, z = np.array([0.0, 319.5, 600.0]), np.array([10.0, 237.0, 400.0]), np.array([3.0, 3.0, 1.5])
    xyz = back_project(u, v, z, CAMERA)
    assert xyz.dtype == np.float32
    np.testing.assert_allclose(xyz[:, 0], (u - 319.5) * z / 500.0, rtol=1e-6)
    np.testing.assert_allclose(xyz[:, 1], (v - 237.0) * z / 480.0, rtol=1e-6)
    np.testing.assert_allclose(xyz[:, 2], z)
    pu, pv = project(xyz, CAMERA)
    np.testing.assert_allclose(pu, u, atol=1e-3)
    np.testing.assert_allclose(pv, v, atol=1e-3)


def test_bad_intrinsics_are_refused():
    with pytest.raises(ValueError, match="focal"):
        Pinhole(0.0, 1.0, 0.0, 0.0, 10, 10)
    with pytest.raises(ValueError, match="larger frame"):
        map_intrinsics(Pinhole(100, 100, 50, 50, 100, 100), layout("squash", (480, 640), (224, 224), (112, 112)))
