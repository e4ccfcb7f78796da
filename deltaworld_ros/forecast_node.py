"""forecast_node: camera images in, K futures of semantics and depth out (deltaworld_ros/Futures).

A managed (lifecycle) node: configure loads the model (slow), activate subscribes to the camera
and starts forecasting; with ``autostart`` (default) it drives both transitions itself so that a
plain ``ros2 run`` / launch just works. Only the newest frame is ever run: a frame still waiting
for the model when a newer one arrives is dropped, so latency stays within about two model steps
however fast frames arrive (deltaworld_core.runner, the same frame runner the benchmarks measure).

Run: ``python -m deltaworld_ros.forecast_node --ros-args --params-file config/forecast.yaml``
or ``ros2 run deltaworld_ros forecast_node --ros-args ...``.

This module is the entry point (command line, start-up, exit); the node is
:class:`deltaworld_ros.node_lifecycle.ForecastNode`, its parts are node_parameters, node_camera,
node_outputs and node_diagnostics.
"""

from __future__ import annotations

import os
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn

from deltaworld_ros.image_conversion import cut
from deltaworld_ros.node_lifecycle import ForecastNode, resolve_device  # noqa: F401 - the node's public names
from deltaworld_ros.node_parameters import PARAMETERS, ParameterError, parameter_problem  # noqa: F401


def usage() -> str:
    """``forecast_node --help``: how to run it and every parameter with its default."""
    lines = [__doc__.strip().splitlines()[0], "",
             "usage: forecast_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r __ns:=/NAMESPACE] ...]",
             "", "parameters (NAME (default): description):"]
    lines += [f"  {name} ({default!r}): {description}" for name, (default, description) in PARAMETERS.items()]
    lines += ["", "A parameter out of range is one line and exit status 2; a failed configure exits 1."]
    return "\n".join(lines)


def command_line_problem(argv: list[str]) -> str | None:
    """Why the command line cannot start a node (a params file that is not a readable file,
    an unknown argument), or None. Checked before rcl sees the arguments: rcl's own report of a
    missing params file is a multi-line traceback, and launch_ros only warns about one."""
    ros_args, index = False, 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--ros-args":
            ros_args = True
        elif arg == "--" and ros_args:
            ros_args = False
        elif ros_args and arg == "--params-file":
            if index + 1 >= len(argv):
                return "--params-file needs a file name"
            path = argv[index + 1]
            if not os.path.isfile(path):
                return f"params file {cut(path, 300)} does not exist (or is not a file)"
            if not os.access(path, os.R_OK):
                return f"params file {cut(path, 300)} is not readable"
            index += 1
        elif not ros_args:
            return f"unknown argument {cut(arg)} (node options go after --ros-args; see --help)"
        index += 1
    return None


def _exit_now(status: int) -> None:
    """Leaves at once with ``status``. Used where nothing is worth waiting for: Python's own
    teardown of torch and of a worker thread still inside a model step took ~1 s (a plain rclpy
    node leaves in under 0.2 s), and the middleware's teardown of a half-built node can deadlock
    (Fast DDS, with other participants starting or stopping at the same time: seen on a loaded
    2-core CI machine). Peers drop a node that left this way when its lease runs out."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    user_args = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in user_args or "--help" in user_args:
        print(usage())
        return 0
    problem = command_line_problem(argv)
    if problem:
        print(f"forecast_node: {problem}", file=sys.stderr)
        return 2
    # A terminal's Ctrl-C reaches the node twice: from the terminal (the whole process group) and
    # from ros2 launch, which forwards it. rclpy's handler takes the first (it shuts the context
    # down, which ends spin) and hands each signal on to the handler it found; with Python's
    # default there, the second became a KeyboardInterrupt inside the teardown and the process
    # died by SIGINT (exit -2). This handler, found by rclpy and restored after it, ignores them.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    rclpy.init(args=["forecast_node", *argv])
    try:
        node = ForecastNode()
    except ParameterError as err:  # one line a user can act on, not a traceback
        rclpy.logging.get_logger("forecast_node").fatal(str(err))
        _exit_now(2)
    status = 0
    try:
        if node.param("autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (the cause is logged above)")
                status = 1
            else:
                node.trigger_activate()
        if status == 0:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # Ctrl-C shuts the context down from rclpy's signal handler; a spin caught between its
        # checks then fails to build its wait set (RCLError "context is not valid") instead of
        # raising ExternalShutdownException: the same clean shutdown. With the context still up
        # the error is real and propagates.
        if rclpy.ok():
            raise
    finally:
        # Stop taking frames and tell the worker to stop, but never wait for a model step: the
        # forecast it would produce has nobody to go to.
        node.stop_quickly()
        rclpy.try_shutdown()
    _exit_now(status)
    return status  # not reached (kept for callers that patch _exit_now)


if __name__ == "__main__":
    raise SystemExit(main())
