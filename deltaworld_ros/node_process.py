"""forecast_node as a process: its command line, start-up, spin and the way out.

:func:`run` is what ``forecast_node``'s main runs once its Ctrl-C handler is installed
(deltaworld_ros.forecast_node): it checks the command line, starts rclpy and the node, drives
autostart's configure and activate, spins, and returns the exit status.
"""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn

from deltaworld_ros.image_conversion import cut
from deltaworld_ros.node_lifecycle import ForecastNode
from deltaworld_ros.node_parameters import PARAMETERS, ParameterError
from deltaworld_ros.params_file import params_file_problem

SUMMARY = "forecast_node: camera images in, K futures of semantics and depth out (deltaworld_ros/Futures)."


def usage() -> str:
    """``forecast_node --help``: how to run it and every parameter with its default."""
    lines = [SUMMARY, "",
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
            problem = params_file_problem(argv[index + 1])
            if problem:
                return f"params file {cut(argv[index + 1], 300)} {problem}"
            index += 1
        elif not ros_args:
            return f"unknown argument {cut(arg)} (node options go after --ros-args; see --help)"
        index += 1
    return None


def run(argv: list[str], started: Callable[[], None]) -> int:
    """Runs the node with command line ``argv`` until the context shuts down; the exit status
    (0: help or a clean shutdown, 1: a failed configure, 2: a bad command line or parameter).
    ``started()`` is called just before spinning: from then on Ctrl-C is rclpy's to handle."""
    user_args = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in user_args or "--help" in user_args:
        print(usage())
        return 0
    problem = command_line_problem(argv)
    if problem:
        print(f"forecast_node: {problem}", file=sys.stderr)
        return 2
    rclpy.init(args=["forecast_node", *argv])
    try:
        node = ForecastNode()
    except ParameterError as err:  # one line a user can act on, not a traceback
        rclpy.logging.get_logger("forecast_node").fatal(str(err))
        return 2  # without rclpy's teardown: see forecast_node._exit_now
    status = 0
    try:
        if node.param("autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (the cause is logged above)")
                status = 1
            else:
                node.trigger_activate()
        if status == 0:
            started()
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
    return status
