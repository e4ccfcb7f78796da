"""The second person teacher (OpenCV's people detectors, copied from the installed wheel) and the
agreement rule of the real pool: a confident person component of the selfie teacher stays person
only where a second-teacher box touches it. Tiny fixtures, no network."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deltaworld_core.config import ConfigError
from deltaworld_core.features import FeatureCache
from deltaworld_core.teachers import cli
from deltaworld_core.teachers.boxes import BoxStore, ClipBoxes
from deltaworld_core.teachers.labels import LabelSettings, LabelStore, label_clips
from deltaworld_core.teachers.opencv_people import CASCADES, KINDS, MIN_NEIGHBOURS, NAME, PeopleDetector
from deltaworld_core.teachers.packages import MANIFEST, TEACHERS, TeacherError, fetch_teacher
from deltaworld_core.training.config import load_train_config
from deltaworld_core.training.partial_labels import IGNORE, not_class
from deltaworld_core.training.real_labels import RealLabelsConfig, box_support, person_codes, real_windows
from test_teachers import ROOT, BrightnessTeacher, TinyVFM, write_clip

PERSON = 2


def two_blobs() -> torch.Tensor:
    """Teacher probability x 255 uint8 [1, 8, 12]: two confident blobs apart, a band, background."""
    person = torch.full((1, 8, 12), 10, dtype=torch.uint8)
    person[0, 1:4, 1:4] = 250  # blob A (left)
    person[0, 4:7, 8:11] = 250  # blob B (right)
    person[0, 0, 6] = 100  # the unknown band
    return person


# ---------------------------------------------------------------- the agreement rule
def test_a_component_touched_by_a_box_stays_person_an_untouched_one_becomes_unknown():
    person = two_blobs()
    plain = person_codes(person, (8, 12), PERSON, (0.2, 0.7))
    support = torch.zeros((1, 8, 12), dtype=torch.bool)
    support[0, 3, 3] = True  # one corner pixel of blob A: the whole component is confirmed
    agreed = person_codes(person, (8, 12), PERSON, (0.2, 0.7), support=support)
    assert (plain[0, 1:4, 1:4] == PERSON).all() and (plain[0, 4:7, 8:11] == PERSON).all()
    assert (agreed[0, 1:4, 1:4] == PERSON).all()
    assert (agreed[0, 4:7, 8:11] == IGNORE).all()  # unknown, never "not person"
    background = plain == not_class(PERSON)
    assert background.any() and torch.equal(agreed[background], plain[background])
    assert agreed[0, 0, 6] == IGNORE == plain[0, 0, 6]
    # support over background alone confirms nothing and changes nothing there
    elsewhere = torch.zeros_like(support)
    elsewhere[0, 7, 0] = True
    none = person_codes(person, (8, 12), PERSON, (0.2, 0.7), support=elsewhere)
    assert not (none == PERSON).any() and torch.equal(none[background], plain[background])


def clip_boxes(frames: list[int], rows: list[tuple[int, list[float]]]) -> ClipBoxes:
    """Box records of labelled ``frames``; ``rows``: (labelled frame, [x1, y1, x2, y2]) fractions."""
    return ClipBoxes(torch.tensor(frames), torch.zeros(len(frames), dtype=torch.float64),
                     torch.tensor([t for t, _ in rows], dtype=torch.int64),
                     torch.tensor([b for _, b in rows], dtype=torch.float32).reshape(-1, 4),
                     torch.ones(len(rows)), torch.zeros(len(rows), dtype=torch.int64), {"clip": "c", "teacher": NAME})


def test_box_support_grows_boxes_and_matches_frames_by_index():
    boxes = clip_boxes([0, 3, 6], [(1, [0.5, 0.5, 0.75, 0.75])])
    tight = box_support(boxes, torch.tensor([3, 6]), (8, 8), grow=0.0)
    grown = box_support(boxes, torch.tensor([3, 6]), (8, 8), grow=0.5)
    assert int(tight[0].sum()) == 4 and not tight[1].any()  # the 2 x 2 cells of the box; frame 6 has none
    assert int(grown[0].sum()) == 16 and tight[0][grown[0]].sum() == 4  # grown by half a side each way
    with pytest.raises(ConfigError, match="same --stride"):
        box_support(boxes, torch.tensor([3, 4]), (8, 8), grow=0.1)


# ---------------------------------------------------------------- identity, fetch and the cache key
def test_fetch_copies_the_cascades_from_the_installed_wheel_and_records_identity(tmp_path, capsys):
    teacher = TEACHERS[NAME]
    assert teacher.installed and teacher.version == importlib.metadata.version(teacher.package)
    assert teacher.licence.startswith("Apache-2.0") and "Intel License Agreement" in teacher.licence
    assert cli.main(["fetch", "--teacher", NAME, "--cache", str(tmp_path)]) == 0
    folder = tmp_path / NAME / teacher.version
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["package"] == "opencv-python-headless" and manifest["version"] == teacher.version
    assert manifest["settings"] == dict(teacher.settings) and set(manifest["files"]) == set(CASCADES.values())
    assert cli.main(["list", "--teacher", NAME, "--cache", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["fetched"] is True


def test_a_different_installed_version_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(TEACHERS, NAME, dataclasses.replace(TEACHERS[NAME], version="0.0.1"))
    with pytest.raises(TeacherError, match="pinned to 0.0.1"):
        fetch_teacher(NAME, tmp_path)


def test_the_box_file_key_names_the_second_teacher_and_its_settings(tmp_path, monkeypatch):
    [clip] = label_clips(paths=[str(write_clip(tmp_path / "clip.avi", frames=2))])
    person = LabelStore(LabelSettings(stride=3), tmp_path).path(clip)
    agree = RealLabelsConfig(label=LabelSettings(stride=3), agree=NAME).agree_label
    boxes = BoxStore(agree, tmp_path).path(clip)
    assert agree.stride == 3 and boxes != person and f"labels/{NAME}/" in boxes.as_posix()
    looser = dataclasses.replace(TEACHERS[NAME], settings=(("side", 320),) + TEACHERS[NAME].settings[1:])
    monkeypatch.setitem(TEACHERS, NAME, looser)
    assert BoxStore(agree, tmp_path).path(clip) != boxes  # changed detector settings: a new file
    assert "settings" not in TEACHERS["selfie"].identity()  # the other teachers' keys (label files) unchanged


def test_agree_accepts_only_the_opencv_teacher():
    RealLabelsConfig(agree=NAME).validate()
    with pytest.raises(ConfigError, match="real_labels.agree"):
        RealLabelsConfig(agree="selfie").validate()
    with pytest.raises(ConfigError, match="agree_grow"):
        RealLabelsConfig(agree=NAME, agree_grow=-0.1).validate()


# ---------------------------------------------------------------- the real pool with a second teacher
class BoxOnFirstFrame:
    """Stands in for the detector: one box over the clip's bright square on its first frame only."""

    min_score = None

    def __init__(self):
        self.calls = 0

    def detect(self, rgb):
        self.calls += 1
        return np.array([[5, 10, 25, 30, 1.0, 0]], np.float32) if self.calls == 1 else np.zeros((0, 6), np.float32)


