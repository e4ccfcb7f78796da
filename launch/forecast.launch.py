"""ros2 launch deltaworld_ros forecast.launch.py [params_file:=FILE] [camera_topic:=TOPIC] [weights:=DIR]
    [model_config:=NAME|YAML] [device:=DEV] [autostart:=true|false] [namespace:=NS]

Starts forecast_node, a lifecycle node that configures and activates itself unless ``autostart``
is false (then a lifecycle manager or ``ros2 lifecycle set`` drives it). Every node parameter
comes from ``params_file`` (default: this package's config/forecast.yaml); ``camera_topic``
(-> image_topic), ``weights`` (a trained run folder, e.g. runs/mine), ``model_config``, ``device``
and ``autostart`` override the file only when given on the command line. The node runs on the DDS defaults of the environment, like any other ROS 2 node, so camera
drivers and planners started without special variables talk to it; for the faster LARGE_DATA
transports set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for every process of the system (README).

A params file that does not exist stops the launch with one error (launch_ros only warned and the
node ran on built-in defaults), and so does the node failing (a bad parameter, a failed
configure): the launch then ends with a non-zero status instead of 0. ``namespace`` moves every
topic of the node (its default topic names are relative), e.g. /robot1/camera/image_raw.

The launch imports sit inside generate_launch_description so that the argument logic below can be
tested where the launch stack is not installed (deltaworld_ros.params_file needs only the standard
library).
"""

from __future__ import annotations

import os

from deltaworld_ros.params_file import params_file_problem as file_problem

# launch argument -> (node parameter it overrides, type). Empty (the default) = the params file decides.
OVERRIDES: dict[str, tuple[str, type]] = {
    "camera_topic": ("image_topic", str),
    "weights": ("weights", str),
    "model_config": ("model_config", str),
    "device": ("device", str),
    "autostart": ("autostart", bool),
}


def parameter_overrides(arguments: dict[str, str]) -> dict[str, object]:
    """The node parameters set by the given launch arguments (name -> string as typed); an empty
    or missing argument sets nothing, so the params file's value holds."""
    parameters: dict[str, object] = {}
    for argument, (name, kind) in OVERRIDES.items():
        value = arguments.get(argument, "").strip()
        if not value:
            continue
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"launch argument {argument} must be true or false, got {value!r}")
            parameters[name] = value.lower() == "true"
        else:
            parameters[name] = value
    return parameters


def params_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be the node's params file, or None (the node's own check, named as the argument)."""
    problem = file_problem(path)
    return f"params_file {path!r} {problem}" if problem else None


def exit_problem(returncode: int | None) -> str | None:
    """What to report when forecast_node exits with ``returncode`` (None: nothing, it succeeded)."""
    if returncode == 0:
        return None
    why = {1: "its configure failed", 2: "a parameter or the command line is invalid"}.get(returncode, "it failed")
    return f"forecast_node exited with status {returncode} ({why}; its log above says why): launch stops"


class LaunchError(RuntimeError):
    """Raised from a launch action: ros2 launch reports it in one line and exits non-zero."""


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    share = get_package_share_directory("deltaworld_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "forecast.yaml"),
                              description="forecast_node parameters (config/forecast.yaml documents them)"),
        DeclareLaunchArgument("camera_topic", default_value="",
                              description="sensor_msgs/Image topic of the camera (default: the params file's image_topic)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="folder of trained .safetensors, e.g. a training run's out folder "
                                          "(default: the params file's weights)"),
        DeclareLaunchArgument("model_config", default_value="",
                              description="deltaworld_core config name or YAML path (default: the params file's)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N (default: the params file's device)"),
        DeclareLaunchArgument("autostart", default_value="", choices=["", "true", "false"],
                              description="configure and activate on start-up (default: the params file's autostart)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
    ]

    def on_node_exit(context):
        # An exception in a launch action is the way to end `ros2 launch` with a non-zero status
        # (Shutdown alone exits 0): LaunchService logs it in one line and returns 1.
        problem = exit_problem(context.locals.event.returncode)
        if problem:
            raise LaunchError(problem)
        if context.is_shutdown:  # Ctrl-C: launch is stopping already (a second Shutdown fails in launch_ros)
            return None
        return [EmitEvent(event=Shutdown(reason="forecast_node exited"))]

    def forecast_node(context):
        given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
        overrides = parameter_overrides(given)
        params_file = LaunchConfiguration("params_file").perform(context)
        problem = params_file_problem(params_file)
        if problem:
            raise LaunchError(problem)
        node = LifecycleNode(
            package="deltaworld_ros",
            executable="forecast_node",
            name="forecast_node",
            namespace=LaunchConfiguration("namespace"),
            # Later entries win: the file first, then only what was given on the command line.
            parameters=[params_file, *([overrides] if overrides else [])],
            output="screen",
        )
        return [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                         on_exit=[OpaqueFunction(function=on_node_exit)]))]

    return LaunchDescription([*arguments, OpaqueFunction(function=forecast_node)])
