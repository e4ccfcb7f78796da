"""The metrics of an evaluation, accumulated clip by clip: feature MSE per method and step (and
each clip's ratio to copy-last), mIoU from confusion matrices, depth RMSE, and the uncertainty of
the K samples (spread-skill ratio, semantic coverage, calibration of the per-pixel agreement)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("copy_last", "tokenizer", "tokenizer_closed_loop", "best", "mean", "dense")
ECE_BINS = 10


@dataclass
class Accumulator:
    horizon: int
    num_classes: int
    methods: tuple[str, ...]
    clips: int = 0
    mse: dict[str, np.ndarray] = field(default_factory=dict)
    # per clip, each method's MSE over copy-last's [H] (clips where copy-last is exact left out):
    # the median of these is a video's typical clip, which one dramatic event cannot dominate
    clip_ratios: dict[str, list[np.ndarray]] = field(default_factory=dict)
    conf: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rmse_sum: dict[str, np.ndarray] = field(default_factory=dict)
    rmse_n: dict[str, np.ndarray] = field(default_factory=dict)
    seg_frames: np.ndarray | None = None
    ignored_ids: int = 0
    # uncertainty of the K samples (sums over clips / labelled pixels, per horizon step)
    spread: np.ndarray | None = None  # unbiased variance across samples, mean over tokens and channels
    mean_error: np.ndarray | None = None  # squared error of the samples' mean
    covered: np.ndarray | None = None  # labelled pixels whose true class is in >= 1 sample
    labelled: np.ndarray | None = None
    ece_count: np.ndarray | None = None  # [H, bins]: pixels per agreement bin
    ece_conf: np.ndarray | None = None  # [H, bins]: sum of agreement
    ece_correct: np.ndarray | None = None  # [H, bins]: pixels whose mode is the true class

    def __post_init__(self):
        h, c = self.horizon, self.num_classes
        self.mse = {m: np.zeros(h) for m in self.methods}
        self.clip_ratios = {m: [] for m in self.methods}
        label_methods = ("present",) + self.methods
        self.conf = {m: [np.zeros((c, c), np.int64) for _ in range(h)] for m in label_methods}
        self.rmse_sum = {m: np.zeros(h) for m in label_methods}
        self.rmse_n = {m: np.zeros(h, np.int64) for m in label_methods}
        self.seg_frames = np.zeros(h, np.int64)
        self.spread, self.mean_error = np.zeros(h), np.zeros(h)
        self.covered, self.labelled = np.zeros(h, np.int64), np.zeros(h, np.int64)
        self.ece_count = np.zeros((h, ECE_BINS), np.int64)
        self.ece_conf, self.ece_correct = np.zeros((h, ECE_BINS)), np.zeros((h, ECE_BINS))

    def add_sample_semantics(self, step: int, ids: np.ndarray, gt: np.ndarray) -> None:
        """ids uint8 [K, h, w] (one map per sample), gt [h, w]: coverage and the calibration of
        the per-pixel agreement (share of samples voting for the mode, as the node publishes it)."""
        c, k = self.num_classes, len(ids)
        valid = (gt != 255) & (gt < c)
        if not valid.any():
            return
        votes = ids[:, valid].astype(np.int64)  # [K, P]
        truth = gt[valid].astype(np.int64)
        counts = np.zeros((c, votes.shape[1]), np.int64)
        np.add.at(counts, (votes, np.arange(votes.shape[1])[None].repeat(k, 0)), 1)
        mode = counts.argmax(0)
        agreement = counts.max(0) / k
        self.covered[step] += int((counts[truth, np.arange(len(truth))] > 0).sum())
        self.labelled[step] += len(truth)
        b = np.minimum((agreement * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.ece_count[step] += np.bincount(b, minlength=ECE_BINS)
        self.ece_conf[step] += np.bincount(b, weights=agreement, minlength=ECE_BINS)
        self.ece_correct[step] += np.bincount(b, weights=(mode == truth).astype(np.float64), minlength=ECE_BINS)

    def uncertainty(self, k: int) -> dict[str, Any]:
        """Spread-skill ratio per step: sqrt((K+1)/K * mean unbiased sample variance) over the RMSE
        of the samples' mean (1 = the spread of K samples matches the error of their mean); with
        labels, semantic coverage and the expected calibration error of the agreement."""
        n = max(self.clips, 1)
        spread, skill = self.spread / n, self.mean_error / n
        ratio = [float(np.sqrt(sp * (k + 1) / k / sk)) if sk > 0 else None for sp, sk in zip(spread, skill)]
        out: dict[str, Any] = {"spread_skill_ratio": ratio, "spread_rms": list_of_floats(np.sqrt(spread)),
                               "mean_rmse": list_of_floats(np.sqrt(skill))}
        if self.labelled.any():
            out["semantic_coverage"] = [float(c / n_) if n_ else None for c, n_ in zip(self.covered, self.labelled)]
            ece = []
            for cnt, conf, cor in zip(self.ece_count, self.ece_conf, self.ece_correct):
                total = cnt.sum()
                ece.append(float(np.abs(conf - cor).sum() / total) if total else None)
            out["agreement_ece"] = ece
        return out

    def add_segmentation(self, method: str, step: int, pred: np.ndarray, gt: np.ndarray) -> None:
        c = self.num_classes
        valid = gt != 255
        outside = valid & (gt >= c)
        if outside.any():
            self.ignored_ids += int(outside.sum())
            valid &= ~outside
        idx = gt[valid].astype(np.int64) * c + pred[valid].astype(np.int64)
        self.conf[method][step] += np.bincount(idx, minlength=c * c).reshape(c, c)

    def add_depth(self, method: str, step: int, pred: np.ndarray, gt: np.ndarray, lo: float, hi: float) -> None:
        valid = np.isfinite(gt) & (gt >= lo) & (gt <= hi)
        if not valid.any():
            return
        err = np.clip(pred[valid], lo, hi) - gt[valid]
        self.rmse_sum[method][step] += float(np.sqrt(np.mean(err.astype(np.float64) ** 2)))
        self.rmse_n[method][step] += 1

    def add_clip_errors(self, errors: dict[str, np.ndarray]) -> None:
        """One clip's feature MSE per method [H] (``copy_last`` among them): summed, and kept as
        ratios to copy-last for the per-clip median."""
        for m in self.methods:
            self.mse[m] += errors[m]
        copy = errors.get("copy_last")
        if copy is not None and np.all(copy > 0):
            for m in self.methods:
                self.clip_ratios[m].append(errors[m] / copy)
        self.clips += 1

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature_mse": {m: list_of_floats(v / max(self.clips, 1)) for m, v in self.mse.items()}}
        if any(self.clip_ratios.values()):
            out["median_clip_ratio_to_copy_last"] = {m: list_of_floats(np.median(np.stack(r), axis=0))
                                                     for m, r in self.clip_ratios.items() if r}
        if self.seg_frames.any():
            miou = {}
            for m, confs in self.conf.items():
                miou[m] = [None if not n else _miou(cm) for cm, n in zip(confs, self.seg_frames)]
            out["miou"] = miou
        if any(n.any() for n in self.rmse_n.values()):
            out["depth_rmse"] = {m: [None if not n else s / n for s, n in zip(self.rmse_sum[m], self.rmse_n[m])]
                                 for m in self.rmse_sum}
        return out


def _miou(cm: np.ndarray) -> float | None:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = union > 0
    return float(100.0 * np.mean(inter[present] / union[present])) if present.any() else None


def list_of_floats(a: np.ndarray) -> list[float | None]:
    """``a`` as JSON numbers, null where not finite."""
    return [None if not math.isfinite(float(x)) else float(x) for x in a]
