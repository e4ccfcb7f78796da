"""How much of the next frame's VFM features can simple means predict on the held-out videos?

    .venv/bin/python scripts/predictability.py [--json results/predictability.json]

Context for the model card's missed targets: per held-out video, at the evaluation's 0.2-s steps,
each number is a feature MSE as a multiple of copy-last's for the first future frame.

  linear_extrapolation[a]   f_t + a (f_t - f_{t-1}): the last change continued, in feature space
  motion_extrapolation      f_t warped by the global motion (shift and zoom, searched on a grid)
                            that best maps f_{t-1} onto f_t: a constant-velocity camera
  motion_oracle             f_t warped by the global motion that best maps f_t onto the TRUE f_{t+1}
                            (uses the future: how much of the change is global motion at all)
  pca_code[r]               the first r principal components (fitted on the training videos' pairs)
                            of the change at the decoder's 8x8 grid, upsampled: what a linear token
                            of width r can carry (uses the future: a codec bound, not a forecast)
  residual_8x8              the true change at the 8x8 grid, upsampled (the decoder grid's bound)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import load_config  # noqa: E402
from deltaworld_core.data.sources import resolve_clips, split_sources  # noqa: E402
from deltaworld_core.evaluation.sources import ClipSource  # noqa: E402
from deltaworld_core.forecaster import load_models  # noqa: E402
from deltaworld_core.vfm import build_vfm, default_cache_dir  # noqa: E402

SHIFTS = torch.linspace(-2.5, 2.5, 21)  # patches
ZOOMS = (0.95, 1.0, 1.05)
ALPHAS = (0.25, 0.5, 1.0)
RANKS = (64, 192, 384)


def warp(maps: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """maps [B, C, H, W] moved by (shift_x, shift_y) patches and zoomed [B] each (border padding)."""
    b, _, h, w = maps.shape
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2], theta[:, 1, 2] = -2.0 * shift_x / w, -2.0 * shift_y / h
    grid = F.affine_grid(theta, list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def best_motion(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per item, the grid motion that maps src [B, C, H, W] closest to dst (MSE)."""
    b = src.shape[0]
    best = torch.full((b,), float("inf"))
    params = [torch.zeros(b), torch.zeros(b), torch.ones(b)]
    for zoom in ZOOMS:
        for sy in SHIFTS:
            for sx in SHIFTS:
                args = (torch.full((b,), float(sx)), torch.full((b,), float(sy)), torch.full((b,), zoom))
                err = ((warp(src, *args) - dst) ** 2).mean(dim=(1, 2, 3))
                better = err < best
                best = torch.where(better, err, best)
                for p, a in zip(params, args):
                    p[better] = a[better]
    return tuple(params)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(ROOT / "results" / "predictability.json"))
    ap.add_argument("--max-clips", type=int, default=0, help="per video (0 = every window: a few frames with a cut "
                    "or a flash dominate a video's sums, so subsets disagree)")
    ap.add_argument("--step-s", type=float, default=0.2)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config("default", {"forecast.quantize": "none"})
    tokenizer, _, _ = load_models(cfg, torch.device("cpu"))
    tokenizer = tokenizer.float()
    vfm = build_vfm(cfg.vfm)
    grid = tuple(vfm.grid)
    source = ClipSource(vfm, cfg, 2, 1, args.step_s, default_cache_dir() / "features")

    def triples(names, stride, limit):
        out = {}
        for clip in resolve_clips(names):
            windows = list(source.videos([clip.path], None, stride, None, (0.0, 1.0), [clip.full_name], [clip.fps]))
            feats = torch.stack([w.features for w in windows[:limit]]).float()  # [B, 3, N, C]
            out[clip.full_name] = feats
        return out

    with torch.no_grad():
        train = triples(split_sources("train"), 1, 10**9)
        changes = torch.cat([tokenizer.linear_change(f[:, 1], f[:, 2], grid) for f in train.values()]).flatten(1)
        mean = changes.mean(0)
        basis = torch.linalg.svd(changes - mean, full_matrices=False)[2]  # [r, n*C]
        results = {}
        for name, feats in triples(split_sources("held_out"), 1, args.max_clips or 10**9).items():
            before, last, truth = feats[:, 0], feats[:, 1], feats[:, 2]
            copy = ((truth - last) ** 2).mean()
            ratio = lambda pred: float(((pred - truth) ** 2).mean() / copy)  # noqa: E731
            maps = lambda f: f.unflatten(1, grid).permute(0, 3, 1, 2)  # noqa: E731
            flat = lambda m: m.permute(0, 2, 3, 1).flatten(1, 2)  # noqa: E731
            row = {"clips": len(feats),
                   "linear_extrapolation": {str(a): ratio(last + a * (last - before)) for a in ALPHAS}}
            past = best_motion(maps(before), maps(last))
            row["motion_extrapolation"] = ratio(flat(warp(maps(last), *past)))
            future = best_motion(maps(last), maps(truth))
            row["motion_oracle"] = ratio(flat(warp(maps(last), *future)))
            change = tokenizer.linear_change(last, truth, grid)  # [B, n, C]
            row["residual_8x8"] = ratio(last + tokenizer.upsample_residual(change, grid))
            codes = {}
            for r in RANKS:
                v = basis[:r]
                rec = mean + ((change.flatten(1) - mean) @ v.T) @ v
                codes[str(r)] = ratio(last + tokenizer.upsample_residual(rec.view_as(change), grid))
            row["pca_code"] = codes
            results[name] = row
            print(name, json.dumps(row), flush=True)
    keys = ("motion_extrapolation", "motion_oracle", "residual_8x8")
    average = {key: float(np.mean([r[key] for r in results.values()])) for key in keys}
    average["linear_extrapolation"] = {str(a): float(np.mean([r["linear_extrapolation"][str(a)] for r in results.values()]))
                                       for a in ALPHAS}
    average["pca_code"] = {str(r): float(np.mean([v["pca_code"][str(r)] for v in results.values()])) for r in RANKS}
    out = {"step_s": args.step_s, "training_pairs": int(changes.shape[0]), "videos": results, "video_average": average}
    print("average", json.dumps(average))
    text = json.dumps(out, indent=1)
    atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
