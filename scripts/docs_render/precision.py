"""Precision choices and what they cost in accuracy: the VFM per precision
(scripts/bench_vfm_precision.py) and comparisons of two held-out evaluations
(scripts/compare_evals.py), ratio family by ratio family."""

from __future__ import annotations

import json
from pathlib import Path

from compare_evals import FAMILIES as HELD_OUT_CHANGES  # the ratio families, one list for both scripts

from .common import fmt, load, provenance, result_files, source, table
from .registry import renderer


@renderer("vfm_precision")
def render_vfm_precision(results: Path) -> str:
    """The VFM per precision: ms at 1 and 2 threads and error against the float32 reference
    (results/vfm_precision.json, scripts/bench_vfm_precision.py)."""
    d = load(results, "vfm_precision.json")
    ms, acc = d.get("ms", {}), d.get("accuracy", {})
    thread_keys = sorted(ms, key=lambda k: int(k.split("_")[0]))
    names = list(dict.fromkeys([*acc, *(n for k in thread_keys for n in ms[k])]))

    def pct(value):
        return "-" if value is None else f"{value * 100:.2f}%"

    rows = [[f"`{n}`", *(fmt(ms[k].get(n), 1) for k in thread_keys), pct(acc.get(n, {}).get("feature_rel_rms")),
             pct(acc.get(n, {}).get("delta_rel_rms")), pct(acc.get(n, {}).get("worst_clip_delta_rel_rms"))]
            for n in names]
    m = d.get("machine", {})
    header = ["precision", *(f"ms, {k.split('_')[0]} thread{'s' if k.split('_')[0] != '1' else ''}" for k in thread_keys),
              "feature error", "change error", "change error, worst clip"]
    return (table(header, rows) + f"\n\n{d.get('vfm', '')}; errors are relative RMS against `{d.get('reference')}` "
            f"on frames of the held-out videos {d.get('frames', {}).get('spacing_s', '?')} s apart; `auto` picks "
            f"`{d.get('auto_picks')}` on the measuring CPU ({m.get('cores', '?')} cores, native bf16 "
            f"{fmt(m.get('native_bf16'))}, load average {fmt(m.get('load_avg_1min'), 1)}). "
            f"{provenance(d, results, 'vfm_precision.json')}.")


AVERAGED = {"video_average_ratio_to_copy_last", "pooled_ratio_to_copy_last", "video_average_spread_skill_ratio"}
AVERAGED_BOUND = 0.01
SEED_SPREAD_FILE = "eval_compare_seed.json"


def seed_spread(results: Path) -> dict[str, float]:
    """The largest change of each ratio family between two sampling seeds in float32
    (results/eval_compare_seed.json), or {} before that comparison is committed."""
    if not (results / SEED_SPREAD_FILE).is_file():
        return {}
    families = load(results, SEED_SPREAD_FILE).get("families") or {}
    return {key: f["max"] for key, f in families.items() if f.get("max") is not None}


def bound_for(family: str, spread: dict[str, float]) -> tuple[float | None, str]:
    """The accuracy bound of a precision choice (docs/vfm-precision.md): averaged and pooled ratios
    within 0.01; every per-video and median-clip ratio within the seed-to-seed spread."""
    if family in AVERAGED:
        return AVERAGED_BOUND, fmt(AVERAGED_BOUND)
    value = spread.get(family)
    return value, ("-" if value is None else f"{fmt(value, 4)} (seeds)")


def _verdict(change: float | None, bound: float | None) -> str:
    if change is None or bound is None:
        return "-"
    return "yes" if change <= bound else "**no**"


