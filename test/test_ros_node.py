"""forecast_node on real DDS: the node runs in its own process with the real Forecaster (a tiny
random-weight config, or the default architecture for the burst test); this test process
publishes frames of a real clip and checks every Futures message it gets back."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from sensor_msgs.msg import Image  # noqa: E402

from deltaworld_ros.futures_msg import decode_futures, seconds_to_time, time_to_ns, time_to_seconds  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from deltaworld_core.data.video import VideoReader, sample_video_paths  # noqa: E402
from ros_harness import CONTEXT, REPO, TINY, Harness, NodeProcess, write_model_config  # noqa: E402

# The real default architecture with random VFM weights: ~5-10x slower than 30 Hz on these CPUs.
SLOW = {"vfm.weights": "random", "forecast.k": 4}


@pytest.fixture(scope="module")
def clip():
    return list(VideoReader(sample_video_paths()["bikes.mp4"]).read_all(max_frames=60)[0])


def check_futures(msg, *, k: int, horizon: int, size: tuple[int, int], step_s: float, sent: dict[int, str]) -> None:
    """Everything a planner relies on, checked for one Futures message."""
    stamp_ns = time_to_ns(msg.header.stamp)
    assert stamp_ns in sent, "header stamp is not that of a frame we sent"
    assert msg.header.frame_id == sent[stamp_ns]
    assert [time_to_ns(t) - stamp_ns for t in msg.target_stamps] == [round(step_s * 1e6 * (h + 1)) * 1000
                                                                       for h in range(horizon)]
    assert list(msg.class_names) == ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car",
                                     "person", "pole"]
    assert len(msg.hypotheses) == k and len(msg.summary) == horizon
    images = [i for hyp in msg.hypotheses for i in (*hyp.semantic, *hyp.depth)]
    images += [i for s in msg.summary for i in (s.semantic_mode, s.semantic_agreement, s.depth_mean, s.depth_std)]
    assert all((i.height, i.width) == size and i.header.frame_id == sent[stamp_ns] for i in images)
    decoded = decode_futures(msg)  # also checks every encoding (mono8 / 32FC1)
    assert decoded.semantic.shape == (k, horizon, *size) and decoded.depth.shape == (k, horizon, *size)
    assert decoded.semantic.max() < len(msg.class_names)
    assert np.isfinite(decoded.depth).all() and (decoded.depth > 0).all()
    # The summaries are those of the hypotheses: the mode is a most frequent class, agreement its share.
    counts = np.stack([(decoded.semantic == c).sum(0) for c in range(len(msg.class_names))])  # [C, H, h, w]
    mode_counts = np.take_along_axis(counts, decoded.semantic_mode[None].astype(np.int64), 0)[0]
    np.testing.assert_array_equal(mode_counts, counts.max(0))
    np.testing.assert_allclose(decoded.agreement, mode_counts / k, atol=1e-6)
    np.testing.assert_allclose(decoded.depth_mean, decoded.depth.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(decoded.depth_std, decoded.depth.std(0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2], ids=["one_stage", "two_stages"])
def test_node_forecasts_a_real_clip(tmp_path, ros_env, harness, clip, threads):
    """With threads 2 and forecast.pipeline true the node runs the VFM and the rest as two stages
    (deltaworld_core.runner); with one thread, one stage."""
    config = write_model_config(tmp_path / "tiny.yaml", {**TINY, "forecast.pipeline": threads == 2})
    k, horizon, size, step_s = 3, 2, (24, 32), 0.25
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), device="auto", k=k, horizon=horizon,
                       step_s=step_s, output_size=list(size), diagnostics_period_s=0.5, threads=threads,
                       **harness.use_reliable_camera())
    try:
        harness.wait_until_connected(node)
        sent: dict[int, str] = {}
        start = time.time()
        frames = clip[:30]
        for i, rgb in enumerate(frames):  # 10 Hz, stamped like a live camera
            stamp = start + 0.1 * i
            sent[time_to_ns(seconds_to_time(stamp))] = f"camera_{i % 2}"
            harness.send(rgb, stamp, frame_id=f"camera_{i % 2}")
            time.sleep(max(0.0, stamp + 0.1 - time.time()))
        last_ns = max(sent)
        harness.wait_for(lambda: any(time_to_ns(m.header.stamp) == last_ns for m in harness.futures), 20,
                         "the forecast of the last frame", node)
        time.sleep(1.0)  # a diagnostics period after the last forecast
        assert node.alive(), node.log()
        futures = list(harness.futures)
        # Frames 0..CONTEXT-2 only fill the context; a loaded CI machine may drop a few more.
        assert len(futures) >= (len(frames) - CONTEXT + 1) // 2, node.log()
        for msg in futures:
            check_futures(msg, k=k, horizon=horizon, size=size, step_s=step_s, sent=sent)
        stamps = [time_to_ns(m.header.stamp) for m in futures]
        assert stamps == sorted(set(stamps)), "futures out of order or duplicated"
        values = harness.values()
        assert values["device"] == "cpu" and values["state"] == "active"
        assert int(values["frames_received"]) == len(frames)
        assert int(values["forecasts_published"]) == len(futures)
        assert int(values["frames_malformed"]) == 0 and int(values["resets"]) == 0
        assert float(values["latency_ms_median"]) > 0
        assert values["threads"] == str(threads) and values["stages"] == str(threads)
        assert ("two stages of 1 (VFM beside the rest)" in node.log()) == (threads == 2), node.log()
    finally:
        assert node.stop() == 0, node.log()


def malformed_images(rgb: np.ndarray) -> dict[str, Image]:
    good = array_to_image_msg(rgb, "rgb8")
    h, w = good.height, good.width
    return {
        "unsupported_encoding": Image(height=h, width=w, encoding="yuv422", step=good.step, data=good.data),
        "truncated_data": Image(height=h, width=w, encoding="rgb8", step=good.step, data=bytes(good.data)[: w * 3 * 2]),
        "zero_size": Image(height=0, width=w, encoding="rgb8", step=good.step, data=b""),
        "absurd_size": Image(height=1_000_000, width=1_000_000, encoding="mono8", step=1_000_000, data=bytes(16)),
    }


def test_node_survives_malformed_input_and_time_going_backwards(tmp_path, ros_env, harness, clip):
    config = write_model_config(tmp_path / "tiny.yaml", TINY)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), diagnostics_period_s=0.5,
                       **harness.use_reliable_camera())
    try:
        harness.wait_until_connected(node)
        frames = iter(clip * 3)
        stamp = [time.time()]

        def send_good_until_forecast(max_frames: int) -> int:
            """Sends good frames (closed loop: each waits for its forecast or 0.5 s) until one is
            forecast; returns how many it took."""
            for n in range(1, max_frames + 1):
                stamp[0] += 0.1
                before = harness.count()
                harness.send(next(frames), stamp[0])
                deadline = time.monotonic() + 0.5
                while harness.count() == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                if harness.count() > before:
                    assert harness.last_stamp_ns() == time_to_ns(seconds_to_time(stamp[0]))
                    return n
            pytest.fail(f"no forecast after {max_frames} good frames:\n{node.log()}")

        assert send_good_until_forecast(20) >= CONTEXT  # the context fills first
        bad = malformed_images(clip[0])
        for _ in range(2):  # every cause twice: it must be logged once
            for msg in bad.values():
                harness.send_raw(msg)
                time.sleep(0.05)
                assert send_good_until_forecast(3) == 1, "a good frame after a malformed one was not forecast"
        stamp[0] -= 5.0  # time goes backwards (a bag loop): the context restarts
        assert send_good_until_forecast(20) >= CONTEXT
        assert send_good_until_forecast(3) == 1
        time.sleep(1.0)
        assert node.alive()
        values = harness.values()
        assert int(values["frames_malformed"]) == 2 * len(bad)
        assert int(values["resets"]) == 1
        log = node.log()
        for cause in bad:
            assert log.count(f"malformed image ({cause})") == 1, log
        assert "does not increase" in log
    finally:
        assert node.stop() == 0, node.log()


def stream_at_30hz(harness: Harness, clip, node: NodeProcess, t0: float, first: int, until, min_s: float,
                   max_s: float = 180.0) -> tuple[int, int]:
    """Publishes clip frames stamped t0 + i/30 at 30 Hz for at least ``min_s`` seconds and until
    ``until()`` holds (bounded by ``max_s``: how long a loaded CPU takes varies 10x); returns
    (frames sent, stamp in ns of the last one)."""
    i = 0
    while i < 30 * min_s or not until():
        if i >= 30 * max_s or not node.alive():
            pytest.fail(f"streaming for {i / 30:.0f} s did not get there:\n{node.log()}")
        stamp = t0 + i / 30
        harness.send(clip[(first + i) % len(clip)], stamp)
        i += 1
        time.sleep(max(0.0, stamp + 1 / 30 - time.time()))
    return i, time_to_ns(seconds_to_time(t0 + (i - 1) / 30))


def test_burst_into_a_slower_model_keeps_latency_bounded(tmp_path, ros_env, harness, clip):
    """30 Hz into a model several times slower: only the newest frame is processed, frames are
    dropped (and counted), latency does not grow, and no backlog is worked off after the burst."""
    config = write_model_config(tmp_path / "slow.yaml", SLOW)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), output_size=[56, 56], diagnostics_period_s=0.5)
    try:
        harness.wait_until_connected(node)
        # At least 4 s, and long enough for 6 forecasts however slow the loaded CPU makes a step.
        count, last_stamp = stream_at_30hz(harness, clip, node, time.time(), 0, lambda: harness.count() >= 6, 4.0)
        burst_end = time.time()
        harness.wait_for(lambda: harness.count() and harness.last_stamp_ns() == last_stamp,
                         30, "the forecast of the last frame", node)
        time.sleep(1.5)
        received, received_at = list(harness.futures), list(harness.received_at)
        latencies = [t - time_to_seconds(m.header.stamp) for t, m in zip(received_at, received)]
        intervals = np.diff(received_at)
        step = float(np.median(intervals))  # ~ one model step
        values = harness.values()
        report = f"{len(received)} forecasts, step {step * 1e3:.0f} ms, latencies {np.round(latencies, 3)}, {values}"
        assert step > 2 / 30, "the model is not slower than the camera; the test proves nothing: " + report
        # Best-effort DDS may lose frames on a loaded machine: the node's own count is the reference.
        frames_in = int(values["frames_received"])
        assert 0.25 * count <= frames_in <= count, report
        assert len(received) < frames_in / 2, report
        assert int(values["frames_dropped"]) >= frames_in / 2, report
        assert int(values["frames_dropped"]) + int(values["frames_processed"]) == frames_in, report
        # A frame waits at most for the step in progress, then takes one step: ~2 steps.
        assert max(latencies) < 2.5 * max(intervals.max(), step) + 0.3, report
        half = len(latencies) // 2
        assert np.median(latencies[half:]) < 1.5 * np.median(latencies[:half]) + 0.1, "latency grows: " + report
        # Nothing queued: the last frame is the last forecast and it came within ~2 steps.
        assert time_to_ns(received[-1].header.stamp) == last_stamp
        assert received_at[-1] - burst_end < 2.5 * intervals.max() + 0.3, report
    finally:
        assert node.stop() == 0, node.log()


def test_a_model_step_slower_than_max_gap_s_keeps_forecasting(tmp_path, ros_env, harness, clip):
    """max_gap_s is a gap in the camera stream: a model whose steps take longer than max_gap_s
    (frames dropped in between) keeps its context; a real pause of the camera still resets it."""
    config = write_model_config(tmp_path / "slow.yaml", SLOW)
    max_gap_s = 0.05  # 1.5 camera periods at 30 Hz (stamps exact); the slow model takes longer per step (87 ms idle)
    # Reliable camera QoS: a frame lost by best-effort DDS would be a real gap in the stream.
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), output_size=[56, 56], max_gap_s=max_gap_s,
                       diagnostics_period_s=0.5, **harness.use_reliable_camera())
    try:
        harness.wait_until_connected(node)
        # Before the fix every processed frame reset the context (4 frames): no forecast ever came.
        sent, last = stream_at_30hz(harness, clip, node, time.time(), 0, lambda: harness.count() >= 3, 3.0)
        harness.wait_for(lambda: harness.last_stamp_ns() == last,
                         30, "the forecast of the last frame before the pause", node)
        before = list(harness.futures)
        step = float(np.median(np.diff(harness.received_at))) if len(before) > 1 else float("nan")
        report = f"{len(before)} forecasts, step {step * 1e3:.0f} ms\n{node.log()}"
        assert step > max_gap_s, "the model is not slower than max_gap_s; the test proves nothing: " + report
        time.sleep(0.5)  # the camera pauses: a gap of 0.5 s > max_gap_s in the stream itself
        _, last = stream_at_30hz(harness, clip, node, time.time(), sent, lambda: harness.count() >= len(before) + 2, 2.0)
        harness.wait_for(lambda: harness.last_stamp_ns() == last,
                         30, "the forecast of the last frame after the pause", node)
        time.sleep(1.0)
        values = harness.values()
        assert int(values["resets"]) == 1, f"{values}\n{node.log()}"
        assert "camera stream gap" in node.log()
        assert harness.count() > len(before)
    finally:
        assert node.stop() == 0, node.log()


def test_ctrl_c_while_images_flow_shuts_down_quietly(tmp_path, ros_env, harness, clip):
    """SIGINT (Ctrl-C, or launch stopping the node) while the worker is inside a model step: rclpy's
    signal handler invalidates the context before the step publishes; no traceback, exit 0."""
    config = write_model_config(tmp_path / "slow.yaml", SLOW)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config), output_size=[56, 56])
    try:
        harness.wait_until_connected(node)
        start, i = time.time(), 0
        while harness.count() < 3:  # forecasting: from now on the worker is (almost) always in a step
            harness.send(clip[i % len(clip)], start + i / 30)
            i += 1
            time.sleep(1 / 30)
            assert i < 30 * 60 and node.alive(), node.log()
        for _ in range(5):  # a few more frames, then Ctrl-C while they are being worked on
            harness.send(clip[i % len(clip)], start + i / 30)
            i += 1
            time.sleep(1 / 30)
        node.proc.send_signal(signal.SIGINT)
        assert node.proc.wait(timeout=30) == 0, node.log()
    finally:
        node.stop()
    log = node.log()
    for noise in ("Traceback", "Exception in thread", "RCLError", "context is invalid", "frame failed"):
        assert noise not in log, log


def test_a_core_that_does_not_import_is_reported_with_its_cause(tmp_path, ros_env):
    """A deltaworld_core that fails to import (as when the installed executable could not find
    it) ends the node with exit 1 and the cause and file in the log."""
    broken = tmp_path / "broken"
    (broken / "deltaworld_core").mkdir(parents=True)
    (broken / "deltaworld_core" / "__init__.py").write_text('raise ImportError("this deltaworld_core is broken")\n')
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = dict(ros_env, PYTHONPATH=os.pathsep.join([str(broken), str(REPO)]))  # the broken core comes first
    node = NodeProcess(tmp_path, env, cwd=run_dir)
    try:
        assert node.proc.wait(timeout=120) == 1, node.log()
    finally:
        node.stop()
    log = node.log()
    assert "ImportError: this deltaworld_core is broken" in log, log
    assert str(broken / "deltaworld_core" / "__init__.py") in log, log


SPIN_FAILS = """
import sys
import rclpy
from rclpy._rclpy_pybind11 import RCLError
from deltaworld_ros import forecast_node

def spin(node):
    if sys.argv[1] == "after_shutdown":
        rclpy.shutdown()  # what rclpy's SIGINT handler does while spin builds its wait set
    raise RCLError("failed to initialize wait set: the given context is not valid")

forecast_node.rclpy.spin = spin
sys.exit(forecast_node.main(["--ros-args", "-p", "autostart:=false"]))
"""


@pytest.mark.parametrize("when", ["after_shutdown", "context_up"])
def test_a_spin_failing_because_ctrl_c_shut_the_context_down_exits_cleanly(ros_env, when):
    """The race seen in CI: Ctrl-C invalidates the context while the executor builds its wait set;
    that is a clean shutdown (exit 0, no traceback). The same error with the context still up is
    a real failure and still ends the node with a traceback."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SPIN_FAILS, when], env=ros_env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    if when == "after_shutdown":
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    else:
        assert done.returncode != 0 and "context is not valid" in done.stderr, done.stderr