def test_real_windows_keep_person_only_where_the_second_teacher_agrees(tmp_path):
    video = write_clip(tmp_path / "clip.avi", frames=3)
    settings = LabelSettings(stride=1, max_side=32)
    [clip] = label_clips(paths=[str(video)])
    LabelStore(settings, tmp_path / "t").label(clip, BrightnessTeacher())
    cache = FeatureCache(tmp_path / "features", TinyVFM(), SimpleNamespace(weights="random", arch="tiny"))
    rc = RealLabelsConfig(paths=[str(video)], fraction=0.5, label=settings, cache=str(tmp_path / "t"),
                          label_missing=False, agree=NAME)
    names = ["sky", "road", "person"]
    with pytest.raises(ConfigError, match=f"--teacher {NAME}"):
        real_windows(rc, cache, (12, 16), names)
    BoxStore(rc.agree_label, tmp_path / "t").label(clip, BoxOnFirstFrame())
    [agreed] = real_windows(rc, cache, (12, 16), names)
    [plain] = real_windows(dataclasses.replace(rc, agree=None), cache, (12, 16), names)
    assert (plain.semantic == PERSON).flatten(1).any(dim=1).all()
    assert (agreed.semantic[0] == PERSON).any() and not (agreed.semantic[1:] == PERSON).any()
    unsure = (plain.semantic == PERSON) & (agreed.semantic != PERSON)
    assert (agreed.semantic[unsure] == IGNORE).all()
    assert torch.equal(agreed.semantic[plain.semantic != PERSON], plain.semantic[plain.semantic != PERSON])


