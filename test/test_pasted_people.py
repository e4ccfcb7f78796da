"""People pasted small into people-less real frames (real_labels.paste): cutouts, composites, codes
and the pool window, on tiny generated clips; no teacher, no network."""

from __future__ import annotations

import random
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from deltaworld_core.config import ConfigError
from deltaworld_core.data.sampling import Sampler
from deltaworld_core.data.windows import Window
from deltaworld_core.features import FeatureCache
from deltaworld_core.teachers.labels import LabelSettings, LabelStore, label_clips
from deltaworld_core.training import real_labels
from deltaworld_core.training.config import load_train_config
from deltaworld_core.training.heads import HeadsStage
from deltaworld_core.training.partial_labels import IGNORE, not_class
from deltaworld_core.training.pasted_people import UNSURE, PasteConfig, composite, cutouts, label_codes
from deltaworld_core.training.real_labels import RealLabelsConfig, real_windows
from test_teachers import ROOT, BrightnessTeacher, TinyVFM, write_clip

PERSON = 2


def test_cutouts_keep_confident_components_large_enough_with_a_soft_alpha():
    prob = np.zeros((40, 60), np.float32)
    prob[5:25, 5:15] = 0.9  # a person: 200 pixels
    prob[5:25, 15] = 0.45  # its soft edge, below hi: alpha between 0 and 1 only where the component is
    prob[30:33, 40:43] = 0.9  # a speck: 9 pixels
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    [(cut, alpha)] = cutouts(rgb, prob, (0.2, 0.7), min_pixels=50)
    assert cut.shape == (20, 10, 3) and np.array_equal(cut, rgb[5:25, 5:15])
    assert alpha.shape == (20, 10) and (alpha == 1.0).all()


def test_a_composite_labels_the_pasted_person_and_the_confident_background_only():
    cfg = PasteConfig(count=1, min_height=0.5, max_height=0.5, max_people=1, size=(40, 60))
    background = np.zeros((80, 120, 3), np.uint8)
    background_prob = np.zeros((80, 120), np.float32)
    background_prob[:, :20] = 0.5  # the teacher unsure on the left third: unknown there
    person = np.full((20, 8, 3), 200, np.uint8)
    alpha = np.ones((20, 8), np.float32)
    alpha[:, 0] = 0.3  # a soft edge
    image, label = composite(random.Random(1), background, background_prob, [(person, alpha)], cfg, (0.2, 0.7))
    assert image.shape == (40, 60, 3) and label.shape == (40, 60)
    pasted = label == 1.0
    assert pasted.sum() == 20 * 7  # height 0.5 x 40, width kept in proportion; the soft column unknown
    assert (image[pasted] == 200).all() and (image[~pasted & (label == 0.0)] == 0).all()
    assert (label[:, :10][~pasted[:, :10]] == UNSURE).all()
    again = composite(random.Random(1), background, background_prob, [(person, alpha)], cfg, (0.2, 0.7))
    assert np.array_equal(again[0], image) and np.array_equal(again[1], label)


def test_label_codes_map_person_background_and_unknown():
    prob = torch.tensor([[[1.0, 0.0], [UNSURE, 1.0]]])
    codes = label_codes(prob, (2, 2), PERSON)
    assert codes.tolist() == [[[PERSON, not_class(PERSON)], [IGNORE, PERSON]]]


@pytest.mark.parametrize("override, message", [
    ("real_labels.paste.count=-1", "count must be >= 0"),
    ("real_labels.paste.min_height=0.5", "min_height <= max_height"),
    ("real_labels.paste.size=[8,8]", "each >= 14"),
    ("real_labels.paste.weight=0", "weight must be a number > 0"),
])
def test_bad_paste_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(ROOT / "deltaworld_core/configs/train_heads_people_pasted.yaml", [override])


def dark_clip(path, frames: int = 2, size=(64, 48)):
    """A clip with no one in it: the stand-in teacher is confident it is background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for _ in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20, np.uint8))
    writer.release()
    return path


def test_the_pool_gains_one_window_of_composites_and_reuses_it_from_the_cache(tmp_path, monkeypatch):
    people, empty = write_clip(tmp_path / "people.avi", frames=3), dark_clip(tmp_path / "empty.avi")
    settings = LabelSettings(stride=1, max_side=32)
    for clip in label_clips(paths=[str(people), str(empty)]):
        LabelStore(settings, tmp_path / "t").label(clip, BrightnessTeacher())
    cache = FeatureCache(tmp_path / "features", TinyVFM(), SimpleNamespace(weights="random", arch="tiny"))
    rc = RealLabelsConfig(paths=[str(people)], fraction=0.5, label=settings, cache=str(tmp_path / "t"),
                          label_missing=False, paste=PasteConfig(count=5, min_pixels=4, size=(32, 48)))
    names = ["sky", "road", "person"]
    with pytest.raises(ConfigError, match="negatives_only"):
        real_windows(rc, cache, (12, 16), names)
    original = real_labels.label_clips  # negatives_only takes source names: stand "empty" for the dark clip
    monkeypatch.setattr(real_labels, "label_clips", lambda sources=(), paths=(), topic=None, media_cache=None:
                        original(paths=[str(empty)]) if list(sources) == ["empty"] else
                        original(sources, paths, topic, media_cache))
    rc.negatives_only = ["empty"]
    pasted = real_windows(rc, cache, (12, 16), names)[-1]
    assert pasted.name == "teacher:pasted_people" and pasted.features.shape[0] == 5
    assert pasted.semantic.shape == (5, 12, 16) and (pasted.semantic == PERSON).flatten(1).any(1).all()
    assert (pasted.semantic == not_class(PERSON)).any()
    misses = cache.misses
    again = real_windows(rc, cache, (12, 16), names)[-1]
    assert cache.misses == misses and torch.equal(again.semantic, pasted.semantic)


def test_the_composites_are_drawn_by_their_weight_and_equal_weights_keep_the_plain_draw():
    def window(weight=1.0):
        return Window(torch.zeros(1, 1, 1), 0.0, "w", weight=weight)

    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads_people_pasted.yaml")
    stage = HeadsStage(cfg, None, (2, 2), [window(), window(), window(8.0)])  # only the pool draw is exercised
    g = torch.Generator().manual_seed(0)
    draws = [stage.real_window(g) for _ in range(2000)]
    assert 0.75 < draws.count(2) / len(draws) < 0.85  # 8 of 10
    stage = HeadsStage(cfg, None, (2, 2), [window(), window(), window()])
    g, h = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert [stage.real_window(g) for _ in range(50)] == [Sampler.integer(h, 3) for _ in range(50)]
