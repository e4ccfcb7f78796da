"""Benchmark of one streaming step, stage by stage, on the current machine.

    python -m deltaworld_core.bench [--config NAME|PATH] [--json OUT.json] [--steps 20] [--threads N] [key.path=value ...]

Measures (medians after warm-up): ms per stage (vfm, encode, predict, decode, heads, total) and
total_hz; the forecasts per second of a back-to-back stream through the ROS node's own frame
runner (throughput_hz, deltaworld_core.runner: in one stage or two, as deltaworld_core.stages
chooses them; ``pipeline`` gives the chosen run's interval and latency, ``stages`` the choice and
each mode's measurement); FLOPs per stage (torch's flop counter) against the machine's measured dense-matmul
throughput (utilisation); the streaming step against a recompute-from-scratch rollout that
re-runs the VFM over every context frame and re-encodes every pair at each new frame (how the
released evaluation code works); DeltaWorld's predictor against the dense DINO-Foresight-style
predictor; and the process's peak RSS. With ``--device cuda`` every timing is CUDA-synchronised
(the clock is read after the GPU finished the stage) and the peak GPU memory of a streaming step is
reported. The ROS node's own cost per frame (node_overhead_ms) is ``python -m deltaworld_ros.bench``:
this library does not depend on ROS.
Speed targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import atomic_write
from .cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from .dense import DenseConfig, DenseForesight, load_dense
from .forecaster import Forecaster, future_maps, load_models, resolve_quantize
from .stages import MODES, choose_stages, measure_stream, probe_stream, synthetic_stream
from .vfm_runtime import cpu_has_native_bf16

STAGES = ("vfm", "encode", "predict", "decode", "heads", "total")
BENCH_SHAPE = (272, 640)  # the shipped demo clip's frame size
QUANTIZE_NOTE = {"int8": " + int8 linears", "bf16": " + bfloat16 DeltaTok"}


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2, sync=None) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:  # work queued before must not be counted
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    """Measured dense matmul throughput, GFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    ms = _median_ms(lambda: a @ b, repeats, warmup=3, sync=sync)
    return 2 * size**3 / (ms * 1e-3) / 1e9


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name"; else ``platform.processor()``, else
    the architecture): recorded in the JSON so that a result says which machine it came from."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stage_flops(fc: Forecaster, image: np.ndarray) -> dict[str, int]:
    """FLOPs of each stage of one streaming step with the forecaster's K and horizon."""
    k, horizon, grid = fc.k, fc.horizon, fc.grid
    world, tok = fc.world, fc.tokenizer
    with torch.inference_mode():
        feats = fc.vfm(image[None])
        token = tok.encode(feats, feats, grid)
        prev = feats.expand(k, -1, -1)
        tokens = token.expand(k, fc.context, -1)
        times = torch.zeros(k, fc.context, dtype=torch.float64, device=fc.device)
        kv = world.context_kv(tokens, times)
        queries = world.sample_queries(k, 1, device=fc.device)
        target = torch.zeros(k, 1, dtype=torch.float64, device=fc.device)
        coarse = tok.pool_for_decode(prev, grid)
        residuals = tok.decode_residual(token.expand(k, -1), coarse, grid)[:, None].expand(-1, horizon, -1, -1)
        out = {
            # counted on the torch backbone: the flop counter cannot see inside ONNX Runtime
            "vfm": _flops(lambda: fc.vfm.backbone(fc.vfm.preprocess(image[None]))),
            "encode": _flops(lambda: tok.encode(feats, feats, grid)),
            # per step: K queries through the predictor plus the new tokens' K/V
            "predict": horizon * _flops(lambda: world.predict(queries, target, kv))
            + (horizon - 1) * _flops(lambda: world.context_kv(token.expand(k, 1, -1), target)),
            # per step at the decoder's pooled grid: the decode and the carry of its pooled input
            "decode": horizon * _flops(lambda: coarse + tok.residual_carry(grid, coarse.device, coarse.dtype)
                                       @ tok.decode_residual(token.expand(k, -1), coarse, grid)),
            "heads": _flops(lambda: future_maps(fc.heads, tok, feats, residuals, grid, fc.output_size)),
        }
    out["total"] = sum(out.values())
    return out


