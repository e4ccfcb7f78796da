#!/usr/bin/env python3
"""The CPU benchmark as the committed results are made: several runs in turn, the median one kept.

    .venv/bin/python scripts/bench_cpu_runs.py [--runs 10] [--threads 1 2] [--steps 40] [--config default]
        [--out-dir results] [--name NAME] [key.path=value ...]

One run of ``python -m deltaworld_core.bench`` says little on a machine whose speed drifts (on this
project's 2-core VM the same command gave 84 to 145 ms within minutes, with nothing else running:
the host's bf16 matmul rate moves by itself). So each round runs every thread count once, each run
in a fresh process, and per thread count the run at the median of ``throughput_hz`` is written
(for an even count the slower of the two middle runs) as ``bench_cpu.json`` (1 thread) or
``bench_cpu_<N>threads.json`` (``--name X``: ``bench_cpu_X.json``, ``bench_cpu_X_<N>threads.json``, a
series of another machine beside this project's), with every run of the series under ``runs`` and a generated
``note``. Speed targets live in the results, never in tests.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench_cpu[_NAME][_<N>threads].json; NAME may not itself look like "<N>threads"
SERIES_FILE = re.compile(r"bench_cpu(?:_(?P<name>(?!\d+threads\.)[A-Za-z0-9_]+?))?(?:_(?P<threads>\d+)threads)?\.json")


def out_name(threads: int, name: str = "") -> str:
    stem = f"bench_cpu_{name}" if name else "bench_cpu"
    return f"{stem}.json" if threads == 1 else f"{stem}_{threads}threads.json"


def series_name(filename: str) -> str | None:
    """The NAME of a file out_name wrote ("" for this project's machine), or None for another file."""
    m = SERIES_FILE.fullmatch(filename)
    return None if m is None else (m.group("name") or "")


def summary(run: dict) -> dict:
    """What the series keeps of one run."""
    machine = run.get("machine", {})
    return {"date": run.get("date"), "total_ms": run["total"], "total_hz": run["total_hz"],
            "throughput_hz": run.get("throughput_hz", run["total_hz"]), "vfm_ms": run["stage_ms"]["vfm"],
            "stages": (run.get("stages") or {}).get("stages"),
            "matmul_gflops_bf16": machine.get("matmul_gflops_bf16"), "load_avg_1min": machine.get("load_avg_1min")}


def median_run(runs: list[dict]) -> dict:
    """The run at the median throughput (the slower of the two middle ones for an even count)."""
    ordered = sorted(runs, key=lambda r: r.get("throughput_hz", r["total_hz"]))
    return ordered[(len(ordered) - 1) // 2]


def note(threads: int, series: list[dict], kept: dict) -> str:
    hz = [s["throughput_hz"] for s in series]
    ms = [s["total_ms"] for s in series]
    vfm = [s["vfm_ms"] for s in series]
    chosen = [s.get("stages") for s in series]
    what = "streamed forecasts/s (" + ("two stages" if (kept.get("pipeline") or {}).get("active") else "one stage") + (
        f"; two stages chosen in {chosen.count(2)} of {len(chosen)} runs)" if None not in chosen else ")")
    return (f"{len(series)} runs in turn with the other thread counts, each in its own process; {what}: "
            f"median {statistics.median(hz):.2f}, {min(hz):.2f}-{max(hz):.2f}; total ms {min(ms):.1f}-{max(ms):.1f}; "
            f"VFM ms {min(vfm):.1f}-{max(vfm):.1f}; this file is the median run by throughput_hz "
            f"(every run under `runs`)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--config", default="default")
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--name", default="", help="another machine's series: bench_cpu_NAME[_Nthreads].json")
    parser.add_argument("overrides", nargs="*", help="key.path=value, passed to every run")
    args = parser.parse_args()
    if args.runs < 1 or any(t < 1 for t in args.threads):
        parser.error("--runs and every --threads value must be at least 1")
    if args.name and series_name(out_name(1, args.name)) != args.name:
        parser.error(f"--name {args.name!r}: letters, digits and _ only, and not <N>threads")
    sys.path.insert(0, str(REPO))
    from deltaworld_core.checkpoint import atomic_write  # here: importing the naming needs no torch

    runs: dict[int, list[dict]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs):
            for t in args.threads:
                path = Path(tmp) / f"t{t}_{r}.json"
                cmd = [sys.executable, "-m", "deltaworld_core.bench", "--config", args.config, "--threads", str(t),
                       "--steps", str(args.steps), "--json", str(path), *args.overrides]
                subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                runs[t].append(json.loads(path.read_text()))
                s = summary(runs[t][-1])
                print(f"round {r + 1}/{args.runs}, {t} thread(s): {s['total_ms']:.1f} ms, "
                      f"{s['throughput_hz']:.2f} forecasts/s streamed, VFM {s['vfm_ms']:.1f} ms", flush=True)
    command = "python scripts/bench_cpu_runs.py " + " ".join(sys.argv[1:])
    for t, series in runs.items():
        kept = dict(median_run(series))
        kept["runs"] = [summary(r) for r in series]
        kept["note"] = note(t, kept["runs"], kept)
        kept["command"] = command.strip()
        out = Path(args.out_dir) / out_name(t, args.name)
        atomic_write(out, lambda tmp, text=json.dumps(kept, indent=1): Path(tmp).write_text(text))
        print(f"{out}: {kept['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
