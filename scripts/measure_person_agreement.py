"""How much of the selfie teacher's confident "person" the second teacher (``opencv_people``)
confirms, per train source: the rule ``real_labels.agree`` applies when the heads stage trains.

    .venv/bin/python scripts/measure_person_agreement.py [--sources NAME ...] [--stride 3] \
        [--person 0.2 0.7] [--grow 0.1] [--json results/person_agreement.json]

For every clip of the sources (default: the ``train`` group of data_split.yaml) the selfie labels
(made by ``python -m deltaworld_core.teachers label``; a clip without them is listed as such) and
the OpenCV people boxes of the same frames (labelled here when missing; cached) are read. At the
label files' own resolution, the selfie teacher's confident person pixels (probability >= hi) are
split into connected components; a component touched by a box grown by ``--grow`` of its sides is
*confirmed*, the others turn *unknown* (:func:`deltaworld_core.training.real_labels.person_codes`).
Reported per clip and per source: the selfie person pixels, the share confirmed and the share
turned unknown, the frames with any selfie person and with any confirmed person, and the boxes
found by kind. Confident background is untouched by the rule, so it is not reported.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaworld_core.checkpoint import atomic_write  # noqa: E402
from deltaworld_core.config import ConfigError  # noqa: E402
from deltaworld_core.data.sources import split_sources  # noqa: E402
from deltaworld_core.teachers.boxes import BoxStore  # noqa: E402
from deltaworld_core.teachers.labels import LabelSettings, LabelStore, label_clips  # noqa: E402
from deltaworld_core.teachers.opencv_people import KINDS, NAME, PeopleDetector  # noqa: E402
from deltaworld_core.teachers.packages import TEACHERS, fetch_teacher  # noqa: E402
from deltaworld_core.training.real_labels import box_support, clip_labels, person_codes  # noqa: E402

PERSON = 1  # any class id: the codes are only compared with themselves


def clip_row(labels, boxes, thresholds: tuple[float, float], grow: float) -> dict:
    size = tuple(labels.person.shape[1:])
    plain = person_codes(labels.person, size, PERSON, thresholds) == PERSON
    agreed = person_codes(labels.person, size, PERSON, thresholds,
                          support=box_support(boxes, labels.frames, size, grow)) == PERSON
    person, confirmed = int(plain.sum()), int(agreed.sum())
    return {"frames": len(labels.frames), "selfie_person_pixels": person, "confirmed_pixels": confirmed,
            "pixels": plain.numel(), "frames_with_selfie_person": int(plain.flatten(1).any(1).sum()),
            "frames_with_confirmed_person": int(agreed.flatten(1).any(1).sum()),
            "boxes": {kind: int((boxes.classes == i).sum()) for i, kind in enumerate(KINDS)}}


def shares(row: dict) -> dict:
    person = row["selfie_person_pixels"]
    return {**row, "selfie_person_share": row["selfie_person_pixels"] / row["pixels"] if row["pixels"] else None,
            "confirmed_share": row["confirmed_pixels"] / person if person else None,
            "unknown_share": (person - row["confirmed_pixels"]) / person if person else None}


def add(total: dict, row: dict) -> dict:
    out = {k: total.get(k, 0) + v for k, v in row.items() if k != "boxes"}
    out["boxes"] = {k: total.get("boxes", {}).get(k, 0) + v for k, v in row["boxes"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="*", default=None, help="named sources or clips (default: the train group)")
    p.add_argument("--stride", type=int, default=3, help="the labels' stride (as labelled)")
    p.add_argument("--person", type=float, nargs=2, default=(0.2, 0.7), metavar=("LO", "HI"))
    p.add_argument("--grow", type=float, default=0.1, help="boxes grown by this share of their sides on each side")
    p.add_argument("--cache", default=None, help="teacher cache")
    p.add_argument("--media-cache", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sources = args.sources if args.sources is not None else split_sources("train")
    person_store = LabelStore(LabelSettings(stride=args.stride), args.cache)
    box_store = BoxStore(LabelSettings(teacher=NAME, stride=args.stride), args.cache)
    detector: list = []  # built on the first clip without boxes, then shared
    clips, per_source, unlabelled = {}, {}, []
    try:
        for clip in label_clips(sources, [], None, args.media_cache):
            labels = person_store.load(clip)
            if labels is None:
                unlabelled.append(clip.name)
                print(f"{clip.name}: no selfie labels (stride {args.stride}); left out", file=sys.stderr)
                continue
            boxes = clip_labels(box_store, clip, True, detector,
                                lambda: PeopleDetector(fetch_teacher(NAME, args.cache)))
            row = clip_row(labels, boxes, tuple(args.person), args.grow)
            clips[clip.name] = shares(row)
            source = clip.name.split("/")[0]
            per_source[source] = add(per_source.get(source, {}), row)
            print(clip.name, json.dumps(clips[clip.name]), flush=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = {"command": "python scripts/measure_person_agreement.py " + " ".join(shlex.quote(a) for a in
                                                                              (argv or sys.argv[1:])),
           "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "teachers": {"person": TEACHERS["selfie"].identity(), "agree": TEACHERS[NAME].identity()},
           "stride": args.stride, "person": list(args.person), "grow": args.grow,
           "sources": {k: shares(v) for k, v in per_source.items()}, "clips": clips,
           "clips_without_selfie_labels": unlabelled}
    print(json.dumps(out["sources"], indent=1))
    if args.json:
        atomic_write(args.json, lambda path: Path(path).write_text(json.dumps(out, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
