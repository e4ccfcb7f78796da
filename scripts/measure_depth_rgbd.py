"""Depth head fine-tuned on part of a real RGB-D sequence, measured on its held-out frames.

    .venv/bin/python scripts/measure_depth_rgbd.py [--held-out-fraction 0.5] [--max-depth shipped 2]
        [--steps 600] [--lr 0.1] [--json results/depth_rgbd.json]

The sequence is ``mbt-depth/castel`` of Debian's ``visp-images-data`` (GPL-2; fetched by name into
``~/.cache/deltaworld/rgbd``, never into the repository; :mod:`deltaworld_core.data.visp_castel`),
its depth registered to the colour camera and written as an MCAP bag (frames stamped
``forecast.step_s`` apart: the sequence has no timestamps, so each forecast step is the next
recorded frame). :func:`deltaworld_core.training.depth_finetune.run` (the ``depth_finetune`` CLI's
stage) fine-tunes the shipped depth head on the first frames and holds out the last (contiguous),
once per ``--max-depth`` value: the shipped bins (0.001-80 m) and bins spanning the camera's range.
On the held-out frames, against the depth camera (valid pixels only, at the forecast's output
size): RMSE and AbsRel of the synthetic-only shipped head and of the fine-tuned heads on the
present frame, and of forecasts (steps 1..3, mean of K; windows entirely inside the held-out part)
next to copy-last (the head's depth of the newest context frame) for every head, and the depth
camera's own last frame copied (how much the scene moves).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deltaworld_core.checkpoint import atomic_write
from deltaworld_core.data.depth_pairs import rgbd_pairs
from deltaworld_core.data.visp_castel import default_cache, fetch_castel, write_castel_bag
from deltaworld_core.forecaster import Forecaster
from deltaworld_core.training.depth_finetune import (DepthFinetuneConfig, depth_errors, depth_targets, frame_features,
                                                     present_depth, run)

COLOUR, DEPTH = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw"


def forecast_rows(forecaster: Forecaster, frames, targets: torch.Tensor, present: torch.Tensor,
                  held: range, stamps: list[float]) -> dict:
    """Per horizon step over the windows inside ``held``: the forecast's mean of K and copy-last
    (``present`` depth of the newest context frame) against the depth camera ``targets``
    [T, h, w]; also the camera's own newest frame copied."""
    c, horizon = forecaster.context, forecaster.horizon
    preds: dict[str, list[list[torch.Tensor]]] = {k: [[] for _ in range(horizon)] for k in
                                                 ("forecast_mean_k", "copy_last", "camera_copy_last")}
    truth: list[list[torch.Tensor]] = [[] for _ in range(horizon)]
    starts = range(held.start, held.stop - c - horizon + 1)
    for s in starts:
        last = s + c - 1
        fc = forecaster.forecast_window([frames[i] for i in range(s, last + 1)], stamps[s:last + 1])
        mean = torch.from_numpy(np.asarray(fc.summary.depth_mean))  # [H, h, w]
        for step in range(horizon):
            truth[step].append(targets[last + 1 + step])
            preds["forecast_mean_k"][step].append(mean[step])
            preds["copy_last"][step].append(present[last])
            preds["camera_copy_last"][step].append(targets[last])
    out = {"windows": len(starts)}
    for name, per_step in preds.items():
        out[name] = [depth_errors(torch.stack(p), torch.stack(t)) for p, t in zip(per_step, truth)]
    return out


def variant_name(max_depth: float | None) -> str:
    return "shipped_bins" if max_depth is None else f"bins_to_{max_depth:g}m"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default=None, help="where the sequence, its bag and the fine-tuned heads go")
    p.add_argument("--held-out-fraction", type=float, default=0.5)
    p.add_argument("--max-depth", nargs="+", default=["shipped", "2"],
                   help="one fine-tune per value: the depth bins' far end in metres, or shipped (the head's own)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--json", default="results/depth_rgbd.json")
    args = p.parse_args(argv)
    cache = Path(args.cache).expanduser() if args.cache else default_cache()
    root = fetch_castel(cache)
    base = Forecaster.from_config("default")
    bag = cache / "castel.mcap"
    if not bag.is_file():
        write_castel_bag(root, bag, base.step_s, COLOUR, DEPTH)
    pairs = list(rgbd_pairs(bag, COLOUR, DEPTH))
    frames, stamps = [rgb for rgb, _, _ in pairs], [s for _, _, s in pairs]
    features, lay = frame_features(base.cfg, base.vfm, frames)
    size, grid = tuple(lay.canvas), tuple(base.grid)
    targets = depth_targets([d for _, d, _ in pairs], lay.region, size)

    def measure(fc: Forecaster, held: range) -> dict:
        present = present_depth(fc.heads, features, grid, size)
        return {"present": depth_errors(present[held.start:], targets[held.start:]),
                "forecast": forecast_rows(fc, frames, targets, present, held, stamps)}

    manifest = json.loads((root / "manifest.json").read_text())
    out: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
                 "command": shlex.join(["scripts/measure_depth_rgbd.py", *(sys.argv[1:] if argv is None else argv)]),
                 "sequence": {k: v for k, v in manifest.items() if k != "files"},
                 "frames": len(pairs), "frame_period_s": base.step_s, "output_size": list(size),
                 "geometry": base.cfg.forecast.geometry, "finetuned": {}}
    for value in args.max_depth:
        max_depth = None if value == "shipped" else float(value)
        recipe = DepthFinetuneConfig(str(bag), COLOUR, DEPTH, str(cache / variant_name(max_depth)),
                                     held_out_fraction=args.held_out_fraction, max_depth=max_depth,
                                     steps=args.steps, lr=args.lr)
        metrics = run(recipe)
        held = range(len(pairs) - metrics["held_out_frames"], len(pairs))
        if "synthetic_only" not in out:
            out.update(fine_tune_frames=metrics["fine_tune_frames"], held_out_frames=metrics["held_out_frames"],
                       pairs=metrics["pairs"], synthetic_only=measure(base, held),
                       recipe={k: v for k, v in vars(recipe).items() if k not in ("bag", "out", "max_depth")})
        tuned = Forecaster.from_config(Path(recipe.out) / "model.yaml")
        row = {"depth_range_m": [tuned.heads.min_depth, tuned.heads.max_depth], "loss_first": metrics["loss_first"],
               "loss_last": metrics["loss_last"], **measure(tuned, held)}
        ratio = row["present"]["rmse"] / out["synthetic_only"]["present"]["rmse"]
        row["target"] = {"rule": "held-out RMSE <= 0.5 x the synthetic-only head's", "ratio": ratio,
                         "met": ratio <= 0.5}
        out["finetuned"][variant_name(max_depth)] = row
    text = json.dumps(out, indent=1) + "\n"
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
