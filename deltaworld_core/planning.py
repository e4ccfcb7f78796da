"""What a planner acts on, from K forecast futures: predicted obstacle points and a risk grid.

Both read the class ids [K, steps, h, w] and depth [K, steps, h, w] of one forecast with the
maps' :class:`~deltaworld_core.camera_model.Pinhole` intrinsics. Points are back-projected as
``depth_image_proc`` does (optical frame: x right, y down, z forward). Pixels are sampled on a
stride grid (one pixel per ``stride`` x ``stride`` block, its centre) so the work and the output
stay bounded at any map size; :func:`stride_for` picks the smallest stride within a point budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera_model import Pinhole, back_project, project


@dataclass
class ObstaclePoints:
    """N predicted obstacle points in the camera's optical frame."""

    xyz: np.ndarray  # [N, 3] float32 metres
    step: np.ndarray  # [N] uint8 horizon step, 1-based
    t_ahead: np.ndarray  # [N] float32 seconds after the observation
    p: np.ndarray  # [N] float32 fraction of the K futures in which the point is an obstacle
    cls: np.ndarray  # [N] uint8 class id (the most frequent obstacle class among those futures)

    def __len__(self) -> int:
        return len(self.p)


def stride_for(steps: int, height: int, width: int, max_points: int) -> int:
    """The smallest stride whose grid over ``steps`` maps of ``height`` x ``width`` holds at most
    ``max_points`` pixels (each pixel becomes at most one point)."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    stride = 1
    while steps * len(range(stride // 2, height, stride)) * len(range(stride // 2, width, stride)) > max_points:
        stride += 1
    return stride


def _sample(maps: np.ndarray, stride: int) -> np.ndarray:
    """[..., h, w] -> [..., rows, cols] at the stride grid's pixels (a view, no copy)."""
    return maps[..., stride // 2::stride, stride // 2::stride]


def _grid_pixels(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [rows, cols] float32 pixel coordinates of the stride grid."""
    v, u = np.meshgrid(np.arange(stride // 2, height, stride, dtype=np.float32),
                       np.arange(stride // 2, width, stride, dtype=np.float32), indexing="ij")
    return u, v


def _class_table(obstacle_ids) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.asarray(list(obstacle_ids), dtype=np.int64)] = True
    return table


def obstacle_points(semantic: np.ndarray, depth: np.ndarray, camera: Pinhole, obstacle_ids, t_ahead,
                    min_p: float = 0.0, stride: int = 1) -> ObstaclePoints:
    """semantic [K, steps, h, w] uint8 and depth [K, steps, h, w] metres -> one point per sampled
    pixel and step where at least ``min_p`` of the K futures (and at least one) put an obstacle
    class (``obstacle_ids``) with a valid depth; the point lies at the mean depth of those futures.
    ``t_ahead`` [steps]: seconds of each step after the observation."""
    k, steps, h, w = semantic.shape
    if depth.shape != semantic.shape:
        raise ValueError(f"depth {depth.shape} and semantic {semantic.shape} differ")
    if (camera.height, camera.width) != (h, w):
        raise ValueError(f"intrinsics for {camera.width}x{camera.height}, maps are {w}x{h}")
    ids = np.asarray(list(obstacle_ids), dtype=np.uint8)
    sem, dep = _sample(semantic, stride), _sample(depth, stride)
    hit = _class_table(ids)[sem] & np.isfinite(dep) & (dep > 0)  # [K, steps, rows, cols]
    count = hit.sum(axis=0)
    keep = count >= max(1, math.ceil(min_p * k - 1e-9))
    if not keep.any():
        return _empty_points()
    z = np.where(hit, dep, 0).sum(axis=0, dtype=np.float32)[keep] / count[keep]
    u, v = _grid_pixels(h, w, stride)
    step_idx, rows, cols = np.nonzero(keep)
    per_class = np.stack([(hit & (sem == c)).sum(axis=0)[keep] for c in ids])  # [classes, N]
    return ObstaclePoints(
        xyz=back_project(u[rows, cols], v[rows, cols], z, camera),
        step=(step_idx + 1).astype(np.uint8),
        t_ahead=np.asarray(t_ahead, dtype=np.float32)[step_idx],
        p=(count[keep] / k).astype(np.float32),
        cls=ids[per_class.argmax(axis=0)],
    )


def _empty_points() -> ObstaclePoints:
    return ObstaclePoints(np.zeros((0, 3), np.float32), np.zeros(0, np.uint8), np.zeros(0, np.float32),
                          np.zeros(0, np.float32), np.zeros(0, np.uint8))


@dataclass(frozen=True)
class Transform:
    """Pose of the camera's optical frame in the grid's frame: p_grid = rotation @ p_optical + translation."""

    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]

    @classmethod
    def from_rpy(cls, translation, rpy) -> "Transform":
        """Fixed-axis roll, pitch, yaw in radians (R = Rz(yaw) Ry(pitch) Rx(roll), as tf2's setRPY and
        ``static_transform_publisher``)."""
        r, p, y = (float(a) for a in rpy)
        cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
        rot = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                        [-sp, cp * sr, cp * cr]])
        return cls(rot, np.asarray(translation, dtype=np.float64).reshape(3))

    @classmethod
    def from_quaternion(cls, translation, xyzw) -> "Transform":
        x, y, z, w = (float(a) for a in xyzw)
        n = math.sqrt(x * x + y * y + z * z + w * w)
        if not n > 0:
            raise ValueError("a zero quaternion is not a rotation")
        x, y, z, w = x / n, y / n, z / n, w / n
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        return cls(rot, np.asarray(translation, dtype=np.float64).reshape(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] optical -> [..., 3] grid frame."""
        return points @ self.rotation.T + self.translation

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] grid frame -> [..., 3] optical."""
        return (points - self.translation) @ self.rotation


@dataclass
class RiskGrid:
    """values [rows, cols] int8: 100 x the fraction of the K futures in which an obstacle lands in
    the cell at some step, -1 where the camera sees nothing (outside its view or behind what it
    sees). Cell (row, col) spans x in origin_x + col * resolution (+ resolution), y likewise."""

    values: np.ndarray
    origin_x: float
    origin_y: float
    resolution: float


def grid_window(transform: Transform, resolution: float, size_m: float) -> tuple[float, float, int]:
    """(origin x, origin y, cells per side) of a square window of ``size_m`` centred on the camera,
    its corner snapped to the resolution (cells line up from one forecast to the next)."""
    if not (resolution > 0 and size_m >= resolution):
        raise ValueError(f"need resolution > 0 and size >= resolution, got {resolution} and {size_m}")
    n = int(math.ceil(size_m / resolution - 1e-9))
    ox = math.floor((transform.translation[0] - n * resolution / 2) / resolution) * resolution
    oy = math.floor((transform.translation[1] - n * resolution / 2) / resolution) * resolution
    return ox, oy, n


def risk_grid(semantic: np.ndarray, depth: np.ndarray, camera: Pinhole, obstacle_ids, transform: Transform,
              resolution: float, size_m: float, stride: int = 1) -> RiskGrid:
    """semantic and depth [K, steps, h, w] -> the :class:`RiskGrid` on the grid frame's z = 0 plane
    (points of any height count where they land in x, y). A cell is known when a sampled point
    lands in it or its centre (at z = 0) is in the maps' view no farther than the farthest
    forecast depth there (plus one cell)."""
    k = semantic.shape[0]
    ox, oy, n = grid_window(transform, resolution, size_m)
    sem, dep = _sample(semantic, stride), _sample(depth, stride)
    u, v = _grid_pixels(camera.height, camera.width, stride)
    valid = np.isfinite(dep) & (dep > 0)
    points = transform.apply(back_project(u, v, np.where(valid, dep, 0), camera))  # [K, steps, rows, cols, 3]
    col = np.floor((points[..., 0] - ox) / resolution)
    row = np.floor((points[..., 1] - oy) / resolution)
    inside = valid & (col >= 0) & (col < n) & (row >= 0) & (row < n)
    cell = np.where(inside, row * n + col, -1).astype(np.int64)
    seen = np.zeros(n * n, dtype=bool)
    seen[cell[inside]] = True
    hit = inside & _class_table(obstacle_ids)[sem]
    # Each future counts once per cell however many of its points and steps land there.
    future = np.broadcast_to(np.arange(k)[:, None, None, None], hit.shape)
    pairs = np.unique(future[hit] * (n * n) + cell[hit])
    counts = np.bincount(pairs % (n * n), minlength=n * n)
    seen |= _in_view(camera, depth, transform, ox, oy, n, resolution)
    values = np.where(seen, np.round(100.0 * counts / k), -1).astype(np.int8)
    return RiskGrid(values.reshape(n, n), ox, oy, resolution)


def _in_view(camera: Pinhole, depth: np.ndarray, transform: Transform, ox: float, oy: float, n: int,
             resolution: float) -> np.ndarray:
    """[n * n] bool: cell centres (z = 0) that project into the maps in front of the camera and no
    farther along the optical axis than the farthest forecast depth at that pixel (+ one cell)."""
    centres = (np.arange(n) + 0.5) * resolution
    gy, gx = np.meshgrid(oy + centres, ox + centres, indexing="ij")
    optical = transform.inverse_apply(np.stack([gx, gy, np.zeros_like(gx)], axis=-1).reshape(-1, 3))
    u, v = project(optical, camera)
    ui, vi = np.round(u), np.round(v)
    ok = np.isfinite(ui) & np.isfinite(vi) & (ui >= 0) & (ui < camera.width) & (vi >= 0) & (vi < camera.height)
    far = np.where(np.isfinite(depth), depth, -np.inf).max(axis=(0, 1))  # [h, w]
    reach = np.full(len(optical), -np.inf)
    reach[ok] = far[vi[ok].astype(np.int64), ui[ok].astype(np.int64)]
    return ok & (optical[:, 2] <= reach + resolution)