# ---------------------------------------------------------------- the detector itself
def test_the_detector_runs_on_a_tiny_frame_and_refuses_bad_input(tmp_path):
    detector = PeopleDetector(fetch_teacher(NAME, tmp_path))
    found = detector.detect(np.full((48, 64, 3), 128, np.uint8))  # a blank frame: nothing to find
    assert found.dtype == np.float32 and found.shape == (0, 6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((48, 64), np.float32))
    (tmp_path / NAME / TEACHERS[NAME].version / CASCADES["full_body"]).unlink()
    with pytest.raises(TeacherError, match="fetch --teacher opencv_people"):
        PeopleDetector(tmp_path / NAME / TEACHERS[NAME].version)


def test_the_people_recipe_may_name_the_second_teacher():
    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads_real.yaml", ["real_labels.agree=opencv_people"])
    assert cfg.real_labels.agree == NAME and cfg.real_labels.agree_label.teacher == NAME


class FoundAt:
    """Stands in for an OpenCV detector: two boxes, scored just below and at ``threshold``."""

    def __init__(self, threshold: float):
        self.found = (np.array([[10, 20, 30, 40], [50, 60, 30, 40]]), np.array([[threshold - 0.5], [threshold]]))

    def detectMultiScale(self, image, **kwargs):
        return self.found

    detectMultiScale2 = detectMultiScale


def test_each_kind_keeps_only_boxes_scoring_its_own_threshold(tmp_path):
    detector = PeopleDetector(fetch_teacher(NAME, tmp_path))
    settings = detector.settings
    detector._hog = FoundAt(settings["hog_min_margin"])
    for kind in CASCADES:
        detector._cascades[kind] = FoundAt(settings[MIN_NEIGHBOURS[kind]])
    boxes = detector.detect(np.zeros((480, settings["side"], 3), np.uint8))  # at the detectors' own size
    kinds = [KINDS[int(k)] for k in boxes[:, 5]]
    assert kinds == ["hog_body", "frontal_face", "profile_face", "profile_face", "full_body"]  # profile: mirrored too
    assert (boxes[:, :2] == [50, 60]).all(1).sum() == 4 and boxes[3, 0] == settings["side"] - 50 - 30
    assert boxes[0, 4] == settings["hog_min_margin"] and boxes[1, 4] == settings["frontal_min_neighbours"]


class FoundReversed(FoundAt):
    def detectMultiScale(self, image, **kwargs):
        rects, scores = self.found
        return rects[::-1], scores[::-1]

    detectMultiScale2 = detectMultiScale


def test_boxes_come_out_in_one_order_whatever_order_opencv_finds_them(tmp_path):
    detector = PeopleDetector(fetch_teacher(NAME, tmp_path))
    frame = np.zeros((480, detector.settings["side"], 3), np.uint8)
    settings, runs = detector.settings, []
    for stand_in in (FoundAt, FoundReversed):  # both boxes of each detector pass its threshold
        detector._hog = stand_in(settings["hog_min_margin"] + 0.5)
        for kind in CASCADES:
            detector._cascades[kind] = stand_in(settings[MIN_NEIGHBOURS[kind]] + 0.5)
        runs.append(detector.detect(frame))
    assert len(runs[0]) == 10 and np.array_equal(runs[0], runs[1])
