"""The two-stage stream (deltaworld_core.pipeline): the next frame's VFM beside the current frame's rest."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deltaworld_core import Forecaster
from deltaworld_core.pipeline import Pipeline, pipelined, stage_threads
from deltaworld_core.threads import apply_threads


def camera(n: int, h: int = 480, w: int = 640, seed: int = 0) -> list[np.ndarray]:
    """A panning 640x480 camera: each frame shifted 3 px from the one before."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + 3 * n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 3 * i: 3 * i + w]) for i in range(n)]


@pytest.fixture(scope="module")
def forecaster():
    fc = Forecaster.from_config("default", threads=1)  # the shipped default, its weights
    fc.threads = 2  # a two-thread budget even where the machine has one core
    yield fc
    apply_threads(1)


def outputs(forecasts):
    return [None if f is None else (f.semantic, f.depth, f.summary.depth_std, f.stamps) for f in forecasts]


def test_pipelined_stream_gives_the_serial_forecasts(forecaster):
    frames, stamps = camera(9), [0.04 * i for i in range(9)]
    forecaster.reset()
    apply_threads(stage_threads(forecaster.threads))  # the kernels' thread count decides float rounding
    serial = [forecaster.step(f, s) for f, s in zip(frames, stamps)]
    forecaster.reset()
    seen = set()
    original = forecaster.frame_features

    def spy(image):
        seen.add(threading.current_thread().name)
        return original(image)

    forecaster.frame_features = spy
    try:
        with Pipeline(forecaster) as pipe:
            assert pipe.active and torch.get_num_threads() == 1
            piped = list(pipe.run(zip(frames, stamps)))
    finally:
        del forecaster.frame_features
    assert torch.get_num_threads() == 2  # the budget again once the pipeline is left
    assert [name.startswith("deltaworld-vfm") for name in seen] == [True]  # every VFM on the stage thread
    assert sum(f is not None for f in piped) == 9 - forecaster.context + 1
    for a, b in zip(outputs(serial), outputs(piped)):
        if a is None:
            assert b is None
            continue
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    last = piped[-1]
    assert last.timings["total"] >= last.timings["vfm"] > 0  # the frame's VFM counts in its model time


def test_a_bad_frame_raises_at_its_turn_after_the_good_ones(forecaster):
    forecaster.reset()
    frames = camera(6)
    frames[4] = frames[4][..., :2]  # two channels
    got = []
    with Pipeline(forecaster) as pipe:
        with pytest.raises(ValueError, match="HxWx3"):
            for out in pipe.run(zip(frames, [0.1 * i for i in range(6)])):
                got.append(out)
    assert len(got) == 4 and got[-1] is not None  # context 4: the fourth frame forecast


def test_features_of_another_frame_size_are_refused(forecaster):
    forecaster.reset()
    small, large = camera(1, 240, 320)[0], camera(1)[0]
    with pytest.raises(ValueError, match="features are of a"):
        forecaster.step(large, 0.0, forecaster.frame_features(small))


def test_serial_where_one_thread_or_switched_off(forecaster):
    budget = forecaster.threads
    try:
        forecaster.threads = 1
        assert not pipelined(forecaster)
        forecaster.threads = 2
        forecaster.cfg.forecast.pipeline = False
        assert not pipelined(forecaster)
        forecaster.reset()
        before = torch.get_num_threads()
        with Pipeline(forecaster) as pipe:
            assert not pipe.active
            out = list(pipe.run(zip(camera(4), [0.1 * i for i in range(4)])))
        assert out[-1] is not None and torch.get_num_threads() == before  # untouched
    finally:
        forecaster.threads, forecaster.cfg.forecast.pipeline = budget, True


def test_stage_threads_split_the_budget():
    assert [stage_threads(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]


def test_a_live_source_waiting_for_its_next_frame_does_not_hold_back_the_current_forecast(forecaster):
    """Frames are taken from the source on the VFM stage's thread: while a camera waits for its
    next frame, the current frame's forecast is already out."""
    import time

    forecaster.reset()
    frames, events = camera(5), []

    def live():
        for i, frame in enumerate(frames):
            if i == 4:
                time.sleep(1.5)  # the camera's next frame is late
            events.append(("frame", i))
            yield frame, 0.1 * i

    with Pipeline(forecaster) as pipe:
        for i, out in enumerate(pipe.run(live())):
            if out is not None:
                events.append(("forecast", i))
    assert events.index(("forecast", 3)) < events.index(("frame", 4)), events
    assert events[-1] == ("forecast", 4)


def test_an_onnx_runtime_vfm_gets_each_stage_its_threads(tmp_path, monkeypatch):
    """The VFM's ONNX Runtime session (the float32 CPU backend) is re-made with the stage's thread
    count inside the pipeline and with the budget again after it; the forecasts do not change."""
    monkeypatch.setenv("DELTAWORLD_CACHE", str(tmp_path))
    tiny = {"weights": None, "forecast.quantize": "none", "vfm.precision": "fp32", "vfm.backend": "onnxruntime",
            "vfm.weights": "random", "vfm.family": "dinov2", "vfm.patch_size": 14, "vfm.image_size": [28, 42],
            "vfm.embed_dim": 48, "vfm.depth": 1, "vfm.num_heads": 2, "tokenizer.dim": 32,
            "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "tokenizer.num_heads": 2,
            "tokenizer.mlp_hidden": 64, "world.dim": 32, "world.depth": 1, "world.num_heads": 2,
            "heads.depth_bins": 16, "forecast.context": 2, "forecast.horizon": 2, "forecast.k": 2,
            "forecast.output_size": [20, 24], "tokenizer.linear_path": False}
    fc = Forecaster.from_config("default", overrides=tiny, threads=1)
    if fc.vfm.backend != "onnxruntime":
        pytest.skip("onnxruntime export unavailable here")
    fc.threads = 2
    frames, stamps = camera(4, 60, 80), [0.1 * i for i in range(4)]
    serial = [fc.step(f, s) for f, s in zip(frames, stamps)]
    fc.reset()
    with Pipeline(fc) as pipe:
        assert fc.vfm._ort.num_threads == 1
        piped = list(pipe.run(zip(frames, stamps)))
    assert fc.vfm._ort.num_threads == 2
    for a, b in zip(outputs(serial), outputs(piped)):
        for x, y in zip(a or (), b or ()):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    apply_threads(1)
