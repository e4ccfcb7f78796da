"""One stage or two: measured on the machine at hand, or as the config forces it.

Two stages (:mod:`deltaworld_core.runner`) overlap the next frame's VFM with the current frame's
rest, each with half the thread budget; one stage gives every kernel the whole budget. Which gives
more forecasts per second depends on the CPU (its bf16 support, its cores, what else runs) and on
the model, so with ``forecast.pipeline: null`` (the default) :func:`choose_stages` streams a few
frames through the runner each way and keeps the faster; ``true`` forces two stages and ``false``
one. A budget of one thread, or a GPU, always runs one stage. The choice and its measurements are
reported (the node's /diagnostics and log, bench's JSON).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .forecaster import Forecaster
from .runner import Frame, FrameRunner, stage_threads

# Frames measured in each mode after the context is full: enough for a stable median interval,
# few enough that configure stays a few seconds longer at most (~0.1 s a frame for the default).
PROBE_FRAMES = 5
PROBE_SHAPE = (480, 640)  # a VGA camera frame: the most common camera size


@dataclass
class StageChoice:
    """How a stream runs: ``stages`` (1 or 2), why, and the probe's forecasts/s per mode when measured."""

    stages: int
    why: str
    measured: dict[str, dict] = field(default_factory=dict)  # "one_stage"/"two_stages" -> measure_stream()

    def describe(self, threads: int) -> str:
        """E.g. '2 threads as two stages of 1 (VFM beside the rest)'."""
        if self.stages == 2:
            return f"{threads} threads as two stages of {stage_threads(threads)} (VFM beside the rest)"
        return f"{threads} threads as one stage"

    def to_dict(self) -> dict:
        return asdict(self)


def synthetic_stream(num: int, shape=(272, 640), seed: int = 0) -> list[np.ndarray]:
    """A panning view of a random texture: real-sized frames without any file."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = rng.integers(0, 256, (h, w + 4 * num, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 4 * i: 4 * i + w]) for i in range(num)]


def measure_stream(fc: Forecaster, stages: int, frames: list[np.ndarray], stamps: list[float],
                   warmup: int) -> dict:
    """``frames`` back to back through a :class:`FrameRunner` of ``stages``: every frame run (each
    waits for the next stage to take it, ``every_frame``). Returns the median interval between consecutive
    forecasts after ``warmup`` frames, forecasts/s from it, and the median model time of a frame
    (its latency: VFM and rest). The forecaster's stream is reset before and after."""
    done: list[tuple[float, float]] = []  # (perf_counter at delivery, model ms)

    def deliver(frame: Frame, forecast) -> None:
        if frame.meta >= warmup:
            done.append((time.perf_counter(), forecast.timings["total"]))

    runner = FrameRunner(fc, deliver, stages, every_frame=True).start()
    try:
        for i, (image, stamp) in enumerate(zip(frames, stamps)):
            runner.put(Frame(image, stamp, meta=i))
        runner.drain()
    finally:
        runner.stop()
        fc.reset()
    if len(done) < 2:
        raise RuntimeError(f"{len(done)} forecast(s) from {len(frames)} frames: too few to time "
                           f"(malformed {runner.stats.malformed}, model errors {runner.stats.model_errors})")
    interval = statistics.median(b[0] - a[0] for a, b in zip(done, done[1:])) * 1e3
    return {"stages": stages, "kernel_threads": stage_threads(fc.threads, stages),
            "ms_per_forecast": interval, "forecasts_per_s": 1e3 / interval,
            "latency_ms": statistics.median(ms for _, ms in done), "forecasts": len(done)}


def fixed_choice(fc: Forecaster) -> StageChoice | None:
    """The choice where nothing needs measuring (a GPU, a one-thread budget, the config forcing
    it), else None."""
    if fc.device.type != "cpu":
        return StageChoice(1, f"one stage on {fc.device.type}")
    if fc.threads < 2:
        return StageChoice(1, "one stage: a budget of 1 thread")
    setting = fc.cfg.forecast.pipeline
    if setting is not None:
        return StageChoice(2 if setting else 1, f"forecast.pipeline: {str(setting).lower()}")
    return None


MODES = {1: "one_stage", 2: "two_stages"}


def probe_stream(fc: Forecaster, shape: tuple[int, int], frames: int) -> tuple[list, list, int]:
    """(frames, stamps at 30 fps, warm-up count): ``frames`` timed frames of ``shape`` after a
    warm-up of a context and one more (the first forecasts include one-off allocations)."""
    warmup = fc.context + 1
    stream = synthetic_stream(warmup + frames + 1, shape)
    return stream, [i / 30 for i in range(len(stream))], warmup


def choose_stages(fc: Forecaster, shape: tuple[int, int] = PROBE_SHAPE, frames: int = PROBE_FRAMES) -> StageChoice:
    """One stage or two for ``fc`` (see the module docstring): fixed where :func:`fixed_choice`
    says so, else each mode timed on ``frames`` synthetic frames of ``shape`` after a warm-up
    and the faster kept (a tie goes to one stage: fewer threads to schedule)."""
    choice = fixed_choice(fc)
    if choice is not None:
        return choice
    stream, stamps, warmup = probe_stream(fc, shape, frames)
    measured = {MODES[stages]: measure_stream(fc, stages, stream, stamps, warmup) for stages in (1, 2)}
    one, two = (measured[MODES[stages]]["forecasts_per_s"] for stages in (1, 2))
    why = (f"measured: one stage of {fc.threads} threads {one:.2f} forecasts/s, two stages of "
           f"{stage_threads(fc.threads)} {two:.2f} forecasts/s")
    return StageChoice(2 if two > one else 1, why, measured)
