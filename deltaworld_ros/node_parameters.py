"""forecast_node's parameters: names, defaults, descriptions, and every rule a value must meet.

The same rules apply to the values the node starts with (params file, ``-p``) and to
``ros2 param set`` while it runs, so a value refused at start-up is refused later too. Values
that feed the model config (model_config, k, horizon, ...) are checked by loading the config with
them, exactly as configure will: a value configure would fail on is refused when it is set.
"""

from __future__ import annotations

import math
import re

from rclpy.validate_topic_name import validate_topic_name

from deltaworld_core.checkpoint import missing_weights
from deltaworld_core.config import load_config
from deltaworld_core.devices import DeviceError, check_device
from deltaworld_core.forecaster import WEIGHT_FILES
from deltaworld_core.threads import too_many_threads
from deltaworld_ros.image_conversion import cut

# name -> (default, description). Zero / empty values mean "keep the model config's value".
PARAMETERS: dict[str, tuple[object, str]] = {
    "autostart": (True, "Configure and activate on start-up (false: wait for lifecycle transitions)."),
    "image_topic": ("camera/image_raw", "Camera topic (sensor_msgs/Image); relative names resolve in the node's "
                                        "namespace (__ns:=/robot1 -> /robot1/camera/image_raw)."),
    "input_reliability": ("best_available", "QoS reliability of the camera subscription: best_available (reliable "
                                            "with reliable publishers, best effort with best-effort ones: matches "
                                            "any camera and takes it the best way it offers), or force "
                                            "best_effort or reliable (needs a reliable publisher)."),
    "input_depth": (5, "QoS history depth of the camera subscription (1-100): frames DDS may hold for the node."),
    "use_compressed": (False, "Subscribe to sensor_msgs/CompressedImage (jpeg/png) on <image_topic>/compressed."),
    "futures_topic": ("deltaworld/futures", "Output topic (deltaworld_ros/Futures); relative = in the node's "
                                            "namespace."),
    "model_config": ("default", "deltaworld_core config: a name (deltaworld_core/configs/NAME.yaml) or a YAML path."),
    "weights": ("", "Folder of tokenizer/world/heads .safetensors; empty = the config's weights."),
    "device": ("auto", "Torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N."),
    "threads": (0, "CPU threads of the model (torch and ONNX Runtime), 0-256; 0 = auto: half the cores, 1 to 4, "
                   "which keeps its speed when other processes load the CPU. With 2 or more on a CPU the model runs "
                   "in one stage or in two (the next frame's VFM beside the rest of the current one, each with "
                   "half), whichever is measured faster at configure (forecast.pipeline)."),
    "k": (0, "Hypotheses sampled per forecast (0 = config value)."),
    "horizon": (0, "Future steps per hypothesis (0 = config value)."),
    "step_s": (0.0, "Seconds between future steps (0 = config value)."),
    "input_size": ([0, 0], "[height, width] the camera frame is resized to for the VFM, multiples of "
                           "the patch size ([0, 0] = config value)."),
    "output_size": ([0, 0], "[height, width] of the output semantic/depth images ([0, 0] = config value)."),
    "geometry": ("", "How a camera frame becomes the VFM's input: squash, two_squares (the release's way: short side "
                     "to the model size, a wide frame as two squares, maps stitched to the camera's aspect) or "
                     "center_crop ('' = config value)."),
    "context_spacing": ("", "frames (one camera frame per context step) or step (context frames about step_s "
                            "apart whatever the camera rate, as the model was trained; '' = config value)."),
    "publish_k": (0, "Hypotheses published per forecast; the summaries still use all k (0 = config value)."),
    "summary_size": ([0, 0], "[height, width] the per-step summaries are computed at ([0, 0] = config value)."),
    "max_gap_s": (0.0, "A larger gap between the stamps of camera frames received (not between frames the model "
                          "processed) resets the context (0 = config value)."),
    "publish_debug_image": (False, "Publish a colour-coded grid of hypotheses x steps (sensor_msgs/Image rgb8)."),
    "debug_image_topic": ("deltaworld/debug_image", "Topic of the debug image; relative = in the node's namespace."),
    "diagnostics_period_s": (1.0, "Period of /diagnostics messages in seconds."),
    "malformed_log_period_s": (10.0, "Each kind of malformed input is logged at most once per this period."),
    "stall_timeout_s": (10.0, "/diagnostics reports ERROR 'forecasting stalled' when frames have waited this long "
                              "without a model step finishing."),
    # Planner outputs (docs/planners.md); the 3-D ones need the camera's camera_info
    "publish_step_images": (True, "Publish deltaworld/step_<n>/{depth,depth_std,labels,camera_info} per future step, "
                                  "each computed only while someone subscribes."),
    "publish_obstacles": (True, "Publish deltaworld/obstacles (sensor_msgs/PointCloud2 in the camera's optical frame) "
                                "while someone subscribes."),
    "obstacle_classes": (["car", "person"], "Class names that are obstacles in deltaworld/obstacles and the risk "
                                            "grid; names the model lacks are skipped."),
    "obstacle_min_p": (0.25, "A cloud point needs at least this fraction of the K futures to put an obstacle there "
                             "(0-1; any one future counts at 0)."),
    "obstacle_max_points": (20000, "Most points per obstacle cloud (a pixel stride over the maps), 1-1000000."),
    "publish_risk_grid": (False, "Publish deltaworld/risk_grid (nav_msgs/OccupancyGrid in risk_grid_frame, transient "
                                 "local) while someone subscribes."),
    "risk_grid_frame": ("base_link", "Frame of the risk grid; the camera's pose in it from camera_mount_xyz/rpy, or "
                                     "from TF with risk_grid_use_tf where tf2_ros is installed."),
    "risk_grid_resolution": (0.1, "Risk grid cell size in metres (0.01-10)."),
    "risk_grid_size": (10.0, "Side of the risk grid's square window in metres, centred on the camera (at most 2000 "
                             "cells a side)."),
    "risk_grid_max_points": (50000, "Most map pixels the risk grid projects per forecast, 1-1000000."),
    "risk_grid_use_tf": (True, "Look the camera's pose up in TF where tf2_ros is installed; otherwise, or false: the "
                               "static mount camera_mount_xyz/rpy."),
    "camera_mount_xyz": ([0.0, 0.0, 0.0], "Position (m) of the camera's optical frame in risk_grid_frame."),
    "camera_mount_rpy": ([-1.5707963267948966, 0.0, -1.5707963267948966],
                         "Roll, pitch, yaw (rad) of the camera's optical frame in risk_grid_frame (fixed axes, as "
                         "static_transform_publisher); the default: a camera looking along +x, level."),
}
MAX_GRID_CELLS = 2000  # a side of the risk grid: 4 M cells, a 4 MB OccupancyGrid
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
RELIABILITY_CHOICES = ("best_available", "best_effort", "reliable")

