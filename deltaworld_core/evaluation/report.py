"""An evaluation's results for people and for files: the printed table, what each metric
means, and the average over videos in which every video weighs the same."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .metrics import list_of_floats


def format_table(result: dict[str, Any]) -> str:
    h = len(next(iter(result["feature_mse"].values())))
    step = result["step_s"]
    head = f"{'metric':<12}{'method':<11}" + "".join(f"{f'h{i + 1} ({step * (i + 1):.2f}s)':>14}" for i in range(h))
    lines = [f"clips: {result['clips']}  k: {result['k']}  step: {step} s  context: {result['context']}",
             head, "-" * len(head)]
    for metric, fmt in (("feature_mse", "{:.5f}"), ("miou", "{:.2f}"), ("depth_rmse", "{:.3f}")):
        for method, values in result.get(metric, {}).items():
            cells = "".join(f"{'-' if v is None else fmt.format(v):>14}" for v in values)
            lines.append(f"{metric:<12}{method:<11}{cells}")
    unc = result.get("uncertainty", {})
    for key, fmt in (("spread_skill_ratio", "{:.2f}"), ("semantic_coverage", "{:.3f}"), ("agreement_ece", "{:.3f}")):
        if unc.get(key):
            cells = "".join(f"{'-' if v is None else fmt.format(v):>14}" for v in unc[key])
            lines.append(f"{key:<23}{cells}")
    if result.get("videos"):
        lines.append("per video, feature MSE as a multiple of copy-last (tokenizer / best / mean at each step), "
                     "spread-skill ratio, and the median clip's best / mean at step 1:")
        rows = dict(result["videos"])
        rows["AVERAGE over videos"] = None
        for name, v in rows.items():
            if v is None:
                avg = result["video_average"]
                ratio, ssr = avg["ratio_to_copy_last"], avg["spread_skill_ratio"]
                median = avg.get("median_clip_ratio_to_copy_last", {})
            else:
                median = v.get("median_clip_ratio_to_copy_last", {})
                cl = v["feature_mse"]["copy_last"]
                ratio = {m: [x / c if x is not None and c else None for x, c in zip(v["feature_mse"][m], cl)]
                         for m in v["feature_mse"]}
                ssr = v["uncertainty"]["spread_skill_ratio"]
            cells = "  ".join("/".join("-" if ratio[m][i] is None else f"{ratio[m][i]:.2f}"
                                       for m in ("tokenizer", "best", "mean")) for i in range(h))
            spread = " ".join("-" if x is None else f"{x:.2f}" for x in ssr)
            clips = "" if v is None else f" ({v['clips']} clips)"
            typical = "/".join("-" if not median.get(m) or median[m][0] is None else f"{median[m][0]:.2f}"
                               for m in ("best", "mean"))
            lines.append(f"  {name + clips:<36} {cells}   ssr {spread}   median clip {typical}")
    lines.append("units: " + "; ".join(f"{metric} = {text}" for metric, text in METRIC_UNITS.items()
                                       if result.get(metric)))
    return "\n".join(lines)


# What each table row means, printed under the table.
METRIC_UNITS = {
    "feature_mse": "mean squared error in the VFM's feature space (unitless), lower is better",
    "miou": "mean intersection over union in percent, higher is better",
    "depth_rmse": "root mean squared depth error in metres, lower is better",
    "uncertainty": "spread_skill_ratio near 1 is calibrated (below: overconfident); semantic_coverage "
                   "(share of labelled pixels whose class is in >= 1 sample) higher is better; agreement_ece "
                   "(calibration error of the per-pixel agreement) lower is better",
}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN (null in JSON) where b is 0 (a video that does not change)."""
    return np.divide(a, b, out=np.full_like(a, np.nan, dtype=np.float64), where=b > 0)


def video_average(videos: dict[str, dict]) -> dict[str, Any]:
    """Every video weighs the same (a long or busy clip does not drown a short or calm one): each
    method's feature MSE as a multiple of copy-last's on the same video, averaged over videos
    (``ratio_to_copy_last``, the headline), the plain mean MSE, and the mean spread-skill ratio.
    A video where copy-last is exact (no change at all) has no ratio and is left out of it. Where
    the videos report it, ``median_clip_ratio_to_copy_last`` is averaged the same way: each video's
    typical clip, robust to one event dominating a video's sums."""
    with warnings.catch_warnings():  # a step where no video has a ratio is null, said once here
        warnings.simplefilter("ignore", RuntimeWarning)
        return _video_average(videos)


def _video_average(videos: dict[str, dict]) -> dict[str, Any]:
    methods = list(next(iter(videos.values()))["feature_mse"].keys())
    nan = lambda r: [np.nan if x is None else x for x in r]  # noqa: E731
    mse = {m: np.mean([nan(v["feature_mse"][m]) for v in videos.values()], axis=0) for m in methods}
    ratios = {m: np.nanmean([_ratio(np.asarray(nan(v["feature_mse"][m]), np.float64),
                                    np.asarray(nan(v["feature_mse"]["copy_last"]), np.float64))
                             for v in videos.values()], axis=0) for m in methods}
    ssr = [nan(v["uncertainty"]["spread_skill_ratio"]) for v in videos.values()]
    out = {"videos": len(videos),
           "feature_mse": {m: list_of_floats(a) for m, a in mse.items()},
           "ratio_to_copy_last": {m: list_of_floats(a) for m, a in ratios.items()},
           "spread_skill_ratio": list_of_floats(np.nanmean(ssr, axis=0))}
    medians = [v["median_clip_ratio_to_copy_last"] for v in videos.values() if "median_clip_ratio_to_copy_last" in v]
    if medians:
        out["median_clip_ratio_to_copy_last"] = {m: list_of_floats(np.nanmean([nan(v[m]) for v in medians if m in v], axis=0))
                                                 for m in methods if any(m in v for v in medians)}
    return out
