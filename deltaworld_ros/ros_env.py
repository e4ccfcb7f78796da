"""Environment of ROS processes: the ROS 2 defaults, an opt-in faster transport, test isolation.

The node, replay and demo run on whatever DDS set-up their environment gives them, by default
Fast DDS's builtin transports (UDP + shared memory), exactly like an ordinary ROS 2 node: a camera
driver or a planner started with no special environment variables must exchange messages with
them. Fast DDS's LARGE_DATA builtin transports move ~1 MB messages faster between processes
(13 ms -> 2.7 ms for 1 MB here) but a participant using them and one on the defaults did not
exchange data (measured: 1,804 camera frames sent, 0 Futures received), so LARGE_DATA is an
opt-in for a whole system: every process gets ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (or
``FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_data.xml``), never one process alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping

LARGE_DATA = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
# Variables that change which DDS participants can talk to each other.
TRANSPORT_VARIABLES = ("RMW_IMPLEMENTATION", "FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
                       "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY",
                       "ROS_STATIC_PEERS", "ROS_DOMAIN_ID")


def ros_environment(base: Mapping[str, str] | None = None, domain_id: int | None = None,
                    localhost_only: bool = False, large_data: bool = False,
                    defaults: bool = False) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) for a ROS process.

    ``defaults`` drops every variable in :data:`TRANSPORT_VARIABLES` first (the ROS 2 defaults,
    whatever the calling shell set); ``domain_id`` and ``localhost_only`` isolate a test run;
    ``large_data`` opts into LARGE_DATA transports unless transports or an XML profile are chosen
    already (give it to every process of the system or to none)."""
    env = dict(os.environ if base is None else base)
    if defaults:
        for name in TRANSPORT_VARIABLES:
            env.pop(name, None)
    if large_data and not any(k in env for k in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
                                                   "FASTRTPS_DEFAULT_PROFILES_FILE")):
        env.update(LARGE_DATA)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    if localhost_only:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """Stops a child ROS process whatever state it is in: SIGINT first (its Ctrl-C: a node shuts
    down cleanly, no half-written log), SIGKILL if it has not exited within ``timeout`` s (a child
    stuck in rcl_wait ignores gentler signals on a loaded machine). Returns its exit code; never hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode
