"""deltaworld_core Forecast <-> deltaworld_ros/msg/Futures, and the Python API for planners.

Stamps are handled in integer nanoseconds from the camera header, so the output header is exactly
the input's and target stamps do not drift through float rounding.

A planner in Python reads a Futures message with :func:`decode_futures` (arrays [K, steps, h, w],
one memory copy per image, no per-pixel work) and turns pixels into 3-D points in the camera's
optical frame with :meth:`DecodedFutures.points` (the message's ``camera_info``; the pinhole
model of depth_image_proc)::

    futures = decode_futures(msg)
    xyz = futures.points(u, v, futures.depth[k, step, v, u])  # [..., 3] metres, x right, y down, z forward
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from deltaworld_core.camera_model import Pinhole, back_project

from deltaworld_ros.image_conversion import (FrameIdTooLongError, StampOutOfRangeError, array_to_image_msg, cut,
                                             image_to_array)
from deltaworld_ros.msg import Futures, HorizonSummary, Hypothesis
from deltaworld_ros.planner_msgs import camera_info_msg, pinhole_from_camera_info

NS = 1_000_000_000
# builtin_interfaces/Time.sec is an int32: 2^31 s (2038-01-19) would serialise as -2^31.
MAX_STAMP_NS = (2**31 - 1) * NS + NS - 1
# The frame_id is copied into every output header (2 + K x H x 2 + H x 4 of them); REP-103/105
# frame ids are a few dozen characters, so anything longer is a broken driver, not a frame.
MAX_FRAME_ID_LENGTH = 256


def check_header(header: Header, horizon_s: float = 0.0) -> None:
    """Raises FrameIdTooLongError / StampOutOfRangeError when a camera header cannot be copied
    into a Futures message whose last target lies ``horizon_s`` after the header's stamp."""
    if len(header.frame_id) > MAX_FRAME_ID_LENGTH:
        raise FrameIdTooLongError(f"frame_id has {len(header.frame_id)} characters (at most {MAX_FRAME_ID_LENGTH}): "
                                  f"{header.frame_id[:40]!r}...")
    stamp = header.stamp
    if stamp.sec < 0 or stamp.nanosec >= NS:
        raise StampOutOfRangeError(f"stamp sec={stamp.sec} nanosec={stamp.nanosec} is not a valid time")
    last_ns = time_to_ns(stamp) + round(horizon_s * NS)
    if last_ns > MAX_STAMP_NS:
        raise StampOutOfRangeError(f"stamp {time_to_ns(stamp) / NS:.3f} s + horizon {horizon_s:.3f} s passes "
                                   f"2^31 s (2038-01-19), the largest builtin_interfaces/Time")


def time_to_ns(stamp: Time) -> int:
    return stamp.sec * NS + stamp.nanosec


