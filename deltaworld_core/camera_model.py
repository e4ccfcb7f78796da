"""Pinhole intrinsics of the published maps, derived from the camera's.

Pixel coordinates follow OpenCV and ROS ``sensor_msgs/CameraInfo``: the centre of the top-left
pixel is (0, 0). A map made by resampling the camera window ``[x0, x1) x [y0, y1)`` to ``w x h``
pixels (every resize in the pipeline is pixel-area aligned: bilinear with
``align_corners=False``, the VFM's patch grid, then its upsampling) has its pixel centre ``u'``
at camera column ``x0 + (u' + 0.5) / sx - 0.5`` with ``sx = w / (x1 - x0)``, hence
``fx' = fx sx`` and ``cx' = (cx - x0 + 0.5) sx - 0.5`` (the same in y). Back-projection is
``depth_image_proc``'s: ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``, ``Z`` = depth.

The images are expected rectified (no distortion): the intrinsics are those of the rectified
image (a ``CameraInfo``'s projection matrix P, as ``depth_image_proc`` and RViz use them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Layout


@dataclass(frozen=True)
class Pinhole:
    """Intrinsics of one image of ``width`` x ``height`` pixels (focal lengths and principal point
    in pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all() and self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive and finite, got fx={self.fx} fy={self.fy} "
                             f"cx={self.cx} cy={self.cy}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def window(self, box: tuple[int, int, int, int], size: tuple[int, int]) -> "Pinhole":
        """The intrinsics of the window ``box`` = (y0, x0, y1, x1) of this image resampled to
        ``size`` = (h, w) pixels."""
        y0, x0, y1, x1 = box
        h, w = (int(s) for s in size)
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError(f"empty window {box}")
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        return Pinhole(fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx - x0 + 0.5) * sx - 0.5,
                       cy=(self.cy - y0 + 0.5) * sy - 0.5, width=w, height=h)

    def matrix(self) -> np.ndarray:
        """[3, 3] float64 K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def map_intrinsics(camera: Pinhole, lay: Layout) -> Pinhole:
    """Intrinsics of every published map (``lay.canvas``; the summaries are resized to it too):
    ``squash`` the whole frame at ``output_size``, ``center_crop`` the crop at ``output_size``,
    ``two_squares`` the whole frame at the canvas (the views blended back at one scale)."""
    _check_frame(camera, lay)
    return camera.window(lay.region, lay.canvas)


def view_intrinsics(camera: Pinhole, lay: Layout) -> list[Pinhole]:
    """Intrinsics of each view's map before blending (``two_squares``: each square), in view order."""
    _check_frame(camera, lay)
    return [camera.window(view, lay.view_size) for view in lay.views]


def _check_frame(camera: Pinhole, lay: Layout) -> None:
    y0, x0, y1, x1 = lay.region
    if max(y1, max(v[2] for v in lay.views)) > camera.height or max(x1, max(v[3] for v in lay.views)) > camera.width:
        raise ValueError(f"the layout is for a larger frame than the camera's {camera.width}x{camera.height}")


def back_project(u: np.ndarray, v: np.ndarray, depth: np.ndarray, camera: Pinhole) -> np.ndarray:
    """Pixels (u = column, v = row; any matching shapes) at ``depth`` metres along the optical
    axis -> [..., 3] float32 points (x right, y down, z forward: the optical frame), as
    ``depth_image_proc`` computes them."""
    z = np.asarray(depth, dtype=np.float32)
    x = (np.asarray(u, dtype=np.float32) - np.float32(camera.cx)) * z / np.float32(camera.fx)
    y = (np.asarray(v, dtype=np.float32) - np.float32(camera.cy)) * z / np.float32(camera.fy)
    return np.stack([x, y, z], axis=-1)


def project(points: np.ndarray, camera: Pinhole) -> tuple[np.ndarray, np.ndarray]:
    """[..., 3] points in the optical frame -> (u, v) pixel coordinates (NaN behind the camera)."""
    points = np.asarray(points, dtype=np.float64)
    z = np.where(points[..., 2] > 0, points[..., 2], np.nan)
    return camera.fx * points[..., 0] / z + camera.cx, camera.fy * points[..., 1] / z + camera.cy
