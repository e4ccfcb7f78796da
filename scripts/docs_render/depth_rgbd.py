"""The depth head fine-tuned on part of a real RGB-D sequence, measured on its held-out frames
against the depth camera (results/depth_rgbd.json, scripts/measure_depth_rgbd.py)."""

from __future__ import annotations

from pathlib import Path

from .common import fmt, load, provenance, source, steps, table
from .registry import renderer

NAME = "depth_rgbd.json"


def _label(variant: str, row: dict) -> str:
    lo, hi = row["depth_range_m"]
    return f"fine-tuned, bins {fmt(lo, 3)}-{fmt(hi, 0)} m" + (" (shipped range)" if variant == "shipped_bins" else "")


@renderer("depth_rgbd")
def render_depth_rgbd(results: Path) -> str:
    """Held-out depth RMSE / AbsRel of the synthetic-only and fine-tuned heads, present frame and
    forecast steps next to copy-last, on a real RGB-D sequence (results/depth_rgbd.json)."""
    d = load(results, NAME)
    heads = [("synthetic-only (shipped)", d["synthetic_only"], None)]
    heads += [(_label(name, row), row, row["target"]) for name, row in d["finetuned"].items()]
    present = [[label, fmt(row["present"]["rmse"], 3), fmt(row["present"]["absrel"], 3),
                "-" if target is None else fmt(target["ratio"], 3), "-" if target is None else fmt(target["met"])]
               for label, row, target in heads]
    forecast = []
    for label, row, _ in heads:
        f = row["forecast"]
        for key, what in (("forecast_mean_k", "forecast, mean of K"), ("copy_last", "copy-last (head)")):
            forecast.append([label, what, steps([s["rmse"] for s in f[key]], 3),
                             steps([s["absrel"] for s in f[key]], 3)])
    camera = d["synthetic_only"]["forecast"]["camera_copy_last"]
    forecast.append(["depth camera", "its last frame copied", steps([s["rmse"] for s in camera], 3),
                     steps([s["absrel"] for s in camera], 3)])
    seq = d["sequence"]
    return (table(["head", "RMSE (m)", "AbsRel", "RMSE / synthetic-only", "at most half"], present)
            + "\n\n" + table(["head", "prediction", "RMSE (m), steps 1 / 2 / 3", "AbsRel, steps 1 / 2 / 3"], forecast)
            + f"\n\n{seq['package']} {seq['version']} ({seq['licence']}), `{seq['member'].rsplit('/', 2)[-2]}/"
            f"{seq['member'].rsplit('/', 1)[-1]}`: {fmt(d['frames'])} frames, the first {fmt(d['fine_tune_frames'])} "
            f"fine-tuned on, the last {fmt(d['held_out_frames'])} held out; forecasts over "
            f"{fmt(d['synthetic_only']['forecast']['windows'])} windows inside the held-out part, frames "
            f"{fmt(d['frame_period_s'], 1)} s apart; errors over valid depth pixels at "
            f"{d['output_size'][0]}x{d['output_size'][1]} ({d['geometry']}). {source(NAME)}: "
            f"{provenance(d, results, NAME)}.")
