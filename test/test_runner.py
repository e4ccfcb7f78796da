"""The frame runner (deltaworld_core.runner) and the stage choice (deltaworld_core.stages): newest
frame wins, one or two stages giving the same forecasts, gaps, failures and their accounting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from deltaworld_core import Forecaster
from deltaworld_core.runner import Frame, FrameRunner, stage_threads
from deltaworld_core.stages import choose_stages, fixed_choice
from deltaworld_core.threads import apply_threads
from test_forecaster import DINOV2

CONTEXT = DINOV2["forecast.context"]


def camera(n: int, h: int = 60, w: int = 80, seed: int = 0) -> list[np.ndarray]:
    """A panning camera: each frame shifted 3 px from the one before."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + 3 * n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 3 * i: 3 * i + w]) for i in range(n)]


@pytest.fixture(scope="module")
def forecaster():
    fc = Forecaster.from_config("default", overrides=DINOV2, threads=1)
    fc.threads = 2  # a two-thread budget even where the machine has one core
    yield fc
    apply_threads(1)


def outputs(forecast):
    return forecast.semantic, forecast.depth, forecast.summary.depth_std, forecast.stamps


class Collect:
    """A deliver callback that keeps (frame, forecast) and the thread it ran on."""

    def __init__(self):
        self.got, self.threads = [], set()

    def __call__(self, frame, forecast):
        self.got.append((frame, forecast))
        self.threads.add(threading.current_thread().name)


def run_back_to_back(fc, stages, frames, stamps, **kwargs) -> tuple[FrameRunner, Collect]:
    collect = Collect()
    runner = FrameRunner(fc, collect, stages, every_frame=True, **kwargs).start()
    try:
        for i, (image, stamp) in enumerate(zip(frames, stamps)):
            runner.put(Frame(image, stamp, meta=i))
        assert runner.drain(60)
    finally:
        runner.stop()
    return runner, collect


def test_two_stages_give_the_serial_forecasts_with_the_vfm_on_its_own_thread(forecaster):
    frames, stamps = camera(7), [0.04 * i for i in range(7)]
    forecaster.reset()
    apply_threads(stage_threads(forecaster.threads))  # the kernels' thread count decides float rounding
    serial = [forecaster.step(f, s) for f, s in zip(frames, stamps)]
    seen, original = set(), forecaster.frame_features

    def spy(image):
        seen.add(threading.current_thread().name)
        return original(image)

    forecaster.frame_features = spy
    try:
        runner, collect = run_back_to_back(forecaster, 2, frames, stamps)
    finally:
        del forecaster.frame_features
    assert torch.get_num_threads() == 2  # the budget again once the runner stopped
    assert seen == {"vfm_worker"} and collect.threads == {"forecast_worker"}
    assert [frame.meta for frame, _ in collect.got] == list(range(CONTEXT - 1, 7))
    for (frame, got) in collect.got:
        for x, y in zip(outputs(serial[frame.meta]), outputs(got)):
            np.testing.assert_array_equal(x, y)
    assert runner.stats.processed == 7 and runner.stats.delivered == 7 - CONTEXT + 1 and runner.stats.dropped == 0
    last = collect.got[-1][1]
    assert last.timings["total"] >= last.timings["vfm"] > 0  # the frame's VFM counts in its model time


def test_one_stage_runs_on_one_worker_with_the_whole_budget(forecaster):
    frames, stamps = camera(5), [0.1 * i for i in range(5)]
    budget_seen = []
    original = forecaster.step

    def spy(*args):
        budget_seen.append(torch.get_num_threads())
        return original(*args)

    forecaster.step = spy
    try:
        runner, collect = run_back_to_back(forecaster, 1, frames, stamps)
    finally:
        del forecaster.step
    assert collect.threads == {"forecast_worker"} and set(budget_seen) == {2}
    assert runner.stats.delivered == 5 - CONTEXT + 1


def test_newest_frame_wins_and_a_dropped_frame_keeps_its_context_break(forecaster):
    """While the model is busy, frames replace each other in the mailbox (counted as dropped);
    a stream gap seen on a dropped frame still resets the context before the next frame run."""
    release, held = threading.Event(), threading.Event()
    original = forecaster.step

    def held_step(*args):
        held.set()
        release.wait(30)
        return original(*args)

    warnings, collect = [], Collect()
    forecaster.step = held_step
    runner = FrameRunner(forecaster, collect, 1, warn=lambda cause, text: warnings.append(text)).start()
    try:
        frames = camera(6)
        runner.put(Frame(frames[0], 0.0))
        assert held.wait(10)
        runner.put(Frame(frames[1], 0.1))
        runner.put(Frame(frames[2], 5.0))  # 4.9 s after the previous frame: over max_gap_s
        runner.put(Frame(frames[3], 5.1))  # replaces the frame with the gap
        assert runner.stats.dropped == 2 and runner.waiting_s() > 0
        release.set()
        assert runner.drain(30)
    finally:
        release.set()
        runner.stop()
        del forecaster.step
    assert runner.stats.processed == 2 and forecaster.resets >= 1
    assert any("camera stream gap 4.900 s exceeds max_gap_s" in w for w in warnings), warnings
    assert forecaster.max_gap_s == DINOV2.get("forecast.max_gap_s", 1.0)  # given back after the run


