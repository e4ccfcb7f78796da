"""Fits the forecast's calibration (``forecast.mean_scale``, ``spread``, ``change_growth``) on whole videos
that no training stage saw: the ``calibration`` split of ``configs/data_split.yaml``, never the
``held_out`` one that the README reports.

    python -m deltaworld_core.calibrate --config default [--sources NAME ... | --video RECORDING ...] \\
        [--context 4 --horizon 3 --k 8 --step-s 0.2] [--json OUT.json] [--write]

The K hypotheses are sampled as predicted (``mean_scale`` 1, ``spread`` 1); per video v and
horizon step h, with m the hypotheses' mean, y the truth and x the last frame's features
(sums over clips, tokens and channels):

    A = |m - x|^2,   B = <m - x, y - x>,   C = |y - x|^2 (copy-last's error),   V = sample variance.

(With ``forecast.spread_from: last_change`` the hypotheses' first-step spread is already the last
observed change's RMS, so ``spread`` is fitted as its multiple.) The mean forecast x + b (m - x) has error ``b^2 A - 2 b B + C``; every video and step weighs the
same (each divided by its C, as the README's video average does), so the ``mean_scale`` b that
minimises their summed ratio to copy-last is ``sum(B/C) / sum(A/C)`` (at least 0). With the
mean so scaled, ``spread`` s makes the spread-skill ratio ``s * sqrt((K+1)/K * V / error)``
1 in geometric mean over videos and steps. ``--write`` puts them (2 decimals) into the config's
``forecast:`` section, with ``change_growth``: the exponent g of RMS change ~ gap ** g fitted
to copy-last's error at 1..H steps (it brings the last change, observed over the camera's own
frame interval, to one forecast step); the JSON has every video's numbers before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .checkpoint import atomic_write
from .cli import add_overrides_argument, add_threads_argument, parse_overrides, run_cli
from .config import load_config, resolve_config_path
from .data.refs import no_valid_recording
from .data.sources import resolve_clips, split_sources
from .evaluation.evaluator import Evaluator
from .evaluation.clips import EvaluationError
from .evaluation.sources import ClipSource, expand_videos
from .forecaster import load_models
from .threads import apply_threads
from .vfm import build_vfm, default_cache_dir

log = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    pass


MAX_MEAN_SCALE, MAX_SPREAD, MAX_GROWTH = 4.0, 16.0, 2.0  # the forecast.* ranges of config.py


def change_growth(copy_error: np.ndarray) -> float | None:
    """The exponent g of RMS change ~ gap ** g from copy-last's summed squared error at gaps of
    1..H steps [H] (least squares through the origin in log-log, steps 2..H against step 1);
    None with fewer than 2 steps or no change."""
    steps = np.arange(1, len(copy_error) + 1)
    if len(copy_error) < 2 or np.any(np.asarray(copy_error) <= 0):
        return None
    x = np.log(steps[1:])
    y = 0.5 * np.log(np.asarray(copy_error[1:]) / copy_error[0])
    return float((x * y).sum() / (x * x).sum())


def fit(stats: dict[str, dict[str, np.ndarray]], k: int) -> dict[str, Any]:
    """``stats[video]`` holds per-step sums ``A``, ``B``, ``C``, ``V`` [H] and ``clips`` (see the
    module doc) -> ``mean_scale``, ``spread``, ``change_growth`` (mean of the videos' own, None
    with one step) and per video the ratio of the mean to copy-last and the spread-skill ratio,
    as sampled and as calibrated."""
    usable = {v: s for v, s in stats.items() if np.all(s["C"] > 0) and s["clips"] > 0}
    if not usable:
        raise CalibrationError("no calibration video changes between frames: nothing to fit")
    a = np.concatenate([s["A"] / s["C"] for s in usable.values()])
    b = np.concatenate([s["B"] / s["C"] for s in usable.values()])
    mean_scale = max(0.0, float(b.sum() / a.sum())) if a.sum() > 0 else 0.0

    def error(s, scale):  # the scaled mean's squared error, per step
        return scale * scale * s["A"] - 2.0 * scale * s["B"] + s["C"]

    def ssr(s, scale, spread):
        return spread * np.sqrt((k + 1) / k * s["V"] / np.maximum(error(s, scale), 1e-30))

    logs = np.concatenate([np.log(np.maximum(ssr(s, mean_scale, 1.0), 1e-12)) for s in usable.values()])
    spread = float(np.exp(-logs.mean())) if k > 1 and np.isfinite(logs).all() and logs.max() > -27 else 1.0
    # the ranges forecast.mean_scale / forecast.spread accept (samples that hardly differ would
    # otherwise ask for an unbounded spread)
    mean_scale, spread = min(mean_scale, MAX_MEAN_SCALE), min(spread, MAX_SPREAD)
    growth = {name: change_growth(s["C"]) for name, s in usable.items()}
    known = [g for g in growth.values() if g is not None]
    growth_fit = min(MAX_GROWTH, max(0.0, float(np.mean(known)))) if known else None
    videos = {}
    for name, s in usable.items():
        own = float(s["B"].sum() / s["A"].sum()) if s["A"].sum() > 0 else 0.0
        videos[name] = {
            "clips": int(s["clips"]),
            "sums": {key: s[key].tolist() for key in "ABCV"},  # over clips: the fit can be redone from these
            "own_mean_scale": max(0.0, own),  # what this video alone would fit (all steps)
            "own_change_growth": growth[name],
            "mean_ratio_to_copy_last": {"sampled": (error(s, 1.0) / s["C"]).tolist(),
                                        "calibrated": (error(s, mean_scale) / s["C"]).tolist()},
            "spread_skill_ratio": {"sampled": ssr(s, 1.0, 1.0).tolist(),
                                   "calibrated": ssr(s, mean_scale, spread).tolist()},
        }

    def average(key, which):
        return np.mean([v[key][which] for v in videos.values()], axis=0).tolist()

    return {"mean_scale": mean_scale, "spread": spread, "change_growth": growth_fit, "videos": videos,
            "video_average": {key: {which: average(key, which) for which in ("sampled", "calibrated")}
                              for key in ("mean_ratio_to_copy_last", "spread_skill_ratio")},
            "skipped": sorted(set(stats) - set(usable))}


def write_config(path: Path, mean_scale: float, spread: float, change_growth: float | None = None) -> None:
    """Sets ``spread``, ``mean_scale`` (and ``change_growth`` when given) in the ``forecast:``
    section of the YAML at ``path`` (block or one-line flow style), keeping every other line and
    comment; written atomically."""
    lines = path.read_text().splitlines(keepends=True)
    values = {"spread": round(spread, 2), "mean_scale": round(mean_scale, 2)}
    if change_growth is not None:
        values["change_growth"] = round(change_growth, 2)
    flow = next((i for i, line in enumerate(lines) if re.match(r"forecast:\s*\{.*\}\s*(#.*)?$", line)), None)
    if flow is not None:  # forecast: {k: 8, ...} on one line
        section = yaml.safe_load(lines[flow])["forecast"] | values
        lines[flow] = "forecast: {" + ", ".join(f"{key}: {json.dumps(val)}" for key, val in section.items()) + "}\n"
        text = "".join(lines)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return
    start = next((i for i, line in enumerate(lines) if re.match(r"forecast:\s*(#.*)?$", line)), None)
    if start is None:
        raise CalibrationError(f"{path} has no top-level 'forecast:' section to write the calibration into")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith(" ")),
               len(lines))
    # the old comment explained the old value: replaced by where the new one comes from
    comment = "# fitted by python -m deltaworld_core.calibrate on the calibration videos (README)"
    for key, value in values.items():
        pattern = re.compile(rf"(\s+){key}:")
        for i in range(start + 1, end):
            m = pattern.match(lines[i])
            if m:
                lines[i] = f"{m.group(1)}{key}: {value:.2f}".ljust(28) + f"{comment}\n"
                break
        else:
            lines.insert(end, f"  {key}: {value:.2f}".ljust(28) + f"{comment}\n")
            end += 1
    text = "".join(lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def collect(args: argparse.Namespace) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    overrides = parse_overrides(args.overrides)
    overrides.update({"forecast.mean_scale": 1.0, "forecast.spread": 1.0})  # sample as predicted
    cfg = load_config(args.config, overrides)
    if args.weights is not None:
        cfg.weights = str(args.weights)
    fc = cfg.forecast
    context = args.context or fc.context
    horizon = args.horizon or fc.horizon
    k = args.k or fc.k
    step_s = args.step_s or fc.step_s
    if k < 2:
        raise CalibrationError(f"--k must be >= 2 to measure a spread, got {k}")
    names = args.sources or ([] if args.video else split_sources("calibration"))
    leak = {n.split("/")[0] for n in names} & {n.split("/")[0] for n in split_sources("held_out")}
    if leak:
        raise CalibrationError(f"calibrating on held-out sources ({', '.join(sorted(leak))}) would leak them "
                               "into the reported numbers; use the calibration split of data_split.yaml")
    refused: dict[str, str] = {}  # a recording that cannot be read: one line, the others go on
    try:
        items, item_names = expand_videos(args.video, args.topic, refused)
    except EvaluationError as err:
        raise CalibrationError(str(err)) from err
    for line in refused.values():  # the run goes on with the others; if none is left, each still says why
        log.warning("refused %s", line)
    if args.video and not items and not names:
        raise CalibrationError(no_valid_recording(list(refused.values())) if refused else "no recording in --video")
    try:
        clips = resolve_clips(names, args.media_cache)
    except (KeyError, FileNotFoundError) as err:
        raise CalibrationError(err.args[0] if err.args else str(err)) from err
    recordings = [(item, name, None) for item, name in zip(items, item_names)]
    recordings += [(clip.path, clip.full_name, clip.fps) for clip in clips]
    device = torch.device(args.device)
    tokenizer, world, heads = load_models(cfg, device)
    vfm = build_vfm(cfg.vfm, device=device)
    cache_dir = None if args.no_cache else default_cache_dir() / "features"
    source = ClipSource(vfm, cfg, context, horizon, step_s, cache_dir)
    ev = Evaluator(cfg, tokenizer, world, heads, tuple(vfm.grid), source.black(), context, horizon, k,
                   seed=args.seed, device=device)
    stats: dict[str, dict[str, np.ndarray]] = {}

    def add(batch, name):
        s = stats.setdefault(name, {key: np.zeros(horizon) for key in "ABCV"} | {"clips": 0})
        p = ev.predict(batch)
        last, truth, samples = p["copy_last"], p["truth"], p["samples"]  # [B, H, N, C], ..., [B, K, H, N, C]
        dm, dy = samples.mean(1) - last, truth - last
        s["A"] += (dm * dm).mean(dim=(2, 3)).sum(0).double().cpu().numpy()
        s["B"] += (dm * dy).mean(dim=(2, 3)).sum(0).double().cpu().numpy()
        s["C"] += (dy * dy).mean(dim=(2, 3)).sum(0).double().cpu().numpy()
        s["V"] += samples.var(dim=1, unbiased=True).mean(dim=(2, 3)).sum(0).double().cpu().numpy()
        s["clips"] += len(batch)
        ev.index += len(batch)

    for path, name, fps in recordings:
        batch = []
        for item in source.videos([path], None, args.stride, fps, (0.0, 1.0), [name], refused=refused):
            batch.append(item)
            if len(batch) == args.batch_size:
                add(batch, name)
                batch = []
        if batch:
            add(batch, name)
        if name not in stats and name not in refused:
            log.warning("%s: shorter than %d frames at %s s per step, skipped", name, context + horizon, step_s)
    if not stats and refused:
        raise CalibrationError(no_valid_recording(list(refused.values())))
    if not stats:
        raise CalibrationError(f"no clips: every calibration video is shorter than {context + horizon} frames")
    meta = {"config": cfg.name, "weights": cfg.weights, "spread_from": fc.spread_from,
            "sources": names + item_names, "refused": refused, "k": k,
            "step_s": step_s,
            "context": context, "horizon": horizon, "stride": args.stride, "seed": args.seed}
    return stats, meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.calibrate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="config name or YAML path")
    p.add_argument("--weights", default=None, help="folder of tokenizer/world/heads .safetensors")
    p.add_argument("--video", action="append", default=[],
                   help="a recording to fit on (repeatable): video file, frame folder, folder of recordings, "
                        ".txt/.csv list, rosbag2 bag (.mcap, .db3 or its folder) or tar shard, as evaluate takes; "
                        "recordings no training stage saw, and not those you report")
    p.add_argument("--topic", action="append", default=None,
                   help="a bag's image topic (repeatable; default: the bag's only Image/CompressedImage topic)")
    p.add_argument("--sources", nargs="+", default=[], metavar="NAME",
                   help="fetched sources or clips to fit on (default without --video: the calibration split of "
                        "data_split.yaml)")
    p.add_argument("--media-cache", default=None,
                   help="fetched media folder (default: $DELTAWORLD_DATA or ~/.cache/deltaworld/data)")
    p.add_argument("--context", type=int, default=None, help="context frames (default: the config's)")
    p.add_argument("--horizon", type=int, default=None, help="target frames (default: the config's)")
    p.add_argument("--k", type=int, default=None, help="samples per clip (default: the config's)")
    p.add_argument("--step-s", type=float, default=None, help="seconds between frames (default: the config's)")
    p.add_argument("--stride", type=int, default=1, help="sub-sampled frames between windows (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="cpu", help="torch device")
    add_threads_argument(p)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", default=None, help="write the fit and per-video numbers here (atomically)")
    p.add_argument("--write", action="store_true", help="write mean_scale and spread into the config's YAML")
    add_overrides_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body(args: argparse.Namespace) -> int:
        apply_threads(args.threads)
        for name in ("context", "horizon", "k", "batch_size", "stride"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise CalibrationError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.step_s is not None and not (args.step_s > 0 and math.isfinite(args.step_s)):
            raise CalibrationError(f"--step-s must be > 0, got {args.step_s}")
        stats, meta = collect(args)
        result = {**meta, **fit(stats, meta["k"])}
        avg = result["video_average"]
        fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"calibration on {len(result['videos'])} videos ({', '.join(result['videos'])})")
        growth = "-" if result["change_growth"] is None else f"{result['change_growth']:.2f}"
        print(f"  mean_scale {result['mean_scale']:.2f}  spread {result['spread']:.2f}  change_growth {growth}")
        print(f"  mean of {meta['k']} x copy-last per step: {fmt(avg['mean_ratio_to_copy_last']['sampled'])} as sampled"
              f" -> {fmt(avg['mean_ratio_to_copy_last']['calibrated'])} calibrated")
        print(f"  spread-skill ratio per step: {fmt(avg['spread_skill_ratio']['sampled'])} as sampled"
              f" -> {fmt(avg['spread_skill_ratio']['calibrated'])} calibrated")
        if args.json:
            text = json.dumps(result, indent=1)
            atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
        if args.write:
            path = resolve_config_path(args.config)
            write_config(path, result["mean_scale"], result["spread"], result["change_growth"])
            print(f"  written to {path}")
        return 0

    return run_cli(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
