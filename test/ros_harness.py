"""What the node tests on real DDS share (test_ros_node.py, test_hostile_ros.py): the node in its
own process, a harness that publishes camera frames and collects what the node sends back, and
the tiny random-weight model both use. Imported only after the tests' ``importorskip("rclpy")``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from deltaworld_ros.futures_msg import seconds_to_time, time_to_ns
from deltaworld_ros.image_conversion import array_to_image_msg
from deltaworld_ros.ros_env import stop_process

REPO = Path(__file__).resolve().parents[1]
# A tiny model on random weights: fast enough for a CPU test, every stage of the real Forecaster.
TINY = {
    "weights": None,  # the architecture differs from the shipped default weights
    "forecast.quantize": "none",
    "vfm.weights": "random", "vfm.backend": "torch", "vfm.embed_dim": 48, "vfm.depth": 1, "vfm.num_heads": 2,
    "vfm.image_size": [56, 112],
    "tokenizer.dim": 32, "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "tokenizer.num_heads": 2,
    "tokenizer.mlp_hidden": 64, "tokenizer.layerscale_init": 0.1, "world.dim": 32, "world.depth": 1,
    "world.num_heads": 2, "world.layerscale_init": 0.1, "world.noise_std": 1.0, "heads.depth_bins": 16,
    "forecast.context": 3,
}
CONTEXT = TINY["forecast.context"]
_FRAMES = np.random.default_rng(13)


def write_model_config(path: Path, overrides: dict) -> Path:
    """The default config with ``overrides``, written as a complete model YAML for the node."""
    from deltaworld_core import load_config

    path.write_text(yaml.safe_dump(json.loads(json.dumps(load_config("default", overrides).to_dict()))))
    return path


def smooth_frame(h: int = 60, w: int = 80) -> np.ndarray:
    """A random but smooth RGB frame (compresses like a camera image, not like noise)."""
    return cv2.resize(_FRAMES.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


class NodeProcess:
    """``python -m deltaworld_ros.forecast_node`` in its own process, with a params file."""

    def __init__(self, tmp_path: Path, env: dict, name: str = "node", cwd: Path = REPO, ros_args: tuple = (),
                 own_session: bool = False, **params):
        """``params`` go to a params file; ``ros_args`` (e.g. ``("-r", "__ns:=/robot1")``) follow it;
        ``own_session`` starts the node in a process group of its own, as a terminal would (a
        terminal's Ctrl-C reaches the whole group)."""
        params_file = tmp_path / f"{name}_params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args", "--params-file", str(params_file),
             *ros_args], cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=own_session)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """VmRSS: the resident memory now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc")

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the node ever had."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc")

    def stop(self) -> int:
        code = stop_process(self.proc)
        self._log.close()
        return code


class Harness:
    """Publishes camera frames; collects Futures (``futures``, with ``received_at``: time.time() of
    each), debug images and diagnostics, spinning in a thread."""

    def __init__(self, node, compressed: bool = False, reliable_camera: bool = False):
        from deltaworld_ros.msg import Futures

        self.node = node
        topic, msg_type = ("/camera/image_raw/compressed", CompressedImage) if compressed else ("/camera/image_raw", Image)
        self.camera_topic = topic
        self.camera = node.create_publisher(msg_type, topic, self._camera_qos(reliable_camera))
        self.futures: list = []
        self.received_at: list[float] = []
        self.debug_images: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Futures, "/deltaworld/futures", self._on_futures, reliable)
        node.create_subscription(Image, "/deltaworld/debug_image", self.debug_images.append, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.stamp = time.time()

    @staticmethod
    def _camera_qos(reliable: bool) -> QoSProfile:
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data

    def _on_futures(self, msg) -> None:
        with self._lock:
            self.futures.append(msg)
            self.received_at.append(time.time())

    def count(self) -> int:
        with self._lock:
            return len(self.futures)

    def last_stamp_ns(self) -> int | None:
        """Header stamp of the newest Futures, None before the first."""
        with self._lock:
            return time_to_ns(self.futures[-1].header.stamp) if self.futures else None

    def wait_for(self, predicate, timeout: float, what: str, node: NodeProcess | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if node is not None and not node.alive():
                pytest.fail(f"node exited while waiting for {what}:\n{node.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}" + (f":\n{node.log()}" if node else ""))
            time.sleep(0.02)

    def wait_until_connected(self, node: NodeProcess, timeout: float = 90.0) -> None:
        """The node subscribes to the camera on activate, i.e. after the model has loaded. Waits
        for the camera publisher to be *matched* (compatible QoS), not merely for a subscription
        in the graph: with best_available, a subscription made before the node discovered this
        best-effort camera is reliable until the node re-makes it (within a second)."""
        self.wait_for(lambda: self.camera.get_subscription_count() > 0
                      and self.node.count_publishers("/deltaworld/futures") > 0, timeout, "the node", node)
        time.sleep(0.3)  # let both ends finish matching

    def use_reliable_camera(self) -> dict:
        """Publishes the camera reliably from now on (for tests that count every frame: best-effort
        DDS may lose a ~0.5 MB frame on a loaded machine); returns the node parameter to match."""
        self.camera = self.node.create_publisher(self.camera.msg_type, self.camera_topic, self._camera_qos(True))
        return {"input_reliability": "reliable"}

    def next_header(self, frame_id: str = "camera") -> Header:
        self.stamp += 0.1
        return Header(stamp=seconds_to_time(self.stamp), frame_id=frame_id)

    def good(self, rgb: np.ndarray | None = None) -> Image | CompressedImage:
        """A well-formed camera message of ``rgb`` (a smooth random frame by default), stamped 0.1 s
        after the previous one."""
        rgb = smooth_frame() if rgb is None else rgb
        if self.camera.msg_type is CompressedImage:
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            return CompressedImage(header=self.next_header(), format="jpeg", data=encoded.tobytes())
        return array_to_image_msg(rgb, "rgb8", self.next_header())

    def send(self, rgb: np.ndarray, stamp: float, frame_id: str = "camera") -> None:
        self.camera.publish(array_to_image_msg(rgb, "rgb8", Header(stamp=seconds_to_time(stamp), frame_id=frame_id)))

    def send_raw(self, msg) -> None:
        self.camera.publish(msg)

    def send_until_forecast(self, node: NodeProcess | None, max_frames: int, make=None, wait: float = 1.0) -> int:
        """Sends good frames one at a time, each waiting up to ``wait`` s for its own forecast,
        until one is forecast; returns how many it took."""
        for n in range(1, max_frames + 1):
            before = self.count()
            msg = self.good() if make is None else make()
            self.camera.publish(msg)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not any(
                    time_to_ns(f.header.stamp) == time_to_ns(msg.header.stamp) for f in self.futures[before:]):
                time.sleep(0.01)
            if any(time_to_ns(f.header.stamp) == time_to_ns(msg.header.stamp) for f in self.futures[before:]):
                return n
        pytest.fail(f"no forecast after {max_frames} good frames" + (f":\n{node.log()}" if node else ""))

    def statuses(self) -> list[DiagnosticStatus]:
        return [s for array in list(self.diagnostics) for s in array.status if "forecast_node" in s.name]

    def values(self) -> dict[str, str]:
        """The key/values of the node's latest diagnostics status."""
        statuses = self.statuses()
        assert statuses, "no diagnostics from forecast_node"
        return {kv.key: kv.value for kv in statuses[-1].values}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