def dense_comparison(fc: Forecaster, repeats: int, dense_weights: str | None = None,
                     float_world: torch.nn.Module | None = None) -> dict:
    """DeltaWorld's predictor vs the dense DINO-Foresight-style predictor of all patch features:
    same VFM grid, context and horizon, one sample each (the dense one is deterministic). The
    dense model is the trained checkpoint when given, else the default-size baseline. FLOPs are
    counted on ``float_world`` (the flop counter cannot see int8 kernels), timed on ``fc.world``."""
    c = fc.cfg.vfm.embed_dim
    model = load_dense(dense_weights) if dense_weights else DenseForesight(c, DenseConfig(context=fc.context))
    model = model.to(fc.device).eval()
    n = fc.grid[0] * fc.grid[1]
    context = torch.randn(1, fc.context, n, c, device=fc.device)
    world, horizon = fc.world, fc.horizon
    tokens = torch.randn(1, fc.context, world.token_dim, device=fc.device)
    times = torch.arange(fc.context, dtype=torch.float64, device=fc.device)[None] * fc.step_s
    target = times[:, -1:] + fc.step_s * torch.arange(1, horizon + 1, device=fc.device)[None]

    def world_rollout(world=world):  # the predictor alone: tokens in, tokens out, no decoding
        kv = world.context_kv(tokens, times)
        for h in range(horizon):
            t = target[:, h:h + 1]
            token = world.predict(world.sample_queries(1, 1, device=fc.device), t, kv)
            kv = [(torch.cat((a, na), 2), torch.cat((b, nb), 2)) for (a, b), (na, nb) in zip(kv, world.context_kv(token, t))]

    def dense_rollout():
        model.rollout(context, horizon, fc.grid, fc.step_s)

    with torch.inference_mode():
        dense_flops, world_flops = _flops(dense_rollout), _flops(lambda: world_rollout(float_world or world))
        sync = torch.cuda.synchronize if fc.device.type == "cuda" else None
        dense_ms, world_ms = _median_ms(dense_rollout, repeats, sync=sync), _median_ms(world_rollout, repeats, sync=sync)
    return {
        "tokens_per_frame": {"deltaworld": 1, "dense": n},
        # int8 linears keep packed weights, not parameters: count the float model's
        "params": {"deltaworld": sum(p.numel() for p in (float_world or world).parameters()),
                   "dense": sum(p.numel() for p in model.parameters())},
        "flops": {"deltaworld": world_flops, "dense": dense_flops},
        "ms": {"deltaworld": world_ms, "dense": dense_ms},
        "flops_ratio": dense_flops / max(world_flops, 1),
        "time_ratio": dense_ms / max(world_ms, 1e-9),
    }


def stream_throughput(fc: Forecaster, steps: int, clip: tuple[list, list] | None = None) -> tuple[dict, dict]:
    """The stream as the node runs it (:class:`~deltaworld_core.runner.FrameRunner`, back to
    back): one stage or two as :func:`~deltaworld_core.stages.choose_stages` decides (both
    measured on ``steps`` frames unless the config or the budget fixes it). Returns the run of the
    chosen mode (``pipeline``: its interval, forecasts/s and latency) and the choice. ``clip``:
    (frames, stamps) to time in the chosen mode instead of synthetic frames (the first context + 1
    are its warm-up), e.g. the frames a node measurement replays."""
    shape = BENCH_SHAPE if clip is None else clip[0][0].shape[:2]
    choice = choose_stages(fc, shape, steps)
    chosen = None if clip is not None else choice.measured.get(MODES[choice.stages])
    if chosen is None:
        frames, stamps, warmup = probe_stream(fc, shape, steps) if clip is None else (*clip, fc.context + 1)
        chosen = measure_stream(fc, choice.stages, frames, stamps, warmup)
    return {"active": choice.stages == 2, "why": choice.why, "stage_threads": chosen["kernel_threads"],
            **chosen}, choice.to_dict()


