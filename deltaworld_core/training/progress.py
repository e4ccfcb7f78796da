"""What a training run says while it runs: the one-line progress of every ``log_every`` steps
(throughput, the share of time spent waiting for data, ETA) and durations as ``H:MM:SS``."""

from __future__ import annotations

import logging
import math
import time

from .config import TrainConfig

log = logging.getLogger("deltaworld_core.train")


class Progress:
    """Throughput between log lines: samples/s, the share of time spent waiting for data, and an ETA."""

    def __init__(self, cfg: TrainConfig, step: int):
        self.cfg, self.start = cfg, step
        self.t_last, self.steps_since, self.wait_since = time.perf_counter(), 0, 0.0
        self.t0 = self.t_last
        self.stream_wait_last = 0.0

    def step(self, waited: float | None) -> None:
        self.steps_since += 1
        if waited is not None:
            self.wait_since += waited

    def report(self, step: int, loss: float, stream_wait: float | None, skipped: tuple[int, int]) -> dict[str, float]:
        """Logs the one-line progress; ``skipped``: (recordings, frames) skipped by the reader so far."""
        now = time.perf_counter()
        elapsed = max(now - self.t_last, 1e-9)
        if stream_wait is not None:  # the stream counts its own waiting (the VFM's time is compute, not waiting)
            self.wait_since, self.stream_wait_last = stream_wait - self.stream_wait_last, stream_wait
        rate = {"steps_per_s": self.steps_since / elapsed,
                "samples_per_s": self.steps_since * self.cfg.batch_size / elapsed,
                "data_wait_share": min(1.0, self.wait_since / elapsed)}
        overall = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.cfg.steps - step) / overall if overall > 0 else float("inf")
        log.info("%s step %d/%d (%.0f%%) loss %.4g | %.1f samples/s | data wait %.0f%% | ETA %s%s",
                 self.cfg.stage, step,
                 self.cfg.steps, 100.0 * step / self.cfg.steps, loss, rate["samples_per_s"],
                 100 * rate["data_wait_share"], duration(eta),
                 f" | skipped {skipped[0]} recordings, {skipped[1]} frames" if any(skipped) else "")
        self.t_last, self.steps_since, self.wait_since = now, 0, 0.0
        return rate


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
