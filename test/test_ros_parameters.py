"""`ros2 param set` on a running forecast_node (issue 21, "parameters at run time"), over real
DDS: the node in its own process, this process calling its SetParameters and ChangeState
services as ros2 param / ros2 lifecycle do. A value refused at start-up is refused at run time
with the reason; an accepted one says when it takes effect, and does: the camera input and the
diagnostics period at once, the model at the next configure. Nothing reports success and does
nothing."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

import rclpy  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from deltaworld_core.threads import available_cores  # noqa: E402
from ros_harness import TINY, NodeProcess, write_model_config  # noqa: E402


def call(harness, client, request, timeout: float = 30.0):
    assert client.wait_for_service(timeout_sec=60), f"{client.srv_name} never appeared"
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)  # the harness's executor spins the node in its thread
    assert future.done(), f"{client.srv_name} did not answer"
    return future.result()


def set_parameter(harness, name: str, value):
    client = harness.node.create_client(SetParameters, "/forecast_node/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call(harness, client, request).results[0]


def transition(harness, transition_id: int) -> bool:
    client = harness.node.create_client(ChangeState, "/forecast_node/change_state")
    return call(harness, client, ChangeState.Request(transition=Transition(id=transition_id)), 120).success


def test_run_time_parameters_are_checked_and_take_effect(tmp_path, ros_env, harness):
    config = write_model_config(tmp_path / "tiny.yaml", TINY)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), k=2, horizon=1, output_size=[24, 32],
                       diagnostics_period_s=1.0)
    try:
        harness.wait_until_connected(node)
        # Refused, with the reason, as at start-up: among them weights folders configure would fail on.
        partial = tmp_path / "partial_run"
        partial.mkdir()
        (partial / "world.safetensors").write_bytes(b"")
        for name, value, reason in [("k", 1000000, "forecast.k must be in [1, 256]"),
                                    ("weights", str(tmp_path), "holds none of tokenizer.safetensors"),
                                    ("weights", str(partial), "stage(s) tokenizer, heads not trained yet"),
                                    ("weights", "/nonexistent/weights", "does not exist"),
                                    ("model_config", "/etc/passwd", "the top level must be a mapping"),
                                    ("output_size", [2048, 2048], "exceeds"),
                                    ("input_depth", 0, "must be a history depth"),
                                    ("autostart", False, "read only at start-up")]:
            result = set_parameter(harness, name, value)
            assert not result.successful and reason in result.reason, (name, result.reason)
        # Threads above the cores: accepted, and the reason says they will be lowered.
        cores = available_cores()
        result = set_parameter(harness, "threads", cores + 8)
        assert result.successful and f"using {cores}" in result.reason and "next configure" in result.reason, \
            result.reason
        # The model's parameters: accepted for the next configure, and applied there.
        result = set_parameter(harness, "k", 3)
        assert result.successful and "k, threads" not in result.reason and "applied at the next configure" in \
            result.reason, result.reason
        assert harness.send_until_forecast(node, 20) >= 1 and len(harness.futures[-1].hypotheses) == 2
        for step in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                     Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert transition(harness, step), (step, node.log())
        harness.wait_until_connected(node)
        assert harness.send_until_forecast(node, 20) >= 1
        assert len(harness.futures[-1].hypotheses) == 3, node.log()
        assert f"{cores} threads" in node.log() and "more than the" in node.log(), node.log()
        # The diagnostics period: at once.
        result = set_parameter(harness, "diagnostics_period_s", 0.1)
        assert result.successful and "applied now" in result.reason, result.reason
        mark = len(harness.statuses())
        time.sleep(2.0)
        assert len(harness.statuses()) - mark >= 8, "diagnostics still at 1 Hz"  # ~20 at 10 Hz
        # The camera topic: at once, while active.
        result = set_parameter(harness, "image_topic", "/other_camera/image_raw")
        assert result.successful and "camera subscription remade now" in result.reason, result.reason
        harness.wait_for(lambda: harness.node.count_subscribers("/other_camera/image_raw") == 1
                         and harness.node.count_subscribers("/camera/image_raw") == 0, 10, "the new subscription",
                         node)
        received = int(harness.values()["frames_received"])
        harness.camera = harness.node.create_publisher(harness.camera.msg_type, "/other_camera/image_raw",
                                                       harness._camera_qos(False))
        harness.wait_for(lambda: harness.camera.get_subscription_count() == 1, 10, "matching", node)
        time.sleep(1.0)
        assert harness.send_until_forecast(node, 20) >= 1
        harness.wait_for(lambda: int(harness.values()["frames_received"]) > received, 5, "frames counted", node)
    finally:
        assert node.stop() == 0, node.log()
    assert rclpy.ok(context=harness.node.context)


def test_output_geometry_parameters_map_to_the_model_config():
    """The node's geometry, context_spacing, publish_k and summary_size feed forecast.* (empty /
    zero keeps the config's), are checked by the config's own rules, and a two-view forecast with
    fewer published hypotheses converts to a Futures message at the camera's aspect."""
    import numpy as np
    from std_msgs.msg import Header

    from deltaworld_core import Forecaster
    from deltaworld_ros.futures_msg import decode_futures, forecast_to_msg
    from deltaworld_ros.node_parameters import config_overrides, config_problem, parameter_problem

    assert config_overrides({}) == {}
    given = {"geometry": "two_squares", "context_spacing": "step", "publish_k": 2, "summary_size": [8, 8]}
    assert config_overrides(given) == {"forecast.geometry": "two_squares", "forecast.context_spacing": "step",
                                       "forecast.publish_k": 2, "forecast.summary_size": [8, 8]}
    assert "forecast.geometry" in config_problem({"model_config": "default", "geometry": "stretch"})
    assert "forecast.context_spacing" in config_problem({"model_config": "default", "context_spacing": "often"})
    assert parameter_problem("publish_k", -1) and parameter_problem("summary_size", [0, 8])
    assert config_problem({"model_config": "default", **given}) is None

    overrides = {**TINY, "forecast.k": 3, "forecast.horizon": 2, "forecast.output_size": [16, 16],
                 "vfm.image_size": [28, 28], **config_overrides({"geometry": "two_squares", "publish_k": 2})}
    forecaster = Forecaster.from_config("default", overrides=overrides)
    rng = np.random.default_rng(0)
    for i in range(CONTEXT_FRAMES):
        out = forecaster.step(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 0.2 * i)
    assert out is not None
    decoded = decode_futures(forecast_to_msg(out, Header(frame_id="camera")))
    assert decoded.semantic.shape == (2, 2, 16, 21) and decoded.depth_mean.shape == (2, 16, 21)  # 4:3 canvas


CONTEXT_FRAMES = TINY["forecast.context"] + 1
