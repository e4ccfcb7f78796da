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
            f"`{d.get('auto_picks')}` on this machine ({m.get('cores', '?')} cores, native bf16 "
            f"{fmt(m.get('native_bf16'))}, load average {fmt(m.get('load_avg_1min'), 1)}). "
            f"{provenance(d, results, 'vfm_precision.json')}.")


@renderer("vfm_precision_eval")
def render_vfm_precision_eval(results: Path) -> str:
    """The default's held-out evaluation with the VFM in bf16 against fp32: the largest change of
    each ratio (results/vfm_precision.json, held_out_eval)."""
    h = load(results, "vfm_precision.json")["held_out_eval"]
    changes = h.get("max_abs_ratio_change_bf16_vs_fp32", {})
    bound = 0.01
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
        rows.append([label, fmt(top, 4), "yes" if top <= bound else "**no**", where, above or "-"])
    return (table(["ratio", "largest change, bf16 vs fp32", f"within {bound}", "where", "above the bound"], rows)
            + f"\n\n{fmt(h.get('clips'))} clips of the held-out videos; {h.get('note', '')}. "
              f"`{h.get('command', '?')}`; {source('vfm_precision.json')}.")


@renderer("eval_compare")
def render_eval_compare(results: Path) -> str:
    """Every comparison of two held-out evaluations (results/eval_compare_*.json, written by
    scripts/compare_evals.py): the largest change of each family of ratios."""
    blocks = []
    for path in result_files(results, "eval_compare_*.json"):
        d = json.loads(path.read_text())
        bound = d.get("bound", 0.01)
        rows = []
        for key, label in HELD_OUT_CHANGES:
            f = (d.get("families") or {}).get(key)
            if f is None:
                continue
            above = f.get("over_bound") or []
            rows.append([f"{label} ({fmt(f.get('of'))} ratios)", fmt(f.get("max"), 4),
                         "yes" if not above else "**no**",
                         f"{f.get('where')} ({fmt(f.get('base'), 3)} vs {fmt(f.get('other'), 3)})",
                         f"{len(above)}: " + "; ".join(above[:8]) if above else "-"])
        blocks.append(table(["ratio", "largest change", f"within {bound}", "where (base vs other)",
                             "above the bound"], rows)
                      + f"\n\n`{path.name}`: {d.get('note', '')}; {fmt(d.get('clips'))} clips; `{d.get('command', '?').split(' --note ')[0]}`.")
    return "\n\n".join(blocks) if blocks else ""


