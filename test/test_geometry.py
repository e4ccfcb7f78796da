"""Frame geometry (forecast.geometry): the views cut from a camera frame as the release prepares
them, and the published maps blended back over the camera's full view at its aspect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deltaworld_core import Forecaster, load_config
from deltaworld_core.config import ConfigError
from deltaworld_core.geometry import blend, cut_views, layout, upsample_views

from test_forecaster import DINOV3


@pytest.mark.parametrize("geometry, frame, views, canvas, placements", [
    # 16:9: the frame resized to 64x114, two squares of it at both ends, overlapping (aspect < 2);
    # in camera pixels the second starts at 50 / (114 / 1280); the canvas keeps 16:9
    ("two_squares", (720, 1280), [(0, 0, 720, 719), (0, 561, 720, 1280)], (32, 57), [(0, 0), (0, 25)]),
    # exactly 2:1: two squares side by side
    ("two_squares", (100, 200), [(0, 0, 100, 100), (0, 100, 100, 200)], (32, 64), [(0, 0), (0, 32)]),
    # wider than 2:1 (640x272, the bikes clip): squashed to 2:1 as the release does, two squares
    ("two_squares", (272, 640), [(0, 0, 272, 320), (0, 320, 272, 640)], (32, 64), [(0, 0), (0, 32)]),
    # portrait: the windows go down the frame
    ("two_squares", (120, 90), [(0, 0, 90, 90), (30, 0, 120, 90)], (43, 32), [(0, 0), (11, 0)]),
    # the model's own aspect: one view, the whole frame
    ("two_squares", (90, 90), [(0, 0, 90, 90)], (32, 32), [(0, 0)]),
    ("center_crop", (720, 1280), [(0, 280, 720, 1000)], (32, 32), [(0, 0)]),
    ("squash", (720, 1280), [(0, 0, 720, 1280)], (32, 32), [(0, 0)]),
])
def test_layouts(geometry, frame, views, canvas, placements):
    lay = layout(geometry, frame, (64, 64), (32, 32))
    assert [list(v) for v in lay.views] == [list(v) for v in views]
    assert lay.canvas == canvas and [list(p) for p in lay.placements] == [list(p) for p in placements]
    # every window has the model's aspect (square here, to a camera pixel of rounding) except squash's
    # and a frame squashed to 2:1, and they cover the region
    if geometry != "squash" and frame[1] / frame[0] <= 2:
        assert all(abs((y1 - y0) - (x1 - x0)) <= 1 for y0, x0, y1, x1 in lay.views)
    covered = np.zeros(frame, bool)
    for y0, x0, y1, x1 in lay.views:
        covered[y0:y1, x0:x1] = True
    ry0, rx0, ry1, rx1 = lay.region
    assert covered[ry0:ry1, rx0:rx1].all()
    assert lay.region == ((0, 0, *frame) if geometry != "center_crop" else views[0])
    # the canvas keeps the camera's aspect (to a pixel) for the full-view geometries, up to 2:1
    if geometry == "two_squares" and frame[1] / frame[0] <= 2:
        assert abs(canvas[1] / canvas[0] - frame[1] / frame[0]) <= 1 / min(canvas)
        last_y, last_x = lay.placements[-1]
        assert (last_y + 32, last_x + 32) == canvas  # the last view ends at the canvas edge


def test_blend_averages_overlaps_and_keeps_what_views_agree_on():
    lay = layout("two_squares", (720, 1280), (64, 64), (32, 32))
    # A map that is a function of the camera's x coordinate: each view sees its own part of it.
    xs = torch.arange(lay.canvas[1], dtype=torch.float32)
    views = torch.stack([xs[x:x + 32].expand(1, 1, 32, 32) for _, x in lay.placements])  # [V, 1, 1, 32, 32]
    out = blend(views, lay)
    assert out.shape == (1, 1, 32, 57)
    torch.testing.assert_close(out[0, 0], xs.expand(32, -1))
    # In the overlap it is the views' mean
    views[1] += 10.0
    out = blend(views, lay)
    torch.testing.assert_close(out[0, 0, :, 25:32], xs[25:32].expand(32, -1) + 5.0)
    torch.testing.assert_close(out[0, 0, :, 32:], xs[32:].expand(32, -1) + 10.0)
    one = layout("squash", (720, 1280), (64, 64), (32, 32))
    assert blend(views[:1], one) is not None and blend(views[:1], one).data_ptr() == views[0].data_ptr()


def test_overlap_votes_with_the_logits():
    """Class ids in the overlap come from the views' averaged logits: a confident view wins."""
    lay = layout("two_squares", (100, 150), (64, 64), (8, 8))
    logits = torch.zeros(2, 1, 2, 4, 4)
    logits[0, :, 0] = 1.0  # view 0: class 0, weakly
    logits[1, :, 1] = 5.0  # view 1: class 1, strongly
    ids, depth = upsample_views(logits, torch.ones(2, 1, 4, 4), lay)
    assert ids.shape == depth.shape[:1] + (8, 12) and ids.dtype == torch.uint8
    left, right = lay.placements[1][1], 8  # the overlap is columns [4, 8)
    assert (ids[0, :, :left] == 0).all() and (ids[0, :, left:] == 1).all() and right == 8
    torch.testing.assert_close(depth, torch.ones_like(depth))


