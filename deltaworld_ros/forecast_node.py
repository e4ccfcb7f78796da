"""forecast_node: camera images in, K futures of semantics and depth out (deltaworld_ros/Futures).

A managed (lifecycle) node: configure loads the model (slow), activate subscribes to the camera
and starts forecasting; with ``autostart`` (default) it drives both transitions itself so that a
plain ``ros2 run`` / launch just works. Only the newest frame is ever run: a frame still waiting
for the model when a newer one arrives is dropped, so latency stays within about two model steps
however fast frames arrive (deltaworld_core.runner, the same frame runner the benchmarks measure).

Run: ``python -m deltaworld_ros.forecast_node --ros-args --params-file config/forecast.yaml``
or ``ros2 run deltaworld_ros forecast_node --ros-args ...``.

This module is the entry point (Ctrl-C, exit; node_process has the command line, start-up and
spin); the node is :class:`deltaworld_ros.node_lifecycle.ForecastNode`, its parts are
node_parameters, node_camera, node_outputs and node_diagnostics.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

# The node's public names, imported on first use (PEP 562): importing this module (what
# ``ros2 run`` and ``python -m`` do before main) stays light, so that main installs its Ctrl-C
# handler before rclpy, torch and the model load (they take seconds on a loaded CPU).
_PUBLIC = {"ForecastNode": "deltaworld_ros.node_lifecycle", "resolve_device": "deltaworld_ros.node_lifecycle",
           "PARAMETERS": "deltaworld_ros.node_parameters", "ParameterError": "deltaworld_ros.node_parameters",
           "parameter_problem": "deltaworld_ros.node_parameters", "rclpy": "rclpy"}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    return module if module.__name__ == name else getattr(module, name)


def _exit_now(status: int) -> None:
    """Leaves at once with ``status``. Used where nothing is worth waiting for: Python's own
    teardown of torch and of a worker thread still inside a model step took ~1 s (a plain rclpy
    node leaves in under 0.2 s), and the middleware's teardown of a half-built node can deadlock
    (Fast DDS, with other participants starting or stopping at the same time: seen on a loaded
    2-core CI machine). Peers drop a node that left this way when its lease runs out."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class CtrlC:
    """The process's SIGINT handler, installed before anything else is imported.

    While the node starts (imports, rclpy.init, parameters, configure's model load and stage
    probe, activate) a Ctrl-C ends the process at once with status 0: nothing has been published
    yet and nothing is worth waiting for (a KeyboardInterrupt there, or an rcl call on the context
    rclpy's handler had just shut down, was a traceback and exit 1 or -2: a failure under launch).

    Once the node spins (:meth:`started`) it does nothing. rclpy.init installs rclpy's handler in
    front of this one: it shuts the context down, which ends spin, and hands each signal on to
    this one. A terminal's Ctrl-C reaches a launched node twice (from the terminal and forwarded
    by launch); Python's default handler would turn the second into a KeyboardInterrupt inside
    the teardown (exit -2)."""

    def __init__(self):
        self.starting = True

    def __call__(self, signum, frame) -> None:
        if self.starting:
            _exit_now(0)

    def started(self) -> None:
        self.starting = False


def main(args: list[str] | None = None) -> int:
    ctrl_c = CtrlC()
    signal.signal(signal.SIGINT, ctrl_c)  # first: rclpy.init finds it and keeps it behind its own
    # Imported only now, for the reason of _PUBLIC: rclpy, torch and the node's modules.
    from deltaworld_ros import node_process

    status = node_process.run(sys.argv[1:] if args is None else list(args), ctrl_c.started)
    _exit_now(status)
    return status  # not reached (kept for callers that patch _exit_now)


if __name__ == "__main__":
    raise SystemExit(main())
