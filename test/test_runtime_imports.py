"""The runtime (``Forecaster``, the node's camera conversion) imports no training data code:
recording readers, data sets, the synthetic world and augmentations stay out of a robot's process.
And the library's modules import each other without a cycle, at the top of each file: an import
inside a function loads an optional third-party package only when it is needed, never one of our
own modules (that is how a cycle hides)."""

from __future__ import annotations

import ast
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


PACKAGES = ("deltaworld_core", "deltaworld_ros")
# Imports of our own modules inside a function, each for a reason that is not a cycle.
DEFERRED_OWN_IMPORTS = {
    # PEP 562: `from deltaworld_core import ModelConfig` stays light, Forecaster loads the models
    ("deltaworld_core/__init__.py", "deltaworld_core.forecaster"),
    # under `python -m` the file runs as __main__: the imported module's classes are the readers'
    ("deltaworld_core/data/media.py", "deltaworld_core.data.media"),
}


def _modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the two packages under ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                name = ".".join(path.relative_to(root).with_suffix("").parts)
                found[name.removesuffix(".__init__")] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict) -> list[str]:
    """The modules of ours that one import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    return [n for n in names if n in known]


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module -> the modules of ours it imports at load time, [(file, module, line)] of our
    modules imported inside a function)."""
    known = _modules(root)
    graph: dict[str, set[str]] = {}
    deferred = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        graph[module] = set()
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, is_package, known):
                if id(node) in inside and (path.relative_to(root).as_posix(), target, node.lineno) not in deferred:
                    deferred.append((path.relative_to(root).as_posix(), target, node.lineno))
                elif target != module:
                    graph[module].add(target)
    return graph, deferred


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle of ``graph`` (its strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_and_no_own_module_imported_inside_a_function():
    graph, deferred = import_graph(REPO)
    assert len(graph) > 50 and graph["deltaworld_core.forecaster"], "the import graph was not read"
    assert cycles(graph) == []
    # the library only: the ROS tools defer rclpy, torch and the model until after argument parsing
    # and their Ctrl-C handler (start-up speed), none of them to break a cycle (checked above)
    library = [d for d in deferred if d[0].startswith("deltaworld_core/")]
    assert [d for d in library if d[:2] not in DEFERRED_OWN_IMPORTS] == []


def test_a_planted_cycle_and_a_planted_deferred_import_fail(tmp_path):
    core = tmp_path / "deltaworld_core"
    (core / "data").mkdir(parents=True)
    (tmp_path / "deltaworld_ros").mkdir()
    (core / "__init__.py").write_text("")
    (core / "data" / "__init__.py").write_text("")
    (core / "forecaster.py").write_text("from .data.media import read\n")
    (core / "data" / "media.py").write_text("from .. import forecaster\n\n\ndef read():\n    from ..runner import run\n")
    (core / "runner.py").write_text("import deltaworld_core.forecaster\n")
    graph, deferred = import_graph(tmp_path)
    assert cycles(graph) == [["deltaworld_core.data.media", "deltaworld_core.forecaster"]]
    assert deferred == [("deltaworld_core/data/media.py", "deltaworld_core.runner", 5)]


def unexplained_deferred_imports(root: Path) -> list[str]:
    """``file:line`` of each import inside a function of the library with no comment on its line or
    the two above it (the reason it waits: an optional or heavy package, a ``python -m`` quirk)."""
    found = []
    for path in sorted((root / "deltaworld_core").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not any(
                        "#" in line for line in lines[max(0, node.lineno - 3):node.lineno]):
                    entry = f"{path.relative_to(root).as_posix()}:{node.lineno}"
                    if entry not in found:
                        found.append(entry)
    return found


def test_every_import_inside_a_library_function_says_why():
    assert unexplained_deferred_imports(REPO) == []


def test_a_planted_unexplained_deferred_import_fails(tmp_path):
    module = tmp_path / "deltaworld_core" / "vfm.py"
    module.parent.mkdir()
    module.write_text("def build():\n    import onnxruntime  # optional: only this backend needs it\n")
    assert unexplained_deferred_imports(tmp_path) == []
    module.write_text(module.read_text() + "\n\n\n\ndef export():\n    import onnx\n")
    assert unexplained_deferred_imports(tmp_path) == ["deltaworld_core/vfm.py:8"]
