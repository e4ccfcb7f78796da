"""The ROS node measured on a CPU: forecasts/s with a clip replayed through DDS
(scripts/measure_node_rate.py) and which camera frames reach it per QoS and transport
(scripts/measure_input_qos.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import fmt, load, provenance, result_files, steps, table
from .registry import renderer


@renderer("node_rate")
def render_node_rate(results: Path) -> str:
    """The ROS node on a CPU, a clip replayed through DDS at its own rate
    (scripts/measure_node_rate.py, results/node_rate*.json)."""
    rows, notes = [], []
    for path in result_files(results, "node_rate*.json"):
        d = json.loads(path.read_text())
        diag = d.get("diagnostics") or {}
        rows.append([f"`{path.name}`", (d.get("machine") or {}).get("cpu") or "?", fmt(d.get("threads")),
                     d.get("clip", "?"), fmt(d.get("input_rate_hz"), 1),
                     fmt(d.get("duration_s"), 0), f"**{fmt(d.get('forecasts_per_s'), 1)}**",
                     fmt(d.get("latency_ms_median"), 1), fmt(d.get("model_ms_median"), 1),
                     fmt(diag.get("frames_dropped")), fmt((d.get("machine") or {}).get("load_avg_1min"), 1)])
        notes.append(f"- `{path.name}`: {d.get('note') + '; ' if d.get('note') else ''}{provenance(d, results, path.name)}")
    if not rows:
        return ""
    return table(["result", "CPU", "threads", "clip", "camera Hz", "s", "forecasts/s", "median latency ms (camera stamp "
                  "to receipt)", "model ms median", "frames dropped", "load average"], rows) + "\n\n" + "\n".join(notes)



RUNNER_PATHS = {"bench": "bench: every frame back to back (`stream_throughput`)",
                "node_no_ros": "node's runner without ROS, camera rate (`measure_node_rate.py --no-ros`)",
                "node_ros": "node over DDS, clip replayed (`measure_node_rate.py`)"}


@renderer("runner_paths")
def render_runner_paths(results: Path) -> str:
    """One clip through bench, the node's runner without ROS and the node over DDS, all running
    the one frame runner (scripts/bench_runner_paths.py, results/runner_paths*.json)."""
    blocks = []
    for path in result_files(results, "runner_paths*.json"):
        d = json.loads(path.read_text())
        rows = []
        for name, what in RUNNER_PATHS.items():
            runs = d["paths"][name]["runs"]
            latency = [r.get("latency_ms") or r.get("latency_ms_median") for r in runs]
            rows.append([what, f"**{fmt(d['paths'][name]['median_forecasts_per_s'], 2)}**",
                         ", ".join(fmt(r["forecasts_per_s"], 2) for r in runs),
                         ", ".join(fmt(v, 0) for v in latency), ", ".join(fmt(r.get("stages")) for r in runs),
                         ", ".join(fmt(r["load_avg_1min"], 1) for r in runs)])
        m = d["machine"]
        blocks.append(
            f"`{path.name}`: {d['clip']} ({d['frame_size'][1]}x{d['frame_size'][0]}, {fmt(d['clip_fps'], 0)} fps), "
            f"config {d['config']}, {d['model_threads']} model thread(s), {m['cpu']}, {m['cores']} cores\n\n"
            + table(["path", f"forecasts/s (median of {d['runs']})", "each run", "latency ms, median of each run (bench: model time of a frame; node: camera stamp to forecast)",
                     "stages", "load average"], rows)
            + f"\n\n{provenance(d, results, path.name)}")
    return "\n\n".join(blocks)


@renderer("input_qos")
def render_input_qos(results: Path) -> str:
    """Camera frames that reached the node by size, transports and reliability (results/input_qos.json)."""
    d = load(results, "input_qos.json")
    if "setups" in d:
        return _input_qos_setups(d, results)
    cells: dict[tuple[str, str, str], list[str]] = {}
    sizes: dict[str, float] = {}
    columns: list[tuple[str, str]] = []
    for r in d["results"]:
        sizes[r["size"]] = r["mb_per_frame"]
        column = (r.get("transports", "default"), r["reliability"])
        if column not in columns:
            columns.append(column)
        cells.setdefault((r["size"], *column), []).append(str(r["received"]))
    columns.sort(key=lambda c: (c[0] != "default", c[0], c[1]))
    order = sorted(sizes, key=lambda s: sizes[s])
    rows = [[s, fmt(sizes[s], 2), *(", ".join(cells.get((s, t, q), [])) for t, q in columns)] for s in order]
    header = ["frame (rgb8)", "MB", *(f"{'ROS 2 default transports' if t == 'default' else t}, "
                                      f"{q.replace('_', ' ')}" for t, q in columns)]
    sent = {r["sent"] for r in d["results"]}
    return (table(header, rows) + f"\n\nFrames received of {', '.join(map(str, sorted(sent)))} sent "
            f"(one number per run). {d.get('conditions', '')}. {provenance(d, results, 'input_qos.json')}.")


def _input_qos_setups(d: dict, results: Path) -> str:
    """One row per set-up (camera QoS, node settings, transports), one column per frame size."""
    sizes: dict[str, float] = {}
    for setup in d["setups"]:
        for r in setup["results"]:
            sizes[r["size"]] = r["mb_per_frame"]
    order = sorted(sizes, key=lambda k: sizes[k])
    rows = []
    for setup in d["setups"]:
        by_size = {r["size"]: r for r in setup["results"]}
        cells = []
        for size in order:
            r = by_size.get(size)
            if r is None:
                cells.append("")
                continue
            cell = f"{r['received']} of {r['sent']}"
            if r.get("forecasts_published") is not None:
                cell += f" ({r['forecasts_published']})"
            cells.append(cell)
        load = setup.get("load_average_1min")
        rows.append([setup["setup"], *cells, steps(load, 1) if load else "-"])
    header = ["set-up", *(f"{k} rgb8 ({fmt(sizes[k], 2)} MB)" for k in order), "load before / after"]
    m = d.get("machine", {})
    where = ", ".join(f"{m[k]} cores" if k == "cores" else str(m[k]) for k in ("cpu", "cores", "rmw") if m.get(k))
    return (table(header, rows) + "\n\nCamera frames that reached the node's callback of those sent (in brackets: "
            f"forecasts published). Conditions: {d.get('conditions', '')}. Machine: {where or 'not in the JSON'}. "
            f"{provenance(d, results, 'input_qos.json')}.")


