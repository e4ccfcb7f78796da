"""The person teacher's plumbing without the teacher: fetching by name (a fake registry), label
files, tiled views, the partial-label loss, the real pool of the heads stage and its config.
Every test builds its own tiny fixtures; none needs node, LiteRT or a teacher's files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deltaworld_core.config import ConfigError
from deltaworld_core.data.sources import split_sources
from deltaworld_core.features import FeatureCache
from deltaworld_core.teachers import cli
from deltaworld_core.teachers.labels import LabelSettings, LabelStore, label_clips, label_hw
from deltaworld_core.teachers.packages import MANIFEST, TEACHERS, TeacherError, fetch_teacher
from deltaworld_core.teachers.selfie import mean_over_views
from deltaworld_core.training.config import load_train_config
from deltaworld_core.training.partial_labels import IGNORE, not_class, partial_cross_entropy
from deltaworld_core.training.real_labels import RealLabelsConfig, person_codes, real_windows

ROOT = Path(__file__).resolve().parents[1]


def write_clip(path: Path, frames: int = 7, size=(64, 48)) -> Path:
    """A small MJPG clip: a bright square (the "person") moving right over a dark background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 20, np.uint8)
        img[10:30, 5 + 4 * i:25 + 4 * i] = 230
        writer.write(img)
    writer.release()
    return path


class BrightnessTeacher:
    """Stands in for the person model: probability = brightness of the frame at the label size."""

    def views(self, rgb, hw, tiles, tile_frac):
        grey = cv2.resize(rgb.mean(axis=2).astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        return grey / 255.0


# ---------------------------------------------------------------- partial-label loss
def test_partial_cross_entropy_is_cross_entropy_on_exact_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 6, 5, generator=g)
    labels = torch.randint(0, 9, (2, 6, 5), generator=g)
    labels[0, :2] = IGNORE
    ours = partial_cross_entropy(logits, labels.to(torch.uint8))
    assert torch.allclose(ours, F.cross_entropy(logits, labels, ignore_index=IGNORE), atol=1e-6)


def test_not_class_pushes_probability_off_that_class_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 5, 3, 3, generator=g, requires_grad=True)
    codes = torch.full((1, 3, 3), not_class(2), dtype=torch.uint8)
    loss = partial_cross_entropy(logits, codes)
    p = logits.softmax(1)[:, 2]
    assert torch.allclose(loss, -(1 - p).log().mean(), atol=1e-6)
    loss.backward()
    # the class that is ruled out is pushed down; the others are not told apart (all pushed up)
    assert (logits.grad[:, 2] > 0).all() and (logits.grad[:, [0, 1, 3, 4]] < 0).all()


def test_partial_cross_entropy_without_labels_is_zero_with_a_gradient():
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((1, 2, 2), IGNORE, dtype=torch.uint8))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError):
        not_class(200)


def test_person_codes_follow_the_thresholds():
    prob = torch.tensor([[[0, 40, 128, 200, 255]]], dtype=torch.uint8)  # 0, .16, .5, .78, 1.0
    codes = person_codes(prob, (1, 5), person_id=7, thresholds=(0.2, 0.7))
    assert codes.tolist() == [[[not_class(7), not_class(7), IGNORE, 7, 7]]]
    negatives = person_codes(prob, (1, 5), person_id=7, thresholds=(0.2, 0.7), positives=False)
    assert negatives.tolist() == [[[not_class(7), not_class(7), IGNORE, IGNORE, IGNORE]]]


# ---------------------------------------------------------------- views
def test_mean_over_views_averages_the_whole_frame_and_the_tiles_covering_each_pixel():
    rgb = np.zeros((50, 100, 3), np.uint8)

    def predict(view, hw):  # the whole frame says 0, every crop says 1
        return np.full(hw, 0.0 if view.shape[:2] == rgb.shape[:2] else 1.0, np.float32)

    prob = mean_over_views(predict, rgb, (50, 100), tiles=3, tile_frac=0.6)
    assert prob.shape == (50, 100)
    assert prob[25, 50] == pytest.approx(9 / 10)  # the centre lies in all 9 crops
    assert prob[0, 0] == pytest.approx(1 / 2)  # a corner in one
    assert np.array_equal(mean_over_views(predict, rgb, (50, 100), tiles=0), np.zeros((50, 100), np.float32))


# ---------------------------------------------------------------- fetching by name
def fake_registry(calls: list, members=None):
    def download(src, scratch: Path) -> Path:
        calls.append((src.registry, src.package, src.version))
        tree = scratch / "tree"
        for member in members if members is not None else TEACHERS["selfie"].files:
            (tree / member).parent.mkdir(parents=True, exist_ok=True)
            (tree / member).write_bytes(b"model " + member.encode())
        (tree / "package" / "README.md").write_text("not kept")
        return tree
    return download


def test_fetch_teacher_keeps_the_model_files_and_records_package_and_licence(tmp_path):
    calls = []
    folder = fetch_teacher("selfie", tmp_path, download=fake_registry(calls))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["package"] == "@mediapipe/selfie_segmentation" and manifest["licence"] == "Apache-2.0"
    assert manifest["registry"] == "npm" and manifest["version"] == TEACHERS["selfie"].version
    assert sorted(manifest["files"]) == ["selfie_segmentation.tflite", "selfie_segmentation_landscape.tflite"]
    assert not (folder / "README.md").exists()
    assert fetch_teacher("selfie", tmp_path, download=fake_registry(calls)) == folder and len(calls) == 1
    (folder / "selfie_segmentation.tflite").write_bytes(b"torn")  # a damaged file is fetched again
    fetch_teacher("selfie", tmp_path, download=fake_registry(calls))
    assert len(calls) == 2 and (folder / "selfie_segmentation.tflite").read_bytes().startswith(b"model")


