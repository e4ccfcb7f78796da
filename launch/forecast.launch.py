"""ros2 launch deltaworld_ros forecast.launch.py [camera_topic:=...] [params_file:=...] [device:=...] [namespace:=...]

Starts forecast_node (a lifecycle node that configures and activates itself; set
``autostart: false`` in the params file to drive it with a lifecycle manager instead) with Fast DDS
transports fit for its ~1-3 MB messages.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def generate_launch_description():
    share = get_package_share_directory("deltaworld_ros")
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic of the camera"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "forecast.yaml"),
                              description="forecast_node parameters (config/forecast.yaml documents them)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
    ]
    # LARGE_DATA: 1 MB between processes 2.7 ms instead of 13 ms. Kept if the user chose transports.
    transports = [] if any(k in os.environ for k in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
                                                        "FASTRTPS_DEFAULT_PROFILES_FILE")) \
        else [SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")]
    node = LifecycleNode(
        package="deltaworld_ros",
        executable="forecast_node",
        name="forecast_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"image_topic": LaunchConfiguration("camera_topic"), "device": LaunchConfiguration("device")}],
        output="screen",
    )
    return LaunchDescription([*arguments, *transports, node])
