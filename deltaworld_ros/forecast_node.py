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
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from deltaworld_ros.futures_msg import forecast_to_msg, time_to_seconds
from deltaworld_ros.image_conversion import ImageConversionError, array_to_image_msg, msg_to_rgb
from deltaworld_ros.msg import Futures

# name -> (default, description). Zero / empty values mean "keep the model config's value".
PARAMETERS: dict[str, tuple[object, str]] = {
    "autostart": (True, "Configure and activate on start-up (false: wait for lifecycle transitions)."),
    "image_topic": ("/camera/image_raw", "Camera topic (sensor_msgs/Image), subscribed with sensor-data QoS."),
    "use_compressed": (False, "Subscribe to sensor_msgs/CompressedImage (jpeg/png) on <image_topic>/compressed."),
    "futures_topic": ("/deltaworld/futures", "Output topic (deltaworld_ros/Futures)."),
    "model_config": ("default", "deltaworld_core config: a name (deltaworld_core/configs/NAME.yaml) or a YAML path."),
    "weights": ("", "Folder of tokenizer/world/heads .safetensors; empty = the config's weights."),
    "device": ("auto", "Torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N."),
    "k": (0, "Hypotheses sampled per forecast (0 = config value)."),
    "horizon": (0, "Future steps per hypothesis (0 = config value)."),
    "step_s": (0.0, "Seconds between future steps (0 = config value)."),
    "input_size": ([0, 0], "[height, width] the camera frame is resized to for the VFM, multiples of "
                           "the patch size ([0, 0] = config value)."),
    "output_size": ([0, 0], "[height, width] of the output semantic/depth images ([0, 0] = config value)."),
    "max_gap_s": (0.0, "A larger gap between frame stamps resets the context (0 = config value)."),
    "publish_debug_image": (False, "Publish a colour-coded grid of hypotheses x steps (sensor_msgs/Image rgb8)."),
    "debug_image_topic": ("/deltaworld/debug_image", "Topic of the debug image."),
    "diagnostics_period_s": (1.0, "Period of /diagnostics messages in seconds."),
    "malformed_log_period_s": (10.0, "Each kind of malformed input is logged at most once per this period."),
}


