"""forecast_node's /diagnostics status: what a planner watching the node reads, made from plain values.

:class:`Diagnostics` turns a :class:`NodeSnapshot` (the node's state, its frame runner's counts,
its camera input's counts) into one ``diagnostic_msgs/DiagnosticStatus``: a level, a message a
person can act on, and the key/values (every one documented in docs/ros-interface.md). It needs
no DDS and no node: tests build snapshots by hand.

The level, first match wins: ERROR when forecasting stalled (frames waited longer than
``stall_timeout_s`` for the model, or a stage thread died), when forecasts were withheld for
non-finite depth or the model failed within the last ``ERROR_WINDOW_S``; WARN when the node is
not active, when no camera images arrive, when camera frames were lost within the last
``LOSS_WINDOW_S`` (with the advice that fitted the camera's QoS when they were lost), when
several nodes share this name, or while the risk grid cannot be made (no camera pose in TF);
else OK "forecasting".
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from deltaworld_core.runner import RunnerStats
from deltaworld_core.stages import StageChoice

# A planner watching the level must see a failure that is going on, not one that passed minutes
# ago (the counts since start stay in the values).
ERROR_WINDOW_S = 10.0
LOSS_WINDOW_S = 10.0  # WARN while camera frames were lost this recently
NO_IMAGES_S = 5.0  # WARN "no camera images" when the newest arrived longer ago than this


@dataclass
class CameraStats:
    """What the camera input counted since the node started (other threads append to the deques)."""

    received: int = 0
    malformed: int = 0  # refused before the model: bad encoding, size, header
    lost_by_dds: int = 0  # reported by the middleware (message_lost events)
    lost_estimated: int = 0  # missing from the camera's stamps at its rate: lost before the callback
    received_at: deque = field(default_factory=lambda: deque(maxlen=100))  # monotonic receipt times
    losses: deque = field(default_factory=lambda: deque(maxlen=1000))  # (monotonic, frames, advice at that moment)


@dataclass
class NodeSnapshot:
    """The node at one moment, as the status is made of it."""

    now: float  # time.monotonic()
    state: str  # lifecycle state label: unconfigured, inactive, active, finalized
    device: str
    threads: int | None  # the model's thread budget; None before configure
    stages: StageChoice | None
    resets: int
    runner: RunnerStats
    workers_alive: bool  # every stage thread of the runner running (only read while active)
    waiting_s: float  # how long frames have waited for the model
    camera: CameraStats
    namesakes: int  # nodes in the graph with this node's name and namespace, itself included
    stall_timeout_s: float
    camera_info: str = "no camera_info received"  # whether the maps have intrinsics, and if not why
    risk_grid: str = "off"  # "off" (not asked for), "ok", or why the newest risk grid was not made


def rate(times, now: float, window: float = 5.0) -> float:
    """Events per second over the last ``window`` s of ``times`` (monotonic)."""
    recent = [t for t in list(times) if now - t <= window]  # list(): one atomic copy (other threads append)
    return 0.0 if len(recent) < 2 else (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


def _ms(values, how) -> str:
    values = list(values)
    return f"{how(values):.1f}" if values else "nan"


class Diagnostics:
    """Makes the node's status; ``name`` is the status's name (namespace included, so that two
    robots' nodes on one domain report apart)."""

    def __init__(self, name: str):
        self.name = name

    def values(self, s: NodeSnapshot) -> dict[str, str]:
        r, c, now = s.runner, s.camera, s.now
        return {
            "state": s.state,
            "device": s.device,
            "threads": str(s.threads) if s.threads is not None else "unconfigured",
            "stages": str(s.stages.stages) if s.stages is not None else "unconfigured",
            "stages_why": s.stages.why if s.stages is not None else "unconfigured",
            "input_rate_hz": f"{rate(c.received_at, now):.2f}",
            "forecast_rate_hz": f"{rate(r.delivered_at, now):.2f}",
            "latency_ms_last": _ms(r.latencies_ms, lambda v: v[-1]),
            "latency_ms_median": _ms(r.latencies_ms, np.median),
            "latency_ms_max": _ms(r.latencies_ms, max),
            "model_ms_median": _ms(r.model_ms, np.median),
            "frames_received": str(c.received),
            "frames_processed": str(r.processed),
            "frames_dropped": str(r.dropped),
            "frames_malformed": str(c.malformed + r.malformed),
            "model_errors": str(r.model_errors),
            "model_errors_recently": str(sum(now - t <= ERROR_WINDOW_S for t in list(r.model_errors_at))),
            "forecasts_published": str(r.delivered),
            "resets": str(s.resets),
            "forecasts_nonfinite": str(r.nonfinite),
            "frames_lost_by_dds": str(c.lost_by_dds),
            "frames_lost_before_node": str(c.lost_estimated),
            "frames_lost_recently": str(sum(n for t, n, _ in list(c.losses) if now - t <= LOSS_WINDOW_S)),
            "nodes_with_this_name": str(s.namesakes),
            "seconds_waiting_for_model": f"{s.waiting_s:.1f}",
            "camera_info": s.camera_info,
            "risk_grid": s.risk_grid,
        }

    def level(self, s: NodeSnapshot, values: dict[str, str]) -> tuple[int, str]:
        """(DiagnosticStatus level, message) for ``s`` and its ``values``."""
        active, now = s.state == "active", s.now
        recent_nonfinite = s.runner.last_nonfinite is not None and now - s.runner.last_nonfinite < ERROR_WINDOW_S
        errors_recently = int(values["model_errors_recently"])
        received = list(s.camera.received_at)
        if active and (not s.workers_alive or s.waiting_s > s.stall_timeout_s):
            return DiagnosticStatus.ERROR, f"forecasting stalled: frames waiting {s.waiting_s:.1f} s for the model"
        if recent_nonfinite:
            return DiagnosticStatus.ERROR, "non-finite depth: forecasts withheld"
        if errors_recently:
            return DiagnosticStatus.ERROR, f"forecaster errors: {errors_recently} in the last {ERROR_WINDOW_S:.0f} s"
        if not active:
            return DiagnosticStatus.WARN, f"node is {s.state}"
        lost = int(values["frames_lost_recently"])
        if lost:
            # Said plainly, with the remedy: a node that silently sees 2 of 90 frames looks merely slow.
            advice = [a for t, _, a in list(s.camera.losses) if now - t <= LOSS_WINDOW_S][-1]
            return DiagnosticStatus.WARN, f"camera frames lost: {lost} in the last {LOSS_WINDOW_S:.0f} s. {advice}"
        if not received or now - received[-1] > NO_IMAGES_S:
            return DiagnosticStatus.WARN, "no camera images"
        if s.namesakes > 1:
            return DiagnosticStatus.WARN, f"forecasting, but {s.namesakes} nodes share this name"
        if s.risk_grid not in ("ok", "off"):
            return DiagnosticStatus.WARN, f"risk grid not published: {s.risk_grid}"
        return DiagnosticStatus.OK, "forecasting"

    def status(self, s: NodeSnapshot) -> DiagnosticStatus:
        values = self.values(s)
        level, message = self.level(s, values)
        return DiagnosticStatus(level=level, name=self.name, message=message, hardware_id=s.device,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def message(self, s: NodeSnapshot, stamp) -> DiagnosticArray:
        """The /diagnostics message of ``s``, stamped ``stamp`` (builtin_interfaces/Time)."""
        return DiagnosticArray(header=Header(stamp=stamp), status=[self.status(s)])


class DiagnosticsThread:
    """Publishes ``diagnostics``' status of ``snapshot()`` on /diagnostics every
    ``diagnostics_period_s`` (read each time: a run-time change applies from the next message),
    from a thread of its own, until stopped or the context shuts down. Not a timer: a frame that
    takes long to decode in the executor would delay it (a flood of 32 Mpx PNGs, 0.7 s each,
    starved a timer). Not a MultiThreadedExecutor either: with one, a reliable 640x480 camera at
    30 Hz lost up to 40% of its frames to the publisher's keep-last queue."""

    def __init__(self, node, diagnostics: Diagnostics, snapshot: Callable[[], NodeSnapshot],
                 warn: Callable[[str, str], None]):
        self.node, self.diagnostics, self.snapshot, self.warn = node, diagnostics, snapshot, warn
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="diagnostics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.node.param("diagnostics_period_s")):
            try:
                self.publisher.publish(self.diagnostics.message(self.snapshot(),
                                                                self.node.get_clock().now().to_msg()))
            except Exception as err:  # noqa: BLE001 - this thread must outlive one bad report
                if not self.node.context.ok():
                    return
                self.warn("diagnostics_error", f"publishing /diagnostics failed: {type(err).__name__}: {err}")

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if timeout > 0 and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
