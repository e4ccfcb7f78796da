"""A frame stream through the forecaster in two stages on two threads: the next frame's VFM runs
beside the current frame's encode, predictor, decoder and heads.

On a CPU a streaming step is one large ViT forward (the VFM) and then many small kernels. Given a
second thread, those small kernels barely gain from it (torch's intra-op threads split each
kernel, and each kernel is too small to split well: a 257x384x1536 bf16 matmul took 0.40 ms on one
thread and 0.66 ms on two, here); a second *stage* gains instead. So with ``threads >= 2`` on a CPU
and ``forecast.pipeline: true`` (the default) each stage runs on a thread of its own with
``threads // 2`` kernel threads: frame t+1's VFM overlaps frame t's rest. Each forecast is exactly
what :meth:`Forecaster.step` gives at that thread count (same features, same order, same noise);
the latency of a frame is unchanged and the rate is set by the slower stage rather than by their
sum.

    with Pipeline(forecaster) as pipe:
        for forecast in pipe.run(frames):  # frames: an iterable of (HxWx3 uint8 RGB, stamp seconds)
            ...

The ROS node runs the same two stages with its own mailboxes (newest frame wins).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from .forecaster import Forecast, Forecaster
from .threads import apply_threads


def stage_threads(threads: int) -> int:
    """Kernel threads of each of the two stages for a budget of ``threads`` CPU threads."""
    return max(1, threads // 2)


def pipelined(forecaster: Forecaster) -> bool:
    """Whether a stream through ``forecaster`` runs as two stages: on a CPU, with
    ``forecast.pipeline`` on and a budget of at least two threads."""
    return (forecaster.cfg.forecast.pipeline and forecaster.device.type == "cpu" and forecaster.threads >= 2)


def _kernel_threads(forecaster: Forecaster, count: int) -> int:
    """Sets the process's kernel threads: torch's, and the VFM's ONNX Runtime session's."""
    apply_threads(count)
    forecaster.vfm.set_threads(count)
    return count


def use_stage_threads(forecaster: Forecaster) -> int:
    """Sets the kernel threads to each stage's share of the forecaster's budget and returns it;
    the budget stays ``forecaster.threads``."""
    return _kernel_threads(forecaster, stage_threads(forecaster.threads))


class Pipeline:
    """Two-stage streaming over one :class:`Forecaster` (see the module docstring). A context
    manager: entering it starts the VFM thread and sets each stage's kernel threads, leaving it
    stops the thread and restores the forecaster's thread budget. Where :func:`pipelined` is False
    it runs :meth:`Forecaster.step` frame after frame on the calling thread."""

    def __init__(self, forecaster: Forecaster):
        self.forecaster = forecaster
        self.active = pipelined(forecaster)
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "Pipeline":
        if self.active:
            use_stage_threads(self.forecaster)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="deltaworld-vfm")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            _kernel_threads(self.forecaster, self.forecaster.threads)

    def _next(self, frames: Iterator[tuple[np.ndarray, float]]) -> Future:
        """The VFM stage's task: the next frame from ``frames`` and its features, on the stage's
        thread (a live source that blocks until its next frame then never delays the current
        frame's forecast). Resolves to (image, stamp, FrameFeatures), or None when ``frames`` ends."""
        if self._pool is None:
            raise RuntimeError("Pipeline.run needs the pipeline entered: `with Pipeline(fc) as pipe:`")

        def task():
            frame = next(frames, None)
            if frame is None:
                return None
            image, stamp = frame
            return image, stamp, self.forecaster.frame_features(image)

        return self._pool.submit(task)

    def run(self, frames: Iterable[tuple[np.ndarray, float]]) -> Iterator[Forecast | None]:
        """One result per frame, in order: what :meth:`Forecaster.step` returns for it. A frame
        the forecaster rejects raises its ValueError when its result is due. With two stages the
        frames are taken from ``frames`` on the VFM stage's thread."""
        fc = self.forecaster
        if not self.active:
            for image, stamp in frames:
                yield fc.step(image, stamp)
            return
        frames = iter(frames)
        pending = self._next(frames)
        while (ready := pending.result()) is not None:
            pending = self._next(frames)  # the next frame's VFM starts before this frame's rest
            image, stamp, features = ready
            forecast = fc.step(image, stamp, features)  # outside any mode: the caller runs at the yield
            yield forecast
