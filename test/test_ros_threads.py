"""The node's thread setting: validated, applied to the model, reported in /diagnostics (real DDS)."""

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
