"""Environment for ROS processes: Fast DDS tuned for ~1 MB messages, an isolated domain.

Futures messages are 1-3 MB. With Fast DDS's default transports (shared-memory segments of
~512 KB) one 1 MB message took 13 ms between two processes here; with the LARGE_DATA builtin
transports 2.7 ms. These variables must be set before rclpy.init() in every process involved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

LARGE_DATA = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}


def ros_environment(base: Mapping[str, str] | None = None, domain_id: int | None = None,
                    localhost_only: bool = False) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) with LARGE_DATA transports unless the user chose
    transports or an XML profile already; ``domain_id`` and ``localhost_only`` isolate test runs."""
    env = dict(os.environ if base is None else base)
    env.setdefault("RMW_IMPLEMENTATION", LARGE_DATA["RMW_IMPLEMENTATION"])
    if not any(k in env for k in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
                                   "FASTRTPS_DEFAULT_PROFILES_FILE")):
        env["FASTDDS_BUILTIN_TRANSPORTS"] = LARGE_DATA["FASTDDS_BUILTIN_TRANSPORTS"]
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    if localhost_only:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def apply_ros_environment(**kwargs) -> dict[str, str]:
    """Applies :func:`ros_environment` to this process (call before rclpy.init())."""
    env = ros_environment(**kwargs)
    os.environ.update(env)
    return env
