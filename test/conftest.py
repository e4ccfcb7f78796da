"""Shared fixtures for the ROS tests (test_ros_*.py); nothing here runs for other tests."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stops a child process whatever state it is in: SIGINT (a ROS node's Ctrl-C), then SIGKILL
    if it has not exited within ``timeout`` s (a child stuck in rcl_wait ignores gentler signals
    on a loaded machine). Returns its exit code; never hangs a test's teardown."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def ros_test_domain_id() -> int:
    """This test run's ROS_DOMAIN_ID (1-200, from the pid)."""
    return 1 + os.getpid() % 200


@pytest.fixture(scope="session")
def ros_env():
    """Isolates this test run on its own DDS domain (derived from the pid, so parallel runs of
    other engineers do not cross-talk) on the ROS 2 defaults, as shipped: no transport variables,
    whatever the calling shell set. Applied to this process before rclpy.init() and handed to
    child processes."""
    pytest.importorskip("rclpy")
    from deltaworld_ros.ros_env import ros_environment

    env = ros_environment(domain_id=ros_test_domain_id(), defaults=True)
    saved = dict(os.environ)
    os.environ.update(env)
    yield env
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def harness(ros_node):
    """A camera publisher and Futures/diagnostics collector on ``ros_node`` (test/ros_harness.py)."""
    from ros_harness import Harness

    harness = Harness(ros_node)
    yield harness
    harness.close()


@pytest.fixture
def ros_node(ros_env, request):
    """An rclpy context and node in this process (publisher/subscriber side of a test)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_{request.node.name[:40].replace('[', '_').replace(']', '_').replace('-', '_')}",
                             context=context)
    yield node
    node.destroy_node()
    context.try_shutdown()
