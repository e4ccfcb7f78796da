"""forecast_node: camera images in, K futures of semantics and depth out (deltaworld_ros/Futures).

A managed (lifecycle) node: configure loads the model (slow), activate subscribes to the camera
and starts forecasting; with ``autostart`` (default) it drives both transitions itself so that a
plain ``ros2 run`` / launch just works.

Only the newest frame is ever processed: the subscription callback converts the image (cheap,
and malformed messages are rejected there so they never displace a good frame) and stores it in a
one-slot mailbox, dropping the frame still waiting there; a worker thread runs the model on
whatever is newest. So latency stays bounded by about two model steps however fast frames arrive.

Run: ``python -m deltaworld_ros.forecast_node --ros-args --params-file config/forecast.yaml``
or ``ros2 run deltaworld_ros forecast_node --ros-args ...``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from deltaworld_ros.futures_msg import check_header, forecast_to_msg, time_to_seconds
from deltaworld_ros.image_conversion import ImageConversionError, array_to_image_msg, cut, msg_to_rgb
from deltaworld_ros.msg import Futures
from deltaworld_ros.node_parameters import (CONFIG_KEYS, PARAMETERS, RECONFIGURE, RESUBSCRIBE, START_ONLY,  # noqa: F401
                                            ParameterError, clamped_threads, config_overrides, config_problem,
                                            device_problem, parameter_problem, weights_problem)

# input_reliability -> the subscription's policy. BEST_AVAILABLE is reliable towards reliable
# publishers (ROS 2 default QoS, most camera drivers) and best effort towards best-effort ones:
# measured with Fast DDS's default transports, a reliable 640x480 rgb8 camera at 30 Hz delivered
# 0-2 of 90 frames to a best-effort subscription and 90 of 90 to this one (results/input_qos.json).
RELIABILITY = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}
LOSS_WINDOW_S = 10.0  # /diagnostics warns while DDS reported lost camera frames this recently
# /diagnostics says ERROR while a model step failed or a forecast was withheld this recently: a
# planner watching the level must see a failure that is going on, not one that passed minutes ago
# (the counts since start stay in the values).
ERROR_WINDOW_S = 10.0


@dataclass
class Frame:
    rgb: np.ndarray
    header: Header
    stamp: float  # seconds used by the forecaster
    received: float  # time.monotonic() when the message arrived
    # Why the context must restart before this frame (a gap in the camera stream), or None. Set on
    # receipt, carried over from frames dropped in the mailbox, so a gap is never lost with them.
    gap: str | None = None


class _RosLogHandler(logging.Handler):
    """Forwards deltaworld_core's Python logging (resets, weight warnings) to the ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING else "info"
        getattr(self.ros_logger, level)(f"[{record.name}] {record.getMessage()}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ForecastNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("forecast_node", **kwargs)
        self.forecaster = None
        self.device = "unconfigured"
        self._subscription = None
        self._futures_pub = self._debug_pub = None
        self._mailbox: Frame | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        # With two stages (deltaworld_core.pipeline: threads >= 2 on a CPU) the VFM stage takes the
        # camera mailbox and hands each frame with its features to the forecast stage through _ready
        self._pipelined = False
        self._vfm_worker: threading.Thread | None = None
        self._ready: tuple[Frame, object] | None = None
        self._ready_wake = threading.Event()
        self._features_started: float | None = None  # monotonic start of the VFM stage in progress
        self._counts = dict(received=0, processed=0, published=0, dropped=0, malformed=0, model_errors=0,
                            nonfinite=0, lost=0)
        self._waiting_since: float | None = None  # monotonic time the mailbox last became non-empty
        self._step_started: float | None = None  # monotonic start of the model step in progress
        self._last_nonfinite: float | None = None
        self._model_errors_at: deque[float] = deque(maxlen=1000)  # monotonic times of failed model steps
        # The full name (namespace included): two robots' nodes on one domain report apart.
        self._diagnostics_name = f"{self.get_fully_qualified_name()}: DeltaWorld forecast"
        self._namesakes = 1  # nodes in the graph with this node's name and namespace, itself included
        self._latencies_ms: deque[float] = deque(maxlen=100)  # receipt -> publish
        self._model_ms: deque[float] = deque(maxlen=100)
        self._published_at: deque[float] = deque(maxlen=100)
        self._received_at: deque[float] = deque(maxlen=100)
        self._lost_at: deque[tuple[float, int]] = deque(maxlen=1000)  # (monotonic, frames) of DDS loss events
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._max_gap_s = math.inf  # the model config's max_gap_s once configured
        self._model_size: tuple[int, int] | None = None  # the VFM input (h, w) once configured
        self._last_stream_stamp: float | None = None  # newest camera stamp received (not processed)
        self._rejection = ""  # why the last parameter value was refused
        self._log_handler = _RosLogHandler(self.get_logger())
        self._running = False  # True once every parameter is declared: later sets are `ros2 param set`
        self._accepted = ""  # when the run-time values just accepted take effect (the result's reason)
        self._diagnostics_stop = threading.Event()
        self._diagnostics_thread: threading.Thread | None = None  # started once every parameter is valid
        # Validates declared values (params file, --ros-args -p) and later `ros2 param set`.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        for name, (default, description) in PARAMETERS.items():
            try:
                self.declare_parameter(name, default, ParameterDescriptor(description=description))
            except InvalidParameterValueException:
                raise ParameterError(f"parameter {name} {self._rejection}") from None
            except ParameterException as err:  # a type mismatch: rclpy's text names both types
                text = " ".join(str(err).split()).removesuffix(f": {name}")
                raise ParameterError(f"parameter {name}: {text}") from None
        # The checks that need several values (the model config with every override) once all are
        # declared: one line and exit 2 at start-up rather than a traceback from configure.
        problem = self._combined_problem({})
        if problem:
            raise ParameterError(problem)
        self._running = True
        logging.getLogger("deltaworld_core").addHandler(self._log_handler)
        logging.getLogger("deltaworld_core").setLevel(logging.INFO)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # /diagnostics comes from a thread of its own, so a frame that takes long to decode in the
        # executor never delays it (a flood of 32 Mpx PNGs, 0.7 s each, starved a timer). Not a
        # MultiThreadedExecutor: with one, a reliable 640x480 camera at 30 Hz lost up to 40% of
        # its frames to the publisher's keep-last queue (2 runs of 4 here; 0 of 4 single-threaded).
        self._diagnostics_thread = threading.Thread(target=self._diagnostics_loop, name="diagnostics", daemon=True)
        self._diagnostics_thread.start()
        self.create_timer(1.0, self._check_namesakes)  # discovery needs a moment: checked from the first second
        self.create_timer(1.0, self._match_camera_qos)

    def param(self, name: str):
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Refuses a value that breaks a rule, at start-up and under `ros2 param set` alike; a
        value accepted at run time says in the result's reason when it takes effect."""
        changed = {p.name: p.value for p in parameters if p.name in PARAMETERS}
        for name, value in changed.items():
            problem = parameter_problem(name, value)
            if problem is None and name == "weights":
                problem = weights_problem(value)
            if problem is None and name == "device":
                problem = device_problem(value)
            if problem is None and self._running and name in START_ONLY:
                problem = "read only at start-up (restart the node to change it)"
            if problem:
                shown = cut(value) if isinstance(value, str) else repr(value)
                self._rejection = f"= {shown[:200]}: {problem}"
                return SetParametersResult(successful=False, reason=f"{name} {self._rejection}")
        if not self._running:
            return SetParametersResult(successful=True)
        problem = self._combined_problem(changed)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        self._accepted = self._when_applied(changed)
        return SetParametersResult(successful=True, reason=self._accepted)

    def set_parameters_atomically(self, parameter_list):
        """As rclpy's, which `ros2 param set` reaches through the parameter service, but an
        accepted value keeps the reason saying when it takes effect (rclpy replaces the result of
        a successful on-set callback with a bare success)."""
        self._accepted = ""
        result = super().set_parameters_atomically(parameter_list)
        if result.successful and self._accepted:
            result.reason = self._accepted
            self.get_logger().info(f"parameters set: {self._accepted}")
        return result

    def _combined_problem(self, changed: dict) -> str | None:
        """Why the model config would not load with the current parameters updated by
        ``changed`` (the check configure makes, made before anything loads), or None."""
        values = {name: self.param(name) for name in PARAMETERS}
        values.update(changed)
        config_changed = set(changed) & {"model_config", *CONFIG_KEYS} if changed else {"model_config", *CONFIG_KEYS}
        if not config_changed:
            return None
        for name in ("model_config", *CONFIG_KEYS):  # one at a time first: the message names the culprit
            if name in config_changed and values[name] != PARAMETERS[name][0]:
                only = {"model_config": values["model_config"], name: values[name]}
                problem = config_problem(only)
                if problem:
                    shown = cut(values[name]) if isinstance(values[name], str) else repr(values[name])
                    return f"parameter {name} = {shown}: {problem}"
        problem = config_problem(values)
        if problem:
            given = ", ".join(f"{n} = {values[n]!r}" for n in CONFIG_KEYS if values[n] != PARAMETERS[n][0])
            return f"parameters {given} together: {problem}"
        return None

    def _when_applied(self, changed: dict) -> str:
        state = self._state_machine.current_state[1]
        notes = []
        later = sorted(set(changed) & RECONFIGURE)
        if later:
            notes.append(f"{', '.join(later)}: applied at the next configure" + (
                " (now: deactivate, cleanup, configure, activate)" if state in ("inactive", "active") else ""))
        if "threads" in changed:
            threads, warning = clamped_threads(changed["threads"])
            if warning:
                notes.append(warning)
        now = sorted(set(changed) & RESUBSCRIBE)
        if now:
            notes.append(f"{', '.join(now)}: " + ("camera subscription remade now" if state == "active"
                                                  else "applied at the next activate"))
        if "diagnostics_period_s" in changed:
            notes.append("diagnostics_period_s: applied now")
        return "; ".join(notes)

    def _apply_parameters(self, parameters) -> None:
        """After a run-time set: what takes effect at once is applied here (the on-set callback
        runs before the values are stored)."""
        if not self._running:
            return
        names = {p.name for p in parameters}
        if names & RESUBSCRIBE and self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
            topic, msg_type = self._input_topic()
            self._subscribe(topic, msg_type, RELIABILITY[self.param("input_reliability")])
            self.get_logger().info(f"camera input is now {self._subscription.topic_name} ({msg_type.__name__}, "
                                   f"{self.param('input_reliability')}, depth {self.param('input_depth')})")

    def _check_namesakes(self) -> None:
        """Two nodes with one name both publish and would share one diagnostics name: warn, and
        make this node's diagnostics name unique (host and pid)."""
        me = (self.get_name(), self.get_namespace())
        count = sum(1 for entry in self.get_node_names_and_namespaces() if tuple(entry) == me)
        if count > 1 and count != self._namesakes:
            self._diagnostics_name = (f"{self.get_fully_qualified_name()} (pid {os.getpid()} on "
                                      f"{socket.gethostname()}): DeltaWorld forecast")
            self.get_logger().warning(
                f"a node named {self.get_fully_qualified_name()} already exists ({count} in the graph): both publish "
                f"on the same topics; give each a unique name (--ros-args -r __node:=NAME). "
                f"Diagnostics of this one: '{self._diagnostics_name}'")
        self._namesakes = max(count, 1)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy's lifecycle wrapper turns an exception escaping this callback into a bare ERROR
        # transition with nothing logged: every failure (an uninstalled deltaworld_core, a bad
        # config or weights file, a publisher that cannot be created) is logged here with its cause.
        try:
            self._configure()
        except Exception as err:  # noqa: BLE001 - any cause fails the transition, never the process
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}\n{traceback.format_exc().rstrip()}")
            for pub in (self._futures_pub, self._debug_pub):
                if pub is not None:
                    self.destroy_lifecycle_publisher(pub)
            self._futures_pub = self._debug_pub = None
            self.forecaster, self.device = None, "unconfigured"
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        from deltaworld_core import Forecaster  # here, not at the top: its failure is a configure failure

        overrides = config_overrides({name: self.param(name) for name in CONFIG_KEYS})
        self.device = resolve_device(self.param("device"))
        threads, warning = clamped_threads(self.param("threads"))
        if warning:
            self.get_logger().warning(warning)
        started = time.perf_counter()
        self.forecaster = fc = Forecaster.from_config(
            self.param("model_config"), device=self.device, overrides=overrides, weights=self.param("weights") or None,
            threads=threads)
        # max_gap_s is a gap in the camera stream (checked on receipt, _stream_gap), not between the
        # frames the model happens to process: a model step slower than max_gap_s must not reset
        # the context on every frame. The forecaster's own check therefore never fires here.
        self._max_gap_s, fc.max_gap_s = fc.max_gap_s, math.inf
        self._model_size = tuple(fc.cfg.vfm.image_size)
        from deltaworld_core.pipeline import pipelined, use_stage_threads

        self._pipelined = pipelined(fc)
        threads_note = (f"{fc.threads} threads as two stages of {use_stage_threads(fc)} (VFM beside the rest)"
                        if self._pipelined else f"{fc.threads} threads")
        self.get_logger().info(
            f"model '{self.param('model_config')}' on {self.device} in {time.perf_counter() - started:.1f} s: "
            f"K={fc.k}, horizon={fc.horizon} x {fc.step_s} s, output {fc.output_size}, {len(fc.class_names)} classes, "
            f"{threads_note}")
        # Reliable so that ~MB messages are not lost to one missing fragment; depth 2 so that a
        # slow subscriber gets the newest futures rather than a backlog.
        futures_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self._futures_pub = self.create_lifecycle_publisher(Futures, self.param("futures_topic"), futures_qos)
        if self.param("publish_debug_image"):
            self._debug_pub = self.create_lifecycle_publisher(Image, self.param("debug_image_topic"), futures_qos)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        topic, msg_type = self._input_topic()
        self.forecaster.reset()
        self._last_stream_stamp = None
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="forecast_worker", daemon=True)
        self._worker.start()
        if self._pipelined:
            self._vfm_worker = threading.Thread(target=self._vfm_work, name="vfm_worker", daemon=True)
            self._vfm_worker.start()
        reliability = self.param("input_reliability")
        self._subscribe(topic, msg_type, RELIABILITY[reliability])
        self.get_logger().info(f"forecasting {self._subscription.topic_name} ({msg_type.__name__}, {reliability}, "
                               f"depth {self.param('input_depth')}) -> {self._futures_pub.topic_name}")
        return super().on_activate(state)

    def _input_topic(self) -> tuple[str, type]:
        if self.param("use_compressed"):
            return self.param("image_topic").rstrip("/") + "/compressed", CompressedImage
        return self.param("image_topic"), Image

    def _subscribe(self, topic: str, msg_type, policy: ReliabilityPolicy) -> None:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.param("input_depth"), reliability=policy,
                         durability=DurabilityPolicy.VOLATILE)
        events = dict(incompatible_qos=self._on_incompatible_qos, message_lost=self._on_message_lost)
        try:
            self._subscription = self.create_subscription(msg_type, topic, self._on_image, qos,
                                                          event_callbacks=SubscriptionEventCallbacks(**events))
        except UnsupportedEventTypeError:  # an RMW without lost-message events
            events.pop("message_lost")
            self._subscription = self.create_subscription(msg_type, topic, self._on_image, qos,
                                                          event_callbacks=SubscriptionEventCallbacks(**events))

    def _match_camera_qos(self) -> None:
        """Keeps best_available true to its name after start-up. The middleware resolves
        BEST_AVAILABLE once, when the subscription is made, from the publishers it knows then: a
        camera started after the node (or discovered late) made it reliable, and a best-effort
        camera was then incompatible and sent nothing (seen); a best-effort camera replaced by a
        reliable one would keep losing large frames. So every second: if the camera publishers now
        call for another policy (best effort when any offers only that, else reliable), the
        subscription is made again with it."""
        subscription = self._subscription
        if subscription is None or self.param("input_reliability") != "best_available":
            return
        topic = subscription.topic_name
        offered = {info.qos_profile.reliability for info in self.get_publishers_info_by_topic(topic)}
        if not offered:
            return
        best_effort = ReliabilityPolicy.BEST_EFFORT in offered
        wanted = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
        me = (self.get_name(), self.get_namespace())
        actual = {info.qos_profile.reliability for info in self.get_subscriptions_info_by_topic(topic)
                  if (info.node_name, info.node_namespace) == me}
        if not actual or actual == {wanted}:  # not listed yet (discovery), or matching already
            return
        self.destroy_subscription(subscription)
        self._subscription = None
        self._subscribe(topic, subscription.msg_type, wanted)
        offer = "best effort" if wanted == ReliabilityPolicy.BEST_EFFORT else "reliable"
        self.get_logger().info(f"camera publishers on {topic} offer {offer} delivery: camera subscription re-made "
                               "to match (input_reliability best_available)")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in (self._futures_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._futures_pub = self._debug_pub = None
        self.forecaster, self.device = None, "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_error(state)

    def _stop_processing(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._stop.set()
        self._wake.set()
        self._ready_wake.set()
        for worker in (self._worker, self._vfm_worker):
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=30.0)
        self._worker, self._vfm_worker, self._mailbox, self._ready = None, None, None, None

    # ------------------------------------------------------------------ input
    def _on_incompatible_qos(self, info) -> None:
        if self.param("input_reliability") == "best_available":
            return  # _match_camera_qos re-makes the subscription within a second
        self._log_limited("incompatible_qos", f"a camera publisher's QoS is incompatible with input_reliability "
                                              f"'{self.param('input_reliability')}' (policy {info.last_policy_kind}): "
                                              "its images never arrive; use input_reliability best_available (the "
                                              "default) or make the publisher reliable")

    def _on_message_lost(self, info) -> None:
        self._counts["lost"] += info.total_count_change
        self._lost_at.append((time.monotonic(), info.total_count_change))
        self._log_limited("lost", f"camera frames are being lost: DDS dropped {info.total_count_change} before "
                                  f"delivery ({self._counts['lost']} in all, {self._counts['received']} received). "
                                  + self._loss_advice())

    def _loss_advice(self) -> str:
        """What to change so that camera frames stop being lost, from the QoS the camera's
        publishers actually offer (docs/camera-input.md has the measurements behind it)."""
        topic = self._subscription.topic_name if self._subscription is not None else self.param("image_topic")
        try:
            offered = {info.qos_profile.reliability for info in self.get_publishers_info_by_topic(topic)}
        except Exception:  # noqa: BLE001 - the graph query is advisory: never let it break a callback
            offered = set()
        mode = self.param("input_reliability")
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

    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        self._counts["received"] += 1
        self._received_at.append(received)
        try:
            # The header first (cheap): a 1 MB frame_id or a stamp whose targets pass 2038 is
            # rejected before any pixel is converted or anything is copied.
            check_header(msg.header, self._horizon_s())
            rgb = msg_to_rgb(msg, self._model_size)  # no larger than the model needs: bounded memory
        except ImageConversionError as err:
            self._counts["malformed"] += 1
            self._log_limited(err.cause, f"skipping malformed image ({err.cause}): {err}")
            return
        stamp = time_to_seconds(msg.header.stamp)
        if stamp == 0.0:  # an unstamped camera; the forecaster needs increasing times
            self._log_limited("unstamped", "image header stamp is zero: using the node clock instead")
            stamp = self.get_clock().now().nanoseconds * 1e-9
        frame = Frame(rgb=rgb, header=msg.header, stamp=stamp, received=received, gap=self._stream_gap(stamp))
        with self._lock:
            if self._mailbox is not None:
                self._counts["dropped"] += 1  # never processed: a newer frame replaces it
                frame.gap = frame.gap or self._mailbox.gap
            else:
                self._waiting_since = received
            self._mailbox = frame
        self._wake.set()

    def _stream_gap(self, stamp: float) -> str | None:
        """Why the context must restart at this camera frame: a gap over max_gap_s since the
        previous frame *received* (frames dropped because the model is busy are no gap)."""
        last, self._last_stream_stamp = self._last_stream_stamp, stamp
        if last is not None and stamp - last > self._max_gap_s:
            return f"camera stream gap {stamp - last:.3f} s exceeds max_gap_s {self._max_gap_s}"
        return None

    def _horizon_s(self) -> float:
        fc = self.forecaster
        return fc.horizon * fc.step_s if fc is not None else 0.0

    def _log_limited(self, cause: str, text: str) -> None:
        now = time.monotonic()
        last = self._last_logged.get(cause)
        if last is not None and now - last < self.param("malformed_log_period_s"):
            self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
            return
        suppressed = self._suppressed.pop(cause, 0)
        self._last_logged[cause] = now
        self.get_logger().warning(text + (f" ({suppressed} more since last report)" if suppressed else ""))

    # ------------------------------------------------------------------ processing
    def _take_frame(self) -> Frame | None:
        """The newest camera frame from the mailbox (None after a 0.2 s wait or when stopping)."""
        if not self._wake.wait(timeout=0.2):
            return None
        with self._lock:
            frame, self._mailbox = self._mailbox, None
            self._waiting_since = None
            self._wake.clear()
        return None if self._stop.is_set() else frame

    def _take_ready(self) -> tuple[Frame, object] | None:
        """The newest frame with its features from the VFM stage (None after a 0.2 s wait or when stopping)."""
        if not self._ready_wake.wait(timeout=0.2):
            return None
        with self._lock:
            ready, self._ready = self._ready, None
            self._ready_wake.clear()
        return None if self._stop.is_set() else ready

    def _work(self) -> None:
        while not self._stop.is_set():
            if self._pipelined:
                frame, features = self._take_ready() or (None, None)
            else:
                frame, features = self._take_frame(), None
            if frame is not None:
                self._step_started = time.monotonic()
                try:
                    self._process(frame, features)
                except Exception as err:  # noqa: BLE001 - the worker must outlive any one frame
                    self._count_model_error()
                    self._log_limited("worker_error", f"processing a frame failed: {type(err).__name__}: {err}")
                finally:
                    self._step_started = None

    def _vfm_work(self) -> None:
        """The first of two stages: each camera frame's VFM features, handed to the forecast stage
        (the newest wins: one the forecast stage has not taken yet counts as dropped)."""
        gap = None  # a context break carried by a frame whose VFM call failed: the next frame's
        while not self._stop.is_set():
            frame = self._take_frame()
            if frame is None:
                continue
            self._features_started = time.monotonic()
            try:
                ok, features = self._model_call(self.forecaster.frame_features, frame.rgb)
            finally:
                self._features_started = None
            if not ok:
                gap = gap or frame.gap
                continue
            frame.gap, gap = frame.gap or gap, None
            with self._lock:
                if self._ready is not None:
                    self._counts["dropped"] += 1
                    frame.gap = frame.gap or self._ready[0].gap
                self._ready = (frame, features)
            self._ready_wake.set()

    def _model_call(self, call, *args) -> tuple[bool, object]:
        """(True, ``call(*args)``), or (False, None) with the failure counted and logged (rate-
        limited): a frame the forecaster refuses (ValueError) is malformed input, anything else a
        model error; the node keeps serving either way."""
        try:
            return True, call(*args)
        except ValueError as err:
            self._counts["malformed"] += 1
            self._log_limited("rejected", f"forecaster rejected a frame: {err}")
        except Exception as err:  # noqa: BLE001 - one failing frame must not kill the node
            self._count_model_error()
            self._log_limited("model_error", f"forecaster failed: {type(err).__name__}: {err}")
        return False, None

    def _count_model_error(self) -> None:
        self._counts["model_errors"] += 1
        self._model_errors_at.append(time.monotonic())

    def _process(self, frame: Frame, features=None) -> None:
        fc = self.forecaster
        if frame.gap is not None:
            fc.reset(frame.gap)
            self._log_limited("reset", f"context reset: {frame.gap}")
        ok, forecast = self._model_call(fc.step, frame.rgb, frame.stamp, features)
        if not ok:
            return
        self._counts["processed"] += 1
        if fc.last_reset_reason:
            self._log_limited("reset", f"context reset: {fc.last_reset_reason}")
        if forecast is None:
            return
        s = forecast.summary
        if not all(np.isfinite(a).all() for a in (forecast.depth, s.depth_mean, s.depth_std, s.agreement)):
            # Planners read depth as metres: a NaN/inf map is withheld, never published.
            self._counts["nonfinite"] += 1
            self._last_nonfinite = time.monotonic()
            self._log_limited("nonfinite", "forecast has non-finite depth (broken or overflowing weights?): "
                                           "not published")
            return
        if not self._publish(self._futures_pub, forecast_to_msg(forecast, frame.header)):
            return
        done = time.monotonic()
        self._counts["published"] += 1
        self._published_at.append(done)
        self._latencies_ms.append((done - frame.received) * 1e3)
        self._model_ms.append(forecast.timings.get("total", float("nan")))
        if self._debug_pub is not None:
            from deltaworld_core.viz import forecast_grid

            self._publish(self._debug_pub, array_to_image_msg(forecast_grid(frame.rgb, forecast), "rgb8", frame.header))

    def _publish(self, publisher, msg) -> bool:
        """Publishes; False, quietly, when rclpy has shut down meanwhile: Ctrl-C runs rclpy's
        signal handler, which invalidates the context while a model step may still be running."""
        try:
            publisher.publish(msg)
            return True
        except Exception:
            if self.context.ok():
                raise
            self._stop.set()
            return False

    # ------------------------------------------------------------------ diagnostics
    @staticmethod
    def _rate(times: deque[float], now: float, window: float = 5.0) -> float:
        recent = [t for t in list(times) if now - t <= window]  # list(): one atomic copy (other threads append)
        return 0.0 if len(recent) < 2 else (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def _diagnostics_loop(self) -> None:
        """Publishes /diagnostics every diagnostics_period_s (read each time: a run-time change
        applies from the next message) until the node is destroyed or the context shuts down."""
        while not self._diagnostics_stop.wait(self.param("diagnostics_period_s")):
            try:
                self._publish_diagnostics()
            except Exception as err:  # noqa: BLE001 - this thread must outlive one bad report
                if not self.context.ok():
                    return
                self._log_limited("diagnostics_error", f"publishing /diagnostics failed: {type(err).__name__}: {err}")

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        state = self._state_machine.current_state[1]
        latencies = list(self._latencies_ms)
        fc = self.forecaster  # once: configure and cleanup may change it meanwhile (another thread)
        values = {
            "state": state,
            "device": self.device,
            "threads": str(fc.threads) if fc is not None else "unconfigured",
            "input_rate_hz": f"{self._rate(self._received_at, now):.2f}",
            "forecast_rate_hz": f"{self._rate(self._published_at, now):.2f}",
            "latency_ms_last": f"{latencies[-1]:.1f}" if latencies else "nan",
            "latency_ms_median": f"{np.median(latencies):.1f}" if latencies else "nan",
            "latency_ms_max": f"{max(latencies):.1f}" if latencies else "nan",
            "model_ms_median": f"{np.median(list(self._model_ms)):.1f}" if self._model_ms else "nan",
            "frames_received": str(self._counts["received"]),
            "frames_processed": str(self._counts["processed"]),
            "frames_dropped": str(self._counts["dropped"]),
            "frames_malformed": str(self._counts["malformed"]),
            "model_errors": str(self._counts["model_errors"]),
            "forecasts_published": str(self._counts["published"]),
            "resets": str(fc.resets if fc is not None else 0),
            "forecasts_nonfinite": str(self._counts["nonfinite"]),
            "frames_lost_by_dds": str(self._counts["lost"]),
            "nodes_with_this_name": str(self._namesakes),
        }
        waited = max([now - t for t in (self._step_started, self._features_started, self._waiting_since)
                      if t is not None] + [0.0])
        values["seconds_waiting_for_model"] = f"{waited:.1f}"
        workers = [self._worker] + ([self._vfm_worker] if self._pipelined else [])
        worker_dead = state == "active" and any(w is None or not w.is_alive() for w in workers)
        stalled = state == "active" and self._received_at and now - self._received_at[-1] > 5.0
        recent_nonfinite = self._last_nonfinite is not None and now - self._last_nonfinite < ERROR_WINDOW_S
        errors_recently = sum(now - t <= ERROR_WINDOW_S for t in list(self._model_errors_at))
        values["model_errors_recently"] = str(errors_recently)
        if worker_dead or (state == "active" and waited > self.param("stall_timeout_s")):
            level, message = DiagnosticStatus.ERROR, f"forecasting stalled: frames waiting {waited:.1f} s for the model"
        elif recent_nonfinite:
            level, message = DiagnosticStatus.ERROR, "non-finite depth: forecasts withheld"
        elif errors_recently:
            level, message = DiagnosticStatus.ERROR, (
                f"forecaster errors: {errors_recently} in the last {ERROR_WINDOW_S:.0f} s")
        elif state != "active":
            level, message = DiagnosticStatus.WARN, f"node is {state}"
        elif stalled or not self._received_at:
            level, message = DiagnosticStatus.WARN, "no camera images"
        else:
            level, message = DiagnosticStatus.OK, "forecasting"
        lost_recently = sum(n for t, n in list(self._lost_at) if now - t <= LOSS_WINDOW_S)
        values["frames_lost_recently"] = str(lost_recently)
        if lost_recently and level in (DiagnosticStatus.OK, DiagnosticStatus.WARN) and state == "active":
            # Said plainly, with the remedy: a node that silently sees 2 of 90 frames looks merely slow.
            level, message = DiagnosticStatus.WARN, (
                f"camera frames lost: {lost_recently} dropped by DDS in the last {LOSS_WINDOW_S:.0f} s. "
                + self._loss_advice())
        if self._namesakes > 1 and level == DiagnosticStatus.OK:
            level, message = DiagnosticStatus.WARN, f"forecasting, but {self._namesakes} nodes share this name"
        status = DiagnosticStatus(
            level=level, name=self._diagnostics_name, message=message,
            hardware_id=self.device, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=[status]))

    def stop_quickly(self) -> None:
        """At process exit: no more frames, the worker told to stop, waiting at most a moment for
        it (a model step in progress has nobody left to publish to)."""
        if self._subscription is not None:
            try:
                self.destroy_subscription(self._subscription)
            except Exception:  # noqa: BLE001 - the context may be gone already; the process is leaving
                pass
            self._subscription = None
        self._stop.set()
        self._wake.set()
        self._ready_wake.set()
        for worker in (self._worker, self._vfm_worker):
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=0.05)
        self._diagnostics_stop.set()
        logging.getLogger("deltaworld_core").removeHandler(self._log_handler)

    def destroy_node(self) -> None:
        self._stop_processing()
        self._diagnostics_stop.set()
        if self._diagnostics_thread not in (None, threading.current_thread()):
            self._diagnostics_thread.join(timeout=5.0)  # never publish through a destroyed node
        logging.getLogger("deltaworld_core").removeHandler(self._log_handler)
        super().destroy_node()


