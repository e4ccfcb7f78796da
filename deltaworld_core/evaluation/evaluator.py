"""Forecasts of every method for a batch of clips, scored against the frames that really
followed (:mod:`.metrics`), over the whole run and per recording."""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig
from ..rollout import best_of_k, reconstruct, reconstruct_closed_loop, rollout, spread_reference
from .clips import Clip, EvaluationError, clip_seed
from .metrics import METHODS, Accumulator


class Evaluator:
    def __init__(self, cfg: ModelConfig, tokenizer, world, heads, grid: tuple[int, int], black: torch.Tensor,
                 context: int, horizon: int, k: int, dense=None, seed: int = 0, device="cpu"):
        self.cfg, self.tokenizer, self.world, self.heads = cfg, tokenizer, world, heads
        self.grid, self.context, self.horizon, self.k = grid, context, horizon, k
        self.dense, self.seed = dense, seed
        self.device = torch.device(device)
        self.black = black.to(self.device)
        methods = tuple(m for m in METHODS if m != "dense" or dense is not None)
        self.acc = Accumulator(horizon, len(cfg.heads.class_names), methods)
        self.per_video: dict[str, Accumulator] = {}  # real videos only (clip.source "name@frame")
        self.index = 0  # clips seen

    @torch.no_grad()
    def predict(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        """Features of every method [B, H, N, C] plus ``truth`` and ``samples`` [B, K, H, N, C]."""
        c, h = self.context, self.horizon
        feats = torch.stack([clip.features for clip in clips]).to(self.device, torch.float32)  # [B, T, N, C]
        b, t, n, ch = feats.shape
        if t != c + h or n != self.grid[0] * self.grid[1]:
            raise EvaluationError(f"clip features {tuple(feats.shape[1:])} do not match T={c + h}, grid {self.grid}")
        times = torch.tensor(np.stack([clip.stamps - clip.stamps[0] for clip in clips]), dtype=torch.float64,
                             device=self.device)
        prev = torch.cat((self.black.expand(b, 1, n, ch), feats[:, :-1]), dim=1)
        tokens = self.tokenizer.encode(prev.flatten(0, 1), feats.flatten(0, 1), self.grid).unflatten(0, (b, t))
        gens = []
        for clip in clips:
            g = torch.Generator(device=self.device)
            g.manual_seed(clip_seed(self.seed, clip.stream or clip.source, clip.index))
            gens.append(g)
        last = feats[:, c - 1]
        previous = feats[:, c - 2] if c >= 2 else None  # without it the interval below is unused
        reference = spread_reference(self.cfg.forecast, previous, last, times[:, c - 1] - times[:, c - 2],
                                     times[:, c] - times[:, c - 1])
        samples = rollout(self.tokenizer, self.world, tokens[:, :c], times[:, :c], last, times[:, c:], self.k,
                          gens, self.grid, spread=self.cfg.forecast.spread, mean_scale=self.cfg.forecast.mean_scale,
                          spread_reference=reference)  # [B, K, H, N, C]
        truth = feats[:, c:]
        score, pick = best_of_k(samples[:, :, -1], truth[:, -1])  # [B, K], [B]
        out = {
            "truth": truth,
            "samples": samples,
            "final_smooth_l1": score,
            "copy_last": last[:, None].expand(b, h, n, ch),
            "tokenizer": reconstruct(self.tokenizer, tokens[:, c:], last, self.grid),
            "tokenizer_closed_loop": reconstruct_closed_loop(self.tokenizer, truth, last, self.grid),
            "best": samples[torch.arange(b, device=self.device), pick],
            "mean": samples.mean(dim=1),
        }
        if self.dense is not None:
            step = float((times[:, c:] - times[:, c - 1:-1]).mean())
            out["dense"] = self.dense.rollout(feats[:, :c], h, self.grid, step_s=step, context_times=times[:, :c])
        return out

    def _heads(self, features: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The heads at label resolution, a few maps at a time (full-resolution logits of
        Cityscapes-sized labels are large)."""
        per_map = len(self.cfg.heads.class_names) * size[0] * size[1]
        chunk = max(1, int(64e6 // max(per_map, 1)))
        ids, depth = [], []
        for j in range(0, len(features), chunk):
            a, b = self.heads(features[j:j + chunk], self.grid, size)
            ids.append(a.cpu().numpy())
            depth.append(b.float().cpu().numpy())
        return np.concatenate(ids), np.concatenate(depth)

    def _video_acc(self, clip: Clip) -> Accumulator | None:
        if "@" not in clip.source:
            return None
        name = clip.source.rsplit("@", 1)[0]
        if name not in self.per_video:
            self.per_video[name] = Accumulator(self.horizon, self.acc.num_classes, self.acc.methods)
        return self.per_video[name]

    @torch.no_grad()
    def add(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        preds = self.predict(clips)
        truth = preds["truth"]
        acc = self.acc
        errors = {m: ((preds[m] - truth) ** 2).mean(dim=(2, 3)).double().cpu().numpy() for m in acc.methods}  # [B, H]
        spread = preds["samples"].var(dim=1, unbiased=self.k > 1).mean(dim=(2, 3)).double().cpu().numpy()  # [B, H]
        for i, clip in enumerate(clips):
            for target in (acc, self._video_acc(clip)):
                if target is None:
                    continue
                target.add_clip_errors({m: errors[m][i] for m in acc.methods})
                target.spread += spread[i]
                target.mean_error += errors["mean"][i]
        self.index += len(clips)
        hc = self.cfg.heads
        for i, clip in enumerate(clips):
            for step in range(self.horizon):
                sem, dep = clip.semantic[step], clip.depth[step]
                if sem is None and dep is None:
                    continue
                methods = ("present",) + acc.methods
                stack = torch.stack([truth[i, step]] + [preds[m][i, step] for m in acc.methods])
                if sem is not None:
                    size = tuple(int(x) for x in np.shape(sem)[-2:])
                    ids, depth = self._heads(stack, size)
                    acc.seg_frames[step] += 1
                    for j, m in enumerate(methods):
                        acc.add_segmentation(m, step, ids[j], np.asarray(sem))
                    sample_ids, _ = self._heads(preds["samples"][i, :, step], size)
                    acc.add_sample_semantics(step, sample_ids, np.asarray(sem))
                if dep is not None:
                    if sem is None or np.shape(dep)[-2:] != np.shape(sem)[-2:]:
                        ids, depth = self._heads(stack, tuple(int(x) for x in np.shape(dep)[-2:]))
                    for j, m in enumerate(methods):
                        acc.add_depth(m, step, depth[j], np.asarray(dep, np.float32), hc.min_depth, hc.max_depth)
        return preds
