"""ForecastNode: the managed (lifecycle) node that wires a camera to the forecaster and its outputs.

configure loads the model (slow), chooses one stage or two (deltaworld_core.stages: measured
unless the config forces it) and makes the outputs (node_outputs); activate subscribes to the
camera (node_camera) and starts the frame runner (deltaworld_core.runner: newest frame wins);
deactivate stops both; cleanup drops the model. /diagnostics comes from a thread of its own
(node_diagnostics), and the parameters' rules live in node_parameters.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from deltaworld_core.checkpoint import CheckpointError
from deltaworld_core.config import ConfigError
from deltaworld_core.devices import DeviceError, check_device
from deltaworld_core.runner import Frame, FrameRunner, RunnerStats
from deltaworld_core.stages import choose_stages
from deltaworld_ros.camera_info_input import MapGeometry
from deltaworld_ros.node_camera import CameraInput
from deltaworld_ros.node_diagnostics import Diagnostics, DiagnosticsThread, NodeSnapshot
from deltaworld_ros.node_outputs import Output, make_outputs
from deltaworld_ros.node_parameters import (CONFIG_KEYS, PARAMETERS, RESUBSCRIBE, ParameterError, combined_problem,
                                            config_overrides, shown, value_problem, when_applied)
from deltaworld_ros.planner_outputs import make_planner_outputs, risk_grid_status

# Failures of configure a user causes and can act on from one line (a config, a weights folder, a
# device): logged without the traceback that any other failure gets.
USER_ERRORS = (CheckpointError, ConfigError, DeviceError, FileNotFoundError)


class _RosLogHandler(logging.Handler):
    """Forwards deltaworld_core's Python logging (resets, weight warnings) to the ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING else "info"
        getattr(self.ros_logger, level)(f"[{record.name}] {record.getMessage()}")


def resolve_device(device: str) -> str:
    """The torch device the ``device`` parameter names here (``auto``: cuda if torch sees one)."""
    return str(check_device(device))


class ForecastNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("forecast_node", **kwargs)
        self.forecaster = None
        self.device = "unconfigured"
        self.stage_choice = None
        self.outputs: list[Output] = []
        self.runner: FrameRunner | None = None
        self.runner_stats = RunnerStats()  # counts since start, across activations
        self.camera = CameraInput(self, self._on_frame, self._log_limited)
        self.geometry = MapGeometry(self)  # the camera's CameraInfo: the maps' intrinsics
        # The full name (namespace included): two robots' nodes on one domain report apart.
        self.diagnostics = Diagnostics(f"{self.get_fully_qualified_name()}: DeltaWorld forecast")
        self._namesakes = 1  # nodes in the graph with this node's name and namespace, itself included
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._rejection = ""  # why the last parameter value was refused
        self._log_handler = _RosLogHandler(self.get_logger())
        self._running = False  # True once every parameter is declared: later sets are `ros2 param set`
        self._accepted = ""  # when the run-time values just accepted take effect (the result's reason)
        self._diagnostics_thread: DiagnosticsThread | None = None  # started once every parameter is valid
        self._declare_parameters()  # a refused value: ParameterError, and destroy_node still works
        self._running = True
        logging.getLogger("deltaworld_core").addHandler(self._log_handler)
        logging.getLogger("deltaworld_core").setLevel(logging.INFO)
        self._diagnostics_thread = DiagnosticsThread(self, self.diagnostics, self._snapshot, self._log_limited)
        self.create_timer(1.0, self._check_namesakes)  # discovery needs a moment: checked from the first second
        self.create_timer(1.0, self.camera.match_camera_qos)

    def _declare_parameters(self) -> None:
        """Declares every parameter with its rules; ParameterError (one line) for a refused value."""
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
        problem = combined_problem(self._values(), None)
        if problem:
            raise ParameterError(problem)

    def param(self, name: str):
        return self.get_parameter(name).value

    def _values(self) -> dict:
        return {name: self.param(name) for name in PARAMETERS}

    def _state(self) -> str:
        return self._state_machine.current_state[1]

    # ------------------------------------------------------------------ parameters
    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Refuses a value that breaks a rule, at start-up and under `ros2 param set` alike; a
        value accepted at run time says in the result's reason when it takes effect."""
        changed = {p.name: p.value for p in parameters if p.name in PARAMETERS}
        for name, value in changed.items():
            problem = value_problem(name, value, self._running)
            if problem:
                self._rejection = f"= {shown(value)[:200]}: {problem}"
                return SetParametersResult(successful=False, reason=f"{name} {self._rejection}")
        if not self._running:
            return SetParametersResult(successful=True)
        problem = combined_problem(self._values(), changed)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        self._accepted = when_applied(changed, self._state())
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

    def _apply_parameters(self, parameters) -> None:
        """After a run-time set: the camera parameters take effect at once (the on-set callback
        runs before the values are stored)."""
        if self._running and {p.name for p in parameters} & RESUBSCRIBE and self.camera.subscription is not None:
            self.camera.unsubscribe()
            self.camera.subscribe()
            self.geometry.follow(self.camera)
            self.get_logger().info(f"camera input is now {self.camera.describe()}")

    def _check_namesakes(self) -> None:
        """Two nodes with one name both publish and would share one diagnostics name: warn, and
        make this node's diagnostics name unique (host and pid)."""
        me = (self.get_name(), self.get_namespace())
        count = sum(1 for entry in self.get_node_names_and_namespaces() if tuple(entry) == me)
        if count > 1 and count != self._namesakes:
            self.diagnostics.name = (f"{self.get_fully_qualified_name()} (pid {os.getpid()} on "
                                     f"{socket.gethostname()}): DeltaWorld forecast")
            self.get_logger().warning(
                f"a node named {self.get_fully_qualified_name()} already exists ({count} in the graph): both publish "
                f"on the same topics; give each a unique name (--ros-args -r __node:=NAME). "
                f"Diagnostics of this one: '{self.diagnostics.name}'")
        self._namesakes = max(count, 1)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy's lifecycle wrapper turns an exception escaping this callback into a bare ERROR
        # transition with nothing logged: every failure is logged here with its cause.
        try:
            self._configure()
        except USER_ERRORS as err:
            self.get_logger().error(f"configure failed: {' '.join(str(err).split())}")
            self._unconfigure()
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001 - any cause fails the transition, never the process
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}\n{traceback.format_exc().rstrip()}")
            self._unconfigure()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        from deltaworld_core import Forecaster  # here, not at the top: its failure is a configure failure

        self.device = resolve_device(self.param("device"))
        started = time.perf_counter()
        self.forecaster = fc = Forecaster.from_config(
            self.param("model_config"), device=self.device, overrides=config_overrides(self._values()),
            weights=self.param("weights") or None, threads=self.param("threads") or None)
        loaded = time.perf_counter() - started
        self.stage_choice = choose_stages(fc)
        self.camera.configure(fc.horizon * fc.step_s, tuple(fc.cfg.vfm.image_size), fc.max_gap_s)
        self.get_logger().info(
            f"model '{self.param('model_config')}' on {self.device} in {loaded:.1f} s: K={fc.k}, horizon={fc.horizon} "
            f"x {fc.step_s} s, output {fc.output_size}, {len(fc.class_names)} classes, "
            f"{self.stage_choice.describe(fc.threads)} ({self.stage_choice.why})")
        self.outputs = make_outputs(self, self.geometry) + make_planner_outputs(self, fc.horizon, self.geometry)

    def _unconfigure(self) -> None:
        for output in self.outputs:
            output.destroy()
        self.outputs = []
        self.forecaster, self.device, self.stage_choice = None, "unconfigured", None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runner = FrameRunner(self.forecaster, self._deliver, self.stage_choice.stages, warn=self._log_limited,
                                  stats=self.runner_stats).start()
        self.camera.subscribe()
        self.geometry.follow(self.camera)
        self.get_logger().info(f"forecasting {self.camera.describe()} -> {self.outputs[0].publisher.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unconfigure()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_error(state)

    def _stop_processing(self, timeout: float = 30.0) -> None:
        self.camera.unsubscribe()
        self.geometry.unsubscribe()
        if self.runner is not None:
            self.runner.stop(timeout)
            self.runner = None

    # ------------------------------------------------------------------ frames
    def _on_frame(self, frame: Frame) -> None:
        runner = self.runner
        if runner is not None:
            runner.put(frame)

    def _deliver(self, frame: Frame, forecast) -> bool:
        """Publishes ``forecast`` on every active output; False, quietly, when rclpy has shut down
        meanwhile (Ctrl-C invalidates the context while a model step may still be running)."""
        try:
            for output in self.outputs:
                if output.active():
                    output.publish(forecast, frame)
        except Exception:
            if self.context.ok():
                raise
            if self.runner is not None:
                self.runner.request_stop()
            return False
        return True

    def _log_limited(self, cause: str, text: str) -> None:
        """Logs ``text`` at most once per malformed_log_period_s for each ``cause``."""
        now = time.monotonic()
        last = self._last_logged.get(cause)
        if last is not None and now - last < self.param("malformed_log_period_s"):
            self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
            return
        suppressed = self._suppressed.pop(cause, 0)
        self._last_logged[cause] = now
        self.get_logger().warning(text + (f" ({suppressed} more since last report)" if suppressed else ""))

    def _snapshot(self) -> NodeSnapshot:
        fc, runner = self.forecaster, self.runner  # once: other threads may change them meanwhile
        return NodeSnapshot(
            now=time.monotonic(), state=self._state(), device=self.device,
            threads=fc.threads if fc is not None else None, stages=self.stage_choice,
            resets=fc.resets if fc is not None else 0, runner=self.runner_stats,
            workers_alive=runner is not None and runner.alive(),
            waiting_s=runner.waiting_s() if runner is not None else 0.0, camera=self.camera.stats,
            namesakes=self._namesakes, stall_timeout_s=self.param("stall_timeout_s"),
            camera_info=self.geometry.status(), risk_grid=risk_grid_status(self.outputs))

    # ------------------------------------------------------------------ exit
    def stop_quickly(self) -> None:
        """At process exit: no more frames, the workers told to stop, waiting at most a moment for
        them (a model step in progress has nobody left to publish to)."""
        try:
            self.camera.unsubscribe()
        except Exception:  # noqa: BLE001 - the context may be gone already; the process is leaving
            pass
        if self.runner is not None:
            self.runner.stop(timeout=0.05)
        if self._diagnostics_thread is not None:
            self._diagnostics_thread.stop(0.0)
        logging.getLogger("deltaworld_core").removeHandler(self._log_handler)

    def destroy_node(self) -> None:
        self._stop_processing()
        if self._diagnostics_thread is not None:
            self._diagnostics_thread.stop(5.0)  # never publish through a destroyed node
        logging.getLogger("deltaworld_core").removeHandler(self._log_handler)
        super().destroy_node()
