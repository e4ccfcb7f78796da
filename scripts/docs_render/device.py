"""Results of the device (GPU) checks: planning tables by K and input size, FLOPs per stage, the
node's loop on a GPU, training throughput and the ``cuda`` tests (scripts/device_check.sh)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import STAGES, fmt, load, machine, provenance, result_files, table, table_files
from .registry import renderer


@renderer("device_table")
def render_device_table(results: Path) -> str:
    """The planning tables of scripts/bench_table.py (results/device_table*.json, or table*.json on a
    CPU): ms and Hz per stage, GFLOP and peak memory for each K and input size."""
    blocks = []
    for path in table_files(results, "total_ms"):
        d = json.loads(path.read_text())
        rows = []
        for r in d.get("table", []):
            stage_ms = r.get("stage_ms", {})
            gflop = r.get("gflop", {})
            memory = r.get("peak_gpu_mb") if r.get("peak_gpu_mb") is not None else r.get("peak_rss_mb")
            rows.append([fmt(r.get("k")), fmt(r.get("input_px")), *(fmt(stage_ms.get(s), 1) for s in STAGES),
                         f"**{fmt(r.get('total_ms'), 1)}**", fmt(r.get("total_hz"), 1),
                         fmt(gflop.get("total"), 0), fmt(memory, 0)])
        overrides = " ".join(f"{k}={v}" for k, v in (d.get("overrides") or {}).items())
        cell = (d.get("cells") or [{}])[0]
        blocks.append(
            f"`{path.name}`: config `{d.get('config', '?')}` on {d.get('device_name') or d.get('device', '?')}"
            + (f", overrides `{overrides}`" if overrides else "") + f", {d.get('steps', '?')} steps a cell; "
            f"{machine(cell) if cell else '?'}; {provenance(d, results, path.name)}.\n\n"
            + table(["K", "input px", *STAGES, "total ms", "forecasts/s", "GFLOP", "peak MB"], rows))
    return "\n\n".join(blocks) if blocks else ""


@renderer("flops_table")
def render_flops_table(results: Path) -> str:
    """FLOPs per stage by K and input size (results/flops_*.json): what a forecast costs on any GPU."""
    blocks = []
    for path in [p for p in table_files(results, "gflop") if p not in table_files(results, "total_ms")]:
        d = json.loads(path.read_text())
        rows = [[fmt(r.get("k")), fmt(r.get("input_px")), *(fmt(r["gflop"].get(s), 1) for s in STAGES),
                 f"**{fmt(r['gflop'].get('total'), 1)}**"] for r in d.get("table", [])]
        overrides = " ".join(f"{k}={v}" for k, v in (d.get("overrides") or {}).items())
        blocks.append(f"`{path.name}`: config `{d.get('config', '?')}`" + (f", `{overrides}`" if overrides else "")
                      + f"; counted by {d.get('counted_by', '?')}; {provenance(d, results, path.name)}.\n\n"
                      + table(["K", "input px", *(f"{s} GFLOP" for s in STAGES), "total GFLOP"], rows))
    return "\n\n".join(blocks) if blocks else ""



@renderer("device_node")
def render_device_node(results: Path) -> str:
    """The node's loop on a GPU (results/device_node*.json)."""
    rows = []
    for path in result_files(results, "device_node*.json"):
        d = json.loads(path.read_text())
        rows.append([f"`{path.name}`", d.get("clip", "?"), fmt(d.get("device")), fmt(d.get("duration_s"), 0),
                     fmt(d.get("frames_in")), fmt(d.get("forecasts")), fmt(d.get("forecasts_per_s"), 1),
                     fmt(d.get("frames_dropped")), fmt(d.get("latency_ms_median"), 1),
                     "ROS 2" if d.get("ros") else "streaming loop without rclpy"])
    if not rows:
        return ""
    return table(["result", "clip", "device", "s", "frames in", "forecasts", "forecasts/s", "dropped",
                  "median latency ms", "path"], rows)



@renderer("device_train")
def render_device_train(results: Path) -> str:
    """Training throughput on a GPU (results/device_train*.json)."""
    rows, notes = [], []
    for path in result_files(results, "device_train*.json"):
        d = json.loads(path.read_text())
        for stage, s in d.get("stages", {}).items():
            rows.append([f"`{path.name}`", d.get("gpu", "?"), stage, fmt(s.get("batch_size", "-")),
                         fmt(s.get("amp", "-")), fmt(s.get("compile", "-")), fmt(s.get("steps")),
                         f"**{fmt(s.get('steps_per_s_median'), 1)}**"])
        what = d.get("what") or d.get("data") or ""
        notes.append(f"- `{path.name}`: {what}; {provenance(d, results, path.name)}")
    if not rows:
        return ""
    return table(["result", "GPU", "stage", "batch", "amp", "compile", "steps timed", "steps/s"], rows) \
        + "\n\n" + "\n".join(notes)


@renderer("device_tests")
def render_device_tests(results: Path) -> str:
    d = load(results, "device_tests.json")
    return (f"`results/device_tests.json`: the `cuda` tests, {fmt(d.get('passed'))} passed, "
            f"{fmt(d.get('deselected'))} deselected, exit status {d.get('exit_status')}.")