def usage() -> str:
    """``forecast_node --help``: how to run it and every parameter with its default."""
    lines = [__doc__.strip().splitlines()[0], "",
             "usage: forecast_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r __ns:=/NAMESPACE] ...]",
             "", "parameters (NAME (default): description):"]
    lines += [f"  {name} ({default!r}): {description}" for name, (default, description) in PARAMETERS.items()]
    lines += ["", "A parameter out of range is one line and exit status 2; a failed configure exits 1."]
    return "\n".join(lines)


def command_line_problem(argv: list[str]) -> str | None:
    """Why the command line cannot start a node (a params file that is not a readable file,
    an unknown argument), or None. Checked before rcl sees the arguments: rcl's own report of a
    missing params file is a multi-line traceback, and launch_ros only warns about one."""
    ros_args, index = False, 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--ros-args":
            ros_args = True
        elif arg == "--" and ros_args:
            ros_args = False
        elif ros_args and arg == "--params-file":
            if index + 1 >= len(argv):
                return "--params-file needs a file name"
            path = argv[index + 1]
            if not os.path.isfile(path):
                return f"params file {cut(path, 300)} does not exist (or is not a file)"
            if not os.access(path, os.R_OK):
                return f"params file {cut(path, 300)} is not readable"
            index += 1
        elif not ros_args:
            return f"unknown argument {cut(arg)} (node options go after --ros-args; see --help)"
        index += 1
    return None


