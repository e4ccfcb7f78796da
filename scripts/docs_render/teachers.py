"""Heads against the person teacher on held-out real video (scripts/eval_person_iou.py):
present-frame person IoU per video and heads file, and forecast person IoU per method and step."""

from __future__ import annotations

from pathlib import Path

from .common import fmt, load, provenance, source, table
from .registry import renderer

PERSON_IOU = "person_iou.json"
FORECAST_METHODS = (("present", "true target frame"), ("copy_last", "copy-last"), ("mean", "mean of K"),
                    ("mode", "mode of K"), ("best", "best of K (oracle)"))


@renderer("person_iou")
def render_person_iou(results: Path, name: str = PERSON_IOU) -> str:
    """Present-frame person IoU against the teacher, per held-out video and heads file
    (results/person_iou.json)."""
    d = load(results, name)
    names = list(d["heads"])
    rows = []
    for video, row in d["videos"].items():
        rows.append([f"`{video}`", "yes" if row["people"] else "no",
                     *(f"{fmt(row[n]['iou_decided'], 3)} ({fmt(100 * (row[n]['head_person_share'] or 0), 1)}%)"
                       for n in names),
                     f"{fmt(100 * (row[names[0]]['teacher_person_share'] or 0), 1)}%"])
    s = d["summary"]
    rows.append(["**mean over videos with people**", "", *(f"**{fmt(s[n]['iou_decided_mean_with_people'], 3)}**"
                                                          for n in names), ""])
    rows.append(["mean share called person, videos without people", "",
                 *(f"{fmt(100 * (s[n]['head_person_share_mean_without_people'] or 0), 1)}%" for n in names), ""])
    header = ["video", "people", *(f"`{n}`: IoU (share called person)" for n in names), "teacher: person"]
    lo, hi = d["teacher_thresholds"]
    ceiling, subcell = s.get("linear_ceiling"), s.get("subcell_ceiling")
    ceiling_note = "" if ceiling is None else (
        f" A linear person probe fitted on these very frames (in sample, `--ceiling`) reaches "
        f"{fmt(ceiling['iou_decided_mean_with_people'], 3)} over the videos with people: about the most a linear "
        f"head on this feature grid shows here.")
    if subcell is not None:
        per_video = ", ".join(f"{fmt(v['subcell_ceiling']['iou_decided'], 3)} on `{n}`"
                              for n, v in d["videos"].items() if v["people"])
        ceiling_note += (f" A probe that reads each cell's 3 x 3 neighbourhood into its own pixel pattern, fitted the "
                         f"same way, reaches {fmt(subcell['iou_decided_mean_with_people'], 3)} ({per_video}).")
    return (table(header, rows) + f"\n\nIoU of \"person\" over the teacher's confident pixels (probability >= {hi} "
            f"person, <= {lo} not; between: left out) at the forecast's output size {d['label_size'][0]} x "
            f"{d['label_size'][1]}, one frame in {d['label_settings']['stride']}, pooled per video. Heads files: "
            + ", ".join(f"`{n}` = `{p}`" for n, p in d["heads"].items())
            + f". Teacher: {d['teacher']['package']} {d['teacher']['version']} ({d['teacher']['licence']}). "
            f"Source: {source(name)}, {provenance(d, results, name)}.{ceiling_note}")


@renderer("person_iou_pasted")
def render_person_iou_pasted(results: Path) -> str:
    """The shipped heads beside the recipe with people pasted small (results/person_iou_pasted.json)."""
    return render_person_iou(results, "person_iou_pasted.json")


PROBES = (("linear_ceiling", "per cell, fitted on these frames"), ("subcell_ceiling", "sub-cell, fitted on these frames"),
          ("linear_trained", "per cell, fitted on the train frames"), ("subcell_trained", "sub-cell, fitted on the train frames"))


