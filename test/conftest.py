"""Shared fixtures for the ROS tests (test_ros_*.py); nothing here runs for other tests."""

from __future__ import annotations

import functools
import os

import pytest

from deltaworld_ros.ros_env import stop_process as _stop_process

# A test's teardown waits 10 s for SIGINT before SIGKILL
stop_process = functools.partial(_stop_process, timeout=10.0)


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
