"""Summaries over several results: the default's targets met or missed, and the README's three
lines (codec, forecast, speed)."""

from __future__ import annotations

from pathlib import Path

from .bench import cpu_label, cpu_series, series_names, stream_rate
from .common import fmt, load, source, steps, table
from .registry import renderer


@renderer("targets")
def render_targets(results: Path) -> str:
    """The shipped default's targets, met or missed, computed from the committed results."""
    real = load(results, "eval_real.json")["video_average"]
    synth = load(results, "eval_synthetic.json")
    ratio = real["ratio_to_copy_last"]
    ssr = real["spread_skill_ratio"]
    per_video = [v["uncertainty"]["spread_skill_ratio"] for v in load(results, "eval_real.json")["videos"].values()]
    inside = sum(all(0.7 <= s <= 1.3 for s in v) for v in per_video)
    rows = [
        ["codec (tokenizer) <= 0.5x copy-last at step 1", fmt(ratio["tokenizer"][0]), ratio["tokenizer"][0] <= 0.5],
        ["mean of K <= 0.95x copy-last at step 1", fmt(ratio["mean"][0], 3), ratio["mean"][0] <= 0.95],
        ["best of K <= 0.85x copy-last at step 1", fmt(ratio["best"][0]), ratio["best"][0] <= 0.85],
        ["mean of K never above copy-last at steps 2 and 3", steps(ratio["mean"][1:], 3),
         all(r <= 1.0 for r in ratio["mean"][1:])],
        ["spread-skill within 0.7-1.3 at every step (average)", steps(ssr), all(0.7 <= s <= 1.3 for s in ssr)],
        ["... and for every video", f"{inside} of {len(per_video)} videos", inside == len(per_video)],
    ]
    miou = synth["miou"]
    rows.append(["synthetic step 3: best mIoU >= copy-last + 10 points",
                 f"{miou['best'][-1] - miou['copy_last'][-1]:+.1f}", miou["best"][-1] >= miou["copy_last"][-1] + 10])
    rows.append(["synthetic step 3: best mIoU >= dense + 5 points",
                 f"{miou['best'][-1] - miou['dense'][-1]:+.1f}", miou["best"][-1] >= miou["dense"][-1] + 5])
    if (results / "person_iou.json").is_file():
        person = load(results, "person_iou.json")["summary"]["shipped"]["iou_decided_mean_with_people"]
        rows.append(["present-frame person IoU vs the teacher >= 0.5 (mean over videos with people)", fmt(person, 3),
                     person >= 0.5])
    if (results / "depth_rgbd.json").is_file():
        rgbd = load(results, "depth_rgbd.json")
        tuned, base = rgbd["finetuned"]["shipped_bins"]["present"]["rmse"], rgbd["synthetic_only"]["present"]["rmse"]
        rows.append(["RGB-D held-out frames: fine-tuned depth RMSE <= 0.5x the synthetic-only head's",
                     fmt(tuned / base, 3), tuned <= 0.5 * base])
    for name, threads, target in [(n, t, hz) for n in series_names(results) for t, hz in ((1, 10), (2, 15))]:
        b = cpu_series(results, threads, name)
        rate = stream_rate(b) if b is not None else None
        if rate is not None:
            rss = b.get("peak_rss_mb")
            hz, measured = rate.hz, f"{rate.text(' forecasts/s')}, {fmt(rss, 0)} MB"
            rows.append([f"CPU ({cpu_label(b.get('machine', {}))}), {threads} thread{'s' if threads > 1 else ''}: >= {target} forecasts/s "
                         "on a stream, peak RSS <= 1,000 MB", measured, hz >= target and rss <= 1000])
    out = [[text, value, "**met**" if ok else "missed"] for text, value, ok in rows]
    return (table(["target (held-out whole videos unless said)", "measured", ""], out)
            + f"\n\nFrom {source('eval_real.json')}, {source('eval_synthetic.json')}, {source('person_iou.json')}, "
            f"{source('depth_rgbd.json')} and `results/bench_*.json`.")


@renderer("readme_quality")
def render_readme_quality(results: Path) -> str:
    """Three lines for the README: codec, forecast mean and spread on held-out video, CPU speed."""
    d = load(results, "eval_real.json")
    avg = d["video_average"]
    ratio = avg["ratio_to_copy_last"]
    mean1 = ratio["mean"][0]
    verdict = ("no better than copying the last frame" if mean1 >= 0.99 else
               f"{(1 - mean1) * 100:.0f}% below copying the last frame")
    machines = []
    for name in series_names(results):
        speeds, counts, m = [], set(), {}
        for threads in (1, 2):
            b = cpu_series(results, threads, name)
            rate = stream_rate(b) if b is not None else None
            if rate is not None:
                m = b.get("machine", {})
                how = " as two stages" if rate.two_stages else ""
                unit = " forecasts/s" if not speeds else ""
                speeds.append(f"{fmt(rate.hz, 1)}{unit} at {threads} thread{'s' if threads > 1 else ''}{how}")
                counts.add(rate.runs)
        if speeds:
            runs = f" (medians of {'/'.join(map(str, sorted(counts)))} runs)" if max(counts) > 1 else ""
            machines.append(f"on a {m.get('cores', '?')}-core {cpu_label(m)}: " + ", ".join(speeds) + runs)
    return "\n".join([
        f"- **Codec**: on {avg['videos']} held-out videos ({fmt(d['clips'])} clips no stage trained on), DeltaTok's one "
        f"token per frame leaves {fmt(ratio['tokenizer'][0])}x the feature error of copying the last frame "
        f"({d['step_s']} s ahead).",
        f"- **Forecast**: the mean of the K = {d['k']} futures is {fmt(mean1, 3)}x copy-last at {d['step_s']} s "
        f"({verdict}); their spread matches the error (spread-skill "
        f"{steps(avg['spread_skill_ratio'])} at the {d['horizon']} steps, 1 = calibrated).",
        "- **Speed** " + "; ".join(machines) + " (`results/bench_cpu*.json`).",
    ])