@renderer("person_probes")
def render_person_probes(results: Path) -> str:
    """What the feature grid holds and what the train frames teach: person probes fitted in sample
    and on the recipe's train frames, beside the shipped heads (results/person_probes.json)."""
    d = load(results, "person_probes.json")
    heads = list(d["heads"])
    columns = [(h, f"`{h}` heads") for h in heads] + [(n, label) for n, label in PROBES if n in d["summary"]]
    rows = [[f"`{name}`", *(fmt(v[c]["iou_decided"], 3) for c, _ in columns)]
            for name, v in d["videos"].items() if v["people"]]
    rows.append(["**mean over videos with people**",
                 *(f"**{fmt(d['summary'][c]['iou_decided_mean_with_people'], 3)}**" for c, _ in columns)])
    trained = f" Train frames: the real pool of `{d['trained_probes']}`." if d.get("trained_probes") else ""
    return (table(["video", *(label for _, label in columns)], rows)
            + "\n\nPresent-frame person IoU against the teacher's confident pixels. Per cell: one linear value per "
            "cell of the feature grid, as the heads; sub-cell: each cell's 3 x 3 neighbourhood read into its own "
            f"pixel pattern.{trained} Source: {source('person_probes.json')}, "
            f"{provenance(d, results, 'person_probes.json')}.")


@renderer("person_iou_forecast")
def render_person_iou_forecast(results: Path) -> str:
    """Forecast person IoU against the teacher at steps 1..H, per method, mean over the held-out
    videos with people (results/person_iou.json)."""
    d = load(results, PERSON_IOU)
    fc = d["forecast"]
    rows = []
    for name in d["heads"]:
        means = d["summary"][name]["forecast_iou_decided_mean_with_people"]
        for method, label in FORECAST_METHODS:
            rows.append([f"`{name}`", label, *(fmt(v, 3) for v in means[method])])
    header = ["heads", "method", *(f"step {i + 1} ({(i + 1) * fc['step_s']:.1f} s)" for i in range(fc["horizon"]))]
    return (table(header, rows) + f"\n\nMean over the held-out videos with people of each video's person IoU "
            f"against the teacher at the target frame; K={fc['k']}, context {fc['context']}, up to "
            f"{fc['windows_per_video']} windows per video, sampling seed {fc['seed']}. Per video: "
            f"{source(PERSON_IOU)}.")


VEHICLE_RECALL = "vehicle_recall.json"


@renderer("vehicle_recall")
def render_vehicle_recall(results: Path) -> str:
    """Share of the box teacher's confident vehicle-core cells each heads file calls car, per
    held-out video with any core (results/vehicle_recall.json), and the teacher's ms per frame."""
    d = load(results, VEHICLE_RECALL)
    names = list(d["heads"])
    rows = []
    for video, row in d["videos"].items():
        if not row["core_cells"]:
            continue
        rows.append([f"`{video}`", f"{row['frames_with_cores']} of {row['frames']}",
                     *(f"{fmt(row[n]['recall_in_cores'], 3)} ({fmt(100 * row[n]['head_car_share'], 1)}%)"
                       for n in names)])
    s = d["summary"]
    rows.append(["**mean over these videos**", "", *(f"**{fmt(s[n]['recall_in_cores_mean'], 3)}**" for n in names)])
    header = ["video", "frames with a vehicle core", *(f"`{n}`: recall (share called car)" for n in names)]
    without = [v for v, row in d["videos"].items() if not row["core_cells"]]
    return (table(header, rows) + f"\n\nRecall: the share of cells inside the core ({d['core']} of each side) of "
            f"the teacher's vehicle boxes (car, bus, truck, motorcycle) scoring at least {d['min_score']} that "
            f"the heads call car, at {d['label_size'][0]} x {d['label_size'][1]}, one frame in "
            f"{d['label_settings']['stride']}; in brackets the share of all pixels called car. Held-out videos "
            f"without any vehicle core: {', '.join(f'`{v}`' for v in without) or 'none'}. Heads files: "
            + ", ".join(f"`{n}` = `{p}`" for n, p in d["heads"].items())
            + f". Teacher: {d['teacher']['package']} {d['teacher']['version']} ({d['teacher']['licence']}), "
            f"{fmt(d['teacher_ms_per_frame'], 0)} ms a frame ({d['teacher_timing']['runtime']}). "
            f"Source: {source(VEHICLE_RECALL)}, {provenance(d, results, VEHICLE_RECALL)}.")
