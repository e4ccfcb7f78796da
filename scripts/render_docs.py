#!/usr/bin/env python3
"""Regenerates every table of measured numbers in README.md and docs/*.md from results/*.json.

A table lives between two markers in the markdown::

    <!-- results:bench_cpu -->
    ...generated, never edited by hand...
    <!-- /results -->

``bench_cpu`` names a renderer in :data:`RENDERERS` (a function ``results_dir -> markdown``).
``python scripts/render_docs.py`` rewrites every block; ``--check`` rewrites nothing and exits 1
listing the blocks that no longer match their JSON (and unknown renderer names), which
``test/test_docs.py`` runs in CI.

To add a table: write ``def render_mine(results: Path) -> str`` returning markdown, register it
with ``@renderer("mine")``, put the two markers in a page and run this script. Renderers must be
deterministic (no clock, no machine lookups): everything they print comes from the JSON files.
Generic renderers pick up new files by themselves: every ``results/bench_*.json`` and
``results/device_bench_*.json`` becomes a row of the performance tables, every
``results/device_train*.json`` a row of the training-throughput table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from bench_cpu_runs import out_name, series_name  # noqa: E402 - the CPU series' file names, written there
from compare_evals import FAMILIES as HELD_OUT_CHANGES  # noqa: E402 - the ratio families, one list for both scripts
MARKER = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->\n(.*?)<!-- /results -->", re.S)
OPEN = re.compile(r"<!-- results:([A-Za-z0-9_.-]+) -->")

Renderer = Callable[[Path], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Registers a table renderer under the name used in its page's marker."""
    def register(fn: Renderer) -> Renderer:
        if name in RENDERERS:
            raise ValueError(f"renderer {name!r} registered twice")
        RENDERERS[name] = fn
        return fn
    return register


# ---------------------------------------------------------------- helpers

def load(results: Path, name: str) -> dict:
    return json.loads((results / name).read_text())


