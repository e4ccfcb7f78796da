"""Vehicle recall of segmentation heads inside the box teacher's confident vehicle cores, on
held-out videos (optional: labelling needs Node.js and the CenterNet teacher).

    .venv/bin/python scripts/eval_vehicle_recall.py --heads shipped=PATH [--heads other=PATH] \
        [--sources NAME ...] [--stride 3] [--min-score 0.3] [--core 0.5] [--json results/vehicle_recall.json]

For every clip of the held-out sources (data_split.yaml; no training stage saw them) the CenterNet
teacher boxes every ``--stride``-th frame (cached; :mod:`deltaworld_core.teachers.boxes`), the
default model's frozen VFM encodes the same frames, and each heads file labels them at the
forecast's output size. The teacher speaks only inside the core of each vehicle box (car, bus,
truck, motorcycle) scoring at least ``--min-score`` (:mod:`deltaworld_core.training.box_labels`),
so the measure is a recall: the share of core cells the head calls car. Outside the cores nothing
is known, so no precision is claimed; ``head_car_share`` (the share of all pixels the head calls
car) is reported beside it. The summary averages recall over the videos with any core cell, every
video weighing the same. ``--time-frames`` frames of the first clip time the teacher (ms a frame,
resize and pipe included, after one warm-up frame).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.checkpoint import atomic_write, load_module  # noqa: E402
from deltaworld_core.config import load_config  # noqa: E402
from deltaworld_core.data.sources import split_sources  # noqa: E402
from deltaworld_core.features import FeatureCache  # noqa: E402
from deltaworld_core.heads import TaskHeads  # noqa: E402
from deltaworld_core.teachers.agreement import head_person  # noqa: E402
from deltaworld_core.teachers.boxes import BoxStore  # noqa: E402
from deltaworld_core.teachers.centernet import BoxDetector  # noqa: E402
from deltaworld_core.teachers.labels import LabelSettings, label_clips  # noqa: E402
from deltaworld_core.teachers.packages import fetch_teacher  # noqa: E402
from deltaworld_core.training.box_labels import CAR, core_recall, vehicle_cores  # noqa: E402
from deltaworld_core.training.real_labels import frame_features  # noqa: E402
from deltaworld_core.training.vehicle_labels import clip_boxes  # noqa: E402
from deltaworld_core.vfm import build_vfm, default_cache_dir  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", action="append", required=True, metavar="NAME=PATH", help="a heads file to measure")
    p.add_argument("--config", default="default", help="model config whose VFM and heads layout to use")
    p.add_argument("--sources", nargs="*", default=None, help="clips/sources (default: data_split.yaml held_out)")
    p.add_argument("--stride", type=int, default=3)
    p.add_argument("--min-score", type=float, default=0.3, help="vehicle boxes that speak score at least this")
    p.add_argument("--core", type=float, default=0.5, help="core side / box side")
    p.add_argument("--max-side", type=int, default=448)
    p.add_argument("--teacher-cache", default=None)
    p.add_argument("--time-frames", type=int, default=20, help="frames timing the teacher (0: no timing)")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def time_teacher(detector: BoxDetector, clip, frames: int) -> float:
    """Mean ms per ``detect`` over ``frames`` frames of ``clip`` after one warm-up frame."""
    picked = []
    for rgb, _ in clip.frames():
        picked.append(rgb)
        if len(picked) == frames + 1:
            break
    detector.detect(picked[0])
    start = time.perf_counter()
    for rgb in picked[1:]:
        detector.detect(rgb)
    return 1000.0 * (time.perf_counter() - start) / max(1, len(picked) - 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    named = dict(h.split("=", 1) for h in args.heads)
    heads = {name: load_module(TaskHeads.from_config(cfg.heads, cfg.vfm.embed_dim), path).eval()
             for name, path in named.items()}
    car_id = cfg.heads.class_names.index(CAR)
    size = tuple(cfg.forecast.output_size or cfg.vfm.image_size)
    vfm = build_vfm(cfg.vfm)
    cache = FeatureCache(default_cache_dir() / "features", vfm, cfg.vfm)
    store = BoxStore(LabelSettings(teacher="centernet", stride=args.stride), args.teacher_cache)
    clips = label_clips(args.sources if args.sources is not None else split_sources("held_out"))
    detector: list = []  # started on first need, shared with the timing
    videos, ms_per_frame = {}, None
    try:
        if args.time_frames > 0:
            detector.append(BoxDetector(fetch_teacher("centernet", args.teacher_cache), args.teacher_cache))
            ms_per_frame = time_teacher(detector[0], clips[0], args.time_frames)
        with torch.inference_mode():
            for clip in clips:
                boxes = clip_boxes(store, clip, True, detector)
                cores = torch.stack([vehicle_cores(*boxes.of_frame(t), size, args.min_score, args.core)
                                     for t in range(len(boxes.frames))])
                row = {"frames": len(boxes.frames), "frames_with_cores": int(cores.flatten(1).any(1).sum()),
                       "core_cells": int(cores.sum())}
                if row["core_cells"]:
                    feats = frame_features(clip, boxes.frames.tolist(), cache, args.max_side)
                    for name, h in heads.items():
                        car = head_person(h, feats, tuple(vfm.grid), size, car_id)  # bool: argmax is car_id
                        hit, total = core_recall(car, cores)
                        row[name] = {"recall_in_cores": hit / total, "head_car_share": float(car.float().mean())}
                videos[clip.name] = row
                print(clip.name, json.dumps(row), flush=True)
    finally:
        for d in detector:
            d.close()
    summary = {}
    for name in heads:
        vals = [v[name]["recall_in_cores"] for v in videos.values() if name in v]
        summary[name] = {"recall_in_cores_mean": sum(vals) / len(vals) if vals else None, "videos_with_cores": len(vals)}
    out = {"command": "python scripts/eval_vehicle_recall.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "heads": named, "config": args.config,
           "teacher": store.teacher.identity(), "label_settings": vars(store.settings), "min_score": args.min_score,
           "core": args.core, "label_size": list(size), "teacher_ms_per_frame": ms_per_frame,
           "teacher_timing": {"frames": args.time_frames, "clip": clips[0].name if clips else None,
                              "runtime": "node + tfjs wasm backend, 1 thread"},
           "summary": summary, "videos": videos}
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write(args.json, lambda p: Path(p).write_text(json.dumps(out, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
