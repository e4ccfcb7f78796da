"""deltaworld_core planning outputs <-> the messages planners read: sensor_msgs/CameraInfo,
sensor_msgs/PointCloud2 (packed with a numpy structured dtype: no sensor_msgs_py needed),
nav_msgs/OccupancyGrid and the class names (vision_msgs/LabelInfo where installed, the package's
field-for-field equivalent otherwise)."""

from __future__ import annotations

import array
import sys

import numpy as np
from geometry_msgs.msg import Pose
from nav_msgs.msg import MapMetaData, OccupancyGrid
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from deltaworld_core import imaging
from deltaworld_core.camera_model import Pinhole
from deltaworld_core.planning import ObstaclePoints, RiskGrid

try:  # vision_msgs where a ROS install provides it: the type ROS tools already display
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:
    from deltaworld_ros.msg import LabelInfo, VisionClass

# deltaworld/obstacles: fields in this order; offsets keep every float32 4-byte aligned.
OBSTACLE_FIELDS = (("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
                   ("step", 20, PointField.UINT8), ("t_ahead", 12, PointField.FLOAT32),
                   ("p", 16, PointField.FLOAT32), ("class", 21, PointField.UINT8))
OBSTACLE_POINT_STEP = 24
_NUMPY_TYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
                PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}
_NATIVE = "<" if sys.byteorder == "little" else ">"


def _cloud_dtype(fields, point_step: int, big_endian: bool) -> np.dtype:
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for name, offset, datatype, count in fields:
        if datatype not in _NUMPY_TYPES:
            raise ValueError(f"PointCloud2 field {name!r} has unknown datatype {datatype}")
        names.append(name)
        formats.append((order + _NUMPY_TYPES[datatype], (count,)) if count > 1 else order + _NUMPY_TYPES[datatype])
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def obstacles_to_cloud(points: ObstaclePoints, header: Header) -> PointCloud2:
    """:class:`ObstaclePoints` -> an unorganised PointCloud2 (height 1) with ``header``."""
    fields = [(name, offset, datatype, 1) for name, offset, datatype in OBSTACLE_FIELDS]
    packed = np.zeros(len(points), dtype=_cloud_dtype(fields, OBSTACLE_POINT_STEP, _NATIVE == ">"))
    for axis, name in enumerate("xyz"):
        packed[name] = points.xyz[:, axis]
    packed["step"], packed["t_ahead"], packed["p"], packed["class"] = points.step, points.t_ahead, points.p, points.cls
    msg = PointCloud2(header=header, height=1, width=len(points), is_bigendian=_NATIVE == ">",
                      point_step=OBSTACLE_POINT_STEP, row_step=OBSTACLE_POINT_STEP * len(points), is_dense=True)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in OBSTACLE_FIELDS]
    msg.data = packed.tobytes()
    return msg


def read_cloud(msg: PointCloud2) -> np.ndarray:
    """Any PointCloud2 -> a structured array [height * width] with one named field per PointField
    (a view of the message's bytes when rows are unpadded); raises ValueError for inconsistent sizes."""
    dtype = _cloud_dtype([(f.name, f.offset, f.datatype, f.count) for f in msg.fields], msg.point_step,
                         bool(msg.is_bigendian))
    n = msg.height * msg.width
    if msg.point_step * msg.width > msg.row_step or len(msg.data) < msg.row_step * msg.height:
        raise ValueError(f"PointCloud2 of {msg.height}x{msg.width} points of {msg.point_step} bytes does not fit "
                         f"row_step {msg.row_step} and {len(msg.data)} bytes")
    if msg.row_step == msg.point_step * msg.width:
        return np.frombuffer(msg.data, dtype=dtype, count=n)
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.row_step * msg.height).reshape(msg.height, msg.row_step)
    return np.ascontiguousarray(rows[:, :msg.point_step * msg.width]).view(dtype).reshape(n)


def grid_to_msg(grid: RiskGrid, header: Header) -> OccupancyGrid:
    """:class:`RiskGrid` -> OccupancyGrid (row-major from the origin cell, as map_server writes)."""
    rows, cols = grid.values.shape
    origin = Pose()
    origin.position.x, origin.position.y = float(grid.origin_x), float(grid.origin_y)
    origin.orientation.w = 1.0
    info = MapMetaData(map_load_time=header.stamp, resolution=float(grid.resolution), width=cols, height=rows,
                       origin=origin)
    msg = OccupancyGrid(header=header, info=info)
    # An array.array is taken as it is; a list or ndarray would be checked element by element.
    msg.data = array.array("b", np.ascontiguousarray(grid.values, dtype=np.int8).tobytes())
    return msg


def camera_info_msg(camera: Pinhole, header: Header) -> CameraInfo:
    """The intrinsics of a rectified map: K = P[:3, :3], no distortion, R = identity."""
    msg = CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = camera.matrix().reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([camera.matrix(), np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


def pinhole_from_camera_info(info: CameraInfo, height: int, width: int) -> Pinhole:
    """The intrinsics of the rectified ``height`` x ``width`` images a camera publishes beside
    ``info``: P's (K's when P is unset), with the ROI and binning applied (as image_geometry does,
    with pixel centres at integer coordinates), and the node's own reduction of large frames.
    Raises ValueError naming what is wrong (uncalibrated, or a size that does not match)."""
    p, k = np.asarray(info.p, dtype=np.float64).reshape(3, 4), np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    m = p[:, :3] if p[0, 0] > 0 and p[1, 1] > 0 else k
    if not (m[0, 0] > 0 and m[1, 1] > 0):
        raise ValueError("camera_info is uncalibrated (K and P have no focal length)")
    if info.width < 1 or info.height < 1:
        raise ValueError(f"camera_info has no image size ({info.width}x{info.height})")
    roi = info.roi
    x0, y0 = (roi.x_offset, roi.y_offset) if roi.width and roi.height else (0, 0)
    rw, rh = (roi.width, roi.height) if roi.width and roi.height else (info.width, info.height)
    bx, by = max(1, info.binning_x), max(1, info.binning_y)
    full = Pinhole(float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]), int(info.width), int(info.height))
    camera = full.window((y0, x0, y0 + rh, x0 + rw), (rh // by, rw // bx))
    if (camera.height, camera.width) == (height, width):
        return camera
    # The node decodes frames much larger than the model needs at 1/2, 1/4 or 1/8 size (whole
    # blocks averaged, the last partial block kept or dropped).
    for factor in sorted(imaging.REDUCTIONS):
        if height in (camera.height // factor, -(-camera.height // factor)) and \
                width in (camera.width // factor, -(-camera.width // factor)):
            return camera.window((0, 0, height * factor, width * factor), (height, width))
    raise ValueError(f"camera_info describes {camera.width}x{camera.height} images, the camera sends "
                     f"{width}x{height}")


def label_info_msg(class_names, header: Header) -> LabelInfo:
    """Class names -> LabelInfo (class id = index)."""
    return LabelInfo(header=header, class_map=[VisionClass(class_id=i, class_name=name)
                                               for i, name in enumerate(class_names)], threshold=0.0)