# How a changed value takes effect on a running node (``ros2 param set``):
START_ONLY = frozenset({"autostart"})  # read once at start-up: refused later
RECONFIGURE = frozenset({"model_config", "weights", "device", "threads", "k", "horizon", "step_s", "input_size",
                         "output_size", "geometry", "context_spacing", "publish_k", "summary_size", "max_gap_s",
                         "publish_debug_image", "futures_topic", "debug_image_topic", "publish_step_images",
                         "publish_obstacles", "publish_risk_grid", "risk_grid_use_tf"})
RESUBSCRIBE = frozenset({"image_topic", "use_compressed", "input_reliability", "input_depth"})  # at once, if active
# diagnostics_period_s (by the diagnostics thread before each message), malformed_log_period_s,
# stall_timeout_s: read on use.

# node parameter -> model config key it overrides (0 / [0, 0] = keep the config's value)
CONFIG_KEYS = {"k": "forecast.k", "horizon": "forecast.horizon", "step_s": "forecast.step_s",
               "max_gap_s": "forecast.max_gap_s", "input_size": "vfm.image_size", "output_size": "forecast.output_size",
               "geometry": "forecast.geometry", "context_spacing": "forecast.context_spacing",
               "publish_k": "forecast.publish_k", "summary_size": "forecast.summary_size"}


