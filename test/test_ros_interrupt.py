"""Ctrl-C while forecast_node starts (rclpy.init, declaring parameters, loading the model, the
stage choice, activation) ends it cleanly: exit status 0, no traceback, nothing logged as fatal,
so that launch reports a clean shutdown. On real DDS, the node in its own process."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")

from ros_harness import TINY, NodeProcess, write_model_config  # noqa: E402


def test_sigint_at_any_moment_of_start_up_is_a_clean_exit(tmp_path, ros_env):
    """A slow start-up (the stage choice measures both modes of a 2-thread budget on the shipped
    default model), interrupted at spread moments from just after exec to after activation."""
    config = write_model_config(tmp_path / "probe.yaml", {**TINY, "vfm.depth": 4, "vfm.embed_dim": 192,
                                                            "vfm.num_heads": 4, "vfm.image_size": [224, 224]})
    base = int(ros_env["ROS_DOMAIN_ID"])
    problems = []
    for i, delay in enumerate((0.3, 1.5, 3.0, 4.5, 6.0)):
        env = dict(ros_env, ROS_DOMAIN_ID=str((base + 60 + i) % 200 + 1))
        node = NodeProcess(tmp_path, env, name=f"node{i}", model_config=str(config), threads=2)
        time.sleep(delay)
        node.proc.send_signal(signal.SIGINT)
        try:
            code = node.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            code = "no exit within 60 s"
        node._log.close()
        log = node.log()
        if code != 0 or "Traceback" in log or "FATAL" in log or "Error" in log:
            problems.append(f"SIGINT after {delay} s: exit {code}:\n{log[-1500:]}")
    assert not problems, "\n".join(problems)