@dataclass
class Frame:
    rgb: np.ndarray
    header: Header
    stamp: float  # seconds used by the forecaster
    received: float  # time.monotonic() when the message arrived


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
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.forecaster = None
        self.device = "unconfigured"
        self._subscription = None
        self._futures_pub = self._debug_pub = None
        self._mailbox: Frame | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._counts = dict(received=0, processed=0, published=0, dropped=0, malformed=0, model_errors=0)
        self._latencies_ms: deque[float] = deque(maxlen=100)  # receipt -> publish
        self._model_ms: deque[float] = deque(maxlen=100)
        self._published_at: deque[float] = deque(maxlen=100)
        self._received_at: deque[float] = deque(maxlen=100)
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("deltaworld_core").addHandler(self._log_handler)
        logging.getLogger("deltaworld_core").setLevel(logging.INFO)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.param("diagnostics_period_s"), self._publish_diagnostics)

    def param(self, name: str):
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from deltaworld_core import Forecaster

        overrides = {}
        for name, key in (("k", "forecast.k"), ("horizon", "forecast.horizon"), ("step_s", "forecast.step_s"),
                          ("max_gap_s", "forecast.max_gap_s")):
            if self.param(name):
                overrides[key] = self.param(name)
        for name, key in (("input_size", "vfm.image_size"), ("output_size", "forecast.output_size")):
            size = [int(v) for v in self.param(name)]
            if any(size):
                overrides[key] = size
        try:
            self.device = resolve_device(self.param("device"))
            started = time.perf_counter()
            self.forecaster = Forecaster.from_config(
                self.param("model_config"), device=self.device, overrides=overrides, weights=self.param("weights") or None)
        except Exception as err:  # a bad config or weights file must fail the transition, not crash
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}")
            self.forecaster = None
            return TransitionCallbackReturn.FAILURE
        fc = self.forecaster
        self.get_logger().info(
            f"model '{self.param('model_config')}' on {self.device} in {time.perf_counter() - started:.1f} s: "
            f"K={fc.k}, horizon={fc.horizon} x {fc.step_s} s, output {fc.output_size}, {len(fc.class_names)} classes")
        # Reliable so that ~MB messages are not lost to one missing fragment; depth 2 so that a
        # slow subscriber gets the newest futures rather than a backlog.
        futures_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self._futures_pub = self.create_lifecycle_publisher(Futures, self.param("futures_topic"), futures_qos)
        if self.param("publish_debug_image"):
            self._debug_pub = self.create_lifecycle_publisher(Image, self.param("debug_image_topic"), futures_qos)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        topic, msg_type = self.param("image_topic"), Image
        if self.param("use_compressed"):
            topic, msg_type = topic.rstrip("/") + "/compressed", CompressedImage
        self.forecaster.reset()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="forecast_worker", daemon=True)
        self._worker.start()
        self._subscription = self.create_subscription(msg_type, topic, self._on_image, qos_profile_sensor_data)
        self.get_logger().info(f"forecasting {topic} ({msg_type.__name__}) -> {self.param('futures_topic')}")
        return super().on_activate(state)

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
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        self._worker, self._mailbox = None, None

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        self._counts["received"] += 1
        self._received_at.append(received)
        try:
            rgb = msg_to_rgb(msg)
        except ImageConversionError as err:
            self._counts["malformed"] += 1
            self._log_limited(err.cause, f"skipping malformed image ({err.cause}): {err}")
            return
        stamp = time_to_seconds(msg.header.stamp)
        if stamp == 0.0:  # an unstamped camera; the forecaster needs increasing times
            self._log_limited("unstamped", "image header stamp is zero: using the node clock instead")
            stamp = self.get_clock().now().nanoseconds * 1e-9
        frame = Frame(rgb=rgb, header=msg.header, stamp=stamp, received=received)
        with self._lock:
            if self._mailbox is not None:
                self._counts["dropped"] += 1  # never processed: a newer frame replaces it
            self._mailbox = frame
        self._wake.set()

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
    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2):
                continue
            with self._lock:
                frame, self._mailbox = self._mailbox, None
                self._wake.clear()
            if frame is not None and not self._stop.is_set():
                self._process(frame)

    def _process(self, frame: Frame) -> None:
        fc = self.forecaster
        try:
            forecast = fc.step(frame.rgb, frame.stamp)
        except ValueError as err:
            self._counts["malformed"] += 1
            self._log_limited("rejected", f"forecaster rejected a frame: {err}")
            return
        except Exception as err:  # keep serving: one failing frame must not kill the node
            self._counts["model_errors"] += 1
            self._log_limited("model_error", f"forecaster failed: {type(err).__name__}: {err}")
            return
        self._counts["processed"] += 1
        if fc.last_reset_reason:
            self._log_limited("reset", f"context reset: {fc.last_reset_reason}")
        if forecast is None:
            return
        self._futures_pub.publish(forecast_to_msg(forecast, frame.header))
        done = time.monotonic()
        self._counts["published"] += 1
        self._published_at.append(done)
        self._latencies_ms.append((done - frame.received) * 1e3)
        self._model_ms.append(forecast.timings.get("total", float("nan")))
        if self._debug_pub is not None:
            from deltaworld_core.viz import forecast_grid

            self._debug_pub.publish(array_to_image_msg(forecast_grid(frame.rgb, forecast), "rgb8", frame.header))

    # ------------------------------------------------------------------ diagnostics
    @staticmethod
    def _rate(times: deque[float], now: float, window: float = 5.0) -> float:
        recent = [t for t in times if now - t <= window]
        return 0.0 if len(recent) < 2 else (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        state = self._state_machine.current_state[1]
        latencies = list(self._latencies_ms)
        values = {
            "state": state,
            "device": self.device,
            "input_rate_hz": f"{self._rate(self._received_at, now):.2f}",
            "forecast_rate_hz": f"{self._rate(self._published_at, now):.2f}",
            "latency_ms_last": f"{latencies[-1]:.1f}" if latencies else "nan",
            "latency_ms_median": f"{np.median(latencies):.1f}" if latencies else "nan",
            "latency_ms_max": f"{max(latencies):.1f}" if latencies else "nan",
            "model_ms_median": f"{np.median(self._model_ms):.1f}" if self._model_ms else "nan",
            "frames_received": str(self._counts["received"]),
            "frames_processed": str(self._counts["processed"]),
            "frames_dropped": str(self._counts["dropped"]),
            "frames_malformed": str(self._counts["malformed"]),
            "model_errors": str(self._counts["model_errors"]),
            "forecasts_published": str(self._counts["published"]),
            "resets": str(self.forecaster.resets if self.forecaster is not None else 0),
        }
        stalled = state == "active" and self._received_at and now - self._received_at[-1] > 5.0
        if self._counts["model_errors"]:
            level, message = DiagnosticStatus.ERROR, "forecaster errors"
        elif state != "active":
            level, message = DiagnosticStatus.WARN, f"node is {state}"
        elif stalled or not self._received_at:
            level, message = DiagnosticStatus.WARN, "no camera images"
        else:
            level, message = DiagnosticStatus.OK, "forecasting"
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: DeltaWorld forecast", message=message,
            hardware_id=self.device, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=[status]))

    def destroy_node(self) -> None:
        self._stop_processing()
        logging.getLogger("deltaworld_core").removeHandler(self._log_handler)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = ForecastNode()
    try:
        if node.param("autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed")
                return 1
            node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
