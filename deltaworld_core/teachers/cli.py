"""``python -m deltaworld_core.teachers``: fetch the teachers, label recordings, list the labels.

    python -m deltaworld_core.teachers fetch [--teacher selfie] [--cache DIR]
    python -m deltaworld_core.teachers label [--sources NAME ...] [--split train|held_out|calibration]
        [--paths FILE_OR_FOLDER_OR_BAG ...] [--topic T] [--stride N] [--tiles N] [--max-frames N] [--cache DIR]
    python -m deltaworld_core.teachers list [--cache DIR]

``label`` writes one label file per clip (:mod:`.labels`) and prints one line per clip: its
name, frames labelled, the share of pixels the teacher calls person, and the file. Clips already
labelled with the same teacher and settings are read, not labelled again. The teacher's runtime
is an optional dependency (``pip install ai-edge-litert==2.3.0 backports.strenum``); nothing else
in the project needs it. ``--teacher centernet`` (vehicle boxes, optional) needs Node.js: ``fetch``
also installs the tfjs runtime from npm into the cache, and ``label`` prints the boxes found per
clip (:mod:`.boxes`). ``--teacher opencv_people`` (person and face boxes from the detectors inside
the installed OpenCV wheel, :mod:`.opencv_people`) needs nothing more: ``fetch`` copies its
cascades from the wheel. Bad input (an unknown source, an unreadable file) ends with one line and
exit status 2; a clip that fails is reported and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..config import ConfigError
from ..data.sources import split_sources
from .boxes import BoxStore
from .centernet import COCO_VEHICLES, BoxDetector, install_runtime
from .labels import LabelSettings, LabelStore, label_clips
from .opencv_people import KINDS, PeopleDetector
from .packages import TEACHERS, TeacherError, fetch_teacher, read_manifest, teacher_folder, teacher_root
from .selfie import PersonSegmenter

log = logging.getLogger("deltaworld_core.teachers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.teachers", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("fetch", "label", "list"):
        s = sub.add_parser(name)
        s.add_argument("--teacher", default="selfie", choices=sorted(TEACHERS))
        s.add_argument("--cache", default=None, help="teacher cache (default $DELTAWORLD_TEACHERS or "
                                                     "~/.cache/deltaworld/teachers)")
        if name == "label":
            d = LabelSettings()
            s.add_argument("--sources", nargs="*", default=[], help="named sources or clips (visp, pose2sim/trial1-cam1)")
            s.add_argument("--split", choices=("train", "held_out", "calibration"), default=None,
                           help="every source of this group of data_split.yaml")
            s.add_argument("--paths", nargs="*", default=[], help="video files, frame folders, bags, lists")
            s.add_argument("--topic", default=None, help="bags: the image topic")
            s.add_argument("--media-cache", default=None, help="fetched sources (default ~/.cache/deltaworld/data)")
            s.add_argument("--model", default=d.model, choices=("auto", "general", "landscape"))
            s.add_argument("--tiles", type=int, default=d.tiles)
            s.add_argument("--tile-frac", type=float, default=d.tile_frac)
            s.add_argument("--stride", type=int, default=d.stride)
            s.add_argument("--max-frames", type=int, default=d.max_frames)
            s.add_argument("--max-side", type=int, default=d.max_side)
            s.add_argument("--threads", type=int, default=1, help="teacher runtime threads")
            s.add_argument("--min-score", type=float, default=0.1, help="box teachers: boxes kept from this score")
    return p


def _label(args) -> int:
    settings = LabelSettings(args.teacher, args.model, args.tiles, args.tile_frac, args.stride, args.max_frames,
                             args.max_side).validate("--")
    sources = list(args.sources) + (split_sources(args.split) if args.split else [])
    if not sources and not args.paths:
        raise ConfigError("nothing to label: give --sources, --split and/or --paths")
    clips = label_clips(sources, args.paths, args.topic, args.media_cache)
    if args.teacher == "centernet":
        return _label_each(clips, BoxStore(settings, args.cache),
                           lambda: BoxDetector(fetch_teacher(args.teacher, args.cache), args.cache, args.min_score,
                                               args.threads),
                           lambda boxes: f"{len(boxes.scores)} boxes, {boxes.count(set(COCO_VEHICLES), 0.5)} "
                                         f"vehicles scoring >= 0.5")
    if args.teacher == "opencv_people":
        return _label_each(clips, BoxStore(settings, args.cache),
                           lambda: PeopleDetector(fetch_teacher(args.teacher, args.cache)),
                           lambda boxes: ", ".join(f"{int((boxes.classes == i).sum())} {kind}"
                                                   for i, kind in enumerate(KINDS)))
    return _label_each(clips, LabelStore(settings, args.cache),
                       lambda: PersonSegmenter(fetch_teacher(args.teacher, args.cache), settings.model, args.threads),
                       lambda labels: f"person {100 * labels.person_share:.1f}% of pixels")


def _label_each(clips, store, make_teacher, describe) -> int:
    """Labels each clip not labelled yet (the teacher started on first need, closed at the end when
    it has ``close``) and prints one line per clip; 1 when a clip failed, else 0."""
    teacher = None
    failed = 0
    try:
        for clip in clips:
            labels = store.load(clip)
            if labels is None:
                teacher = teacher or make_teacher()
                try:
                    labels = store.label(clip, teacher)
                except (ConfigError, OSError, ValueError) as err:
                    print(f"{clip.name}: not labelled: {err}", file=sys.stderr)
                    failed += 1
                    continue
            print(f"{clip.name}: {len(labels.frames)} frames, {describe(labels)}, {store.path(clip)}")
    finally:
        if hasattr(teacher, "close"):
            teacher.close()
    return 1 if failed else 0


def _list(args) -> int:
    teacher = TEACHERS[args.teacher]
    manifest = read_manifest(teacher_folder(teacher, args.cache))
    print(json.dumps({**teacher.identity(), "fetched": manifest is not None,
                      "folder": str(teacher_folder(teacher, args.cache))}))
    root = teacher_root(args.cache) / "labels" / teacher.name
    for path in sorted(root.glob("*.safetensors")) if root.is_dir() else []:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch_teacher(args.teacher, args.cache))
            if args.teacher == "centernet":
                print(install_runtime(args.cache))
            return 0
        if args.command == "label":
            return _label(args)
        return _list(args)
    except (ConfigError, TeacherError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
