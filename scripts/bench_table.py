"""The planning table: ``deltaworld_core.bench`` over K x input size in one process.

    python scripts/bench_table.py --config paper --device cuda --k 4 8 20 --px 256 512 --steps 8 \\
        --json results/device_table_paper.json [key.path=value ...]

Each cell is one ``bench.run`` (the same keys as ``python -m deltaworld_core.bench --json``: ``total``,
``stage_ms``, ``flops``, ``config.k`` ...) with ``forecast.k=K`` and ``vfm.image_size=[px, px]`` on top
of the given overrides; the JSON holds every cell's result plus a compact ``table`` (ms and Hz per
stage, GFLOP per stage, peak GPU memory). One process: the models of a cell are freed before the next.

``--meta-flops`` times nothing: it counts each cell's FLOPs per stage (``bench.stage_flops``, torch's
flop counter) with the models on the meta device (shapes only, no memory, any machine), for users
who scale the table to their GPU: ``python scripts/bench_table.py --meta-flops --json results/flops_paper_table.json
forecast.geometry=squash``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltaworld_core import bench, load_config  # noqa: E402
from deltaworld_core.config import parse_override  # noqa: E402
from deltaworld_core.forecaster import build_models  # noqa: E402
from deltaworld_core.vfm import build_vfm  # noqa: E402


def meta_flops(config: str, overrides: dict) -> dict:
    """FLOPs per stage of one streaming step of ``config`` (one view), counted on the meta device."""
    cfg = load_config(config, overrides)
    tok, world, heads = (m.to("meta").eval() for m in build_models(cfg))
    vfm = build_vfm(cfg.vfm, device="meta")
    fc = types.SimpleNamespace(vfm=vfm, tokenizer=tok, world=world, heads=heads, k=cfg.forecast.k,
                               horizon=cfg.forecast.horizon, context=cfg.forecast.context, device=torch.device("meta"),
                               grid=tuple(vfm.grid), output_size=tuple(cfg.forecast.output_size or cfg.vfm.image_size))
    with torch.inference_mode():
        return bench.stage_flops(fc, np.zeros((272, 640, 3), np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--px", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", required=True)
    parser.add_argument("--meta-flops", action="store_true", help="count FLOPs per cell on the meta device, time nothing")
    parser.add_argument("overrides", nargs="*", help="key.path=value applied to every cell")
    args = parser.parse_args()
    base = dict(parse_override(o) for o in args.overrides)
    cells, table = [], []
    for px in args.px:
        for k in args.k:
            over = {**base, "forecast.k": k, "vfm.image_size": [px, px]}
            if (base.get("forecast.publish_k") or 0) > k or k < 4:
                over["forecast.publish_k"] = None
            elif "forecast.publish_k" not in base:
                over["forecast.publish_k"] = min(4, k)  # the paper config's, never above K
            if args.meta_flops:
                flops = meta_flops(args.config, over)
                table.append({"k": k, "input_px": px, "gflop": {s: v / 1e9 for s, v in flops.items()}})
                print(f"K={k:3d} {px:4d} px: " + ", ".join(f"{s} {v / 1e9:.1f}" for s, v in flops.items()) + " GFLOP",
                      flush=True)
                Path(args.json).write_text(json.dumps({"config": args.config, "device": "meta", "overrides": base,
                                                       "counted_by": "torch.utils.flop_counter (matmuls, convs, "
                                                       "attention; not upsampling or argmax)", "table": table},
                                                      indent=1))
                continue
            t0 = time.perf_counter()
            result = bench.run(args.config, over, steps=args.steps, device=args.device, threads=args.threads)
            result["overrides"] = over
            result["wall_s"] = time.perf_counter() - t0
            cells.append(result)
            row = {"k": k, "input_px": px, "total_ms": result["total"], "total_hz": result["total_hz"],
                   "stage_ms": result["stage_ms"], "stage_hz": {s: 1e3 / v for s, v in result["stage_ms"].items() if v > 0},
                   "gflop": {s: v / 1e9 for s, v in result["flops"].items()},
                   "utilisation": result["utilisation"], "peak_gpu_mb": result.get("peak_gpu_mb"),
                   "peak_rss_mb": result["peak_rss_mb"]}
            table.append(row)
            print(f"K={k:3d} {px:4d} px: total {row['total_ms']:8.1f} ms ({row['total_hz']:6.1f} Hz), "
                  + ", ".join(f"{s} {v:.1f}" for s, v in result["stage_ms"].items() if s != "total")
                  + f"; {row['gflop']['total']:.0f} GFLOP; {result['wall_s']:.0f} s", flush=True)
            Path(args.json).write_text(json.dumps({"config": args.config, "device": args.device,
                                                   "device_name": cells[0]["machine"]["device_name"],
                                                   "overrides": base, "steps": args.steps, "table": table,
                                                   "cells": cells}, indent=1))
            del result
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
