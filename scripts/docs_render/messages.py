"""The Futures message: its size per publishing setting (scripts/bench_outputs.py), the heads stage
per setting, and messages through DDS between two processes (scripts/measure_futures_dds.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import fmt, provenance, result_files, steps, table
from .registry import renderer


@renderer("futures_sizes")
def render_futures_sizes(results: Path) -> str:
    """Futures message size per publishing setting, as measured by scripts/bench_outputs.py and
    scripts/measure_futures_dds.py (results/outputs_*.json, futures_dds*.json), one row per setting."""
    rows, seen = [], set()
    for path in result_files(results, "outputs_*.json", "device_outputs*.json", "futures_dds*.json"):
        d = json.loads(path.read_text())
        for r in d.get("rows", []):
            canvas = r.get("canvas") or ["?", "?"]
            k = r.get("published_k", r.get("k"))
            key = (r.get("setting"), tuple(canvas), k, r.get("horizon"))
            mb = r.get("message_mb")
            if key in seen or mb is None:
                continue
            seen.add(key)
            rows.append([f"`{r.get('setting')}`", f"`{path.name}`", f"{canvas[0]} x {canvas[1]}",
                         f"{k} x {r.get('horizon')}", fmt(mb, 1), fmt(mb * 25, 0)])
    if not rows:
        return ""
    return table(["setting", "result", "map h x w", "published K x steps", "MB a message", "MB/s at 25 Hz"], rows)



@renderer("outputs")
def render_outputs(results: Path) -> str:
    """The heads stage and the Futures message per publishing setting (scripts/bench_outputs.py:
    results/outputs_*.json, device_outputs*.json)."""
    blocks = []
    for path in result_files(results, "outputs_*.json", "device_outputs*.json"):
        d = json.loads(path.read_text())
        rows = []
        for r in d.get("rows", []):
            o = r.get("overrides", {})
            canvas = r.get("canvas") or ["?", "?"]
            rows.append([f"`{r.get('setting')}`", fmt(o.get("geometry")), fmt(r.get("views")),
                         f"{canvas[0]} x {canvas[1]}", f"{r.get('published_k')} / {r.get('k')}",
                         fmt(o.get("summary_size") and "x".join(map(str, o["summary_size"]))),
                         fmt(r.get("heads_ms"), 0), fmt(r.get("message_mb"), 1), fmt(r.get("mb_per_s_at_25hz"), 0)])
        frame = d.get("frame") or ["?", "?"]
        blocks.append(
            f"`{path.name}`: {d.get('device_name', d.get('device', '?'))}, {d.get('threads', '?')} threads, "
            f"torch {d.get('torch', '?')}; camera {frame[1]} x {frame[0]}, {d.get('image_size', '?')} px input; "
            f"{provenance(d, results, path.name)}.\n\n"
            + table(["setting", "geometry", "views", "published map", "published / K", "summary size",
                     "heads ms", "message MB", "MB/s at 25 Hz"], rows))
    return "\n\n".join(blocks) if blocks else ""


@renderer("futures_dds")
def render_futures_dds(results: Path) -> str:
    """Futures messages through DDS between two processes per setting (results/futures_dds*.json)."""
    blocks = []
    for path in result_files(results, "futures_dds*.json"):
        d = json.loads(path.read_text())
        rows = []
        for r in d.get("rows", []):
            canvas = r.get("canvas") or ["?", "?"]
            rows.append([f"`{r.get('setting')}`", f"{r.get('k')} x {r.get('horizon')}", f"{canvas[0]} x {canvas[1]}",
                         fmt(r.get("message_mb"), 1), fmt(r.get("transport")),
                         f"{r.get('received')} of {r.get('sent')}", fmt(r.get("latency_ms_median"), 1),
                         fmt(r.get("latency_ms_p90"), 1), steps(r.get("load_avg_1min"), 1)])
        blocks.append(
            f"`{path.name}`: published at {fmt(d.get('rate_hz'), 0)} Hz for {fmt(d.get('seconds'), 0)} s, "
            f"{d.get('cores', '?')} cores; {provenance(d, results, path.name)}.\n\n"
            + table(["setting", "published K x steps", "map", "message MB", "transport", "received",
                     "latency ms median", "p90", "load before / after"], rows))
    return "\n\n".join(blocks) if blocks else ""


