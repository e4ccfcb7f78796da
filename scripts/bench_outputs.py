"""What each way of publishing a forecast costs: the heads stage (the maps of K x H futures, the
summaries over K, the one copy to the host) and the Futures message's size, per setting.

    python scripts/bench_outputs.py [--device cpu|cuda] [--threads N] [--repeats 5] [--json OUT]
        [--image-size 512] [--frame 720x1280] [--k 20] [--settings NAME ...]

The decoder's residuals are random (the heads' cost does not depend on their values); the model is
the paper config's heads (19 classes, 256 depth bins, the 768-d DINOv3 features at a 32 x 32 grid
for 512 px). Each setting is a set of forecast.* overrides; the JSON gives per setting the median
ms of the stage, the matmul FLOPs torch counts in it (upsampling and argmax are memory-bound and
not counted), and the bytes of one Futures message (class ids 1 B, depth 4 B per pixel and
hypothesis and step, plus 13 B per pixel and step of summaries).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltaworld_core import load_config  # noqa: E402
from deltaworld_core.forecaster import Forecaster, build_models  # noqa: E402
from deltaworld_core.released import CITYSCAPES_CLASSES  # noqa: E402
from deltaworld_core.vfm import build_vfm  # noqa: E402

SETTINGS = {
    # name: forecast.* overrides (the paper config's former defaults first)
    "squash_512_all": {"geometry": "squash", "output_size": [512, 512], "publish_k": None},
    "squash_256_all": {"geometry": "squash", "output_size": [256, 256], "publish_k": None},
    "squash_256_pub4": {"geometry": "squash", "output_size": [256, 256], "publish_k": 4},
    "squash_256_pub4_sum128": {"geometry": "squash", "output_size": [256, 256], "publish_k": 4,
                               "summary_size": [128, 128]},
    "two_squares_512_all": {"geometry": "two_squares", "output_size": [512, 512], "publish_k": None},
    "two_squares_256_pub4": {"geometry": "two_squares", "output_size": [256, 256], "publish_k": 4},
    "two_squares_256_pub4_sum128": {"geometry": "two_squares", "output_size": [256, 256], "publish_k": 4,
                                    "summary_size": [128, 128]},
    "two_squares_256_pub1_sum128": {"geometry": "two_squares", "output_size": [256, 256], "publish_k": 1,
                                    "summary_size": [128, 128]},
}


def message_bytes(published_k: int, horizon: int, canvas: tuple[int, int]) -> int:
    pixels = canvas[0] * canvas[1]
    return published_k * horizon * pixels * (1 + 4) + horizon * pixels * (1 + 4 + 4 + 4)


def measure(name: str, forecast: dict, args, device: torch.device) -> dict:
    over = {"weights": None, "vfm.weights": "random", "vfm.depth": 1, "vfm.image_size": [args.image_size] * 2,
            "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "world.depth": 1,
            "heads.class_names": CITYSCAPES_CLASSES, "forecast.k": args.k, "forecast.summary_size": None,
            **{f"forecast.{key}": value for key, value in forecast.items()}}
    cfg = load_config("paper", over)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = [m.to(device).eval() for m in build_models(cfg)]
    vfm = build_vfm(cfg.vfm, device=device)
    fc = Forecaster(cfg, vfm, *models, device=device)
    fh, fw = args.frame
    fc._image_shape = (fh, fw, 3)
    lay = fc.layout(fc._image_shape)
    v, n = lay.num_views, fc.grid[0] * fc.grid[1]
    coarse = fc.tokenizer.decode_grid(fc.grid)
    g = torch.Generator(device=device).manual_seed(0)
    last = torch.randn(v, n, cfg.vfm.embed_dim, generator=g, device=device)
    residuals = 0.1 * torch.randn(v, fc.k, fc.horizon, coarse[0] * coarse[1], cfg.vfm.embed_dim, generator=g,
                                  device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(2):
            arrays, _ = fc._maps(last, residuals)
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            arrays, _ = fc._maps(last, residuals)  # ends with the host copy: synchronised
            times.append((time.perf_counter() - t0) * 1e3)
        with FlopCounterMode(display=False) as counter:
            fc._maps(last, residuals)
    published = arrays["semantic"].shape[0]
    size = message_bytes(published, fc.horizon, lay.canvas)
    assert size <= sum(a.nbytes for a in arrays.values()) + 16  # the arrays are what the message carries
    return {"setting": name, "overrides": forecast, "views": v, "canvas": list(lay.canvas), "k": fc.k,
            "published_k": published, "horizon": fc.horizon, "heads_ms": statistics.median(times),
            "heads_ms_all": times, "heads_matmul_flops": int(counter.get_total_flops()), "message_bytes": size,
            "message_mb": size / 1e6, "mb_per_s_at_25hz": size * 25 / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--frame", default="720x1280", help="camera frame HxW (16:9 by default)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.frame = tuple(int(v) for v in args.frame.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.settings:
        row = measure(name, SETTINGS[name], args, device)
        rows.append(row)
        print(f"{name:32s} views {row['views']} canvas {row['canvas']} publish {row['published_k']:2d}/{row['k']}: "
              f"heads {row['heads_ms']:8.1f} ms, {row['heads_matmul_flops'] / 1e9:7.2f} GFLOP, "
              f"message {row['message_mb']:6.2f} MB ({row['mb_per_s_at_25hz']:6.1f} MB/s at 25 Hz)", flush=True)
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(0) if device.type == "cuda"
              else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "image_size": args.image_size, "frame": list(args.frame), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
