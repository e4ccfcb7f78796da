#!/usr/bin/env python3
"""How far two held-out evaluations of the same model are apart, ratio by ratio.

    .venv/bin/python scripts/compare_evals.py BASE.json OTHER.json [--bound 0.01] [--json OUT] [--note TEXT]

BASE and OTHER are ``python -m deltaworld_core.evaluate --json`` results of the same videos (e.g. one
setting of a precision switch against another). For every family of ratios the evaluation reports
(each method's feature MSE over copy-last's, every step: video-averaged, pooled over all clips, per
video; the median clip's ratio; spread-skill) it gives the largest absolute change, where it is,
and every change above ``--bound`` (docs/vfm-precision.md, the accuracy bound). Prints a table; ``--json``
writes it for ``scripts/render_docs.py``. Exit status 0 if every change is within the bound, else 1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (key, what it is); the keys are those of results/vfm_precision.json's held_out_eval, and
# scripts/render_docs.py labels its tables with these
FAMILIES = [
    ("video_average_ratio_to_copy_last", "video-averaged feature MSE / copy-last, every method and step"),
    ("pooled_ratio_to_copy_last", "pooled over all clips, every method and step"),
    ("video_average_spread_skill_ratio", "video-averaged spread-skill"),
    ("video_average_median_clip_ratio", "video-averaged median clip / copy-last"),
    ("per_video_ratio_to_copy_last", "per video, feature MSE / copy-last"),
    ("per_video_spread_skill_ratio", "per video, spread-skill"),
    ("per_video_median_clip_ratio", "per video, median clip / copy-last"),
]


def _steps(by_method: dict | None, prefix: str = "") -> dict[str, float]:
    """{"<prefix><method> step <n>": value} of a per-method, per-step table, copy-last left out."""
    return {f"{prefix}{method} step {step + 1}": v for method, values in (by_method or {}).items()
            if method != "copy_last" for step, v in enumerate(values)}


def _over_copy_last(mse: dict) -> dict[str, list[float]]:
    """Each method's feature MSE over copy-last's, per step."""
    return {method: [v / c for v, c in zip(values, mse["copy_last"])] for method, values in mse.items()}


def _spread_skill(values: list[float] | None, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}step {step + 1}": v for step, v in enumerate(values or [])}


def ratios(result: dict) -> dict[str, dict[str, float]]:
    """Every ratio of an evaluation result, by family: {family: {"where": value}}."""
    avg = result["video_average"]
    out = {"video_average_ratio_to_copy_last": _steps(avg["ratio_to_copy_last"]),
           "pooled_ratio_to_copy_last": _steps(_over_copy_last(result["feature_mse"])),
           "video_average_spread_skill_ratio": _spread_skill(avg.get("spread_skill_ratio")),
           "video_average_median_clip_ratio": _steps(avg.get("median_clip_ratio_to_copy_last")),
           "per_video_ratio_to_copy_last": {}, "per_video_spread_skill_ratio": {}, "per_video_median_clip_ratio": {}}
    for video, r in result["videos"].items():
        out["per_video_ratio_to_copy_last"].update(_steps(_over_copy_last(r["feature_mse"]), f"{video} "))
        out["per_video_spread_skill_ratio"].update(
            _spread_skill((r.get("uncertainty") or {}).get("spread_skill_ratio"), f"{video} "))
        out["per_video_median_clip_ratio"].update(_steps(r.get("median_clip_ratio_to_copy_last"), f"{video} "))
    return out


def compare(base: dict, other: dict, bound: float = 0.01) -> dict:
    """{family: {max, where, of, over_bound: ["where: change", ...]}} over the ratios both have;
    raises ValueError when the two are not evaluations of the same clips."""
    for key in ("clips", "k", "horizon", "step_s", "context"):
        if base.get(key) != other.get(key):
            raise ValueError(f"not the same evaluation: {key} {base.get(key)!r} vs {other.get(key)!r}")
    if set(base["videos"]) != set(other["videos"]):
        raise ValueError("not the same evaluation: the videos differ")
    a, b = ratios(base), ratios(other)
    families = {}
    for key, _ in FAMILIES:
        changes = {w: abs(b[key][w] - v) for w, v in a[key].items() if w in b[key]}
        if not changes:
            continue
        where = max(changes, key=changes.get)
        over = sorted(((c, w) for w, c in changes.items() if c > bound), reverse=True)
        families[key] = {"max": changes[where], "where": where, "base": a[key][where], "other": b[key][where],
                         "of": len(changes), "over_bound": [f"{w}: {c:.4f}" for c, w in over]}
    return families


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--bound", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="write the comparison here")
    parser.add_argument("--note", default="", help="what the two runs are (kept in the JSON)")
    args = parser.parse_args(argv)
    try:
        base, other = (json.loads(p.read_text()) for p in (args.base, args.other))
        families = compare(base, other, args.bound)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"compare_evals: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    within = all(not f["over_bound"] for f in families.values())
    for key, label in FAMILIES:
        if key in families:
            f = families[key]
            print(f"{label}: largest change {f['max']:.4f} ({f['where']}: {f['base']:.4f} -> {f['other']:.4f}), "
                  f"{len(f['over_bound'])} of {f['of']} above {args.bound}")
    print("every ratio within", args.bound, "yes" if within else "NO")
    if args.json:
        sys.path.insert(0, str(REPO))
        from deltaworld_core.checkpoint import atomic_write  # here: importing FAMILIES needs no torch

        out = {"base": str(args.base), "other": str(args.other), "bound": args.bound, "within_bound": within,
               "clips": base["clips"], "note": args.note, "families": families,
               "command": "python scripts/compare_evals.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=1)))
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