def ns_to_time(ns: int) -> Time:
    if not 0 <= ns <= MAX_STAMP_NS:
        raise StampOutOfRangeError(f"{ns / NS:.3f} s does not fit builtin_interfaces/Time (0 to 2^31 s)")
    return Time(sec=ns // NS, nanosec=ns % NS)


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_time(seconds: float) -> Time:
    return ns_to_time(round(seconds * NS))


def forecast_to_msg(forecast, header: Header, camera: Pinhole | None = None) -> Futures:
    """``forecast`` (a deltaworld_core Forecast) made from the image with ``header`` -> Futures.
    Every image carries the frame_id and its own target stamp. ``camera``: the maps' intrinsics
    (:func:`deltaworld_core.camera_model.map_intrinsics`), sent as ``camera_info`` with ``header``;
    None leaves it empty (width 0). Raises FrameIdTooLongError or StampOutOfRangeError
    (ValueErrors) for a header that :func:`check_header` rejects."""
    check_header(header)
    base_ns = time_to_ns(header.stamp)
    # Offsets from the newest frame, rounded to whole microseconds: float64 seconds near 1.7e9
    # resolve only ~0.2 us, and planners expect exactly step_s apart.
    offsets_ns = [round((t - forecast.stamp) * 1e6) * 1000 for t in np.asarray(forecast.stamps, dtype=np.float64)]
    target_headers = [Header(stamp=ns_to_time(base_ns + off), frame_id=header.frame_id) for off in offsets_ns]

    hypotheses = [
        Hypothesis(
            semantic=[array_to_image_msg(forecast.semantic[k, h], "mono8", target_headers[h]) for h in range(forecast.horizon)],
            depth=[array_to_image_msg(forecast.depth[k, h], "32FC1", target_headers[h]) for h in range(forecast.horizon)],
        )
        for k in range(forecast.k)
    ]
    s = forecast.summary
    summary = [
        HorizonSummary(
            semantic_mode=array_to_image_msg(s.semantic_mode[h], "mono8", target_headers[h]),
            semantic_agreement=array_to_image_msg(s.agreement[h], "32FC1", target_headers[h]),
            depth_mean=array_to_image_msg(s.depth_mean[h], "32FC1", target_headers[h]),
            depth_std=array_to_image_msg(s.depth_std[h], "32FC1", target_headers[h]),
        )
        for h in range(forecast.horizon)
    ]
    return Futures(
        header=Header(stamp=header.stamp, frame_id=header.frame_id),
        target_stamps=[h.stamp for h in target_headers],
        class_names=list(forecast.class_names),
        hypotheses=hypotheses,
        summary=summary,
        camera_info=CameraInfo() if camera is None else camera_info_msg(camera, Header(stamp=header.stamp,
                                                                                       frame_id=header.frame_id)),
    )


@dataclass
class DecodedFutures:
    """A Futures message as arrays (for planners in Python, tests and the demo)."""

    stamp: float  # seconds of the newest camera image used
    frame_id: str
    target_stamps: np.ndarray  # [H] float64 seconds
    class_names: list[str]
    semantic: np.ndarray  # [K, H, h, w] uint8 class ids
    depth: np.ndarray  # [K, H, h, w] float32 metres
    semantic_mode: np.ndarray  # [H, h, w] uint8
    agreement: np.ndarray  # [H, h, w] float32
    depth_mean: np.ndarray  # [H, h, w] float32
    depth_std: np.ndarray  # [H, h, w] float32
    camera: Pinhole | None = None  # the maps' intrinsics; None when the message carries none

    def points(self, u, v, depth) -> np.ndarray:
        """Pixels (u = column, v = row of these maps) at ``depth`` metres -> [..., 3] float32
        points in the camera's optical frame (``frame_id``). Raises ValueError without intrinsics."""
        if self.camera is None:
            raise ValueError("this Futures message carries no camera_info (the node had none for the camera)")
        return back_project(u, v, depth, self.camera)


def _stack(images, encoding: str) -> np.ndarray:
    """Images -> [n, h, w]: each image's rows copied once into the result (no per-pixel work)."""
    for image in images:
        if image.encoding != encoding:
            raise ValueError(f"expected {encoding} images, got {cut(image.encoding)}")
    if not images:
        raise ValueError("no images")
    first = image_to_array(images[0])
    out = np.empty((len(images), *first.shape), dtype=first.dtype)
    out[0] = first
    for i, image in enumerate(images[1:], 1):
        if (image.height, image.width) != first.shape:
            raise ValueError(f"images of different sizes: {image.width}x{image.height} and "
                             f"{first.shape[1]}x{first.shape[0]}")
        _rows_into(out[i], image)
    return out


def _rows_into(out: np.ndarray, image) -> None:
    """Copies ``image``'s pixels into ``out`` [h, w] (native byte order) in one pass."""
    row_bytes = out.shape[1] * out.itemsize
    if image.step < row_bytes or len(image.data) < image.step * image.height:
        raise ValueError(f"{cut(image.encoding)} image data shorter than {image.height} rows of {row_bytes} bytes")
    rows = np.frombuffer(image.data, dtype=np.uint8, count=image.step * image.height).reshape(image.height, image.step)
    dtype = out.dtype.newbyteorder(">" if image.is_bigendian else "<") if out.itemsize > 1 else out.dtype
    out[...] = rows[:, :row_bytes].view(dtype)


def _per_hypothesis(msg: Futures, name: str, encoding: str) -> np.ndarray:
    """[K, steps, h, w] of every hypothesis' ``name`` images, decoded straight into one array."""
    steps = {len(getattr(h, name)) for h in msg.hypotheses}
    if len(steps) > 1:
        raise ValueError(f"hypotheses have different numbers of {name} images: {sorted(steps)}")
    stacked = _stack([image for h in msg.hypotheses for image in getattr(h, name)], encoding)
    return stacked.reshape(len(msg.hypotheses), steps.pop(), *stacked.shape[1:])


def map_camera(msg: Futures) -> Pinhole | None:
    """The maps' intrinsics from a Futures message's ``camera_info`` (None when it has none)."""
    info = msg.camera_info
    if info.width == 0:
        return None
    return pinhole_from_camera_info(info, info.height, info.width)


def decode_futures(msg: Futures) -> DecodedFutures:
    """Futures -> arrays; raises ValueError when images have unexpected encodings or sizes."""
    return DecodedFutures(
        stamp=time_to_seconds(msg.header.stamp),
        frame_id=msg.header.frame_id,
        target_stamps=np.array([time_to_seconds(t) for t in msg.target_stamps], dtype=np.float64),
        class_names=list(msg.class_names),
        semantic=_per_hypothesis(msg, "semantic", "mono8"),
        depth=_per_hypothesis(msg, "depth", "32FC1"),
        semantic_mode=_stack([s.semantic_mode for s in msg.summary], "mono8"),
        agreement=_stack([s.semantic_agreement for s in msg.summary], "32FC1"),
        depth_mean=_stack([s.depth_mean for s in msg.summary], "32FC1"),
        depth_std=_stack([s.depth_std for s in msg.summary], "32FC1"),
        camera=map_camera(msg),
    )
