"""Tables read from the code, not from results: config value ranges, the node's parameters (read
with ast from its source, so neither rclpy nor a build is needed) and the module list."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from .common import REPO, table, tracked_paths
from .registry import renderer


@renderer("config_ranges")
def render_config_ranges(results: Path) -> str:
    """The accepted range of every numeric config key, from deltaworld_core.config.numeric_ranges()
    (code, not results: the table cannot drift from the checks)."""
    sys.path.insert(0, str(REPO))
    from deltaworld_core.config import numeric_ranges

    items = list(numeric_ranges().items())
    per_row = 4
    rows = []
    for i in range(0, len(items), per_row):
        row = []
        for key, interval in items[i:i + per_row]:
            row += [f"`{key}`", f"`{interval}`"]
        rows.append(row + ["", ""] * (per_row - len(items[i:i + per_row])))
    return table(["key", "range"] * per_row, rows)


def _node_source_constants(repo: Path) -> dict[str, object]:
    """Literal constants (dicts, sets, frozenset({...})) of the node's parameter module(s), read with
    ast: neither rclpy nor a build is needed, and the tables follow the node's source."""
    found: dict[str, object] = {}
    for name in ("forecast_node.py", "node_parameters.py"):  # the later file wins
        path = repo / "deltaworld_ros" / name
        if not path.is_file():
            continue
        for node in ast.parse(path.read_text()).body:
            target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
            if not (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name)):
                continue
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "frozenset" and value.args:
                value = value.args[0]
            try:
                found[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return found


def node_parameters(repo: Path = REPO) -> dict[str, tuple[object, str]]:
    """forecast_node's PARAMETERS (name -> (default, description))."""
    constants = _node_source_constants(repo)
    if "PARAMETERS" not in constants:
        raise KeyError("PARAMETERS not found in deltaworld_ros/node_parameters.py or forecast_node.py")
    return constants["PARAMETERS"]


def _default(value) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{value}`"


@renderer("node_parameters")
def render_node_parameters(results: Path) -> str:
    """Every forecast_node parameter with its default and description, from the node's source."""
    repo = results.parent if (results.parent / "deltaworld_ros").is_dir() else REPO
    constants = _node_source_constants(repo)
    effects = [("START_ONLY", "refused: start-up only"), ("RECONFIGURE", "at the next configure"),
               ("RESUBSCRIBE", "at once (the camera subscription is remade)")]
    known = [(constants[key], text) for key, text in effects if key in constants]

    def effect(name: str) -> str:
        return next((text for names, text in known if name in names), "at once")

    rows = [[f"`{name}`", _default(default), *([effect(name)] if known else []), description]
            for name, (default, description) in node_parameters(repo).items()]
    return table(["parameter", "default", *(["on `ros2 param set`"] if known else []), "what it does"], rows)


# The README's short list: name -> what people change it for (defaults come from the node).
README_PARAMETERS = {
    "image_topic": "the camera",
    "use_compressed": "subscribe to `<image_topic>/compressed` (JPEG/PNG) instead",
    "input_reliability": "camera QoS: `best_available`, `best_effort` or `reliable`",
    "futures_topic": "the output",
    "model_config": "a config name (`default`, `paper`) or a YAML path",
    "weights": "a folder of `.safetensors` (e.g. the converted released weights); empty: the config's",
    "device": "`auto` (CUDA if torch sees a GPU), `cpu`, `cuda`, `cuda:N`",
    "threads": "CPU threads of the model; 0 = half the cores, 1 to 4; with 2 or more on a CPU one stage or two, whichever is measured faster",
    "k": "futures per forecast (0 = the config's, 8 in `default`)",
    "publish_debug_image": "publish the picture above for `rqt_image_view` / RViz",
}


@renderer("readme_parameters")
def render_readme_parameters(results: Path) -> str:
    """The ten parameters people change, defaults read from the node's source."""
    params = node_parameters(results.parent if (results.parent / "deltaworld_ros").is_dir() else REPO)
    rows = [[f"`{name}`", _default(params[name][0]), text] for name, text in README_PARAMETERS.items() if name in params]
    return table(["parameter", "default", "what it does"], rows)


def _summary(path: Path) -> str:
    """A module's first docstring sentence (its first paragraph up to the first full stop)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.search(r"^(.*?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).replace("|", "\\|")


@renderer("modules")
def render_modules(results: Path) -> str:
    """Every Python module of the two packages with the first sentence of its docstring (the
    docstrings are the library's reference; this table only points at them). A sub-package (a
    room: ``data``, ``data.rosbag``, ``imaging``, ``evaluation`` ...) is listed by its
    ``__init__`` docstring just above its modules; a ``__main__`` (only ``python -m`` wiring) is not."""
    repo = results.parent if (results.parent / "deltaworld_core").is_dir() else REPO
    rows = []
    tracked = tracked_paths(repo)
    for package in ("deltaworld_core", "deltaworld_ros"):
        # sorted by dotted name, so that a package's own row comes before its modules
        for path in sorted((repo / package).rglob("*.py"), key=lambda p: p.with_suffix("").parts):
            rel = path.relative_to(repo).as_posix()
            if (tracked is not None and rel not in tracked) or "/weights/" in rel or path.name == "__main__.py":
                continue
            module = rel[:-3].replace("/", ".").removesuffix(".__init__")
            link = f"[`{module}`](../{rel})"
            if path.name == "__init__.py" and path.parent.name != package:
                link = f"**{link}**"
            rows.append([link, _summary(path) or "-"])
    return table(["module", "what it is (its docstring says more)"], rows)




FUTURES_MESSAGES = ("Futures", "Hypothesis", "HorizonSummary")


@renderer("futures_msg")
def render_futures_msg(results: Path) -> str:
    """The Futures message and the two it nests, field by field, from msg/*.msg (the files colcon
    and the venv build from: the page cannot drift from the interface)."""
    repo = results.parent if (results.parent / "msg").is_dir() else REPO
    lines = []
    for name in FUTURES_MESSAGES:
        fields = (repo / "msg" / f"{name}.msg").read_text().splitlines()
        while fields and (not fields[0].strip() or fields[0].startswith("#")):  # the file's own heading
            fields.pop(0)
        lines += [f"# deltaworld_ros/{name}", *(f for f in fields if f.strip())]
    return "```\n" + "\n".join(lines) + "\n```"