def test_fetch_teacher_names_a_missing_member_and_an_unknown_teacher(tmp_path):
    with pytest.raises(TeacherError, match="has no package/selfie_segmentation_landscape.tflite"):
        fetch_teacher("selfie", tmp_path, download=fake_registry([], ["package/selfie_segmentation.tflite"]))
    with pytest.raises(TeacherError, match="unknown teacher 'depth'"):
        fetch_teacher("depth", tmp_path)


# ---------------------------------------------------------------- label files
def test_label_store_labels_every_stride_frame_and_records_the_teacher(tmp_path):
    video = write_clip(tmp_path / "clip.avi")
    [clip] = label_clips(paths=[str(video)])
    store = LabelStore(LabelSettings(stride=3, max_side=32), tmp_path / "teachers")
    assert store.load(clip) is None
    labels = store.label(clip, BrightnessTeacher())
    assert labels.frames.tolist() == [0, 3, 6]
    assert tuple(labels.person.shape) == (3, *label_hw((48, 64), 32)) == (3, 24, 32)
    assert 0.0 < labels.person_share < 0.5  # the square, not the background
    loaded = store.load(clip)
    assert torch.equal(loaded.person, labels.person) and torch.equal(loaded.frames, labels.frames)
    assert loaded.meta["package"] == "@mediapipe/selfie_segmentation" and loaded.meta["licence"] == "Apache-2.0"
    assert loaded.meta["settings"]["stride"] == 3 and loaded.meta["clip"] == clip.name
    other = LabelStore(LabelSettings(stride=2, max_side=32), tmp_path / "teachers")
    assert other.path(clip) != store.path(clip) and other.load(clip) is None


def test_label_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["label", "--sources", "no-such-source", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown video source 'no-such-source'" in err[0]
    assert cli.main(["label", "--cache", str(tmp_path)]) == 2
    assert "nothing to label" in capsys.readouterr().err


def test_label_cli_without_the_runtime_says_what_to_install(tmp_path, capsys, monkeypatch):
    pytest.importorskip("cv2")
    try:
        import ai_edge_litert  # noqa: F401
        pytest.skip("LiteRT is installed here")
    except ImportError:
        pass
    fetch_teacher("selfie", tmp_path, download=fake_registry([]))
    video = write_clip(tmp_path / "clip.avi", frames=2)
    assert cli.main(["label", "--paths", str(video), "--cache", str(tmp_path)]) == 2
    assert "pip install ai-edge-litert==2.3.0" in capsys.readouterr().err


# ---------------------------------------------------------------- the heads stage's real pool
class TinyVFM:
    """Features = the mean colour of each of 2x2 patches, 3 channels: [T, 4, 3]."""

    image_size = (8, 8)
    grid = (2, 2)

    def __call__(self, frames):
        x = torch.as_tensor(np.stack([cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA) for f in np.asarray(frames)]))
        x = x.float().div(255).unflatten(1, (2, 4)).unflatten(3, (2, 4)).mean(dim=(2, 4))  # [T, 2, 2, 3]
        return x.flatten(1, 2)


def test_real_windows_turn_labelled_frames_into_a_pool(tmp_path):
    video = write_clip(tmp_path / "clip.avi")
    settings = LabelSettings(stride=2, max_side=32)
    [clip] = label_clips(paths=[str(video)])
    LabelStore(settings, tmp_path / "teachers").label(clip, BrightnessTeacher())
    cache = FeatureCache(tmp_path / "features", TinyVFM(), SimpleNamespace(weights="random", arch="tiny"))
    rc = RealLabelsConfig(paths=[str(video)], fraction=0.5, label=settings, cache=str(tmp_path / "teachers"),
                          label_missing=False)
    names = ["sky", "road", "person"]
    [w] = real_windows(rc, cache, (6, 8), names)
    assert tuple(w.features.shape) == (4, 4, 3) and tuple(w.semantic.shape) == (4, 6, 8) and w.depth is None
    assert set(torch.unique(w.semantic).tolist()) <= {2, not_class(2), IGNORE}
    assert (w.semantic == 2).any() and (w.semantic == not_class(2)).any()
    with pytest.raises(ConfigError, match="no 'person' class"):
        real_windows(rc, cache, (6, 8), ["sky", "road"])
    unlabelled = RealLabelsConfig(paths=[str(video)], label=LabelSettings(stride=3), cache=str(tmp_path / "teachers"),
                                  label_missing=False)
    with pytest.raises(ConfigError, match="teachers label"):
        real_windows(unlabelled, cache, (6, 8), names)


def test_heads_real_config_names_train_sources_only():
    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads_real.yaml")
    rc = cfg.real_labels
    assert cfg.stage == "heads" and rc.fraction > 0 and rc.sources
    train = set(split_sources("train"))
    assert {n.split("/")[0] for n in rc.sources + rc.negatives_only} <= train
    with pytest.raises(ConfigError, match="real_labels.person"):
        load_train_config(ROOT / "deltaworld_core/configs/train_heads_real.yaml", ["real_labels.person=[0.8, 0.3]"])
    with pytest.raises(ConfigError, match="needs real_labels.sources"):
        load_train_config(ROOT / "deltaworld_core/configs/train_heads.yaml", ["real_labels.fraction=0.5"])
