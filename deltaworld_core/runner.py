"""The frame runner: a camera stream through the forecaster, newest frame first, in one or two stages.

Every live stream runs through :class:`FrameRunner`: the ROS node, ``python -m
deltaworld_core.bench``, ``scripts/measure_node_rate.py`` and the stage probe below, so a number
measured here is the node's own code path.

- **Newest frame wins.** :meth:`FrameRunner.put` leaves a frame in a one-slot mailbox; a frame
  still waiting there is replaced and counted as dropped, and a context break it carried (a gap
  in the camera stream) passes to the frame that replaced it. Latency therefore stays within about
  two model steps however fast frames arrive. With ``every_frame`` nothing is dropped: ``put``
  and the VFM stage wait for the next slot instead (a back-to-back benchmark: every frame is run).
- **One or two stages.** With one stage a worker thread runs :meth:`Forecaster.step` with the
  whole thread budget. With two, a VFM thread runs :meth:`Forecaster.frame_features` of the next
  frame beside the forecast thread's encode, predictor, decoder and heads of the current one,
  each with half the budget's kernel threads; the forecasts are the same, the rate is set by the
  slower stage instead of the sum. Which is faster depends on the CPU and the model, so
  :func:`choose_stages` measures both (``forecast.pipeline: null``, the default) unless the
  config forces one (``true``: two stages where the budget has two threads; ``false``: one).
- **Gaps and resets.** ``max_gap_s`` applies to the camera stream as received (:meth:`put`), not
  to the frames the model happens to run: a model step slower than ``max_gap_s`` never resets.
- **Accounting.** :class:`RunnerStats` counts frames run, dropped, rejected by the forecaster
  (malformed), failed (model errors, with their times), forecasts withheld for non-finite depth
  and delivered, and keeps recent latencies; :meth:`FrameRunner.waiting_s` is how long frames have
  waited for a stage (a stall), :meth:`FrameRunner.alive` whether every worker runs.

    runner = FrameRunner(forecaster, deliver=lambda frame, forecast: ..., stages=1)
    runner.start()
    runner.put(Frame(rgb, stamp))   # from any thread, e.g. a camera callback
    runner.stop()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .forecaster import Forecast, Forecaster, FrameFeatures
from .threads import apply_threads

log = logging.getLogger(__name__)


def stage_threads(threads: int, stages: int = 2) -> int:
    """Kernel threads of each stage for a budget of ``threads`` CPU threads run as ``stages``
    (1: the whole budget; 2: half each)."""
    return max(1, threads // 2) if stages == 2 else threads


def kernel_threads(forecaster: Forecaster, count: int) -> int:
    """Sets the process's kernel threads (torch's, and the VFM's ONNX Runtime session's) to ``count``."""
    apply_threads(count)
    forecaster.vfm.set_threads(count)
    return count


@dataclass
class Frame:
    """One camera frame on its way through the runner."""

    image: np.ndarray  # HxWx3 uint8 RGB
    stamp: float  # seconds, the camera's
    received: float = field(default_factory=time.monotonic)  # when it arrived (latency is measured from here)
    gap: str | None = None  # why the context must restart before this frame, set by FrameRunner.put
    meta: Any = None  # the caller's, handed back with the forecast (the node: the camera message's header)


@dataclass
class RunnerStats:
    """What a runner has done since it was made; the deques hold recent values (other threads append)."""

    put: int = 0
    dropped: int = 0  # replaced in a mailbox by a newer frame before a stage took it
    processed: int = 0  # frames through Forecaster.step (a forecast or still filling the context)
    malformed: int = 0  # frames the forecaster refused (ValueError)
    model_errors: int = 0
    nonfinite: int = 0  # forecasts withheld: non-finite depth
    delivered: int = 0
    settled: int = 0  # frames that left the runner, whichever way
    model_errors_at: deque = field(default_factory=lambda: deque(maxlen=1000))  # monotonic times
    last_nonfinite: float | None = None
    delivered_at: deque = field(default_factory=lambda: deque(maxlen=100))
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100))  # received -> delivered
    model_ms: deque = field(default_factory=lambda: deque(maxlen=100))


def _log_warning(cause: str, text: str) -> None:
    log.warning(text)


class FrameRunner:
    """Runs frames through ``forecaster`` on worker threads (see the module docstring).

    ``deliver(frame, forecast)`` is called on the last stage's thread for each forecast with
    finite depth; it returns False when the forecast could not be handed on (then it is not
    counted as delivered). ``warn(cause, text)`` reports rejected frames, model errors and resets
    (the node rate-limits by ``cause``). ``stats`` lets counts run on across runners (the node
    makes one runner per activation). ``every_frame``: no frame is dropped, each waits for the
    next stage instead (benchmarks; a live camera wants the newest frame)."""

    def __init__(self, forecaster: Forecaster, deliver: Callable[[Frame, Forecast], bool | None], stages: int = 1,
                 warn: Callable[[str, str], None] = _log_warning, stats: RunnerStats | None = None,
                 every_frame: bool = False):
        if stages not in (1, 2):
            raise ValueError(f"stages must be 1 or 2, got {stages}")
        self.forecaster, self.deliver, self.stages, self.warn = forecaster, deliver, stages, warn
        self.every_frame = every_frame
        self.stats = RunnerStats() if stats is None else stats  # shared: counts kept across runners
        self._cond = threading.Condition()
        self._mailbox: Frame | None = None
        self._ready: tuple[Frame, FrameFeatures] | None = None  # the VFM stage's output (two stages)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._waiting_since: float | None = None  # when the mailbox last became non-empty
        self._busy_since: dict[str, float] = {}  # stage -> monotonic start of the call in progress
        self._last_stamp: float | None = None  # newest camera stamp put (run or not)
        self.max_gap_s = forecaster.max_gap_s

    # ------------------------------------------------------------------ control
    def start(self) -> "FrameRunner":
        """Starts the stage threads with their kernel threads; the stream starts afresh."""
        fc = self.forecaster
        fc.reset()
        # The stream's gaps are checked on receipt (put); the forecaster's own check would see
        # the gaps between the frames that happened to be run.
        fc.max_gap_s = math.inf
        kernel_threads(fc, stage_threads(fc.threads, self.stages))
        self._stop.clear()
        self._workers = [threading.Thread(target=self._forecast_stage, name="forecast_worker", daemon=True)]
        if self.stages == 2:
            self._workers.append(threading.Thread(target=self._vfm_stage, name="vfm_worker", daemon=True))
        for worker in self._workers:
            worker.start()
        return self

    def request_stop(self) -> None:
        """Tells the workers to stop after the call in progress, without waiting."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the workers (waiting up to ``timeout`` s for each), drops waiting frames and,
        once no worker runs any more, gives the forecaster back its thread budget and max_gap_s
        (a worker still inside a model call at process exit is left alone)."""
        self.request_stop()
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=timeout)
        with self._cond:
            self._mailbox = self._ready = None
            self._waiting_since = None
        if any(w.is_alive() for w in self._workers):
            return
        self._workers = []
        self.forecaster.max_gap_s = self.max_gap_s
        kernel_threads(self.forecaster, self.forecaster.threads)

    def alive(self) -> bool:
        """Whether every stage thread is running."""
        return bool(self._workers) and all(w.is_alive() for w in self._workers)

    def waiting_s(self, now: float | None = None) -> float:
        """Seconds a frame has waited for the model or a stage call has been running, the longer."""
        now = time.monotonic() if now is None else now
        starts = [self._waiting_since, *list(self._busy_since.values())]
        return max([now - t for t in starts if t is not None] + [0.0])

    # ------------------------------------------------------------------ input
    def put(self, frame: Frame) -> None:
        """Hands ``frame`` to the first stage: replacing a frame still waiting (newest wins), or
        with ``every_frame`` waiting until the stage has taken it."""
        frame.gap = frame.gap or self._stream_gap(frame.stamp)
        with self._cond:
            self.stats.put += 1
            if self.every_frame:
                self._cond.wait_for(lambda: self._mailbox is None or self._stop.is_set())
            if self._mailbox is not None:
                self._drop(self._mailbox, frame)
            else:
                self._waiting_since = frame.received
            self._mailbox = frame
            self._cond.notify_all()

    def drain(self, timeout: float = 600.0) -> bool:
        """Waits until every frame put has left the runner; False after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self.stats.settled >= self.stats.put or not self.alive(), timeout)

    def _stream_gap(self, stamp: float) -> str | None:
        """Why the context must restart at this frame: a gap over max_gap_s since the previous
        frame put (frames dropped because the model is busy are no gap)."""
        last, self._last_stamp = self._last_stamp, stamp
        if last is not None and stamp - last > self.max_gap_s:
            return f"camera stream gap {stamp - last:.3f} s exceeds max_gap_s {self.max_gap_s}"
        return None

    def _drop(self, old: Frame, new: Frame) -> None:
        """``old`` is replaced by ``new`` (lock held): counted, its context break carried over."""
        self.stats.dropped += 1
        self.stats.settled += 1
        new.gap = new.gap or old.gap

    def _settle(self, count: int = 1) -> None:
        with self._cond:
            self.stats.settled += count
            self._cond.notify_all()

    def _take(self, slot: str):
        """The newest item of ``slot`` ("_mailbox" or "_ready"); None after 0.2 s or when stopping."""
        with self._cond:
            self._cond.wait_for(lambda: getattr(self, slot) is not None or self._stop.is_set(), 0.2)
            item = getattr(self, slot)
            setattr(self, slot, None)
            if slot == "_mailbox":
                self._waiting_since = None
            self._cond.notify_all()
        if item is not None and self._stop.is_set():
            self._settle()
            return None
        return item

    # ------------------------------------------------------------------ stages
    def _vfm_stage(self) -> None:
        """The first of two stages: each frame's VFM features, handed to the forecast stage (the
        newest wins: a frame the forecast stage has not taken yet counts as dropped)."""
        gap = None  # a context break carried by a frame whose VFM call failed: the next frame's
        while not self._stop.is_set():
            frame = self._take("_mailbox")
            if frame is None:
                continue
            ok, features = self._call("vfm", self.forecaster.frame_features, frame.image)
            if not ok:
                gap = gap or frame.gap
                self._settle()
                continue
            frame.gap, gap = frame.gap or gap, None
            with self._cond:
                if self.every_frame:
                    self._cond.wait_for(lambda: self._ready is None or self._stop.is_set())
                if self._ready is not None:
                    self._drop(self._ready[0], frame)
                self._ready = (frame, features)
                self._cond.notify_all()

    def _forecast_stage(self) -> None:
        while not self._stop.is_set():
            if self.stages == 2:
                frame, features = self._take("_ready") or (None, None)
            else:
                frame, features = self._take("_mailbox"), None
            if frame is None:
                continue
            try:
                self._process(frame, features)
            except Exception as err:  # noqa: BLE001 - the worker must outlive any one frame
                self._count_model_error()
                self.warn("worker_error", f"processing a frame failed: {type(err).__name__}: {err}")
            finally:
                self._settle()

    def _call(self, stage: str, call, *args) -> tuple[bool, Any]:
        """(True, ``call(*args)``), or (False, None) with the failure counted and reported: a frame
        the forecaster refuses (ValueError) is malformed input, anything else a model error."""
        self._busy_since[stage] = time.monotonic()
        try:
            return True, call(*args)
        except ValueError as err:
            self.stats.malformed += 1
            self.warn("rejected", f"forecaster rejected a frame: {err}")
        except Exception as err:  # noqa: BLE001 - one failing frame must not stop the stream
            self._count_model_error()
            self.warn("model_error", f"forecaster failed: {type(err).__name__}: {err}")
        finally:
            self._busy_since.pop(stage, None)
        return False, None

    def _count_model_error(self) -> None:
        self.stats.model_errors += 1
        self.stats.model_errors_at.append(time.monotonic())

    def _process(self, frame: Frame, features: FrameFeatures | None) -> None:
        fc = self.forecaster
        if frame.gap is not None:
            fc.reset(frame.gap)
            self.warn("reset", f"context reset: {frame.gap}")
        ok, forecast = self._call("forecast", fc.step, frame.image, frame.stamp, features)
        if not ok:
            return
        self.stats.processed += 1
        if fc.last_reset_reason:
            self.warn("reset", f"context reset: {fc.last_reset_reason}")
        if forecast is None:
            return
        s = forecast.summary
        if not all(np.isfinite(a).all() for a in (forecast.depth, s.depth_mean, s.depth_std, s.agreement)):
            # Planners read depth as metres: a NaN/inf map is withheld, never handed on.
            self.stats.nonfinite += 1
            self.stats.last_nonfinite = time.monotonic()
            self.warn("nonfinite", "forecast has non-finite depth (broken or overflowing weights?): not published")
            return
        if self.deliver(frame, forecast) is False:
            return
        done = time.monotonic()
        self.stats.delivered += 1
        self.stats.delivered_at.append(done)
        self.stats.latencies_ms.append((done - frame.received) * 1e3)
        self.stats.model_ms.append(forecast.timings.get("total", float("nan")))