def run(config: str = "default", overrides: dict | None = None, steps: int = 20, device: str = "cpu",
        threads: int | None = None, weights: str | None = None, dense_weights: str | None = None) -> dict:
    dev = torch.device(device)
    fc = Forecaster.from_config(config, device=device, overrides=overrides, weights=weights, threads=threads)
    stream = synthetic_stream(fc.context + 2 + steps, BENCH_SHAPE)
    dt = 1.0 / 25
    stamps = [i * dt for i in range(len(stream))]
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    timings: dict[str, list[float]] = {s: [] for s in (*STAGES, "unattributed")}
    recompute: list[float] = []
    gpu_peaks: list[int] = []  # bytes, per streaming step (models, buffer and the step's temporaries)
    for i, image in enumerate(stream):
        if sync:
            torch.cuda.reset_peak_memory_stats(dev)
        out = fc.step(image, stamps[i])
        if sync:
            gpu_peaks.append(torch.cuda.max_memory_allocated(dev))
        if out is not None and i >= fc.context + 2:  # warm-up: first forecasts (and a first slide) excluded
            for s in STAGES:
                timings[s].append(out.timings[s])
            timings["unattributed"].append(out.timings["total"] - sum(out.timings[s] for s in STAGES[:-1]))
            # The recompute-from-scratch baseline on the same window right after each step: taking
            # both in turn keeps a machine whose speed drifts from biasing their ratio. It leaves
            # the buffer as streaming would have it, so the stream goes on unchanged.
            window = slice(i + 1 - fc.context, i + 1)
            t0 = time.perf_counter()
            fc.forecast_window(stream[window], stamps[window])
            if sync:
                sync()
            recompute.append((time.perf_counter() - t0) * 1e3)
    unattributed = statistics.median(timings.pop("unattributed"))
    stage_ms = {s: statistics.median(v) for s, v in timings.items()}
    # FLOPs of the same architecture in float (the flop counter cannot see int8 kernels): float
    # copies of the small parts only, around the same VFM
    float_fc = fc
    quantize = resolve_quantize(fc.cfg.forecast.quantize, dev)
    if quantize != "none":
        float_cfg = copy.deepcopy(fc.cfg)
        float_cfg.forecast.quantize = "none"
        float_fc = Forecaster(float_cfg, fc.vfm, *load_models(float_cfg, device=device), device=device)
    flops = stage_flops(float_fc, stream[0])
    peak = matmul_gflops(dev, fc.world.norm.weight.dtype)
    utilisation = {s: flops[s] / (stage_ms[s] * 1e-3) / (peak * 1e9) for s in STAGES}

    recompute_ms = statistics.median(recompute)
    fc.reset()
    pipeline, stages = stream_throughput(fc, steps)

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "name": fc.cfg.name,
            "resolution": list(fc.cfg.vfm.image_size),
            "vfm": f"{fc.cfg.vfm.family} d{fc.cfg.vfm.embed_dim}x{fc.cfg.vfm.depth} p{fc.cfg.vfm.patch_size}",
            "vfm_backend": fc.vfm.backend,
            # what vfm.precision resolved to on this machine (auto: bf16 with AVX512-BF16/AMX, else fp32)
            "vfm_precision": getattr(fc.vfm, "precision", "fp32"),
            "vfm_precision_setting": fc.cfg.vfm.precision,
            "k": fc.k, "horizon": fc.horizon, "step_s": fc.step_s, "context": fc.context,
            "output_size": list(fc.output_size),
            "tokenizer": {"dim": fc.cfg.tokenizer.dim, "encoder_depth": fc.cfg.tokenizer.encoder_depth,
                          "decoder_depth": fc.cfg.tokenizer.decoder_depth,
                          "decoder_stride": fc.cfg.tokenizer.decoder_stride},
            "predictor": {"dim": fc.cfg.world.dim, "depth": fc.cfg.world.depth},
            "dtype": str(fc.world.norm.weight.dtype).replace("torch.", ""),
            # what forecast.quantize resolved to on this machine (auto: bf16 where native, else none)
            "quantize": quantize,
            "quantize_setting": fc.cfg.forecast.quantize,
            "threads": torch.get_num_threads(),
            "trained_weights": fc.cfg.weights is not None,
        },
        "machine": {"cores": os.cpu_count(), "torch": torch.__version__, "device": str(dev),
                    "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
                    "cpu": cpu_model(),
                    "matmul_gflops": peak,
                    # bf16 matmuls (AMX here) run the VFM; on a shared host their rate drifts on its
                    # own (the VFM took 41 to 87 ms within minutes): this says which phase a run saw
                    "matmul_gflops_bf16": (matmul_gflops(dev, torch.bfloat16)
                                           if dev.type == "cuda" or cpu_has_native_bf16() else None),
                    # the CPU's bfloat16 support decides vfm.precision: auto; the load average says
                    # whether other work shared the cores while this ran (1-minute, at the end)
                    "native_bf16": dev.type == "cpu" and cpu_has_native_bf16(),
                    "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "stage_ms": stage_ms,
        **{s: stage_ms[s] for s in STAGES},
        "total_hz": 1e3 / stage_ms["total"],
        # forecasts per second of a back-to-back stream through the node's frame runner, in the
        # stages it chose (runner.py, stages.py): with two the slower stage sets it
        "throughput_hz": pipeline["forecasts_per_s"],
        "pipeline": pipeline,
        "stages": stages,
        # per step, total minus its stages (buffer updates, stacking): medians of stages do not add up
        "unattributed_ms": unattributed,
        "flops": flops,
        "utilisation": utilisation,
        "recompute_ms": recompute_ms,
        "streaming_speedup": recompute_ms / stage_ms["total"],
        "dense_ratio": dense_comparison(fc, max(3, steps // 4), dense_weights, float_fc.world),
    }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_gpu_mb"] = max(gpu_peaks) / 2**20 if gpu_peaks else None
    return result


def format_table(r: dict) -> str:
    c = r["config"]
    lines = [
        f"DeltaWorld benchmark: config {c['name']} ({c['vfm']}, {c['vfm_backend']}, {c.get('vfm_precision', 'fp32')}), "
        f"{c['resolution'][0]}x{c['resolution'][1]} px, K={c['k']}, {c['horizon']} steps, {c['dtype']}"
        f"{QUANTIZE_NOTE.get(c['quantize'], '')}, "
        f"{c['threads']} threads, {r['machine']['device']} ({r['machine']['device_name']})",
        f"{'stage':<8} {'ms':>9} {'GFLOP':>9} {'util %':>7}",
    ]
    for s in STAGES:
        lines.append(f"{s:<8} {r['stage_ms'][s]:>9.1f} {r['flops'][s] / 1e9:>9.2f} {100 * r['utilisation'][s]:>7.1f}")
    lines.append(f"total_hz {r['total_hz']:.2f}   (unattributed {r['unattributed_ms']:.1f} ms)   "
                 f"matmul {r['machine']['matmul_gflops']:.0f} GFLOP/s"
                 + (f" (bf16 {r['machine']['matmul_gflops_bf16']:.0f})" if r['machine'].get('matmul_gflops_bf16') else ""))
    p = r["pipeline"]
    shape = f"two stages of {p['stage_threads']} thread(s)" if p["active"] else f"one stage of {p['stage_threads']}"
    lines.append(f"throughput_hz {r['throughput_hz']:.2f}   ({shape}: {p['ms_per_forecast']:.1f} ms a forecast, "
                 f"latency {p['latency_ms']:.1f} ms; {r['stages']['why']})")
    lines.append(f"streaming_speedup {r['streaming_speedup']:.2f}x (recompute {r['recompute_ms']:.1f} ms)")
    d = r["dense_ratio"]
    lines.append(
        f"dense_ratio: tokens/frame 1 vs {d['tokens_per_frame']['dense']}, FLOPs x{d['flops_ratio']:.0f}, "
        f"time x{d['time_ratio']:.1f} ({d['ms']['deltaworld']:.1f} vs {d['ms']['dense']:.1f} ms)"
    )
    lines.append(f"peak_rss_mb {r['peak_rss_mb']:.0f}")
    if r.get("peak_gpu_mb") is not None:
        lines.append(f"peak_gpu_mb {r['peak_gpu_mb']:.0f} (a streaming step)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="config name (deltaworld_core/configs/NAME.yaml) or YAML path")
    parser.add_argument("--json", default=None, help="write the results here (atomically)")
    parser.add_argument("--steps", type=int, default=20, help="timed streaming steps (after warm-up)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    add_threads_argument(parser)
    parser.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors "
                        "(default: the config's)")
    parser.add_argument("--dense", default=None, help="dense baseline checkpoint for dense_ratio "
                        "(default: an untrained one of the same size; only its speed is measured)")
    add_overrides_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        overrides = parse_overrides(args.overrides)
        result = run(args.config, overrides, args.steps, args.device, args.threads, args.weights, args.dense)
        result["command"] = " ".join(["python -m deltaworld_core.bench", *(sys.argv[1:] if argv is None else argv)])
        print(format_table(result))
        if args.json:
            text = json.dumps(result, indent=2)
            atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
        return 0

    return run_cli(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
