"""The node's thread setting: validated, applied to the model, reported in /diagnostics (real DDS);
and the frame runner the node, bench and measure_node_rate share."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")

from ros_harness import TINY, NodeProcess, write_model_config  # noqa: E402


def test_threads_parameter_is_validated():
    from deltaworld_ros.forecast_node import PARAMETERS, parameter_problem

    assert PARAMETERS["threads"][0] == 0  # auto by default
    assert parameter_problem("threads", 0) is None and parameter_problem("threads", 2) is None
    assert "thread count" in parameter_problem("threads", -1)
    assert "thread count" in parameter_problem("threads", 1000)


@pytest.mark.parametrize("threads", [2])  # auto is 1 on 2 cores: 2 shows the setting is applied
def test_node_applies_and_reports_its_threads(tmp_path, ros_env, harness, threads):
    config = write_model_config(tmp_path / "tiny.yaml", TINY)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), device="cpu", threads=threads,
                       diagnostics_period_s=0.2)
    try:
        harness.wait_until_connected(node)
        harness.wait_for(lambda: any(s.values for a in harness.diagnostics for s in a.status
                                     if "forecast_node" in s.name and any(kv.key == "state" and kv.value == "active"
                                                                          for kv in s.values)),
                         20, "diagnostics of the active node", node)
        assert harness.values()["threads"] == str(threads)
        assert f"{threads} threads" in node.log()
    finally:
        assert node.stop() == 0


def test_the_node_bench_and_measure_node_rate_run_frames_through_one_frame_runner(tmp_path, ros_node, monkeypatch):
    """The forecasts/s that bench and measure_node_rate --no-ros report are the node's code path:
    each of the three runs its frames through deltaworld_core.runner.FrameRunner (its frame step,
    _process, is watched), the node in this process with the camera callback fed directly."""
    import importlib.util

    import cv2
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from deltaworld_core.bench import stream_throughput
    from deltaworld_core.runner import FrameRunner
    from deltaworld_ros.forecast_node import ForecastNode
    from deltaworld_ros.futures_msg import seconds_to_time
    from deltaworld_ros.image_conversion import array_to_image_msg
    from ros_harness import CONTEXT, REPO, smooth_frame

    spec = importlib.util.spec_from_file_location("measure_node_rate", REPO / "scripts" / "measure_node_rate.py")
    measure_node_rate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure_node_rate)
    seen: list[str] = []
    process = FrameRunner._process

    def watched(runner, frame, features):
        seen.append(caller)
        return process(runner, frame, features)

    monkeypatch.setattr(FrameRunner, "_process", watched)
    config = write_model_config(tmp_path / "tiny.yaml", TINY)
    params = dict(autostart=False, model_config=str(config), k=2, horizon=1, output_size=[24, 32], threads=1)
    node = ForecastNode(context=ros_node.context, namespace="/one_runner",
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        caller = "node"
        node.trigger_configure()
        node.trigger_activate()
        assert isinstance(node.runner, FrameRunner)
        for i in range(CONTEXT + 2):
            header = Header(stamp=seconds_to_time(100.0 + 0.1 * i), frame_id="camera")
            node.camera._on_image(array_to_image_msg(smooth_frame(), "rgb8", header))
            node.runner.drain(30)
        assert node.runner_stats.delivered >= 1
        node.trigger_deactivate()

        caller = "bench"
        stream_throughput(node.forecaster, 2)

        caller = "measure_node_rate"
        video = tmp_path / "clip.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (80, 60))
        for _ in range(3 * CONTEXT):
            writer.write(smooth_frame())
        writer.release()
        args = measure_node_rate.parse_args(["--config", str(config), "--threads", "1", "--duration", "1", "--no-ros"])
        result = {}
        measure_node_rate.run_without_ros(args, {"forecast.k": 2, "forecast.horizon": 1}, video, result)
        assert result["forecasts"] >= 1
    finally:
        node.destroy_node()
    assert set(seen) == {"node", "bench", "measure_node_rate"}, set(seen)


def test_measure_node_rate_chooses_stages_at_the_node_probe_size(tmp_path, monkeypatch):
    """--no-ros runs the stages the node would choose: the node probes at stages.PROBE_SHAPE, so
    the script does too, not at its clip's frame size."""
    import importlib.util

    import cv2

    from deltaworld_core import stages
    from ros_harness import CONTEXT, REPO, smooth_frame

    spec = importlib.util.spec_from_file_location("measure_node_rate", REPO / "scripts" / "measure_node_rate.py")
    measure_node_rate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure_node_rate)
    probed = []

    class Probed(Exception):
        pass

    def choose(fc, shape=stages.PROBE_SHAPE, frames=stages.PROBE_FRAMES):
        probed.append(tuple(shape))
        raise Probed  # the shape is all this test needs: no stream is run

    monkeypatch.setattr(stages, "choose_stages", choose)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (80, 60))
    for _ in range(3 * CONTEXT):
        writer.write(smooth_frame())
    writer.release()
    args = measure_node_rate.parse_args(["--config", str(write_model_config(tmp_path / "tiny.yaml", TINY)),
                                         "--threads", "1", "--duration", "1", "--no-ros"])
    with pytest.raises(Probed):
        measure_node_rate.run_without_ros(args, {}, video, {})
    assert probed == [stages.PROBE_SHAPE]