def test_a_frame_is_delivered_while_the_camera_waits_for_its_next_one(forecaster):
    """Frames come from a camera thread; the forecast of a frame does not wait for the next frame."""
    events, frames = [], camera(5)

    def deliver(frame, forecast):
        events.append(("forecast", frame.meta))

    runner = FrameRunner(forecaster, deliver, 2, every_frame=True).start()
    try:
        for i, frame in enumerate(frames):
            if i == 4:
                deadline = time.monotonic() + 30
                while ("forecast", 3) not in events and time.monotonic() < deadline:
                    time.sleep(0.01)
            events.append(("frame", i))
            runner.put(Frame(frame, 0.1 * i, meta=i))
        assert runner.drain(30)
    finally:
        runner.stop()
    assert events.index(("forecast", 3)) < events.index(("frame", 4)), events
    assert events[-1] == ("forecast", 4)


@pytest.mark.parametrize("stages", [1, 2])
def test_failures_are_counted_and_the_stream_goes_on(forecaster, stages):
    frames = camera(7)
    frames[2] = frames[2][..., :2]  # two channels: refused by the forecaster (malformed)
    calls = {"n": 0}
    original = forecaster.step

    def step(image, stamp, features=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("kernel failed")
        return original(image, stamp, features)

    forecaster.step = step
    warned = []
    try:
        runner, collect = run_back_to_back(forecaster, stages, frames, [0.1 * i for i in range(7)],
                                           warn=lambda cause, text: warned.append(cause))
    finally:
        del forecaster.step
    assert runner.stats.malformed == 1 and runner.stats.model_errors == 1 and len(runner.stats.model_errors_at) == 1
    assert runner.stats.processed == 5 and runner.stats.settled == runner.stats.put == 7
    assert {"rejected", "model_error"} <= set(warned) and collect.got


def test_a_forecast_with_non_finite_depth_is_withheld(forecaster):
    original = forecaster.step

    def broken(*args):
        out = original(*args)
        if out is not None:
            out.depth[...] = np.nan
        return out

    forecaster.step = broken
    try:
        runner, collect = run_back_to_back(forecaster, 1, camera(4), [0.1 * i for i in range(4)])
    finally:
        del forecaster.step
    assert runner.stats.nonfinite == 4 - CONTEXT + 1 and not collect.got and runner.stats.last_nonfinite


def test_stage_choice_fixed_by_the_budget_or_the_config(forecaster):
    pipeline = forecaster.cfg.forecast.pipeline
    try:
        forecaster.threads = 1
        assert fixed_choice(forecaster).stages == 1
        forecaster.threads = 2
        forecaster.cfg.forecast.pipeline = False
        assert fixed_choice(forecaster).stages == 1
        forecaster.cfg.forecast.pipeline = True
        assert fixed_choice(forecaster).stages == 2 and "pipeline: true" in fixed_choice(forecaster).why
        forecaster.cfg.forecast.pipeline = None
        assert fixed_choice(forecaster) is None  # measured
    finally:
        forecaster.threads, forecaster.cfg.forecast.pipeline = 2, pipeline
    assert [stage_threads(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]


def test_stage_choice_measures_both_modes_and_keeps_the_faster(forecaster):
    forecaster.cfg.forecast.pipeline = None
    choice = choose_stages(forecaster, shape=(60, 80), frames=3)
    one, two = (choice.measured[k]["forecasts_per_s"] for k in ("one_stage", "two_stages"))
    assert one > 0 and two > 0 and choice.stages == (2 if two > one else 1)
    assert choice.measured["two_stages"]["kernel_threads"] == 1 and choice.measured["one_stage"]["kernel_threads"] == 2
    assert "measured: one stage of 2 threads" in choice.why and torch.get_num_threads() == 2
    assert forecaster.buffered == 0  # the probe leaves no frame in the stream


def test_an_onnx_runtime_vfm_gets_each_stage_its_threads(tmp_path, monkeypatch):
    """The VFM's ONNX Runtime session is re-made with the stage's thread count while two stages
    run and with the budget again after them; the forecasts do not change."""
    monkeypatch.setenv("DELTAWORLD_CACHE", str(tmp_path))
    fc = Forecaster.from_config("default", overrides={**DINOV2, "vfm.backend": "onnxruntime", "vfm.precision": "fp32"},
                                threads=1)
    if fc.vfm.backend != "onnxruntime":
        pytest.skip("onnxruntime export unavailable here")
    fc.threads = 2
    frames, stamps = camera(4), [0.1 * i for i in range(4)]
    serial = [fc.step(f, s) for f, s in zip(frames, stamps)]
    sessions = []
    original = fc.frame_features
    fc.frame_features = lambda image: (sessions.append(fc.vfm._ort.num_threads), original(image))[1]
    _, collect = run_back_to_back(fc, 2, frames, stamps)
    assert set(sessions) == {1} and fc.vfm._ort.num_threads == 2
    for frame, got in collect.got:
        for x, y in zip(outputs(serial[frame.meta]), outputs(got)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    apply_threads(1)


def test_features_of_another_frame_size_are_refused(forecaster):
    forecaster.reset()
    small, large = camera(1, 30, 40)[0], camera(1)[0]
    with pytest.raises(ValueError, match="features are of a"):
        forecaster.step(large, 0.0, forecaster.frame_features(small))
