"""forecast_node's /diagnostics status made from plain values, without DDS or a node: each level
and message a planner watching the node acts on, and the counts behind them."""

from __future__ import annotations

from collections import deque

import pytest

pytest.importorskip("diagnostic_msgs")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from deltaworld_core.runner import RunnerStats  # noqa: E402
from deltaworld_core.stages import StageChoice  # noqa: E402
from deltaworld_ros.node_diagnostics import (ERROR_WINDOW_S, LOSS_WINDOW_S, NO_IMAGES_S, CameraStats,  # noqa: E402
                                             Diagnostics, NodeSnapshot)

NOW = 1000.0


def snapshot(**changes) -> NodeSnapshot:
    """A healthy active node: frames arriving at 10 Hz, forecasts delivered, nothing lost."""
    runner = RunnerStats(put=50, processed=50, delivered=46, settled=50, malformed=1)
    runner.delivered_at.extend(NOW - 0.1 * i for i in range(20, 0, -1))
    runner.latencies_ms.extend([80.0, 90.0, 100.0])
    runner.model_ms.extend([70.0, 75.0, 80.0])
    camera = CameraStats(received=52, malformed=2, received_at=deque(NOW - 0.1 * i for i in range(20, -1, -1)),
                         losses=deque())
    values = dict(now=NOW, state="active", device="cpu", threads=2, stages=StageChoice(1, "measured: ..."),
                  resets=0, runner=runner, workers_alive=True, waiting_s=0.05, camera=camera, namesakes=1,
                  stall_timeout_s=10.0)
    return NodeSnapshot(**{**values, **changes})


def level_and_message(s: NodeSnapshot) -> tuple[int, str]:
    status = Diagnostics("/robot/forecast_node: DeltaWorld forecast").status(s)
    return status.level, status.message


def test_a_healthy_node_is_ok_with_its_counts():
    diagnostics = Diagnostics("/robot/forecast_node: DeltaWorld forecast")
    s = snapshot()
    status = diagnostics.status(s)
    assert (status.level, status.message) == (DiagnosticStatus.OK, "forecasting")
    assert status.name == "/robot/forecast_node: DeltaWorld forecast" and status.hardware_id == "cpu"
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames_received"] == "52" and values["frames_processed"] == "50"
    assert values["frames_malformed"] == "3"  # refused by the camera input (2) and by the forecaster (1)
    assert values["forecast_rate_hz"] == "10.00" and values["input_rate_hz"] == "10.00"
    assert values["latency_ms_median"] == "90.0" and values["latency_ms_last"] == "100.0"
    assert values["stages"] == "1" and values["frames_lost_recently"] == "0"
    assert diagnostics.message(s, stamp=None).status[0].message == "forecasting"


def test_a_stall_and_dead_workers_are_errors():
    level, message = level_and_message(snapshot(waiting_s=12.5))
    assert level == DiagnosticStatus.ERROR and message == "forecasting stalled: frames waiting 12.5 s for the model"
    assert level_and_message(snapshot(workers_alive=False))[0] == DiagnosticStatus.ERROR
    # Not active: frames do not wait for a model, the node says what state it is in
    assert level_and_message(snapshot(state="inactive", workers_alive=False)) == (DiagnosticStatus.WARN,
                                                                                   "node is inactive")


def test_model_failures_are_errors_while_recent():
    s = snapshot()
    s.runner.model_errors = 1
    s.runner.model_errors_at.append(NOW - 1.0)
    assert level_and_message(s) == (DiagnosticStatus.ERROR,
                                    f"forecaster errors: 1 in the last {ERROR_WINDOW_S:.0f} s")
    s.runner.model_errors_at[0] = NOW - ERROR_WINDOW_S - 1
    assert level_and_message(s)[0] == DiagnosticStatus.OK
    s.runner.last_nonfinite = NOW - 1.0
    assert level_and_message(s) == (DiagnosticStatus.ERROR, "non-finite depth: forecasts withheld")


def test_lost_frames_warn_with_the_advice_of_the_newest_loss_while_recent():
    s = snapshot()
    s.camera.losses.extend([(NOW - 3.0, 2, "advice for the camera then"), (NOW - 1.0, 1, "advice for the camera now")])
    level, message = level_and_message(s)
    assert level == DiagnosticStatus.WARN
    assert message == f"camera frames lost: 3 in the last {LOSS_WINDOW_S:.0f} s. advice for the camera now"
    old = snapshot()
    old.camera.losses.append((NOW - LOSS_WINDOW_S - 1, 5, "old advice"))
    assert level_and_message(old) == (DiagnosticStatus.OK, "forecasting")


def test_no_images_and_namesakes_warn():
    quiet = snapshot()
    quiet.camera.received_at = deque([NOW - NO_IMAGES_S - 1])
    assert level_and_message(quiet) == (DiagnosticStatus.WARN, "no camera images")
    assert level_and_message(snapshot(namesakes=2)) == (DiagnosticStatus.WARN,
                                                         "forecasting, but 2 nodes share this name")


def test_a_risk_grid_that_cannot_be_made_warns_with_the_reason_until_one_is():
    why = "no transform from 'camera_optical_frame' to 'base_link': frame does not exist"
    status = Diagnostics("forecast_node: DeltaWorld forecast").status(snapshot(risk_grid=why))
    assert (status.level, status.message) == (DiagnosticStatus.WARN, f"risk grid not published: {why}")
    assert {kv.key: kv.value for kv in status.values}["risk_grid"] == why
    for fine in ("ok", "off"):  # a grid made again, or none asked for
        assert level_and_message(snapshot(risk_grid=fine)) == (DiagnosticStatus.OK, "forecasting")
