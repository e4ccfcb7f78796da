"""Scoring forecast person maps against the person teacher: windows of labelled frames, the mode
of K samples' classes, and the per-method agreement, on tiny hand-made heads and features."""

from __future__ import annotations

import torch

from deltaworld_core.heads import TaskHeads
from deltaworld_core.teachers.agreement import fit_person_probe, fit_subcell_person_probe
from deltaworld_core.teachers.forecast_agreement import (ForecastPersonAgreement, class_maps, label_windows,
                                                         mode_classes, teacher_at, window_clips)
from deltaworld_core.training.partial_labels import partial_cross_entropy

GRID, SIZE = (2, 2), (4, 4)


def person_heads() -> TaskHeads:
    """Two classes, "road" and "person": person wherever feature channel 0 is positive."""
    heads = TaskHeads(2, ["road", "person"], depth_bins=4, max_depth=10.0).eval()
    with torch.no_grad():
        for bn in (heads.segmentation.bn, heads.depth.bn):
            bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps), bn.weight.fill_(1.0), bn.bias.zero_()
        heads.segmentation.conv.weight.zero_()
        heads.segmentation.conv.bias.zero_()
        heads.segmentation.conv.weight[1, 0] = 1.0
    return heads


def feats(person_cells: list[bool]) -> torch.Tensor:
    """[N=4, C=2]: channel 0 = +1 on the person cells, -1 elsewhere."""
    f = torch.zeros(4, 2)
    f[:, 0] = torch.tensor([1.0 if p else -1.0 for p in person_cells])
    return f


def test_label_windows_space_frames_by_the_forecast_step_and_never_share_targets():
    stamps = torch.arange(40, dtype=torch.float64) * 0.1  # labelled every 0.1 s
    windows = label_windows(stamps, 7, 0.2, 0)
    assert windows[0] == [0, 2, 4, 6, 8, 10, 12] and windows[1][0] == 14
    assert all(w[-1] < 40 for w in windows) and len(windows) == 2
    assert len(label_windows(stamps, 3, 0.1, 3)) == 3 and label_windows(stamps[:1], 3, 0.1, 0) == []


def test_mode_of_samples_takes_the_most_frequent_class_per_pixel():
    ids = torch.tensor([[[0, 1]], [[1, 1]], [[1, 0]]], dtype=torch.uint8)  # K=3, h=1, w=2
    assert mode_classes(ids, 2).tolist() == [[1, 1]]


def test_forecast_agreement_scores_each_method_against_the_teacher_at_the_target():
    heads = person_heads()
    assert class_maps(heads, feats([True, True, False, False])[None], GRID, SIZE)[0, 0].tolist() == [1, 1, 1, 1]
    truth = feats([True, True, False, False])  # the person is in the top row of the target frame
    wrong = feats([False, False, True, True])
    preds = {"truth": truth[None, None], "copy_last": wrong[None, None], "mean": truth[None, None],
             "best": truth[None, None],
             "samples": torch.stack([truth, truth, wrong])[None, :, None]}  # [B=1, K=3, H=1, N, C]
    teacher = torch.zeros(1, 1, 4, 4)
    teacher[:, :, :2] = 1.0
    acc = ForecastPersonAgreement(1)
    acc.add(preds, teacher, heads, GRID, SIZE, person_id=1)
    out = acc.summary()
    assert out["windows"] == 1
    assert out["present"][0]["iou_decided"] == 1.0 and out["mean"][0]["iou_decided"] == 1.0
    assert out["mode"][0]["iou_decided"] == 1.0  # two of three samples are right
    assert out["copy_last"][0]["iou_decided"] == 0.0


def test_window_clips_and_targets_follow_the_window_indices():
    f = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 4, 2)
    stamps = torch.arange(6, dtype=torch.float64)
    clips = window_clips("v", f, stamps, [[0, 2, 4], [1, 3, 5]])
    assert clips[1].features[:, 0, 0].tolist() == [1, 3, 5] and clips[1].index == 1 and clips[1].stream == "v"
    prob = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 2, 2)
    assert teacher_at(prob, [[0, 2, 4], [1, 3, 5]], 1)[:, :, 0, 0].tolist() == [[2, 4], [3, 5]]


def test_class_weight_makes_a_rare_class_count_more():
    logits = torch.zeros(1, 2, 1, 4)
    codes = torch.tensor([[[1, 0, 0, 0]]], dtype=torch.uint8)
    logits[0, 1, 0, 0] = -2.0  # the rare class's pixel is badly predicted
    plain = partial_cross_entropy(logits, codes)
    weighted = partial_cross_entropy(logits, codes, torch.tensor([1.0, 3.0]))
    assert weighted > plain
    assert torch.allclose(partial_cross_entropy(logits, codes, torch.ones(2)), plain)


def test_linear_ceiling_probe_separates_what_the_features_separate():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, 3, generator=g) * 0.1
    person = torch.zeros(6, 4, dtype=torch.bool)
    person[:, 1] = True
    f[..., 2] += person * 1.0
    teacher = person.view(6, 1, 2, 2).float().repeat_interleave(2, 2).repeat_interleave(2, 3)[:, 0]  # [6, 4, 4]
    probe = fit_person_probe([f], [teacher], GRID, steps=200)
    assert torch.equal(probe(f)[:, 0].flatten(1) > 0, person)


def test_subcell_ceiling_probe_finds_a_person_smaller_than_a_cell():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, 3, generator=g) * 0.1
    f[:, 1, 2] += 1.0  # cell 1 holds a person in its top-left quarter only
    teacher = torch.zeros(6, 4, 4)
    teacher[:, 0, 2] = 1.0
    caller_stream = torch.get_rng_state()
    probe = fit_subcell_person_probe([f], [teacher], GRID, (4, 4), kernel=1, steps=1500)
    assert torch.equal(torch.get_rng_state(), caller_stream)  # seeded inside, the caller's stream untouched
    assert torch.equal(probe(f)[:, 0] > 0, teacher > 0.5)
    cell = fit_person_probe([f], [teacher], GRID, steps=200)  # one value per cell cannot say which quarter
    assert not (cell(f)[:, 0] > 0).any()