class ParameterError(ValueError):
    """A node parameter with a bad value; the message is one line naming the parameter."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parameter_problem(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is. Types are
    enforced by rclpy (the declared default's type); this checks values."""
    if name in ("image_topic", "futures_topic", "debug_image_topic"):
        try:
            validate_topic_name(value)
        except Exception as err:  # noqa: BLE001 - rclpy's InvalidTopicNameException, message spans lines
            return f"not a valid ROS topic name ({str(err).splitlines()[0]})"
    elif name == "model_config" and not value.strip():
        return "must name a config (e.g. default) or a YAML path"
    elif name == "device" and not _DEVICE.fullmatch(value):
        return "must be auto, cpu, mps, cuda or cuda:N"
    elif name == "threads" and not 0 <= value <= 256:
        return "must be 0 (auto: half the cores, 1-4) or a thread count from 1 to 256"
    elif name in ("k", "horizon", "publish_k") and value < 0:
        return "must be >= 0 (0 = the model config's value)"
    elif name in ("step_s", "max_gap_s") and not (_is_number(value) and value >= 0):
        return "must be a finite number >= 0 (0 = the model config's value)"
    elif name in ("input_size", "output_size", "summary_size") and (len(value) != 2 or any(v < 0 for v in value)
                                                    or (0 in value and any(value))):
        return "must be [height, width] of two positive integers, or [0, 0] for the model config's value"
    elif name == "diagnostics_period_s" and not (_is_number(value) and 0.05 <= value <= 3600):
        return "must be a period in seconds from 0.05 to 3600"
    elif name == "malformed_log_period_s" and not (_is_number(value) and 0 <= value <= 86400):
        return "must be seconds from 0 (log every one) to 86400"
    elif name == "stall_timeout_s" and not (_is_number(value) and 0.1 <= value <= 86400):
        return "must be seconds from 0.1 to 86400"
    elif name == "input_reliability" and value not in RELIABILITY_CHOICES:
        return "must be best_available, best_effort or reliable"
    elif name == "input_depth" and not 1 <= value <= 100:
        return "must be a history depth from 1 to 100"
    elif name in ("obstacle_max_points", "risk_grid_max_points") and not 1 <= value <= 1_000_000:
        return "must be a point count from 1 to 1000000"
    elif name == "obstacle_min_p" and not (_is_number(value) and 0 <= value <= 1):
        return "must be a fraction from 0 to 1"
    elif name == "obstacle_classes" and not all(v.strip() for v in value):
        return "must be class names (no empty one)"
    elif name == "risk_grid_frame" and not re.fullmatch(r"/?[A-Za-z0-9_][A-Za-z0-9_/]*", value):
        return "must be a TF frame name (letters, digits, _ and /)"
    elif name == "risk_grid_resolution" and not (_is_number(value) and 0.01 <= value <= 10):
        return "must be a cell size in metres from 0.01 to 10"
    elif name == "risk_grid_size" and not (_is_number(value) and value > 0):
        return "must be a positive size in metres"
    elif name in ("camera_mount_xyz", "camera_mount_rpy") and not (len(value) == 3 and all(map(_is_number, value))):
        return "must be three finite numbers"
    return None


def config_overrides(values: dict) -> dict:
    """The model config overrides given by node parameter ``values`` (zeros keep the config's)."""
    overrides = {}
    for name, key in CONFIG_KEYS.items():
        value = values.get(name, PARAMETERS[name][0])
        if not isinstance(value, (bool, int, float, str)):  # a list (or array) of sizes
            value = [int(v) for v in value]
        if (any(value) if isinstance(value, list) else value):
            overrides[key] = value
    return overrides


