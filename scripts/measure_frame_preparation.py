#!/usr/bin/env python3
"""How the frames of the paper config (``forecast.geometry: two_squares``, 512 px) reach the VFM,
against the release's own preparation, on 4:3, 16:9, 2:1 and 2.4:1 camera frames.

    .venv/bin/python scripts/measure_frame_preparation.py [--json results/frame_preparation.json] [--short 1080]

The release's preparation (written here from its description, independently of
``deltaworld_core.geometry``): the whole frame resized with OpenCV's bilinear so that its short side
is 512 and its long side at most 1024 (a frame wider than 2:1 is squashed to 2:1), then the two
512 x 512 squares at both ends of the long side. Compared with it, per aspect:

- ``project``: :func:`deltaworld_core.geometry.cut_views` of the ``two_squares`` layout (what the
  forecaster hands the VFM);
- ``windows_then_resize``: the windows cut at the camera's resolution (side = the frame's short side,
  at both ends) and each resized to 512 with torch's antialiased bilinear (how frames were prepared
  before the whole-frame resize).

Pixels: mean and max absolute difference in grey levels (0..255). Features: the embedded DINOv2-S/14
backbone at 518 px (``vfm.image_size`` 518; the 512 squares are resized to it by the VFM alike),
mean squared difference of the patch features against the release's, and, for scale, the mean
squared frame-to-frame change (two frames 0.2 s apart, both prepared as the release does). Frames:
synthetic scenes (``deltaworld_core.data.synthetic``) rendered at ``--short`` px on the short side:
deterministic, textured, at a camera's resolution.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import load_config  # noqa: E402
from deltaworld_core.data.synthetic import SyntheticWorld  # noqa: E402
from deltaworld_core.geometry import cut_views, layout  # noqa: E402
from deltaworld_core.vfm import build_vfm  # noqa: E402

SQUARE, LONG_CAP = 512, 1024
ASPECTS = {"4:3": 4 / 3, "16:9": 16 / 9, "2:1": 2.0, "2.4:1": 2.4}  # 2.4:1: wider than 2:1, squashed


def release_squares(rgb: np.ndarray) -> np.ndarray:
    """The release's preparation of a landscape frame -> uint8 [2, 512, 512, 3] (one square for a
    square frame)."""
    h, w = rgb.shape[:2]
    width = min(LONG_CAP, int(round(w * SQUARE / h)))
    resized = cv2.resize(rgb, (width, SQUARE), interpolation=cv2.INTER_LINEAR)
    if width == SQUARE:
        return resized[None]
    return np.stack([resized[:, :SQUARE], resized[:, width - SQUARE:]])


def windows_then_resize(rgb: np.ndarray) -> np.ndarray:
    """Square windows of the frame's height at both ends, at the camera's resolution, each resized
    to 512 with an antialiased bilinear filter -> uint8 [2, 512, 512, 3]."""
    h, w = rgb.shape[:2]
    windows = np.stack([rgb[:, :h], rgb[:, w - h:]])
    x = torch.from_numpy(windows).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(SQUARE, SQUARE), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def pixel_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"mean_abs": float(d.mean()), "max_abs": int(d.max())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="results/frame_preparation.json")
    p.add_argument("--short", type=int, default=1080, help="camera frames' short side in px")
    p.add_argument("--seed", type=int, default=3, help="synthetic scene seed")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_config("default", {"vfm.image_size": [518, 518], "vfm.backend": "torch"})
    vfm = build_vfm(cfg.vfm)
    out: dict = {"command": "scripts/measure_frame_preparation.py " + " ".join(sys.argv[1:]),
                 "vfm": f"{cfg.vfm.family} embedded, {cfg.vfm.image_size[0]} px", "square": SQUARE,
                 "camera_short_side": args.short, "aspects": {}}
    t0 = time.perf_counter()
    for name, aspect in ASPECTS.items():
        size = (args.short, int(round(args.short * aspect)))
        frames = SyntheticWorld(args.seed, size).render(np.array([0.0, 0.2]))["frames"]  # uint8 [2, H, W, 3]
        lay = layout("two_squares", size, (SQUARE, SQUARE), (192, 192))
        reference = release_squares(frames[0])
        preparations = {"project": cut_views(frames[0], lay)}
        if aspect <= 2:  # wider frames were cut into ceil(aspect) windows, not comparable square by square
            preparations["windows_then_resize"] = windows_then_resize(frames[0])
        with torch.no_grad():
            ref_feats = vfm(reference).float()
            change = float(((vfm(release_squares(frames[1])).float() - ref_feats) ** 2).mean())
            row = {"frame": list(size), "prepared": list(lay.prepared), "views": lay.num_views,
                   "frame_to_frame_feature_mse": change}
            for prep, views in preparations.items():
                mse = float(((vfm(views).float() - ref_feats) ** 2).mean())
                row[prep] = {**pixel_stats(views, reference), "feature_mse": mse,
                             "feature_mse_over_frame_change": mse / change}
        out["aspects"][name] = row
        print(name, json.dumps(row))
    out["seconds"] = time.perf_counter() - t0
    text = json.dumps(out, indent=1)
    atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
