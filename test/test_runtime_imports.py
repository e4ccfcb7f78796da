"""The runtime (``Forecaster``, the node's camera conversion) imports no training data code:
recording readers, data sets, the synthetic world and augmentations stay out of a robot's process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def loaded_modules(code: str) -> list[str]:
    """The ``deltaworld_core`` modules (and torch, as a flag) a fresh interpreter holds after ``code``."""
    probe = (code + "\nimport json, sys\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('deltaworld_core', 'torch')))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_forecaster_import_loads_no_data_module():
    modules = loaded_modules("from deltaworld_core import Forecaster")
    assert [m for m in modules if m.startswith("deltaworld_core.data")] == []
    assert "deltaworld_core.forecaster" in modules


def test_camera_conversion_loads_neither_data_code_nor_torch():
    """What the node's first camera frame imports: the image conversion, not the training stack."""
    pytest.importorskip("rclpy")
    modules = loaded_modules(
        "import cv2, numpy as np\n"
        "from sensor_msgs.msg import CompressedImage\n"
        "from deltaworld_ros.image_conversion import array_to_image_msg, msg_to_rgb\n"
        "jpeg = cv2.imencode('.jpg', np.zeros((48, 64, 3), np.uint8))[1].tobytes()\n"
        "assert msg_to_rgb(CompressedImage(format='jpeg', data=jpeg)).shape == (48, 64, 3)\n"
        "assert msg_to_rgb(array_to_image_msg(np.zeros((48, 64, 3), np.uint8), 'bgr8')).shape == (48, 64, 3)")
    assert [m for m in modules if m.startswith("deltaworld_core.data") or m == "torch"] == []
    assert "deltaworld_core.imaging.pixels" in modules


def test_node_modules_load_no_training_evaluation_or_data_code():
    """Everything the forecast node imports up to its first forecast (its modules, the forecaster,
    the frame runner and the stage probe): no recording readers, training or evaluation rooms."""
    pytest.importorskip("rclpy")
    modules = loaded_modules(
        "from deltaworld_ros.forecast_node import ForecastNode\n"
        "import deltaworld_ros.node_camera, deltaworld_ros.node_outputs, deltaworld_ros.node_diagnostics\n"
        "from deltaworld_core import Forecaster\n"
        "import deltaworld_core.runner, deltaworld_core.stages")
    rooms = ("deltaworld_core.data", "deltaworld_core.training", "deltaworld_core.evaluation", "deltaworld_core.teachers")
    assert [m for m in modules if m.startswith(rooms)] == []
    assert {"deltaworld_core.runner", "deltaworld_core.forecaster", "deltaworld_core.imaging"} <= set(modules)
