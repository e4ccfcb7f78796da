"""Forecast quality: held-out real videos (``evaluate``), synthetic scenes with exact labels, the
calibration fit (``calibrate``) and how predictable the next step is (scripts/predictability.py)."""

from __future__ import annotations

from pathlib import Path

from .common import fmt, load, provenance, source, steps, table
from .registry import renderer


METHODS = [
    ("copy_last", "copy last"),
    ("tokenizer", "tokenizer (true tokens)"),
    ("tokenizer_closed_loop", "tokenizer, closed loop"),
    ("mean", "DeltaWorld mean of K"),
    ("best", "DeltaWorld best of K"),
    ("dense", "dense baseline"),
]


def eval_header(d: dict) -> str:
    return (f"K={d.get('k')}, {d.get('horizon')} steps of {d.get('step_s')} s, context {d.get('context')}, "
            f"config `{d.get('config')}`, seed {d.get('seed')}, {fmt(d.get('clips'))} clips")


@renderer("eval_real")
def render_eval_real(results: Path) -> str:
    """Held-out whole videos, every video weighing the same (results/eval_real.json)."""
    d = load(results, "eval_real.json")
    avg = d["video_average"]
    rows = []
    for key, label in METHODS:
        if key not in avg["ratio_to_copy_last"]:
            continue
        rows.append([label, steps(avg["ratio_to_copy_last"][key], 3),
                     steps(avg.get("median_clip_ratio_to_copy_last", {}).get(key), 3),
                     steps(avg["feature_mse"].get(key), 3)])
    rows.append(["spread-skill ratio (1 = calibrated)", steps(avg.get("spread_skill_ratio")), "-", "-"])
    return (table(["method", "x copy-last, step 1 / 2 / 3", "typical clip (median), x copy-last",
                   "feature MSE"], rows)
            + f"\n\n{avg.get('videos')} videos; {eval_header(d)}. Source: {source('eval_real.json')}, "
              f"{provenance(d, results, 'eval_real.json')}.")


@renderer("eval_real_videos")
def render_eval_real_videos(results: Path) -> str:
    """Per held-out video: ratios to copy-last at step 1 and spread-skill per step."""
    d = load(results, "eval_real.json")
    rows = []
    for name, v in d["videos"].items():
        mse = v["feature_mse"]
        ratio = {k: mse[k][0] / mse["copy_last"][0] for k in ("tokenizer", "mean", "best", "dense") if k in mse}
        rows.append([f"`{name}`", fmt(v.get("clips")), *(fmt(ratio.get(k)) for k in ("tokenizer", "mean", "best", "dense")),
                     steps(v.get("uncertainty", {}).get("spread_skill_ratio"))])
    return table(["video", "clips", "tokenizer", "mean of K", "best of K", "dense",
                  "spread-skill 1 / 2 / 3"], rows) + "\n\nRatios: feature MSE x copy-last at step 1."


@renderer("eval_synthetic")
def render_eval_synthetic(results: Path) -> str:
    """Held-out synthetic scenes with exact labels (results/eval_synthetic.json)."""
    d = load(results, "eval_synthetic.json")
    rows = [["present (upper bound)", "-", steps(d["miou"].get("present"), 1), steps(d["depth_rmse"].get("present"))]]
    for key, label in METHODS:
        if key not in d["feature_mse"]:
            continue
        rows.append([label, steps(d["feature_mse"][key], 3), steps(d["miou"].get(key), 1),
                     steps(d["depth_rmse"].get(key))])
    u = d.get("uncertainty", {})
    extra = "; ".join(f"{label} {steps(u[key])}" for key, label in (
        ("spread_skill_ratio", "spread-skill"), ("semantic_coverage", "semantic coverage"),
        ("agreement_ece", "agreement ECE")) if key in u)
    return (table(["method", "feature MSE 1 / 2 / 3", "mIoU % 1 / 2 / 3", "depth RMSE m 1 / 2 / 3"], rows)
            + f"\n\nUncertainty: {extra}. {eval_header(d)}. Source: {source('eval_synthetic.json')}, "
              f"{provenance(d, results, 'eval_synthetic.json')}.")


@renderer("calibration")
def render_calibration(results: Path) -> str:
    """The calibration fit (results/calibration.json)."""
    d = load(results, "calibration.json")
    rows = []
    for name, v in d["videos"].items():
        rows.append([f"`{name}`", fmt(v.get("clips")), fmt(v.get("own_mean_scale")), fmt(v.get("own_change_growth")),
                     steps(v["mean_ratio_to_copy_last"]["sampled"]), steps(v["spread_skill_ratio"]["sampled"]),
                     steps(v["spread_skill_ratio"]["calibrated"])])
    avg = d["video_average"]
    rows.append(["**average**", "-", f"**{fmt(d['mean_scale'])}** (fit)", f"**{fmt(d['change_growth'])}** (fit)",
                 steps(avg["mean_ratio_to_copy_last"]["sampled"]), steps(avg["spread_skill_ratio"]["sampled"]),
                 steps(avg["spread_skill_ratio"]["calibrated"])])
    return (f"Fitted: `mean_scale` {fmt(d['mean_scale'], 3)}, `spread` {fmt(d['spread'], 3)} "
            f"(`spread_from: {d.get('spread_from')}`), `change_growth` {fmt(d['change_growth'], 3)}; "
            f"sources {', '.join(d.get('sources', []))}; K={d.get('k')}, step {d.get('step_s')} s.\n\n"
            + table(["video", "clips", "own mean scale", "own change growth", "mean as sampled, x copy-last",
                     "spread-skill as sampled", "spread-skill calibrated"], rows)
            + f"\n\nSource: {source('calibration.json')}, {provenance(d, results, 'calibration.json')}.")


@renderer("predictability")
def render_predictability(results: Path) -> str:
    """How much of the next step simple predictors explain (results/predictability.json)."""
    d = load(results, "predictability.json")
    names = list(d["videos"])
    every = [*(d["videos"][n] for n in names), d["video_average"]]

    def row(label, get):
        return [label, *(fmt(get(v)) for v in every)]

    gains = sorted(d["video_average"].get("linear_extrapolation", {}), key=float)
    codes = sorted(d["video_average"].get("pca_code", {}), key=int)
    rows = [row(f"the last change continued, gain {g}", lambda v, g=g: v["linear_extrapolation"][g]) for g in gains]
    rows.append(row("the last global motion continued", lambda v: v.get("motion_extrapolation")))
    rows.append(row("the true global motion of the next frame (future)", lambda v: v.get("motion_oracle")))
    rows.append(row("the true change at the 8x8 decoder grid (future)", lambda v: v.get("residual_8x8")))
    rows += [row(f"its {c}-d linear code (future)", lambda v, c=c: v["pca_code"][c]) for c in codes]
    return (table(["predictor", *(f"`{n}`" for n in names), "average"], rows)
            + f"\n\nFeature MSE x copy-last at one step of {d.get('step_s')} s; rows marked future look at "
              f"the next frame (they bound a codec, not a forecast); the linear code is fitted on "
              f"{fmt(d.get('training_pairs'))} training-video pairs. Source: {source('predictability.json')}, "
              f"{provenance(d, results, 'predictability.json')}.")