def config_problem(values: dict) -> str | None:
    """Why the model config named by ``values['model_config']`` does not load with the overrides
    of ``values`` (range of each key, k x horizon x output pixels, a file that is no config), or
    its weights folder (when the ``weights`` parameter leaves it to the config) lacks a stage's
    file, or None."""
    try:
        cfg = load_config(values.get("model_config", PARAMETERS["model_config"][0]), config_overrides(values))
    except Exception as err:  # noqa: BLE001 - any reason the config will not load is a refusal
        text = " ".join(str(err).split())
        return text if len(text) <= 300 else text[:300] + "..."
    if not values.get("weights") and cfg.weights is not None:
        return missing_weights(cfg.weights, WEIGHT_FILES)
    return None


def weights_problem(value: str) -> str | None:
    """Why ``value`` cannot be the weights folder: the check configure's loading makes (a folder
    holding tokenizer, world and heads .safetensors), made when the value is set."""
    problem = missing_weights(value, WEIGHT_FILES) if value else None
    return None if problem is None else f"must be a folder of .safetensors weights, or empty for the config's: {problem}"


def device_problem(value: str) -> str | None:
    """Why torch cannot use device ``value`` here (deltaworld_core.devices.check_device), or None."""
    try:
        check_device(value)
    except DeviceError as err:
        return str(err)
    return None


def value_problem(name: str, value, running: bool) -> str | None:
    """Why one parameter's new ``value`` is refused (its range, a weights folder or device that
    is not there, a start-up-only parameter changed while ``running``), or None."""
    problem = parameter_problem(name, value)
    if problem is None and name == "weights":
        problem = weights_problem(value)
    if problem is None and name == "device":
        problem = device_problem(value)
    if problem is None and running and name in START_ONLY:
        problem = "read only at start-up (restart the node to change it)"
    return problem


def shown(value) -> str:
    """A value as a one-line message shows it (a long string cut)."""
    return cut(value) if isinstance(value, str) else repr(value)


def combined_problem(values: dict, changed: dict | None) -> str | None:
    """Why the model config would not load with the parameter ``values`` updated by ``changed``
    (the check configure makes, made before anything loads; None = check every value), or None."""
    values = {**values, **(changed or {})}
    cells = values.get("risk_grid_size", 10.0) / values.get("risk_grid_resolution", 0.1)
    if cells > MAX_GRID_CELLS:
        return f"risk_grid_size / risk_grid_resolution is {cells:.0f} cells a side: at most {MAX_GRID_CELLS}"
    config_changed = set(changed) & {"model_config", *CONFIG_KEYS} if changed else {"model_config", *CONFIG_KEYS}
    if not config_changed:
        return None
    for name in ("model_config", *CONFIG_KEYS):  # one at a time first: the message names the culprit
        if name in config_changed and values[name] != PARAMETERS[name][0]:
            problem = config_problem({"model_config": values["model_config"], name: values[name]})
            if problem:
                return f"parameter {name} = {shown(values[name])}: {problem}"
    problem = config_problem(values)
    if problem:
        given = ", ".join(f"{n} = {values[n]!r}" for n in CONFIG_KEYS if values[n] != PARAMETERS[n][0])
        return f"parameters {given} together: {problem}"
    return None


def when_applied(changed: dict, state: str) -> str:
    """When the run-time values ``changed`` take effect on a node in lifecycle ``state``."""
    notes = []
    later = sorted(set(changed) & RECONFIGURE)
    if later:
        notes.append(f"{', '.join(later)}: applied at the next configure" + (
            " (now: deactivate, cleanup, configure, activate)" if state in ("inactive", "active") else ""))
    if "threads" in changed:
        warning = too_many_threads(changed["threads"])
        if warning:
            notes.append(warning)
    now = sorted(set(changed) & RESUBSCRIBE)
    if now:
        notes.append(f"{', '.join(now)}: " + ("camera subscription remade now" if state == "active"
                                              else "applied at the next activate"))
    if "diagnostics_period_s" in changed:
        notes.append("diagnostics_period_s: applied now")
    return "; ".join(notes)
