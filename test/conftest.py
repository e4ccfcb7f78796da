"""Shared fixtures for the ROS tests (test_ros_*.py); nothing here runs for other tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ros_env():
    """Isolates this test run on its own DDS domain (derived from the pid, so parallel runs of
    other engineers do not cross-talk) with LARGE_DATA Fast DDS transports, as in production.
    Applied to this process before rclpy.init() and handed to child processes."""
    pytest.importorskip("rclpy")
    from deltaworld_ros.ros_env import ros_environment

    env = ros_environment(domain_id=1 + os.getpid() % 200, localhost_only=False)
    saved = dict(os.environ)
    os.environ.update(env)
    yield env
    os.environ.clear()
    os.environ.update(saved)


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