def _exit_now(status: int) -> None:
    """Leaves at once with ``status``. Used where nothing is worth waiting for: Python's own
    teardown of torch and of a worker thread still inside a model step took ~1 s (a plain rclpy
    node leaves in under 0.2 s), and the middleware's teardown of a half-built node can deadlock
    (Fast DDS, with other participants starting or stopping at the same time: seen on a loaded
    2-core CI machine). Peers drop a node that left this way when its lease runs out."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    user_args = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in user_args or "--help" in user_args:
        print(usage())
        return 0
    problem = command_line_problem(argv)
    if problem:
        print(f"forecast_node: {problem}", file=sys.stderr)
        return 2
    # A terminal's Ctrl-C reaches the node twice: from the terminal (the whole process group) and
    # from ros2 launch, which forwards it. rclpy's handler takes the first (it shuts the context
    # down, which ends spin) and hands each signal on to the handler it found; with Python's
    # default there, the second became a KeyboardInterrupt inside the teardown and the process
    # died by SIGINT (exit -2). This handler, found by rclpy and restored after it, ignores them.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    rclpy.init(args=["forecast_node", *argv])
    try:
        node = ForecastNode()
    except ParameterError as err:  # one line a user can act on, not a traceback
        rclpy.logging.get_logger("forecast_node").fatal(str(err))
        _exit_now(2)
    status = 0
    try:
        if node.param("autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (the cause is logged above)")
                status = 1
            else:
                node.trigger_activate()
        if status == 0:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # Ctrl-C shuts the context down from rclpy's signal handler; a spin caught between its
        # checks then fails to build its wait set (RCLError "context is not valid") instead of
        # raising ExternalShutdownException: the same clean shutdown. With the context still up
        # the error is real and propagates.
        if rclpy.ok():
            raise
    finally:
        # Stop taking frames and tell the worker to stop, but never wait for a model step: the
        # forecast it would produce has nobody to go to.
        node.stop_quickly()
        rclpy.try_shutdown()
    _exit_now(status)
    return status  # not reached (kept for callers that patch _exit_now)


if __name__ == "__main__":
    raise SystemExit(main())
