"""The default's benchmarks (``deltaworld_core.bench --json``, any results/*.json with ``stage_ms``
and a named ``config``): ms per stage on CPUs and GPUs, the run notes, and the CPU series of each
machine that scripts/bench_cpu_runs.py writes (``bench_cpu[_NAME][_Nthreads].json``)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench_cpu_runs import out_name, series_name  # the CPU series' file names, written there

from .common import STAGES, bench_files, config_label, fmt, machine, provenance, table
from .registry import renderer


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
        return ""
    header = ["result", "config", *([] if gpu else ["threads"]), *STAGES, "total ms", "forecasts/s",
              *([] if gpu else ["streamed forecasts/s"]), "GFLOP", "peak GPU MB" if gpu else "peak RSS MB"]
    return table(header, rows) + "\n\n" + "\n".join(notes)


@dataclass(frozen=True)
class StreamRate:
    """A CPU benchmark's forecasts/s on a back-to-back stream, the one statistic every page quotes:
    for a series (scripts/bench_cpu_runs.py, every run under ``runs``) the median of its runs'
    ``throughput_hz`` over ``runs`` runs, with their range; for a single run its own rate."""

    hz: float
    runs: int
    low: float
    high: float
    two_stages: bool

    def text(self, unit: str = "") -> str:
        """'11.4 forecasts/s (median of 10 runs, 8.0-12.6)'; a single run: '11.3 forecasts/s'."""
        value = f"{fmt(self.hz, 1)}{unit}"
        if self.runs > 1:
            value += f" (median of {self.runs} runs, {fmt(self.low, 1)}-{fmt(self.high, 1)})"
        return value


def stream_rate(data: dict) -> StreamRate | None:
    """The stream rate of a benchmark JSON (None for a file written before throughput was measured)."""
    two_stages = bool((data.get("pipeline") or {}).get("active"))
    runs = [r["throughput_hz"] for r in data.get("runs") or [] if r.get("throughput_hz") is not None]
    if runs:
        return StreamRate(statistics.median(runs), len(runs), min(runs), max(runs), two_stages)
    hz = data.get("throughput_hz")
    return None if hz is None else StreamRate(hz, 1, hz, hz, two_stages)


def streamed(data: dict) -> str:
    """The table cell of :func:`stream_rate`: two stages (pipeline.py) where it ran them; "-" for a
    file written before throughput was measured."""
    rate = stream_rate(data)
    if rate is None:
        return "-"
    return rate.text() + (" (two stages)" if rate.two_stages else "")


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
        return ""
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
    return "\n".join(lines) if lines else ""



def cpu_series(results: Path, threads: int, name: str = "") -> dict | None:
    """The default's CPU series at ``threads`` as scripts/bench_cpu_runs.py names it (``name``:
    another machine's series, ``--name``), or None."""
    path = results / out_name(threads, name)
    if path not in bench_files(results):
        return None
    d = json.loads(path.read_text())
    return d if d.get("config", {}).get("name") == "default" else None


def series_names(results: Path) -> list[str]:
    """"" (the reference machine's series) first, then every other machine's named series (bench_cpu_NAME.json
    with its runs)."""
    names = [""]
    for path in bench_files(results):
        name = series_name(path.name)
        if name and name not in names and json.loads(path.read_text()).get("runs"):
            names.append(name)
    return names


def cpu_label(machine: dict) -> str:
    """"AMD EPYC, no native bf16": a CPU benchmark's machine as the targets and the README name it."""
    native = {True: ", native bf16", False: ", no native bf16"}.get(machine.get("native_bf16"), "")
    return f"{machine.get('cpu') or 'CPU'}{native}"

