"""Whether a path can be a node's params file, checked before rcl or launch_ros reads it.

Shared by forecast_node's command line (node_process) and the launch file, each of which names
the file its own way (``--params-file`` / the ``params_file`` launch argument). Standard library
only: the launch file imports it without rclpy or the model.
"""

from __future__ import annotations

import os


def params_file_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a params file, to follow its name ("does not exist (or is
    not a file)", "is not readable"), or None when it can be read."""
    if not os.path.isfile(path):
        return "does not exist (or is not a file)"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None
