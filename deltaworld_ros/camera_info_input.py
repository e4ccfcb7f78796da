"""The camera's sensor_msgs/CameraInfo, matched to its images by stamp.

A camera driver publishes ``camera_info`` beside ``image_raw``/``image_rect`` with the same stamp
(image_transport's camera publisher). The node keeps the last few and, for an image, takes the one
with the image's stamp; when none has it (a driver that stamps its CameraInfo differently, or one
that was dropped) the newest received stands in: calibrations do not change between frames, and
which one was used is reported (:attr:`CameraInfoCache.exact`).

:class:`MapGeometry` is the node's side of it: the subscription beside the camera's image topic,
and each forecast's map intrinsics (the frame's, cropped and scaled as its ``region`` and maps say).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo

from deltaworld_core.camera_model import Pinhole
from deltaworld_ros.futures_msg import time_to_ns
from deltaworld_ros.planner_msgs import pinhole_from_camera_info

# Best effort receives from reliable and best-effort camera drivers alike.
CAMERA_INFO_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
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


class MapGeometry:
    """The node's camera_info subscription (beside the camera's image topic, as resolved: a remapped
    image topic brings its camera_info along; ``camera_info`` itself remaps too) and each forecast's
    map intrinsics."""

    def __init__(self, node):
        self.node = node
        self.cache = CameraInfoCache(node.get_logger().warning)
        self.subscription = None
        self._last: tuple[object, Pinhole | None] = (None, None)

    def follow(self, camera) -> None:
        """Subscribes beside ``camera``'s (a node_camera.CameraInput) image subscription."""
        self.unsubscribe()
        image_topic = camera.subscription.topic_name
        if self.node.param("use_compressed"):
            image_topic = image_topic.removesuffix("/compressed")
        self.subscription = self.node.create_subscription(CameraInfo, camera_info_topic(image_topic), self.cache.add,
                                                          CAMERA_INFO_QOS)

    def unsubscribe(self) -> None:
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            self.node.destroy_subscription(subscription)

    def status(self) -> str:
        """For /diagnostics: whether the maps have intrinsics, and if not why."""
        topic = self.subscription.topic_name if self.subscription is not None else "camera_info"
        if not self.cache.received:
            return f"no camera_info received on {topic}: obstacles, risk grid and step camera_info are not published"
        if self.cache.problem:
            return f"{self.cache.problem}: obstacles, risk grid and step camera_info are not published"
        return "ok" if self.cache.exact else "ok (the newest; none had the image's stamp)"

    def camera(self, forecast, frame) -> Pinhole | None:
        """The intrinsics of ``forecast``'s maps, made from ``frame`` (a deltaworld_core Frame whose
        ``image`` the model got and ``meta.header`` the camera's), or None without a usable
        CameraInfo; computed once per forecast."""
        if self._last[0] is forecast:
            return self._last[1]
        h, w = frame.image.shape[:2]
        found = self.cache.intrinsics(time_to_ns(frame.meta.header.stamp), h, w)
        camera = None if found is None else found.window(forecast.region or (0, 0, h, w),
                                                          forecast.semantic.shape[-2:])
        self._last = (forecast, camera)
        return camera