@renderer("vfm_precision_eval")
def render_vfm_precision_eval(results: Path) -> str:
    """The default's held-out evaluation with the VFM in bf16 against fp32: the largest change of
    each ratio against the accuracy bound (results/vfm_precision.json, held_out_eval)."""
    h = load(results, "vfm_precision.json")["held_out_eval"]
    changes = h.get("max_abs_ratio_change_bf16_vs_fp32", {})
    spread = seed_spread(results)
    rows = []
    for key, label in HELD_OUT_CHANGES:
        v = changes.get(key)
        if v is None:
            continue
        top = v.get("max") if isinstance(v, dict) else v
        where, above = "", ""
        if isinstance(v, dict):
            where = v.get("where", "")
            if v.get("of") is not None:
                label += f" ({fmt(v['of'])} ratios)"
                above = f"{fmt(v.get('over_0.01'))} of {fmt(v['of'])}: " + "; ".join(v.get("over_0.01_list", []))
        if key == "video_average_ratio_to_copy_last":
            ratios = h.get("video_average_ratio_to_copy_last", {})
            b, f = ratios.get("bf16", {}), ratios.get("fp32", {})
            best = max(((abs(x - y), m, i, x, y) for m in b if m in f for i, (x, y) in enumerate(zip(b[m], f[m]))),
                       default=None)
            if best:
                where = f"{best[1]} step {best[2] + 1} ({fmt(best[3], 3)} vs {fmt(best[4], 3)})"
        bound, bound_text = bound_for(key, spread)
        rows.append([label, fmt(top, 4), bound_text, _verdict(top, bound), where, above or "-"])
    return (table(["ratio", "largest change, bf16 vs fp32", "bound", "within", "where", f"above {AVERAGED_BOUND}"], rows)
            + f"\n\n{fmt(h.get('clips'))} clips of the held-out videos; {h.get('note', '')}. "
              f"`{h.get('command', '?')}`; {source('vfm_precision.json')}.")


def compare_table(results: Path, name: str, against_bound: bool) -> str:
    """One comparison of two held-out evaluations (scripts/compare_evals.py): the largest change of
    each family of ratios; ``against_bound``: with the accuracy bound of each family. Nothing
    before the comparison is committed."""
    if not (results / name).is_file():
        return ""
    d = load(results, name)
    spread = seed_spread(results) if against_bound else {}
    rows = []
    for key, label in HELD_OUT_CHANGES:
        f = (d.get("families") or {}).get(key)
        if f is None:
            continue
        above = f.get("over_bound") or []
        where = f"{f.get('where')} ({fmt(f.get('base'), 3)} vs {fmt(f.get('other'), 3)})"
        listed = f"{len(above)}: " + "; ".join(above[:8]) if above else "-"
        if against_bound:
            bound, bound_text = bound_for(key, spread)
            rows.append([f"{label} ({fmt(f.get('of'))} ratios)", fmt(f.get("max"), 4), bound_text,
                         _verdict(f.get("max"), bound), where, listed])
        else:
            rows.append([f"{label} ({fmt(f.get('of'))} ratios)", fmt(f.get("max"), 4), where, listed])
    header = (["ratio", "largest change", "bound", "within", "where (base vs other)", f"above {d.get('bound', 0.01)}"]
              if against_bound else ["ratio", "largest change", "where (base vs other)", f"above {d.get('bound', 0.01)}"])
    return (table(header, rows) + f"\n\n`{name}`: {d.get('note', '')}; {fmt(d.get('clips'))} clips; "
            f"`{d.get('command', '?').split(' --note ')[0]}`.")


@renderer("eval_compare_quantize")
def render_eval_compare_quantize(results: Path) -> str:
    """DeltaTok in bf16 against float32 on the held-out videos (results/eval_compare_quantize.json),
    each ratio family against the accuracy bound."""
    return compare_table(results, "eval_compare_quantize.json", against_bound=True)


@renderer("eval_compare_seed")
def render_eval_compare_seed(results: Path) -> str:
    """The same evaluation at two sampling seeds (results/eval_compare_seed.json): the seed-to-seed
    spread that bounds per-video changes."""
    return compare_table(results, SEED_SPREAD_FILE, against_bound=False)
