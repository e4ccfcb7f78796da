"""The camera's sensor_msgs/CameraInfo, matched to its images by stamp.

A camera driver publishes ``camera_info`` beside ``image_raw``/``image_rect`` with the same stamp
(image_transport's camera publisher). The node keeps the last few and, for an image, takes the one
with the image's stamp; when none has it (a driver that stamps its CameraInfo differently, or one
that was dropped) the newest received stands in: calibrations do not change between frames, and
which one was used is reported (:attr:`CameraInfoCache.exact`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
from sensor_msgs.msg import CameraInfo

from deltaworld_core.camera_model import Pinhole
from deltaworld_ros.futures_msg import time_to_ns
from deltaworld_ros.planner_msgs import pinhole_from_camera_info

KEPT = 30  # CameraInfo messages remembered (a second at 30 fps: forecasts run behind the camera)


def camera_info_topic(image_topic: str) -> str:
    """``camera/image_raw`` -> ``camera/camera_info`` (image_transport's rule: beside the image)."""
    head, _, _ = image_topic.rstrip("/").rpartition("/")
    return f"{head}/camera_info" if head else "camera_info"


def is_distorted(info: CameraInfo) -> bool:
    return bool(np.any(np.asarray(info.d, dtype=np.float64) != 0))


class CameraInfoCache:
    """Recent CameraInfo by stamp; :meth:`intrinsics` gives a frame's rectified intrinsics.

    ``warn(text)`` is called once, for the first CameraInfo with distortion coefficients (the node
    expects rectified images and uses the projection matrix P, as depth_image_proc does).
    Thread-safe: the subscription adds on the executor's thread while forecasts look up on theirs."""

    def __init__(self, warn: Callable[[str], None], kept: int = KEPT):
        self._warn = warn
        self._kept = kept
        self._by_stamp: OrderedDict[int, CameraInfo] = OrderedDict()
        self._warned = False
        self._lock = threading.Lock()
        self.exact = True  # whether the last lookup found the image's own stamp
        self.problem = "no camera_info received"  # why the last lookup gave no intrinsics, or ""

    def add(self, info: CameraInfo) -> None:
        if is_distorted(info) and not self._warned:
            self._warned = True
            self._warn(f"camera_info has distortion coefficients ({info.distortion_model}): the node expects "
                       "rectified images (e.g. image_proc's image_rect) and uses the projection matrix P; "
                       "forecasts of a distorted image put 3-D points in the wrong place")
        stamp = time_to_ns(info.header.stamp)
        with self._lock:
            self._by_stamp.pop(stamp, None)
            self._by_stamp[stamp] = info
            while len(self._by_stamp) > self._kept:
                self._by_stamp.popitem(last=False)

    @property
    def received(self) -> bool:
        return bool(self._by_stamp)

    def intrinsics(self, stamp_ns: int, height: int, width: int) -> Pinhole | None:
        """The intrinsics for the ``height`` x ``width`` image stamped ``stamp_ns``, or None (then
        :attr:`problem` says why)."""
        with self._lock:
            info = self._by_stamp.get(stamp_ns)
            self.exact = info is not None
            if info is None and self._by_stamp:
                info = next(reversed(self._by_stamp.values()))
        if info is None:
            self.problem = "no camera_info received"
            return None
        try:
            camera = pinhole_from_camera_info(info, height, width)
        except ValueError as error:
            self.problem = str(error)
            return None
        self.problem = ""
        return camera
