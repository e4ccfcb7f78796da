"""The planner-facing outputs: what each adds to a forecast in milliseconds and bytes
(scripts/bench_planner_outputs.py, results/planner_outputs*.json)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import fmt, provenance, result_files, table
from .registry import renderer

# output key in the JSON -> what the table calls it
OUTPUTS = {"step_images": "`deltaworld/step_<n>/*` (all four kinds, every step)",
           "obstacles": "`deltaworld/obstacles`", "risk_grid": "`deltaworld/risk_grid`",
           "futures_camera_info": "`camera_info` in every Futures (always)"}


def _detail(key: str, output: dict) -> str:
    if "points" in output:
        return f"{fmt(output['points'])} points"
    if "cells" in output:
        return f"{fmt(output['cells'])} cells"
    return f"{fmt(output.get('messages'))} messages" if key == "step_images" else ""


@renderer("planner_outputs")
def render_planner_outputs(results: Path) -> str:
    """Per config size: ms (publish + serialise, median) and bytes each planner output adds to one
    forecast, beside the Futures message itself."""
    rows, notes = [], []
    for path in result_files(results, "planner_outputs*.json"):
        d = json.loads(path.read_text())
        for r in d["rows"]:
            canvas, frame = r["canvas"], r["frame"]
            size = (f"`{r['config']}`: {frame[1]} x {frame[0]} camera, {r['geometry']} maps {canvas[1]} x "
                    f"{canvas[0]}, {r['published_k']} of K {r['k']} published, {r['horizon']} steps")
            rows.append([size, "Futures (for comparison)", fmt(r["futures"]["ms"], 2), fmt(r["futures"]["bytes"]), ""])
            for key, label in OUTPUTS.items():
                output = r["outputs"].get(key)
                if output is not None:
                    rows.append(["", label, fmt(output["ms"], 2), fmt(output["bytes"]), _detail(key, output)])
        parameters = ", ".join(f"`{k}` {v}" for k, v in d.get("parameters", {}).items())
        notes.append(f"- `{path.name}` ({d.get('cpu', '?')}, {d.get('repeats')} repeats; {parameters}): "
                     f"{provenance(d, results, path.name)}")
    if not rows:
        return ""
    return table(["sizes", "output", "ms per forecast", "bytes per forecast", "what"], rows) + "\n\n" + "\n".join(notes)
