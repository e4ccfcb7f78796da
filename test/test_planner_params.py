"""The planner outputs' node parameters: each rule refuses what it should with one line, the
defaults and the shipped config/forecast.yaml pass, and the grid's cell count is bounded."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")

from deltaworld_ros.node_parameters import (MAX_GRID_CELLS, PARAMETERS, RECONFIGURE, combined_problem,  # noqa: E402
                                            parameter_problem)

PLANNER = ("publish_step_images", "publish_obstacles", "obstacle_classes", "obstacle_min_p", "obstacle_max_points",
           "publish_risk_grid", "risk_grid_frame", "risk_grid_resolution", "risk_grid_size", "risk_grid_max_points",
           "risk_grid_use_tf", "camera_mount_xyz", "camera_mount_rpy")


def test_every_planner_parameter_is_declared_with_a_description():
    for name in PLANNER:
        default, description = PARAMETERS[name]
        assert parameter_problem(name, default) is None, name
        assert len(description) > 20, name
    # the outputs are made at configure: switching one needs a configure
    assert {"publish_step_images", "publish_obstacles", "publish_risk_grid"} <= RECONFIGURE


@pytest.mark.parametrize("name, value, reason", [
    ("obstacle_min_p", 1.5, "fraction from 0 to 1"),
    ("obstacle_min_p", float("nan"), "fraction from 0 to 1"),
    ("obstacle_max_points", 0, "point count"),
    ("risk_grid_max_points", 2_000_000, "point count"),
    ("obstacle_classes", ["car", " "], "no empty one"),
    ("risk_grid_frame", "base link", "TF frame name"),
    ("risk_grid_frame", "", "TF frame name"),
    ("risk_grid_resolution", 0.0, "cell size"),
    ("risk_grid_size", -1.0, "positive size"),
    ("camera_mount_xyz", [0.0, 1.0], "three finite numbers"),
    ("camera_mount_rpy", [0.0, float("inf"), 0.0], "three finite numbers"),
])
def test_bad_values_are_refused_with_the_reason(name, value, reason):
    problem = parameter_problem(name, value)
    assert problem is not None and reason in problem and "\n" not in problem


def test_a_grid_of_too_many_cells_is_refused():
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    assert combined_problem(values, {"risk_grid_size": 100.0, "risk_grid_resolution": 0.1}) is None
    problem = combined_problem(values, {"risk_grid_size": 1000.0, "risk_grid_resolution": 0.1})
    assert problem and f"at most {MAX_GRID_CELLS}" in problem
