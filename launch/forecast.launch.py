"""ros2 launch deltaworld_ros forecast.launch.py [params_file:=FILE] [camera_topic:=TOPIC] [device:=DEV] [autostart:=true|false] [namespace:=NS]

Starts forecast_node, a lifecycle node that configures and activates itself unless ``autostart``
is false (then a lifecycle manager or ``ros2 lifecycle set`` drives it). Every node parameter
comes from ``params_file`` (default: this package's config/forecast.yaml); ``camera_topic``
(-> image_topic), ``device`` and ``autostart`` override the file only when given on the command
line. The node runs on the DDS defaults of the environment, like any other ROS 2 node, so camera
drivers and planners started without special variables talk to it; for the faster LARGE_DATA
transports set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for every process of the system (README).

The launch imports sit inside generate_launch_description so that the argument logic below can be
tested where the launch stack is not installed.
"""

from __future__ import annotations

import os

# launch argument -> (node parameter it overrides, type). Empty (the default) = the params file decides.
OVERRIDES: dict[str, tuple[str, type]] = {
    "camera_topic": ("image_topic", str),
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


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    share = get_package_share_directory("deltaworld_ros")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "forecast.yaml"),
                              description="forecast_node parameters (config/forecast.yaml documents them)"),
        DeclareLaunchArgument("camera_topic", default_value="",
                              description="sensor_msgs/Image topic of the camera (default: the params file's image_topic)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N (default: the params file's device)"),
        DeclareLaunchArgument("autostart", default_value="", choices=["", "true", "false"],
                              description="configure and activate on start-up (default: the params file's autostart)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
    ]

    def forecast_node(context):
        given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
        overrides = parameter_overrides(given)
        return [LifecycleNode(
            package="deltaworld_ros",
            executable="forecast_node",
            name="forecast_node",
            namespace=LaunchConfiguration("namespace"),
            # Later entries win: the file first, then only what was given on the command line.
            parameters=[LaunchConfiguration("params_file"), *([overrides] if overrides else [])],
            output="screen",
        )]

    return LaunchDescription([*arguments, OpaqueFunction(function=forecast_node)])
