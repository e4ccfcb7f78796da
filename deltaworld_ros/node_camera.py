"""forecast_node's camera input: the image subscription, its QoS, lost frames and their remedy.

:class:`CameraInput` subscribes to the camera (``sensor_msgs/Image``, or ``CompressedImage`` on
``<image_topic>/compressed``), converts each message in the callback (cheap, and a malformed
message is refused there, so it never displaces a good frame) and hands a
:class:`~deltaworld_core.runner.Frame` to ``on_frame`` (the node's frame runner). It keeps
``best_available`` true to its name as cameras come and go, and counts frames lost before the
callback two ways: the middleware's message_lost events, and the frames missing from the camera's
stamps at its rate (a reliable camera's keep-last overwrites on the reader's side are reported by
no DDS event). Each loss is stored with the advice that fits the camera's QoS at that moment.

A second input beside the image (e.g. the camera's ``sensor_msgs/CameraInfo``) belongs here:
subscribe to it in :meth:`CameraInput.subscribe` next to the image, with the same ``qos`` and
topic namespace, and destroy it in :meth:`CameraInput.unsubscribe`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from deltaworld_core.runner import Frame
from deltaworld_ros.futures_msg import check_header, time_to_seconds
from deltaworld_ros.image_conversion import ImageConversionError, msg_to_rgb
from deltaworld_ros.node_diagnostics import CameraStats

# input_reliability -> the subscription's policy. BEST_AVAILABLE is reliable towards reliable
# publishers (ROS 2 default QoS, most camera drivers) and best effort towards best-effort ones:
# measured with Fast DDS's default transports, a reliable 640x480 rgb8 camera at 30 Hz delivered
# 0-2 of 90 frames to a best-effort subscription and 90 of 90 to this one (results/input_qos.json).
RELIABILITY = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}


@dataclass
class CameraMeta:
    """What a :class:`~deltaworld_core.runner.Frame` from the camera carries beside its pixels."""

    header: Header  # the camera message's: outputs are stamped with it
    height: int  # the camera image as sent (compressed: as decoded); frame.image may be smaller (the model's size)
    width: int


class StampGaps:
    """Frames missing between consecutive camera stamps. The camera's period is the shortest of
    the recent intervals (a lost frame only lengthens one); an interval of n periods (within a
    quarter period) means n - 1 frames lost, less the frames that did arrive in between but were
    refused (malformed: received, not lost). Intervals over ``max_gap_s`` are a break in the
    stream (the context restarts), not losses; a camera that only ever delivers every third frame
    cannot be told from a camera at a third of the rate.

        gaps = StampGaps()
        [gaps.missing(t, 1.0) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.7)]  # [0, 0, 0, 0, 0, 2]
    """

    def __init__(self, history: int = 50, min_intervals: int = 4):
        self.intervals: deque[float] = deque(maxlen=history)
        self.min_intervals = min_intervals
        self.last: float | None = None

    def missing(self, stamp: float, max_gap_s: float, refused_between: int = 0) -> int:
        """Frames lost between the previous stamp and ``stamp``; ``refused_between``: messages
        that arrived between the two but were refused."""
        last, self.last = self.last, stamp
        if last is None or not 0 < stamp - last <= max_gap_s:
            return 0
        interval = stamp - last
        self.intervals.append(interval)
        if len(self.intervals) < self.min_intervals:
            return 0
        ratio = interval / min(self.intervals)
        periods = round(ratio)
        return max(0, periods - 1 - refused_between) if periods >= 2 and abs(ratio - periods) <= 0.25 else 0


class CameraInput:
    """The node's camera subscription (see the module docstring). ``log_limited(cause, text)``
    logs at most once per period and cause."""

    def __init__(self, node, on_frame: Callable[[Frame], None], log_limited: Callable[[str, str], None]):
        self.node, self.on_frame, self.log_limited = node, on_frame, log_limited
        self.stats = CameraStats()
        self.subscription = None
        self.horizon_s = 0.0  # the model's horizon in seconds (stamps beyond 2038 are refused)
        self.model_size: tuple[int, int] | None = None  # the VFM input (h, w): frames converted no larger
        self.max_gap_s = float("inf")  # the model config's: a longer interval is a break, not a loss
        self._gaps = StampGaps()
        self._refused_since_stamp = 0  # messages refused since the last good frame's stamp

    def configure(self, horizon_s: float, model_size: tuple[int, int], max_gap_s: float) -> None:
        self.horizon_s, self.model_size, self.max_gap_s = horizon_s, model_size, max_gap_s

    # ------------------------------------------------------------------ subscription
    def topic(self) -> tuple[str, type]:
        """The camera topic and its message type from the parameters."""
        if self.node.param("use_compressed"):
            return self.node.param("image_topic").rstrip("/") + "/compressed", CompressedImage
        return self.node.param("image_topic"), Image

    def subscribe(self, topic: str | None = None, msg_type=None, policy: ReliabilityPolicy | None = None) -> None:
        """Subscribes to the camera (by default as the parameters say); a new stream starts."""
        if topic is None:
            topic, msg_type = self.topic()
        policy = RELIABILITY[self.node.param("input_reliability")] if policy is None else policy
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.node.param("input_depth"), reliability=policy,
                         durability=DurabilityPolicy.VOLATILE)
        events = dict(incompatible_qos=self._on_incompatible_qos, message_lost=self._on_message_lost)
        self._gaps, self._refused_since_stamp = StampGaps(), 0
        try:
            self.subscription = self.node.create_subscription(msg_type, topic, self._on_image, qos,
                                                              event_callbacks=SubscriptionEventCallbacks(**events))
        except UnsupportedEventTypeError:  # an RMW without lost-message events
            events.pop("message_lost")
            self.subscription = self.node.create_subscription(msg_type, topic, self._on_image, qos,
                                                              event_callbacks=SubscriptionEventCallbacks(**events))

    def unsubscribe(self) -> None:
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            self.node.destroy_subscription(subscription)

    def describe(self) -> str:
        return (f"{self.subscription.topic_name} ({self.subscription.msg_type.__name__}, "
                f"{self.node.param('input_reliability')}, depth {self.node.param('input_depth')})")

    def match_camera_qos(self) -> None:
        """Keeps best_available true to its name after start-up (called every second). The
        middleware resolves BEST_AVAILABLE once, when the subscription is made, from the
        publishers it knows then: a camera started after the node made it reliable, and a
        best-effort camera was then incompatible and sent nothing; a best-effort camera replaced
        by a reliable one would keep losing large frames. So when the camera publishers now call
        for another policy (best effort when any offers only that, else reliable), the
        subscription is made again with it."""
        subscription = self.subscription
        if subscription is None or self.node.param("input_reliability") != "best_available":
            return
        topic = subscription.topic_name
        offered = self.offered(topic)
        if not offered:
            return
        wanted = ReliabilityPolicy.BEST_EFFORT if ReliabilityPolicy.BEST_EFFORT in offered else ReliabilityPolicy.RELIABLE
        me = (self.node.get_name(), self.node.get_namespace())
        actual = {info.qos_profile.reliability for info in self.node.get_subscriptions_info_by_topic(topic)
                  if (info.node_name, info.node_namespace) == me}
        if not actual or actual == {wanted}:  # not listed yet (discovery), or matching already
            return
        self.unsubscribe()
        self.subscribe(topic, subscription.msg_type, wanted)
        offer = "best effort" if wanted == ReliabilityPolicy.BEST_EFFORT else "reliable"
        self.node.get_logger().info(f"camera publishers on {topic} offer {offer} delivery: camera subscription "
                                    "re-made to match (input_reliability best_available)")

    def offered(self, topic: str) -> set:
        """The reliability policies the topic's publishers offer now (empty if the graph query fails)."""
        try:
            return {info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(topic)}
        except Exception:  # noqa: BLE001 - the graph query is advisory: never let it break a callback
            return set()

    # ------------------------------------------------------------------ losses
    def _on_incompatible_qos(self, info) -> None:
        mode = self.node.param("input_reliability")
        if mode == "best_available":
            return  # match_camera_qos re-makes the subscription within a second
        self.log_limited("incompatible_qos", f"a camera publisher's QoS is incompatible with input_reliability "
                                             f"'{mode}' (policy {info.last_policy_kind}): its images never arrive; "
                                             "use input_reliability best_available (the default) or make the "
                                             "publisher reliable")

    def _on_message_lost(self, info) -> None:
        self.stats.lost_by_dds += info.total_count_change
        self._lost(info.total_count_change, f"DDS dropped {info.total_count_change} before delivery")

    def _lost(self, frames: int, how: str) -> None:
        advice = self.loss_advice()
        self.stats.losses.append((time.monotonic(), frames, advice))
        self.log_limited("lost", f"camera frames are being lost: {how} "
                                 f"({self.stats.lost_by_dds + self.stats.lost_estimated} in all, "
                                 f"{self.stats.received} received). " + advice)

    def loss_advice(self) -> str:
        """What to change so that camera frames stop being lost, from the QoS the camera's
        publishers offer now (docs/camera-input.md has the measurements behind it)."""
        topic = self.subscription.topic_name if self.subscription is not None else self.node.param("image_topic")
        offered, mode = self.offered(topic), self.node.param("input_reliability")
        if ReliabilityPolicy.RELIABLE in offered and mode == "best_effort":
            return ("The camera publishes reliably but input_reliability is best_effort: set it to best_available "
                    "(the default).")
        if ReliabilityPolicy.BEST_EFFORT in offered or mode == "best_effort":
            return ("The camera publishes best effort, which loses raw frames over ~0.5 MB on ROS 2's default "
                    "transports: make the driver publish reliably (ROS 2 default QoS; best_available follows), or "
                    "use_compressed:=true with its compressed topic, or FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for "
                    "every process of the system (docs/camera-input.md).")
        return ("Frames arrive faster than this process takes them: raise input_depth, lower the camera rate, "
                "or give the node more CPU (docs/camera-input.md).")

    # ------------------------------------------------------------------ frames
    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        self.stats.received += 1
        self.stats.received_at.append(received)
        try:
            # The header first (cheap): a 1 MB frame_id or a stamp whose targets pass 2038 is
            # refused before any pixel is converted or anything is copied.
            check_header(msg.header, self.horizon_s)
            rgb = msg_to_rgb(msg, self.model_size)  # no larger than the model needs: bounded memory
        except ImageConversionError as err:
            self.stats.malformed += 1
            self._refused_since_stamp += 1
            self.log_limited(err.cause, f"skipping malformed image ({err.cause}): {err}")
            return
        stamp = time_to_seconds(msg.header.stamp)
        if stamp == 0.0:  # an unstamped camera; the forecaster needs increasing times
            self.log_limited("unstamped", "image header stamp is zero: using the node clock instead")
            stamp = self.node.get_clock().now().nanoseconds * 1e-9
        else:
            missing = self._gaps.missing(stamp, self.max_gap_s, self._refused_since_stamp)
            self._refused_since_stamp = 0
            if missing:
                self.stats.lost_estimated += missing
                self._lost(missing, f"{missing} missing from the camera's stamps (lost before the node took them)")
        height, width = (msg.height, msg.width) if isinstance(msg, Image) else rgb.shape[:2]
        self.on_frame(Frame(rgb, stamp, received, meta=CameraMeta(msg.header, height, width)))
