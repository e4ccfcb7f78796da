"""launch_pytest tests of launch/forecast.launch.py. launch, launch_ros and launch_pytest exist only
in a ROS 2 installation (not on PyPI): there these run (after `colcon build` and sourcing the
workspace); elsewhere they are skipped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest is not installed (needs a ROS 2 install)")
pytest.importorskip("launch_ros")
ament_index = pytest.importorskip("ament_index_python.packages")

import launch  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "forecast.launch.py"

try:
    ament_index.get_package_share_directory("deltaworld_ros")
except Exception:  # PackageNotFoundError: the workspace is not built/sourced
    pytest.skip("deltaworld_ros is not installed in a sourced ROS 2 workspace", allow_module_level=True)


@launch_pytest.fixture
def forecast_launch():
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={"camera_topic": "/launch_test/image", "device": "cpu",
                              "namespace": "launch_test"}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=forecast_launch)
def test_launch_starts_an_active_forecast_node():
    import rclpy
    from lifecycle_msgs.srv import GetState

    rclpy.init()
    try:
        node = rclpy.create_node("launch_test_probe")
        client = node.create_client(GetState, "/launch_test/forecast_node/get_state")
        assert client.wait_for_service(timeout_sec=60)
        deadline = time.monotonic() + 300  # configure loads the model
        label = ""
        while time.monotonic() < deadline:
            future = client.call_async(GetState.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=5)
            label = future.result().current_state.label if future.result() else ""
            if label == "active":
                break
            time.sleep(1)
        assert label == "active"
        assert node.count_subscribers("/launch_test/image") == 1
        assert node.count_publishers("/deltaworld/futures") == 1
    finally:
        rclpy.shutdown()
