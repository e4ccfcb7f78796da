"""Stage ``depth_finetune``: the shipped depth head fine-tuned on the robot's own RGB-D recording.

The VFM, DeltaTok, DeltaWorld and the segmentation head stay frozen; only the depth head (its
BatchNorm affine and 1x1 conv, BatchNorm running statistics kept) learns, from registered depth
read beside the colour topic of a rosbag2 bag (:mod:`deltaworld_core.data.depth_pairs`). Loss: L1
in metres between the head's depth at its feature grid (what inference upsamples) and the depth
camera pooled to that grid over valid pixels only (:func:`~deltaworld_core.data.depth_pairs.pool_depth`);
cells without enough valid pixels are ignored. The last frames of the recording (a contiguous
part, never interleaved) are held out and measured, never trained on.

    python -m deltaworld_core.training.depth_finetune --bag robot.mcap \\
        --color-topic /camera/color/image_raw --depth-topic /camera/aligned_depth_to_color/image_raw \\
        --held-out-fraction 0.25 --out runs/depth_ft

writes ``OUT/heads.safetensors`` (atomically; class names and the recipe in its metadata), the
base weights' tokenizer and world beside it, ``OUT/model.yaml`` (the base config pointing at OUT,
so ``--config OUT/model.yaml`` runs the forecaster with the new head), ``OUT/recipe.yaml`` and
``OUT/metrics.json`` (held-out RMSE/AbsRel before and after).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .. import geometry
from ..checkpoint import atomic_write, save_state
from ..cli import run_cli
from ..config import ModelConfig, load_config, read_yaml_mapping, resolve_config_path
from ..data.depth_pairs import PairStats, pool_depth, rgbd_pairs
from ..data.refs import MediaError
from ..forecaster import WEIGHT_FILES, load_models
from ..heads import TaskHeads
from ..vfm import build_vfm

log = logging.getLogger(__name__)


@dataclass
class DepthFinetuneConfig:
    """The recipe, written beside the result."""

    bag: str
    color_topic: str
    depth_topic: str
    out: str
    model: str = "default"
    tolerance_s: float = 0.02
    held_out_fraction: float = 0.25
    held_out_frames: int | None = None  # overrides the fraction
    max_depth: float | None = None  # None: the base heads' bin range; else the bins span min..max (metres)
    steps: int = 600
    lr: float = 0.1
    seed: int = 0
    min_valid: float = 0.5  # share of valid depth pixels a grid cell needs to count


def split_held_out(n: int, fraction: float, frames: int | None = None) -> tuple[range, range]:
    """``n`` frames -> (fine-tune part, held-out part): the held-out part is the last ``frames``
    (or ``round(fraction * n)``), contiguous; both parts non-empty or ValueError."""
    held = frames if frames is not None else int(round(fraction * n))
    if not 0 < held < n:
        raise ValueError(f"a held-out part of {held} of {n} paired frames leaves no frame to "
                         f"{'fine-tune on' if held >= n else 'measure'}")
    return range(0, n - held), range(n - held, n)


def depth_targets(depths: list[np.ndarray], region: tuple[int, int, int, int], size: tuple[int, int],
                  min_valid: float = 0.5) -> torch.Tensor:
    """Depth frames [H, W] (NaN invalid) -> [T, h, w] float32: each cut to the maps' ``region``
    (y0, x0, y1, x1) and pooled to ``size`` over valid pixels (NaN where too few)."""
    y0, x0, y1, x1 = region
    return torch.from_numpy(np.stack([pool_depth(d[y0:y1, x0:x1], size, min_valid) for d in depths]))


def depth_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float | int]:
    """RMSE (m) and AbsRel over the pixels of all frames together where the target is valid
    (finite, > 0) and the prediction finite (a depth camera's frame used as a prediction has holes)."""
    known = torch.isfinite(target) & (target > 0) & torch.isfinite(pred)
    if not bool(known.any()):
        return {"rmse": None, "absrel": None, "pixels": 0}
    err = pred.float()[known] - target[known]
    return {"rmse": float(err.square().mean().sqrt()), "absrel": float((err.abs() / target[known]).mean()),
            "pixels": int(known.sum())}


def grid_depth(heads: TaskHeads, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """features [T, N, C] -> depth [T, gh, gw] metres at the feature grid, exactly as inference."""
    return heads.depth(features, grid)


def present_depth(heads: TaskHeads, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
                  ) -> torch.Tensor:
    """features [T, N, C] -> depth [T, h, w] metres upsampled as the forecaster publishes it."""
    with torch.no_grad():
        return heads.maps(heads.logits(features), grid, size)[1]


def finetune_depth_head(heads: TaskHeads, features: torch.Tensor, targets: torch.Tensor, grid: tuple[int, int],
                        steps: int, lr: float, seed: int = 0) -> list[float]:
    """Trains ``heads.depth`` in place on features [T, N, C] and grid targets [T, gh, gw] (NaN =
    ignored), full batch with Adam; returns the L1 loss (m) of each step. BatchNorm uses its
    running statistics (a few frames of one scene would shift them), only its affine learns."""
    known = torch.isfinite(targets)
    if not bool(known.any()):
        raise ValueError("no valid depth in the fine-tune frames")
    torch.manual_seed(seed)
    heads.eval().requires_grad_(False)
    params = list(heads.depth.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        pred = grid_depth(heads, features, grid)
        loss = F.l1_loss(pred[known], targets[known])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    heads.requires_grad_(False)
    return losses


def model_config(name: str, max_depth: float | None) -> ModelConfig:
    overrides = {} if max_depth is None else {"heads.max_depth": float(max_depth)}
    return load_config(name, overrides)


def frame_layout(cfg: ModelConfig, shape: tuple[int, ...]) -> geometry.Layout:
    """The forecaster's layout for frames of ``shape``; one view a frame only."""
    lay = geometry.layout(cfg.forecast.geometry, shape[:2], cfg.vfm.image_size,
                          cfg.forecast.output_size or cfg.vfm.image_size)
    if lay.num_views != 1:
        raise ValueError(f"forecast.geometry {cfg.forecast.geometry} cuts {lay.num_views} views a frame; "
                         "depth fine-tuning reads one view (squash or center_crop)")
    return lay


def frame_features(cfg: ModelConfig, vfm, frames: list[np.ndarray]) -> tuple[torch.Tensor, geometry.Layout]:
    """Frames of one size -> (VFM features [T, N, C], their layout)."""
    lay = frame_layout(cfg, frames[0].shape)
    with torch.inference_mode():
        feats = [vfm(geometry.cut_views(f, lay)).float() for f in frames]
    return torch.cat(feats).clone(), lay


def write_result(out: Path, heads: TaskHeads, cfg: ModelConfig, recipe: DepthFinetuneConfig,
                 metrics: dict) -> None:
    """OUT/heads.safetensors (atomic), the base tokenizer/world, model.yaml, recipe.yaml, metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {"stage": "depth_finetune", "class_names": json.dumps(heads.class_names),
            "config": json.dumps(asdict(recipe)), "depth_range": json.dumps([heads.min_depth, heads.max_depth])}
    save_state(heads.state_dict(), out / WEIGHT_FILES["heads"], metadata=meta)
    for part in ("tokenizer", "world"):
        src = Path(cfg.weights) / WEIGHT_FILES[part]
        if src.resolve() != (out / WEIGHT_FILES[part]).resolve():
            atomic_write(out / WEIGHT_FILES[part], lambda tmp, src=src: shutil.copyfile(src, tmp))
    base = read_yaml_mapping(resolve_config_path(recipe.model))
    base["weights"] = "."
    base.setdefault("heads", {})["max_depth"] = heads.max_depth
    _write_text(out / "model.yaml", yaml.safe_dump(base, sort_keys=False))
    _write_text(out / "recipe.yaml", yaml.safe_dump(asdict(recipe), sort_keys=False))
    _write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@dataclass
class EncodedPairs:
    """A recording's colour/depth pairs as the head sees them: features [T, N, C] and the depth
    camera pooled to the feature grid [T, gh, gw] and to the published maps' size [T, h, w]."""

    features: torch.Tensor
    grid_targets: torch.Tensor
    map_targets: torch.Tensor
    stats: PairStats


def encode_pairs(recipe: DepthFinetuneConfig, cfg: ModelConfig, vfm, batch_size: int = 16) -> EncodedPairs:
    """Streams the bag's pairs through the VFM in batches, keeping only features and pooled depth
    (never the frames), so a long recording costs its features, not its pixels."""
    stats = PairStats()
    feats: list[torch.Tensor] = []
    grid_t: list[np.ndarray] = []
    map_t: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    lay = shape = None

    def flush() -> None:
        if batch:
            with torch.inference_mode():
                feats.append(vfm(np.concatenate(batch)).float().clone())
            batch.clear()

    for rgb, depth, _ in rgbd_pairs(recipe.bag, recipe.color_topic, recipe.depth_topic,
                                    tolerance_s=recipe.tolerance_s, stats=stats):
        if lay is None:
            shape = rgb.shape
            lay = frame_layout(cfg, shape)
        elif rgb.shape != shape:
            raise MediaError(f"{recipe.bag}: topic {recipe.color_topic}: frames change size "
                             f"({shape[1]}x{shape[0]} to {rgb.shape[1]}x{rgb.shape[0]})")
        y0, x0, y1, x1 = lay.region
        grid_t.append(pool_depth(depth[y0:y1, x0:x1], tuple(vfm.grid), recipe.min_valid))
        map_t.append(pool_depth(depth[y0:y1, x0:x1], tuple(lay.canvas), recipe.min_valid))
        batch.append(geometry.cut_views(rgb, lay))
        if len(batch) == batch_size:
            flush()
    flush()
    if not feats:
        raise MediaError(f"{recipe.bag}: no colour frame of {recipe.color_topic} has a depth image of "
                         f"{recipe.depth_topic} within {recipe.tolerance_s} s")
    return EncodedPairs(torch.cat(feats), torch.from_numpy(np.stack(grid_t)), torch.from_numpy(np.stack(map_t)), stats)


def run(recipe: DepthFinetuneConfig) -> dict:
    """The whole stage; returns the metrics it writes."""
    cfg = model_config(recipe.model, recipe.max_depth)
    if cfg.weights is None:
        raise ValueError(f"config {recipe.model} has no trained weights to start from")
    heads = load_models(cfg)[2]
    vfm = build_vfm(cfg.vfm)
    data = encode_pairs(recipe, cfg, vfm)
    train, held = split_held_out(len(data.features), recipe.held_out_fraction, recipe.held_out_frames)
    grid, size = tuple(vfm.grid), tuple(data.map_targets.shape[-2:])
    held_features, held_targets = data.features[held.start:], data.map_targets[held.start:]
    before = depth_errors(present_depth(heads, held_features, grid, size), held_targets)
    losses = finetune_depth_head(heads, data.features[:train.stop], data.grid_targets[:train.stop], grid,
                                 recipe.steps, recipe.lr, recipe.seed)
    after = depth_errors(present_depth(heads, held_features, grid, size), held_targets)
    metrics = {"pairs": asdict(data.stats), "fine_tune_frames": len(train), "held_out_frames": len(held),
               "loss_first": losses[0], "loss_last": losses[-1], "held_out_base": before, "held_out_finetuned": after}
    write_result(Path(recipe.out), heads, cfg, recipe, metrics)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.training.depth_finetune",
                                description=__doc__.split("\n")[0])
    p.add_argument("--bag", required=True, help="rosbag2 recording: .mcap, .db3 or a rosbag2 folder")
    p.add_argument("--color-topic", required=True, help="the colour sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--depth-topic", required=True, help="registered depth Image topic (16UC1 mm or 32FC1 m)")
    p.add_argument("--out", required=True, help="folder for heads.safetensors, model.yaml, recipe.yaml, metrics.json")
    p.add_argument("--model", default="default", help="base model config (name or YAML path)")
    p.add_argument("--tolerance-s", type=float, default=0.02, help="largest colour-depth stamp gap paired")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--held-out-fraction", type=float, default=0.25,
                      help="last share of frames measured, not trained")
    held.add_argument("--held-out-frames", type=int, default=None, help="last N frames measured, not trained")
    p.add_argument("--max-depth", type=float, default=None,
                   help="depth bins' far end in metres (default: the base heads')")
    p.add_argument("--steps", type=int, default=600, help="full-batch Adam steps")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (the bins' logits move far)")
    p.add_argument("--seed", type=int, default=0)
    return p


def recipe_of(a: argparse.Namespace) -> DepthFinetuneConfig:
    return DepthFinetuneConfig(a.bag, a.color_topic, a.depth_topic, a.out, a.model, a.tolerance_s,
                               a.held_out_fraction, a.held_out_frames, a.max_depth, a.steps, a.lr, a.seed)


def main(argv: list[str] | None = None) -> int:
    """Bad input (a recording without pairs, a bad value): ``PROG: error: ...`` on stderr, status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def body(args: argparse.Namespace) -> int:
        print(json.dumps(run(recipe_of(args)), indent=2))
        return 0

    return run_cli(build_parser(), body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