def fmt(value, digits: int = 2) -> str:
    """A number as a table cell: fixed decimals, thousands separators, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def steps(values, digits: int = 2) -> str:
    """Per-horizon-step values as 'a / b / c'."""
    if values is None:
        return "-"
    return " / ".join(fmt(v, digits) for v in values)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def producers(results: Path, name: str) -> list[str]:
    """The scripts (scripts/*.sh, *.py beside results/) that name results/<name>: where a JSON
    records no command, they say what wrote it."""
    scripts = results.parent / "scripts"
    found = []
    for path in sorted([*scripts.glob("*.sh"), *scripts.glob("*.py")]):
        if path.name != Path(__file__).name and f"results/{name}" in path.read_text(errors="replace"):
            found.append(f"`scripts/{path.name}`")
    return found


def provenance(data: dict, results: Path | None = None, name: str = "") -> str:
    """Date and command as the JSON records them; else the scripts that write the file."""
    date = data.get("date") or "date not in the JSON"
    command = data.get("command")
    if command:
        return f"{date}; `{command}`"
    written_by = producers(results, name) if results is not None and name else []
    if written_by:
        return f"{date}; written by {', '.join(written_by)}"
    return f"{date}; command not in the JSON"


def source(name: str) -> str:
    return f"`results/{name}`"


def _tracked(repo: Path) -> set[str] | None:
    """Paths git tracks in ``repo`` (None outside a git checkout): the module table lists committed
    code only, so a file someone has not committed yet never reaches a committed page."""
    import subprocess

    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.stdout.splitlines())


def result_files(results: Path, *patterns: str) -> list[Path]:
    """The results matching ``patterns``; in a git checkout only those git tracks, so a file someone
    has written but not committed yet never reaches a committed page (``git add`` a new result,
    then render)."""
    found = sorted({p for pattern in patterns for p in results.glob(pattern)})
    tracked = _tracked(results.parent)
    if tracked is None:
        return found
    return [p for p in found if p.relative_to(results.parent).as_posix() in tracked]


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_files(results: Path) -> list[Path]:
    """Every result written by ``deltaworld_core.bench --json`` (a ``stage_ms`` dict and a
    ``config`` with a name), whatever its file name: bench_*, device_bench_*, table_cpu_* ..."""
    found = []
    for path in result_files(results, "*.json"):
        d = _json_or_none(path)
        if isinstance(d, dict) and isinstance(d.get("stage_ms"), dict) and isinstance(d.get("config"), dict) \
                and "name" in d["config"]:
            found.append(path)
    return found


def table_files(results: Path, key: str) -> list[Path]:
    """Results of scripts/bench_table.py-style runs: a ``table`` list whose rows have ``key``."""
    found = []
    for path in result_files(results, "*.json"):
        d = _json_or_none(path)
        rows = d.get("table") if isinstance(d, dict) else None
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and key in rows[0]:
            found.append(path)
    return found


STAGES = ("vfm", "encode", "predict", "decode", "heads")


def machine(data: dict) -> str:
    m = data.get("machine", {})
    cores = m.get("cores")
    on_gpu = str(m.get("device", "cpu")).startswith("cuda")
    if on_gpu:  # the GPU's name, then the host CPU where the JSON records it (bench.py's machine.cpu)
        parts = [m.get("device_name") or "?", *([f"host CPU {m['cpu']}"] if m.get("cpu") else [])]
    else:
        parts = [m.get("cpu") or m.get("device_name") or "?"]
    if cores:
        parts.append(f"{cores} cores")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    if m.get("native_bf16") is not None and not str(m.get("device", "cpu")).startswith("cuda"):
        parts.append("native bf16" if m["native_bf16"] else "no native bf16")
    if m.get("load_avg_1min") is not None:
        parts.append(f"load average {fmt(m['load_avg_1min'], 1)}")
    return ", ".join(parts)


def config_label(data: dict) -> str:
    c = data.get("config", {})
    res = c.get("resolution") or ["?"]
    label = f"{c.get('name', '?')} ({c.get('vfm', '?')}, {res[0]} px, K={c.get('k', '?')}, {c.get('horizon', '?')} steps"
    extras = [f"{key} {c[key]}" for key in ("quantize", "vfm_precision", "precision", "cuda_precision", "cuda_graphs",
                                            "geometry", "publish_k") if c.get(key) not in (None, "", "none", False)]
    return label + (", " + ", ".join(extras) if extras else "") + ")"


def bench_table(results: Path, gpu: bool) -> str:
    rows, notes = [], []
    for path in bench_files(results):
        data = json.loads(path.read_text())
        on_gpu = str(data.get("machine", {}).get("device", "cpu")).startswith("cuda")
        if on_gpu != gpu:
            continue
        stage_ms = data.get("stage_ms", data)
        threads = data.get("config", {}).get("threads")
        memory = data.get("peak_gpu_mb") if gpu else data.get("peak_rss_mb")
        flops = data.get("flops", {}).get("total")
        rows.append([
            f"`{path.name}`", config_label(data), *([] if gpu else [fmt(threads)]),
            *(fmt(stage_ms.get(s), 1) for s in STAGES), f"**{fmt(stage_ms.get('total'), 1)}**",
            fmt(data.get("total_hz"), 1), *([] if gpu else [streamed(data)]),
            fmt(flops / 1e9 if flops else None, 1), fmt(memory, 0),
        ])
        notes.append(f"- `{path.name}`: {machine(data)}; {provenance(data, results, path.name)}")
    if not rows:
        return "_No results yet._"
    header = ["result", "config", *([] if gpu else ["threads"]), *STAGES, "total ms", "forecasts/s",
              *([] if gpu else ["streamed forecasts/s"]), "GFLOP", "peak GPU MB" if gpu else "peak RSS MB"]
    return table(header, rows) + "\n\n" + "\n".join(notes)


def streamed(data: dict) -> str:
    """A CPU benchmark's forecasts/s on a back-to-back stream: two stages (pipeline.py) where it ran
    them, else one step after another; "-" for a file written before throughput was measured."""
    hz = data.get("throughput_hz")
    if hz is None:
        return "-"
    pipe = data.get("pipeline") or {}
    return f"{fmt(hz, 1)} (two stages)" if pipe.get("active") else fmt(hz, 1)


# ---------------------------------------------------------------- performance

@renderer("bench_cpu")
def render_bench_cpu(results: Path) -> str:
    """Every CPU benchmark (any results/*.json written by ``bench --json`` on a CPU): ms per stage."""
    return bench_table(results, gpu=False)


@renderer("bench_gpu")
def render_bench_gpu(results: Path) -> str:
    """Every GPU benchmark (machine.device cuda*): ms per stage."""
    return bench_table(results, gpu=True)


@renderer("bench_measures")
def render_bench_measures(results: Path) -> str:
    """Streaming vs recompute, dense baseline, node overhead, per benchmark file."""
    rows = []
    for path in bench_files(results):
        d = json.loads(path.read_text())
        dense = d.get("dense_ratio") or {}
        overhead = d.get("node_overhead") or {}
        rows.append([
            f"`{path.name}`", fmt(d.get("recompute_ms"), 1), fmt(d.get("streaming_speedup"), 2) + "x",
            fmt(dense.get("flops_ratio"), 0) + "x" if dense else "-",
            fmt(dense.get("time_ratio"), 1) + "x" if dense else "-",
            fmt(d.get("node_overhead_ms"), 2),
            fmt(overhead.get("message_bytes") / 1e6, 1) if overhead.get("message_bytes") else "-",
        ])
    if not rows:
        return "_No results yet._"
    return table(["result", "recompute ms", "streaming speed-up", "dense/DeltaWorld predictor FLOPs",
                  "dense/DeltaWorld predictor time", "node overhead ms", "Futures MB"], rows)


@renderer("bench_notes")
def render_bench_notes(results: Path) -> str:
    """Date, CPU and the run's own note of every CPU benchmark that records a note (run ranges,
    conditions): what the bench_cpu table's one median per file leaves out."""
    lines = []
    for path in bench_files(results):
        d = json.loads(path.read_text())
        if str(d.get("machine", {}).get("device", "cpu")).startswith("cuda") or not d.get("note"):
            continue
        when = f"{d['date']}, " if d.get("date") else ""
        lines.append(f"- `{path.name}` ({when}{machine(d)}): {d['note']}")
    return "\n".join(lines) if lines else "_No notes in the CPU benchmarks._"


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
        return "_No results yet._"
    return table(["setting", "result", "map h x w", "published K x steps", "MB a message", "MB/s at 25 Hz"], rows)


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
    return "\n\n".join(blocks) if blocks else "_No results yet._"


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
    return "\n\n".join(blocks) if blocks else "_No results yet._"


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
    return "\n\n".join(blocks) if blocks else "_No results yet._"


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
    return "\n\n".join(blocks) if blocks else "_No results yet._"


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
        return "_No results yet._"
    return table(["result", "clip", "device", "s", "frames in", "forecasts", "forecasts/s", "dropped",
                  "median latency ms", "path"], rows)


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
        return "_No results yet._"
    return table(["result", "CPU", "threads", "clip", "camera Hz", "s", "forecasts/s", "median latency ms (camera stamp "
                  "to receipt)", "model ms median", "frames dropped", "load average"], rows) + "\n\n" + "\n".join(notes)


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
        return "_No results yet._"
    return table(["result", "GPU", "stage", "batch", "amp", "compile", "steps timed", "steps/s"], rows) \
        + "\n\n" + "\n".join(notes)


@renderer("device_tests")
def render_device_tests(results: Path) -> str:
    d = load(results, "device_tests.json")
    return (f"`results/device_tests.json`: the `cuda` tests, {fmt(d.get('passed'))} passed, "
            f"{fmt(d.get('deselected'))} deselected, exit status {d.get('exit_status')}.")


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


LOADER_FORMATS = {
    "video_mp4": "video (mp4)",
    "frame_folder_jpg": "JPEG frame folder",
    "bag_mcap_rgb8": "bag, MCAP, rgb8",
    "bag_mcap_jpeg": "bag, MCAP, JPEG CompressedImage",
    "bag_db3_rgb8": "bag, sqlite3, rgb8",
    "shard_jpg": "tar shard, JPEG frames (full size)",
    "shard_jpg_256px": "tar shard, JPEG frames (written with `--max-side 256`)",
    "shard_mp4": "tar shard, mp4",
}


@renderer("loader_cpu")
def render_loader_cpu(results: Path) -> str:
    """Frames per second of each recording format through the data reader (results/loader_cpu.json)."""
    d = load(results, "loader_cpu.json")
    sides = list(next(iter(d["formats"].values())))
    rows = [[LOADER_FORMATS.get(name, f"`{name}`"), *(fmt(f.get(side, {}).get("frames_per_s"), 0) for side in sides)]
            for name, f in d["formats"].items()]
    header = ["format", *("full size" if side == "full" else f"{side} px" for side in sides)]
    m = d.get("machine", {})
    return (table(header, rows) + f"\n\nFrames per second, one core ({d.get('timing', '')}); source "
            f"{d.get('source', '?')}; {m.get('cpu', '?')}, {m.get('cores', '?')} cores, 1-minute load "
            f"{fmt(m.get('load_1min'), 1)} at the start. {provenance(d, results, 'loader_cpu.json')}.")


@renderer("vfm_precision")
def render_vfm_precision(results: Path) -> str:
    """The VFM per precision: ms at 1 and 2 threads and error against the float32 reference
    (results/vfm_precision.json, scripts/bench_vfm_precision.py)."""
    d = load(results, "vfm_precision.json")
    ms, acc = d.get("ms", {}), d.get("accuracy", {})
    thread_keys = sorted(ms, key=lambda k: int(k.split("_")[0]))
    names = list(dict.fromkeys([*acc, *(n for k in thread_keys for n in ms[k])]))

    def pct(value):
        return "-" if value is None else f"{value * 100:.2f}%"

    rows = [[f"`{n}`", *(fmt(ms[k].get(n), 1) for k in thread_keys), pct(acc.get(n, {}).get("feature_rel_rms")),
             pct(acc.get(n, {}).get("delta_rel_rms")), pct(acc.get(n, {}).get("worst_clip_delta_rel_rms"))]
            for n in names]
    m = d.get("machine", {})
    header = ["precision", *(f"ms, {k.split('_')[0]} thread{'s' if k.split('_')[0] != '1' else ''}" for k in thread_keys),
              "feature error", "change error", "change error, worst clip"]
    return (table(header, rows) + f"\n\n{d.get('vfm', '')}; errors are relative RMS against `{d.get('reference')}` "
            f"on frames of the held-out videos {d.get('frames', {}).get('spacing_s', '?')} s apart; `auto` picks "
            f"`{d.get('auto_picks')}` on this machine ({m.get('cores', '?')} cores, native bf16 "
            f"{fmt(m.get('native_bf16'))}, load average {fmt(m.get('load_avg_1min'), 1)}). "
            f"{provenance(d, results, 'vfm_precision.json')}.")


@renderer("vfm_precision_eval")
def render_vfm_precision_eval(results: Path) -> str:
    """The default's held-out evaluation with the VFM in bf16 against fp32: the largest change of
    each ratio (results/vfm_precision.json, held_out_eval)."""
    h = load(results, "vfm_precision.json")["held_out_eval"]
    changes = h.get("max_abs_ratio_change_bf16_vs_fp32", {})
    bound = 0.01
    rows = []
    for key, label in HELD_OUT_CHANGES:
        v = changes.get(key)
        if v is None:
            continue
        top = v.get("max") if isinstance(v, dict) else v
        where, above = "", ""
        if isinstance(v, dict):
            where = v.get("where", "")
            if v.get("of") is not None:
                label += f" ({fmt(v['of'])} ratios)"
                above = f"{fmt(v.get('over_0.01'))} of {fmt(v['of'])}: " + "; ".join(v.get("over_0.01_list", []))
        if key == "video_average_ratio_to_copy_last":
            ratios = h.get("video_average_ratio_to_copy_last", {})
            b, f = ratios.get("bf16", {}), ratios.get("fp32", {})
            best = max(((abs(x - y), m, i, x, y) for m in b if m in f for i, (x, y) in enumerate(zip(b[m], f[m]))),
                       default=None)
            if best:
                where = f"{best[1]} step {best[2] + 1} ({fmt(best[3], 3)} vs {fmt(best[4], 3)})"
        rows.append([label, fmt(top, 4), "yes" if top <= bound else "**no**", where, above or "-"])
    return (table(["ratio", "largest change, bf16 vs fp32", f"within {bound}", "where", "above the bound"], rows)
            + f"\n\n{fmt(h.get('clips'))} clips of the held-out videos; {h.get('note', '')}. "
              f"`{h.get('command', '?')}`; {source('vfm_precision.json')}.")


@renderer("eval_compare")
def render_eval_compare(results: Path) -> str:
    """Every comparison of two held-out evaluations (results/eval_compare_*.json, written by
    scripts/compare_evals.py): the largest change of each family of ratios."""
    blocks = []
    for path in result_files(results, "eval_compare_*.json"):
        d = json.loads(path.read_text())
        bound = d.get("bound", 0.01)
        rows = []
        for key, label in HELD_OUT_CHANGES:
            f = (d.get("families") or {}).get(key)
            if f is None:
                continue
            above = f.get("over_bound") or []
            rows.append([f"{label} ({fmt(f.get('of'))} ratios)", fmt(f.get("max"), 4),
                         "yes" if not above else "**no**",
                         f"{f.get('where')} ({fmt(f.get('base'), 3)} vs {fmt(f.get('other'), 3)})",
                         f"{len(above)}: " + "; ".join(above[:8]) if above else "-"])
        blocks.append(table(["ratio", "largest change", f"within {bound}", "where (base vs other)",
                             "above the bound"], rows)
                      + f"\n\n`{path.name}`: {d.get('note', '')}; {fmt(d.get('clips'))} clips; `{d.get('command', '?').split(' --note ')[0]}`.")
    return "\n\n".join(blocks) if blocks else "_No comparisons yet._"


# ---------------------------------------------------------------- quality

METHODS = [
    ("copy_last", "copy last"),
    ("tokenizer", "tokenizer (true tokens)"),
    ("tokenizer_closed_loop", "tokenizer, closed loop"),
    ("mean", "DeltaWorld mean of K"),
    ("best", "DeltaWorld best of K"),
    ("dense", "dense baseline"),
]


def eval_header(d: dict) -> str:
    return (f"K={d.get('k')}, {d.get('horizon')} steps of {d.get('step_s')} s, context {d.get('context')}, "
            f"config `{d.get('config')}`, seed {d.get('seed')}, {fmt(d.get('clips'))} clips")


@renderer("eval_real")
def render_eval_real(results: Path) -> str:
    """Held-out whole videos, every video weighing the same (results/eval_real.json)."""
    d = load(results, "eval_real.json")
    avg = d["video_average"]
    rows = []
    for key, label in METHODS:
        if key not in avg["ratio_to_copy_last"]:
            continue
        rows.append([label, steps(avg["ratio_to_copy_last"][key], 3),
                     steps(avg.get("median_clip_ratio_to_copy_last", {}).get(key), 3),
                     steps(avg["feature_mse"].get(key), 3)])
    rows.append(["spread-skill ratio (1 = calibrated)", steps(avg.get("spread_skill_ratio")), "-", "-"])
    return (table(["method", "x copy-last, step 1 / 2 / 3", "typical clip (median), x copy-last",
                   "feature MSE"], rows)
            + f"\n\n{avg.get('videos')} videos; {eval_header(d)}. Source: {source('eval_real.json')}, "
              f"{provenance(d, results, 'eval_real.json')}.")


@renderer("eval_real_videos")
def render_eval_real_videos(results: Path) -> str:
    """Per held-out video: ratios to copy-last at step 1 and spread-skill per step."""
    d = load(results, "eval_real.json")
    rows = []
    for name, v in d["videos"].items():
        mse = v["feature_mse"]
        ratio = {k: mse[k][0] / mse["copy_last"][0] for k in ("tokenizer", "mean", "best", "dense") if k in mse}
        rows.append([f"`{name}`", fmt(v.get("clips")), *(fmt(ratio.get(k)) for k in ("tokenizer", "mean", "best", "dense")),
                     steps(v.get("uncertainty", {}).get("spread_skill_ratio"))])
    return table(["video", "clips", "tokenizer", "mean of K", "best of K", "dense",
                  "spread-skill 1 / 2 / 3"], rows) + "\n\nRatios: feature MSE x copy-last at step 1."


@renderer("eval_synthetic")
def render_eval_synthetic(results: Path) -> str:
    """Held-out synthetic scenes with exact labels (results/eval_synthetic.json)."""
    d = load(results, "eval_synthetic.json")
    rows = [["present (upper bound)", "-", steps(d["miou"].get("present"), 1), steps(d["depth_rmse"].get("present"))]]
    for key, label in METHODS:
        if key not in d["feature_mse"]:
            continue
        rows.append([label, steps(d["feature_mse"][key], 3), steps(d["miou"].get(key), 1),
                     steps(d["depth_rmse"].get(key))])
    u = d.get("uncertainty", {})
    extra = "; ".join(f"{label} {steps(u[key])}" for key, label in (
        ("spread_skill_ratio", "spread-skill"), ("semantic_coverage", "semantic coverage"),
        ("agreement_ece", "agreement ECE")) if key in u)
    return (table(["method", "feature MSE 1 / 2 / 3", "mIoU % 1 / 2 / 3", "depth RMSE m 1 / 2 / 3"], rows)
            + f"\n\nUncertainty: {extra}. {eval_header(d)}. Source: {source('eval_synthetic.json')}, "
              f"{provenance(d, results, 'eval_synthetic.json')}.")


@renderer("calibration")
def render_calibration(results: Path) -> str:
    """The calibration fit (results/calibration.json)."""
    d = load(results, "calibration.json")
    rows = []
    for name, v in d["videos"].items():
        rows.append([f"`{name}`", fmt(v.get("clips")), fmt(v.get("own_mean_scale")), fmt(v.get("own_change_growth")),
                     steps(v["mean_ratio_to_copy_last"]["sampled"]), steps(v["spread_skill_ratio"]["sampled"]),
                     steps(v["spread_skill_ratio"]["calibrated"])])
    avg = d["video_average"]
    rows.append(["**average**", "-", f"**{fmt(d['mean_scale'])}** (fit)", f"**{fmt(d['change_growth'])}** (fit)",
                 steps(avg["mean_ratio_to_copy_last"]["sampled"]), steps(avg["spread_skill_ratio"]["sampled"]),
                 steps(avg["spread_skill_ratio"]["calibrated"])])
    return (f"Fitted: `mean_scale` {fmt(d['mean_scale'], 3)}, `spread` {fmt(d['spread'], 3)} "
            f"(`spread_from: {d.get('spread_from')}`), `change_growth` {fmt(d['change_growth'], 3)}; "
            f"sources {', '.join(d.get('sources', []))}; K={d.get('k')}, step {d.get('step_s')} s.\n\n"
            + table(["video", "clips", "own mean scale", "own change growth", "mean as sampled, x copy-last",
                     "spread-skill as sampled", "spread-skill calibrated"], rows)
            + f"\n\nSource: {source('calibration.json')}, {provenance(d, results, 'calibration.json')}.")


@renderer("predictability")
def render_predictability(results: Path) -> str:
    """How much of the next step simple predictors explain (results/predictability.json)."""
    d = load(results, "predictability.json")
    names = list(d["videos"])
    every = [*(d["videos"][n] for n in names), d["video_average"]]

    def row(label, get):
        return [label, *(fmt(get(v)) for v in every)]

    gains = sorted(d["video_average"].get("linear_extrapolation", {}), key=float)
    codes = sorted(d["video_average"].get("pca_code", {}), key=int)
    rows = [row(f"the last change continued, gain {g}", lambda v, g=g: v["linear_extrapolation"][g]) for g in gains]
    rows.append(row("the last global motion continued", lambda v: v.get("motion_extrapolation")))
    rows.append(row("the true global motion of the next frame (future)", lambda v: v.get("motion_oracle")))
    rows.append(row("the true change at the 8x8 decoder grid (future)", lambda v: v.get("residual_8x8")))
    rows += [row(f"its {c}-d linear code (future)", lambda v, c=c: v["pca_code"][c]) for c in codes]
    return (table(["predictor", *(f"`{n}`" for n in names), "average"], rows)
            + f"\n\nFeature MSE x copy-last at one step of {d.get('step_s')} s; rows marked future look at "
              f"the next frame (they bound a codec, not a forecast); the linear code is fitted on "
              f"{fmt(d.get('training_pairs'))} training-video pairs. Source: {source('predictability.json')}, "
              f"{provenance(d, results, 'predictability.json')}.")


# Targets of the shipped default (issues 10, 11): (text, value from the results, test).
def _bench(results: Path, threads: int, name: str = "") -> dict | None:
    """The default's CPU series at ``threads`` as scripts/bench_cpu_runs.py names it (``name``:
    another machine's series, ``--name``), or None."""
    path = results / out_name(threads, name)
    if path not in bench_files(results):
        return None
    d = json.loads(path.read_text())
    return d if d.get("config", {}).get("name") == "default" else None


def _series_names(results: Path) -> list[str]:
    """"" (this project's machine) first, then every other machine's named series (bench_cpu_NAME.json
    with its runs)."""
    names = [""]
    for path in bench_files(results):
        name = series_name(path.name)
        if name and name not in names and json.loads(path.read_text()).get("runs"):
            names.append(name)
    return names


def _cpu_label(machine: dict) -> str:
    """"AMD EPYC, no native bf16": a CPU benchmark's machine as the targets and the README name it."""
    native = {True: ", native bf16", False: ", no native bf16"}.get(machine.get("native_bf16"), "")
    return f"{machine.get('cpu') or 'CPU'}{native}"


@renderer("targets")
def render_targets(results: Path) -> str:
    """The shipped default's targets, met or missed, computed from the committed results."""
    real = load(results, "eval_real.json")["video_average"]
    synth = load(results, "eval_synthetic.json")
    ratio = real["ratio_to_copy_last"]
    ssr = real["spread_skill_ratio"]
    per_video = [v["uncertainty"]["spread_skill_ratio"] for v in load(results, "eval_real.json")["videos"].values()]
    inside = sum(all(0.7 <= s <= 1.3 for s in v) for v in per_video)
    rows = [
        ["codec (tokenizer) <= 0.5x copy-last at step 1", fmt(ratio["tokenizer"][0]), ratio["tokenizer"][0] <= 0.5],
        ["mean of K <= 0.95x copy-last at step 1", fmt(ratio["mean"][0], 3), ratio["mean"][0] <= 0.95],
        ["best of K <= 0.85x copy-last at step 1", fmt(ratio["best"][0]), ratio["best"][0] <= 0.85],
        ["mean of K never above copy-last at steps 2 and 3", steps(ratio["mean"][1:], 3),
         all(r <= 1.0 for r in ratio["mean"][1:])],
        ["spread-skill within 0.7-1.3 at every step (average)", steps(ssr), all(0.7 <= s <= 1.3 for s in ssr)],
        ["... and for every video", f"{inside} of {len(per_video)} videos", inside == len(per_video)],
    ]
    miou = synth["miou"]
    rows.append(["synthetic step 3: best mIoU >= copy-last + 10 points",
                 f"{miou['best'][-1] - miou['copy_last'][-1]:+.1f}", miou["best"][-1] >= miou["copy_last"][-1] + 10])
    rows.append(["synthetic step 3: best mIoU >= dense + 5 points",
                 f"{miou['best'][-1] - miou['dense'][-1]:+.1f}", miou["best"][-1] >= miou["dense"][-1] + 5])
    for name, threads, target in [(n, t, hz) for n in _series_names(results) for t, hz in ((1, 10), (2, 15))]:
        b = _bench(results, threads, name)
        if b is not None:
            hz, rss = b.get("throughput_hz", b.get("total_hz")), b.get("peak_rss_mb")
            runs = [r["throughput_hz"] for r in b.get("runs", [])]
            if runs:  # a series (scripts/bench_cpu_runs.py): its median, and the spread of this machine
                hz = statistics.median(runs)
                measured = f"{fmt(hz, 1)} Hz (median of {len(runs)} runs, {fmt(min(runs), 1)}-{fmt(max(runs), 1)}), {fmt(rss, 0)} MB"
            else:
                measured = f"{fmt(hz, 1)} Hz, {fmt(rss, 0)} MB"
            rows.append([f"CPU ({_cpu_label(b.get('machine', {}))}), {threads} thread{'s' if threads > 1 else ''}: >= {target} forecasts/s "
                         "on a stream, peak RSS <= 1,000 MB", measured, hz >= target and rss <= 1000])
    out = [[text, value, "**met**" if ok else "missed"] for text, value, ok in rows]
    return (table(["target (held-out whole videos unless said)", "measured", ""], out)
            + f"\n\nFrom {source('eval_real.json')}, {source('eval_synthetic.json')} and `results/bench_*.json`.")


@renderer("readme_quality")
def render_readme_quality(results: Path) -> str:
    """Three lines for the README: codec, forecast mean and spread on held-out video, CPU speed."""
    d = load(results, "eval_real.json")
    avg = d["video_average"]
    ratio = avg["ratio_to_copy_last"]
    mean1 = ratio["mean"][0]
    verdict = ("no better than copying the last frame" if mean1 >= 0.99 else
               f"{(1 - mean1) * 100:.0f}% below copying the last frame")
    machines = []
    for name in _series_names(results):
        speeds, m = [], {}
        for threads in (1, 2):
            b = _bench(results, threads, name)
            if b is not None:
                m = b.get("machine", {})
                hz = b.get("throughput_hz", b["total_hz"])
                how = " as two stages" if (b.get("pipeline") or {}).get("active") else ""
                speeds.append(f"{fmt(hz, 1)} forecasts/s at {threads} thread{'s' if threads > 1 else ''}{how}")
        if speeds:
            machines.append(f"on a {m.get('cores', '?')}-core {_cpu_label(m)}: " + ", ".join(speeds))
    return "\n".join([
        f"- **Codec**: on {avg['videos']} held-out videos ({fmt(d['clips'])} clips no stage trained on), DeltaTok's one "
        f"token per frame leaves {fmt(ratio['tokenizer'][0])}x the feature error of copying the last frame "
        f"({d['step_s']} s ahead).",
        f"- **Forecast**: the mean of the K = {d['k']} futures is {fmt(mean1, 3)}x copy-last at {d['step_s']} s "
        f"({verdict}); their spread matches the error (spread-skill "
        f"{steps(avg['spread_skill_ratio'])} at the {d['horizon']} steps, 1 = calibrated).",
        "- **Speed** " + "; ".join(machines) + " (`results/bench_cpu*.json`).",
    ])


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


# ---------------------------------------------------------------- the ROS node (code, not results)

def _node_source_constants(repo: Path) -> dict[str, object]:
    """Literal constants (dicts, sets, frozenset({...})) of the node's parameter module(s), read with
    ast: neither rclpy nor a build is needed, and the tables follow the node's source."""
    import ast

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
    "threads": "CPU threads of the model; 0 = half the cores, 1 to 4; 2 or more on a CPU run the VFM beside the rest (two stages)",
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
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.search(r"^(.*?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).replace("|", "\\|")


@renderer("modules")
def render_modules(results: Path) -> str:
    """Every Python module of the two packages with the first sentence of its docstring (the
    docstrings are the library's reference; this table only points at them)."""
    repo = results.parent if (results.parent / "deltaworld_core").is_dir() else REPO
    rows = []
    tracked = _tracked(repo)
    for package in ("deltaworld_core", "deltaworld_ros"):
        for path in sorted((repo / package).rglob("*.py")):
            rel = path.relative_to(repo).as_posix()
            if (tracked is not None and rel not in tracked) or "/weights/" in rel or (path.name == "__init__.py" and path.parent.name != package):
                continue
            module = rel[:-3].replace("/", ".").removesuffix(".__init__")
            rows.append([f"[`{module}`](../{rel})", _summary(path) or "-"])
    return table(["module", "what it is (its docstring says more)"], rows)


# ---------------------------------------------------------------- the engine

def pages(repo: Path) -> list[Path]:
    return [p for p in [repo / "README.md", *sorted((repo / "docs").glob("**/*.md"))] if p.is_file()]


def render_text(text: str, results: Path, where: str = "") -> tuple[str, list[str]]:
    """The text with every block rendered, and the problems found (unknown renderer, unclosed block)."""
    problems: list[str] = []
    opened = [m.group(1) for m in OPEN.finditer(text)]
    closed = [m.group(1) for m in MARKER.finditer(text)]
    if len(opened) != len(closed):
        problems.append(f"{where}: a `<!-- results:NAME -->` marker without its `<!-- /results -->`")

    def replace(match: re.Match) -> str:
        name = match.group(1)
        fn = RENDERERS.get(name)
        if fn is None:
            problems.append(f"{where}: unknown renderer {name!r} (known: {', '.join(sorted(RENDERERS))})")
            return match.group(0)
        try:
            body = fn(results).strip("\n")
        except (OSError, KeyError, ValueError, TypeError, IndexError, ZeroDivisionError) as error:
            problems.append(f"{where}: renderer {name!r} failed: {type(error).__name__}: {error}")
            return match.group(0)
        return f"<!-- results:{name} -->\n{body}\n<!-- /results -->"

    return MARKER.sub(replace, text), problems


def run(repo: Path, results: Path, check: bool) -> tuple[list[str], list[str]]:
    """(stale blocks, problems); writes the pages unless ``check``."""
    stale: list[str] = []
    problems: list[str] = []
    for page in pages(repo):
        text = page.read_text()
        rel = page.relative_to(repo).as_posix()
        new, found = render_text(text, results, rel)
        problems += found
        if new != text:
            old_blocks = {m.start(): m.group(0) for m in MARKER.finditer(text)}
            new_blocks = list(MARKER.finditer(new))
            for (start, block), match in zip(sorted(old_blocks.items()), new_blocks):
                if block != match.group(0):
                    line = text.count("\n", 0, start) + 1
                    stale.append(f"{rel}:{line}: block {match.group(1)!r} does not match its results")
            if not check:
                page.write_text(new)
    return stale, problems


def shrink_picture(src: Path, dst: Path, colours: int = 256) -> int:
    """Writes a forecast grid of the demo as a small palette PNG (the class colours kept exact,
    so the legend still matches); returns its size in bytes."""
    from PIL import Image

    from deltaworld_core.viz import palette

    image = Image.open(src).convert("RGB")
    fixed = palette(16)[:16].reshape(-1).tolist()
    adaptive = image.quantize(colors=colours - 16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    holder = Image.new("P", (1, 1))
    holder.putpalette(fixed + adaptive.getpalette()[: 3 * (colours - 16)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(palette=holder, dither=Image.Dither.NONE).save(dst, optimize=True)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any block is stale")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="folder of the JSON results")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (README.md, docs/)")
    parser.add_argument("--list", action="store_true", help="list the renderers and exit")
    parser.add_argument("--picture", type=Path, metavar="FORECAST_PNG",
                        help="shrink one of the demo's forecast_NNNN.png into docs/img/forecast.png and exit")
    args = parser.parse_args(argv)
    if args.picture:
        size = shrink_picture(args.picture, args.repo / "docs" / "img" / "forecast.png")
        print(f"wrote docs/img/forecast.png ({size // 1024} KB)")
        return 0
    if args.list:
        for name, fn in sorted(RENDERERS.items()):
            print(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    stale, problems = run(args.repo, args.results, args.check)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if args.check:
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print("run: .venv/bin/python scripts/render_docs.py", file=sys.stderr)
        return 1 if stale or problems else 0
    for line in stale:
        print(f"rewrote: {line.split(': block')[0]}: {line.split('block ')[1].split(' ')[0]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
