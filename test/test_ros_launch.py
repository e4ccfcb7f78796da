"""launch/forecast.launch.py. The argument logic is tested everywhere; the launch itself needs
launch, launch_ros and launch_pytest, which exist only in a ROS 2 installation (not on the package
registries): there the launch tests run (after `colcon build` and sourcing the workspace, with
pytest<8.4); elsewhere they are reported as one skip.

Each launch test starts the installed package exactly as `ros2 launch deltaworld_ros
forecast.launch.py` does (the installed `lib/deltaworld_ros/forecast_node`, any working folder), on
this run's own ROS_DOMAIN_ID and the DDS defaults (the `ros_env` fixture), and probes it from this
process as an ordinary ROS 2 node would."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "forecast.launch.py"


def load_launch_file():
    spec = importlib.util.spec_from_file_location("forecast_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs no launch package: its imports are inside the function
    return module


def test_launch_arguments_override_the_params_file_only_when_given():
    overrides = load_launch_file().parameter_overrides
    assert overrides({}) == {}
    assert overrides({"camera_topic": "", "device": "", "autostart": ""}) == {}  # the declared defaults
    assert overrides({"camera_topic": "/cam/image", "device": "cuda:1", "autostart": "false"}) == {
        "image_topic": "/cam/image", "device": "cuda:1", "autostart": False}
    assert overrides({"autostart": "True"}) == {"autostart": True}
    assert overrides({"weights": "runs/mine", "model_config": "paper"}) == {"weights": "runs/mine",
                                                                            "model_config": "paper"}
    with pytest.raises(ValueError, match="autostart must be true or false"):
        overrides({"autostart": "maybe"})


def test_launch_helpers_refuse_a_missing_params_file_and_a_failed_node(tmp_path):
    launch_file = load_launch_file()
    assert "does not exist" in launch_file.params_file_problem(str(tmp_path / "missing.yaml"))
    assert launch_file.params_file_problem(str(tmp_path)) is not None  # a folder
    (tmp_path / "p.yaml").write_text("{}")
    assert launch_file.params_file_problem(str(tmp_path / "p.yaml")) is None
    assert launch_file.exit_problem(0) is None
    assert "status 2" in launch_file.exit_problem(2) and "status 1" in launch_file.exit_problem(1)
    assert "status -9" in launch_file.exit_problem(-9)


def _package_problem() -> str | None:
    """Why the installed deltaworld_ros cannot be found through the ament index, or None.
    ament_index_python raises OSError (EnvironmentError) when AMENT_PREFIX_PATH is unset: that
    used to stop collection of this file where launch is installed but no workspace is sourced."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return "ament_index_python is not installed"
    try:
        get_package_share_directory("deltaworld_ros")
    except PackageNotFoundError:
        return "deltaworld_ros is not installed in a sourced ROS 2 workspace (colcon build, source install/setup.bash)"
    except (OSError, ValueError) as err:
        return f"no sourced ROS 2 workspace ({err}): source install/setup.bash (sets AMENT_PREFIX_PATH)"
    return None


def test_the_skip_guard_survives_an_unset_ament_prefix_path(monkeypatch):
    """Issue 21 item 4: with launch installed and AMENT_PREFIX_PATH unset, the guard raised OSError."""
    pytest.importorskip("ament_index_python")
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert "AMENT_PREFIX_PATH" in _package_problem()