def test_geometry_and_spacing_are_validated():
    for key, value in (("forecast.geometry", "letterbox"), ("forecast.context_spacing", "seconds"),
                       ("forecast.cuda_precision", "fp16")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config("default", {key: value})
    with pytest.raises(ConfigError, match="publish_k"):
        load_config("default", {"forecast.publish_k": 0})
    # publish_k above K publishes K (a node's smaller `k` with the paper config's publish_k 4 stays valid)
    fc = Forecaster.from_config("default", overrides={**DINOV3, "forecast.k": 2, "forecast.publish_k": 4})
    assert fc.publish_k == 2


def test_two_squares_forecast_covers_the_full_view_and_each_view_is_a_forecast_of_its_square():
    """A 4:3 frame as two overlapping squares: the maps cover the whole frame at 4:3, and the left
    view's futures are those of a one-view forecaster fed the left squares (same noise: view 0
    draws first)."""
    over = {**DINOV3, "vfm.image_size": [32, 32], "forecast.output_size": [16, 16]}
    torch.manual_seed(0)
    two = Forecaster.from_config("default", overrides={**over, "forecast.geometry": "two_squares"})
    torch.manual_seed(0)
    one = Forecaster.from_config("default", overrides={**over, "forecast.geometry": "squash"})
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64 + 12, 3), dtype=np.uint8)
    images = [np.ascontiguousarray(base[:, 3 * i: 3 * i + 64]) for i in range(4)]  # 48x64, panning
    def left_square(img):  # as the release prepares it: the whole frame resized to 32x43, the left 32x32
        return np.ascontiguousarray(cv2.resize(img, (43, 32), interpolation=cv2.INTER_LINEAR)[:, :32])

    for i, img in enumerate(images[:-1]):
        two.step(img, 0.2 * i)
        one.step(left_square(img), 0.2 * i)
    two.generator.manual_seed(5)  # two views drew twice the noise of one so far
    one.generator.manual_seed(5)
    out, left = two.step(images[-1], 0.6), one.step(left_square(images[-1]), 0.6)
    lay = two.layout(images[0].shape)
    assert lay.num_views == 2 and lay.canvas == (16, 21) and out.region == (0, 0, 48, 64)
    assert out.semantic.shape == out.depth.shape == (4, 2, 16, 21)
    assert out.summary.semantic_mode.shape == (2, 16, 21)
    assert out.features.shape[:3] == (2, 4, 2)  # [V, K, H, N, C]
    # Step 1 (view 0 draws the first K of each step's 2K queries; later steps draw differently)
    torch.testing.assert_close(out.features[0][:, 0], left.features[:, 0], atol=1e-4, rtol=1e-4)
    # Left of the overlap the maps are the left view's alone
    x = lay.placements[1][1]
    assert (out.semantic[:, 0, :, :x] == left.semantic[:, 0, :, :x]).mean() > 0.99
    np.testing.assert_allclose(out.depth[:, 0, :, :x], left.depth[:, 0, :, :x], atol=1e-3, rtol=1e-4)


def test_center_crop_forecast_says_which_region_it_covers():
    over = {**DINOV3, "vfm.image_size": [32, 32], "forecast.output_size": [16, 16],
            "forecast.geometry": "center_crop"}
    fc = Forecaster.from_config("default", overrides=over)
    rng = np.random.default_rng(0)
    out = [fc.step(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 0.2 * i) for i in range(3)][-1]
    assert out.region == (0, 8, 48, 56) and out.semantic.shape == (4, 2, 16, 16)


@pytest.mark.parametrize("frame", [(96, 128), (90, 160), (80, 160), (60, 144), (128, 96)])
def test_two_squares_views_are_the_release_preparation_pixel_for_pixel(frame):
    """4:3, 16:9, 2:1, 2.4:1 and portrait: the whole frame resized with OpenCV's bilinear (short side
    to the model's 64, long side at most 128), then the squares at both ends: the same pixels."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*frame, 3), dtype=np.uint8), (3, 3), 1)
    h, w = frame
    short, long_ = min(h, w), max(h, w)
    size = min(128, int(round(long_ * 64 / short)))
    resized = cv2.resize(image, (size, 64) if w >= h else (64, size), interpolation=cv2.INTER_LINEAR)
    expected = [resized[:, :64], resized[:, size - 64:]] if w >= h else [resized[:64], resized[size - 64:]]
    views = cut_views(image, layout("two_squares", frame, (64, 64), (32, 32)))
    assert views.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(views, np.stack(expected))