def _launch_stack() -> str | None:
    """Why the launch tests cannot run here, or None when they can."""
    for module in ("launch", "launch_ros", "launch_pytest", "rclpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (launch tests need a sourced ROS 2 installation)"
    problem = _package_problem()
    if problem:
        return problem
    if importlib.util.find_spec("launch.substitutions") is None:  # a namespace folder, not the launch package
        return "launch is not the ROS 2 launch package"
    return None


WHY_NOT = _launch_stack()

if WHY_NOT is not None:
    def test_launch_file_with_the_ros2_launch_stack():
        pytest.skip(WHY_NOT)
else:
    import launch
    import launch_pytest
    import rclpy
    from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from lifecycle_msgs.srv import GetState
    from rcl_interfaces.srv import GetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from deltaworld_ros.futures_msg import seconds_to_time
    from deltaworld_ros.image_conversion import array_to_image_msg
    from deltaworld_ros.msg import Futures
    from ros_harness import TINY, write_model_config

    NS = "launch_test"

    def described_launch(tmp_path: Path, ros_env: dict, params: dict, **arguments) -> launch.LaunchDescription:
        """The package's launch file with a params file of ``params`` (a tiny model for speed)
        and ``arguments``, on this run's domain and the ROS 2 defaults (ros_env)."""
        config = write_model_config(tmp_path / "tiny.yaml", TINY)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"model_config": str(config), **params}}}))
        isolation = [SetEnvironmentVariable(k, ros_env[k]) for k in ("ROS_DOMAIN_ID",) if k in ros_env]
        return launch.LaunchDescription([
            *isolation,
            IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments={
                "params_file": str(params_file), "namespace": NS, **arguments}.items()),
            launch_pytest.actions.ReadyToTest(),
        ])

    class Probe:
        """An ordinary rclpy node in this process (ros_env: this run's domain, no transport variables)."""

        def __init__(self):
            self.context = rclpy.Context()
            rclpy.init(context=self.context)
            self.node = rclpy.create_node("launch_test_probe", context=self.context)

        def call(self, client, request, timeout: float = 10.0):
            assert client.wait_for_service(timeout_sec=60), f"{client.srv_name} never appeared"
            future = client.call_async(request)
            executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
            executor.add_node(self.node)
            executor.spin_until_future_complete(future, timeout_sec=timeout)
            executor.remove_node(self.node)
            return future.result()

        def state(self) -> str:
            client = self.node.create_client(GetState, f"/{NS}/forecast_node/get_state")
            result = self.call(client, GetState.Request())
            return result.current_state.label if result else ""

        def wait_for_state(self, label: str, timeout: float = 300.0) -> None:
            deadline, seen = time.monotonic() + timeout, ""
            while time.monotonic() < deadline:
                seen = self.state()
                if seen == label:
                    return
                time.sleep(0.5)
            pytest.fail(f"forecast_node is '{seen}', not '{label}'")

        def parameters(self, *names: str) -> list:
            client = self.node.create_client(GetParameters, f"/{NS}/forecast_node/get_parameters")
            return [v for v in self.call(client, GetParameters.Request(names=list(names))).values]

        def close(self) -> None:
            self.node.destroy_node()
            self.context.try_shutdown()

    @pytest.fixture
    def probe(ros_env):
        probe = Probe()
        yield probe
        probe.close()

    @launch_pytest.fixture
    def default_launch(tmp_path, ros_env):
        return described_launch(tmp_path, ros_env, {}, camera_topic=f"/{NS}/image", device="cpu")

    @pytest.mark.launch(fixture=default_launch)
    def test_launch_starts_an_active_node_that_talks_to_default_nodes(probe, clip_frames):
        """ros2 launch as shipped: the installed executable imports deltaworld_core, the node goes
        active by itself, and a plain node on the DDS defaults gets Futures for its frames."""
        probe.wait_for_state("active")
        assert probe.node.count_subscribers(f"/{NS}/image") == 1
        futures = []
        probe.node.create_subscription(Futures, f"/{NS}/deltaworld/futures", futures.append,
                                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        camera = probe.node.create_publisher(Image, f"/{NS}/image", 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=probe.context)
        executor.add_node(probe.node)
        start = time.time()
        for i, rgb in enumerate(clip_frames * 3):
            camera.publish(array_to_image_msg(rgb, "rgb8", Header(stamp=seconds_to_time(start + 0.1 * i),
                                                                  frame_id="camera")))
            executor.spin_once(timeout_sec=0.1)
            if len(futures) >= 3:
                break
        assert len(futures) >= 3, "no Futures reached a node on the DDS defaults"

    @launch_pytest.fixture
    def params_file_launch(tmp_path, ros_env):
        return described_launch(tmp_path, ros_env, {"image_topic": "/from_params/image", "device": "cpu"})

    @pytest.mark.launch(fixture=params_file_launch)
    def test_params_file_values_hold_when_arguments_are_not_given(probe):
        probe.wait_for_state("active")
        image_topic, device = probe.parameters("image_topic", "device")
        assert (image_topic.string_value, device.string_value) == ("/from_params/image", "cpu")
        assert probe.node.count_subscribers("/from_params/image") == 1

    @launch_pytest.fixture
    def no_autostart_launch(tmp_path, ros_env):
        return described_launch(tmp_path, ros_env, {"device": "cpu"}, autostart="false")

    @pytest.mark.launch(fixture=no_autostart_launch)
    def test_autostart_false_on_the_launch_line_waits_for_transitions(probe):
        assert probe.state() == "unconfigured"
        time.sleep(5.0)  # autostart would have configured the tiny model by now
        assert probe.state() == "unconfigured"
        assert probe.parameters("autostart")[0].bool_value is False

    def run_launch(tmp_path: Path, ros_env: dict, **arguments) -> tuple[int, str]:
        """``ros2 launch``'s own way of running a launch file (LaunchService.run) in a child
        process; returns its exit status and output."""
        import subprocess
        import sys

        script = (
            "import sys\n"
            "from launch import LaunchDescription, LaunchService\n"
            "from launch.actions import IncludeLaunchDescription\n"
            "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
            "service = LaunchService()\n"
            "service.include_launch_description(LaunchDescription([IncludeLaunchDescription(\n"
            f"    PythonLaunchDescriptionSource({str(LAUNCH_FILE)!r}), launch_arguments={arguments!r}.items())]))\n"
            "sys.exit(service.run())\n")
        result = subprocess.run([sys.executable, "-c", script], env=ros_env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    def test_a_missing_params_file_stops_the_launch_with_an_error(tmp_path, ros_env):
        status, output = run_launch(tmp_path, ros_env, params_file=str(tmp_path / "missing.yaml"))
        assert status != 0 and "does not exist" in output, output

    def test_a_failing_node_ends_the_launch_with_a_non_zero_status(tmp_path, ros_env):
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"model_config": "no_such_config"}}}))
        status, output = run_launch(tmp_path, ros_env, params_file=str(params_file), device="cpu")
        assert status != 0 and "forecast_node exited with status 2" in output, output

    @pytest.fixture(scope="module")
    def clip_frames():
        from deltaworld_core.data.video import VideoReader, sample_video_paths

        frames = VideoReader(sample_video_paths()["bikes.mp4"]).read_all(max_frames=20)[0]
        return [np.ascontiguousarray(f) for f in frames]
