"""The core engine's contract: shapes, one token per frame, K futures, resets, bad input."""

from __future__ import annotations

import json
import math
import logging

import numpy as np
import pytest
import torch

from deltaworld_core import Forecaster, load_config
from deltaworld_core.checkpoint import CheckpointError, save_state
from deltaworld_core.config import ConfigError, parse_override
from deltaworld_core.deltatok import DeltaTok
from deltaworld_core.forecaster import build_models, load_weights
from deltaworld_core.world import DeltaWorld

TINY = {
    "weights": None,  # architecture differs from the shipped default weights
    "forecast.quantize": "none",
    "vfm.weights": "random", "vfm.backend": "torch", "vfm.embed_dim": 48, "vfm.depth": 1, "vfm.num_heads": 2,
    "tokenizer.dim": 32, "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1,
    "tokenizer.num_heads": 2, "tokenizer.mlp_hidden": 64, "tokenizer.layerscale_init": 0.1,
    "world.dim": 32, "world.depth": 1, "world.num_heads": 2, "world.layerscale_init": 0.1,
    "world.noise_std": 1.0, "heads.depth_bins": 16,
    "forecast.context": 3, "forecast.horizon": 2, "forecast.k": 4, "forecast.output_size": [20, 24],
}
DINOV2 = {**TINY, "vfm.family": "dinov2", "vfm.patch_size": 14, "vfm.image_size": [28, 42]}
DINOV3 = {**TINY, "vfm.family": "dinov3", "vfm.patch_size": 16, "vfm.num_registers": 4, "vfm.image_size": [32, 48]}


def frames(n: int, h: int = 30, w: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + n * 2, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 2 * i: 2 * i + w]) for i in range(n)]  # a panning camera


def run(fc: Forecaster, images, start: float = 0.0, dt: float = 0.1):
    return [fc.step(img, start + i * dt) for i, img in enumerate(images)]


@pytest.fixture(scope="module", params=[DINOV2, DINOV3], ids=["dinov2", "dinov3"])
def forecaster(request):
    torch.manual_seed(0)
    return Forecaster.from_config("default", overrides=request.param)


def test_forecast_shapes_for_both_vfm_families(forecaster):
    forecaster.reset()
    outs = run(forecaster, frames(5))
    assert outs[:2] == [None, None]  # context=3 tokens needed
    fc = outs[2]
    k, horizon, (h, w) = 4, 2, (20, 24)
    assert fc.semantic.shape == (k, horizon, h, w) and fc.semantic.dtype == np.uint8
    assert fc.depth.shape == (k, horizon, h, w) and fc.depth.dtype == np.float32
    n = forecaster.grid[0] * forecaster.grid[1]
    assert fc.features.shape == (k, horizon, n, 48)
    assert fc.class_names == forecaster.class_names
    np.testing.assert_allclose(fc.stamps, [0.2 + 0.2, 0.2 + 0.4])
    assert fc.summary.semantic_mode.shape == (horizon, h, w)
    for key in ("vfm", "encode", "predict", "decode", "heads", "total"):
        assert fc.timings[key] >= 0


def test_one_token_per_frame_and_reduction(forecaster):
    forecaster.reset()
    run(forecaster, frames(5))
    tokens = forecaster._tokens
    assert tokens.shape == (3, 32)  # rolling buffer: the last `context` tokens, one per frame
    patches = forecaster.grid[0] * forecaster.grid[1]
    reduction = patches / 1
    print(f"token reduction: {patches} patches -> 1 token per frame ({reduction:.0f}x)")
    assert reduction == patches


def test_k_distinct_futures_and_consistent_summary(forecaster):
    forecaster.reset()
    fc = run(forecaster, frames(4))[-1]
    feats = fc.features.reshape(4, -1)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(feats[i], feats[j]), "hypotheses must differ"
    counts = (fc.semantic == fc.summary.semantic_mode[None]).mean(0)
    np.testing.assert_allclose(counts, fc.summary.agreement, atol=1e-6)
    np.testing.assert_allclose(fc.depth.mean(0), fc.summary.depth_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.depth.std(0), fc.summary.depth_std, rtol=1e-4, atol=1e-4)


def test_seeded_sampling_is_reproducible(forecaster):
    forecaster.reset()
    a = run(forecaster, frames(5))
    forecaster.reset()
    b = run(forecaster, frames(5))
    for x, y in zip(a[2:], b[2:]):
        assert torch.equal(x.features, y.features)
        assert np.array_equal(x.semantic, y.semantic)


def test_streaming_matches_recompute_from_scratch(forecaster):
    """The cached K/V rolling buffer gives what a fresh forecaster fed only the last frames gives
    when their tokens are identical: check the world's cached keys against a recomputation."""
    forecaster.reset()
    run(forecaster, frames(6))
    times = torch.tensor([forecaster._times], dtype=torch.float64)
    fresh = forecaster.world.context_kv(forecaster._tokens[None], times)
    for (k1, v1), (k2, v2) in zip(forecaster._kv, fresh):
        torch.testing.assert_close(k1, k2)
        torch.testing.assert_close(v1, v2)


def release_layout_rollout(fc: Forecaster, images, stamps, seed: int, device: str = "cpu"):
    """From scratch, independently of the streaming buffer: the newest ``context`` frames, the
    oldest encoded against black at its own time, then true deltas; K/V built; one rollout."""
    from deltaworld_core.rollout import rollout, spread_reference

    c = fc.context
    with torch.no_grad():
        feats = fc.vfm(np.stack(images[-c:]))  # [c, N, C]
        prev = torch.cat((fc.vfm.black_features(1), feats[:-1]))
        tokens = fc.tokenizer.encode(prev, feats, fc.grid)
        times = torch.tensor([stamps[-c:]], dtype=torch.float64, device=device)
        steps = torch.arange(1, fc.horizon + 1, dtype=torch.float64, device=device)[None]
        reference = spread_reference(fc.cfg.forecast, feats[-2:-1] if c >= 2 else None, feats[-1:],
                                     stamps[-1] - stamps[-2] if c >= 2 else 0.0, fc.step_s)
        out = rollout(fc.tokenizer, fc.world, tokens[None], times, feats[-1:], times[:, -1:] + fc.step_s * steps,
                      fc.k, torch.Generator(device=device).manual_seed(seed), fc.grid,
                      spread=fc.cfg.forecast.spread, mean_scale=fc.cfg.forecast.mean_scale,
                      spread_reference=reference)[0]
    return tokens, out


@pytest.mark.parametrize("num_frames", [3, 4, 8])
def test_streaming_context_is_the_release_layout(forecaster, num_frames):
    """Every forecast, also long after the first frame, is made from the context the released
    predictor was trained on: whole-frame token of the oldest kept frame, then true deltas."""
    images, dt = frames(num_frames), 0.1
    stamps = [1.5 + i * dt for i in range(num_frames)]
    forecaster.reset()
    for image, stamp in zip(images[:-1], stamps[:-1]):
        forecaster.step(image, stamp)
    forecaster.generator.manual_seed(11)
    streamed = forecaster.step(images[-1], stamps[-1])
    tokens, expected = release_layout_rollout(forecaster, images, stamps, seed=11)
    assert forecaster._tokens.shape[0] == forecaster.context
    torch.testing.assert_close(forecaster._tokens, tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed.features, expected, atol=1e-4, rtol=1e-4)
    # The first token really is the whole frame: with the window full it differs from the delta
    # the same frame got when it arrived.
    if num_frames > forecaster.context:
        with torch.no_grad():
            f = forecaster.vfm(np.stack(images[-forecaster.context - 1:-forecaster.context + 1]))
            delta = forecaster.tokenizer.encode(f[:1], f[1:], forecaster.grid)
        assert not torch.allclose(forecaster._tokens[:1], delta, atol=1e-3)


def test_forecast_window_recomputes_what_streaming_caches(forecaster):
    """The batch path (VFM over every frame, every pair re-encoded) gives the streaming forecast,
    and streaming may go on from the buffer it leaves."""
    images, dt = frames(7), 0.1
    forecaster.reset()
    run(forecaster, images[:5])
    forecaster.generator.manual_seed(forecaster.cfg.forecast.seed)  # forecast_window re-seeds
    streamed = forecaster.step(images[5], 5 * dt)
    next_streamed = forecaster.step(images[6], 6 * dt)
    window = images[6 - forecaster.context:6]
    batch = forecaster.forecast_window(window, [(6 - len(window) + i) * dt for i in range(len(window))])
    torch.testing.assert_close(batch.features, streamed.features, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(batch.stamps, streamed.stamps)
    assert set(batch.timings) >= {"vfm", "encode", "predict", "decode", "heads", "total"}
    continued = forecaster.step(images[6], 6 * dt)
    torch.testing.assert_close(continued.features, next_streamed.features, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="context = 3"):
        forecaster.forecast_window(window[1:], [0.1, 0.2])
    with pytest.raises(ValueError, match="stamps must increase"):
        forecaster.forecast_window(window, [0.0, 0.1, 0.1])


def test_step_spacing_at_camera_rate_is_the_release_layout_at_step_s():
    """context_spacing: step. A 25 fps stream with step_s 0.2 gives, at every frame once the
    context is full, the tokens and futures of the release's layout fed frames 0.2 s apart
    (frames i-15, i-10, i-5, i), a forecast with every frame, and constant work per frame (one VFM
    frame, one encode call of at most two pairs)."""
    torch.manual_seed(0)
    fc = Forecaster.from_config("default", overrides={**DINOV2, "forecast.context": 4, "forecast.step_s": 0.2,
                                                      "forecast.context_spacing": "step"})
    images, stamps = frames(22), [1.0 + i / 25 for i in range(22)]
    pairs = []
    encode = fc.tokenizer.encode
    fc.tokenizer.encode = lambda prev, cur, grid: pairs.append(prev.shape[0]) or encode(prev, cur, grid)
    outs = [fc.step(img, t) for img, t in zip(images[:-1], stamps[:-1])]
    fc.generator.manual_seed(3)
    outs.append(fc.step(images[-1], stamps[-1]))
    fc.tokenizer.encode = encode
    assert max(pairs) <= 2 and len(pairs) == len(images)
    first = next(i for i, o in enumerate(outs) if o is not None)
    # Frame 4 (0.16 s) is within SPACING_TOLERANCE of step_s: the first context is 14, 9, 4, 0; then every frame
    assert first == 14 and all(o is not None for o in outs[first:])
    np.testing.assert_allclose(fc._times, [0.24 + 0.2 * j for j in range(4)], atol=1e-9)  # frames 6, 11, 16, 21
    picked = [6, 11, 16, 21]
    tokens, expected = release_layout_rollout(fc, [images[i] for i in picked], [stamps[i] for i in picked], seed=3)
    torch.testing.assert_close(fc._tokens, tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[-1].features, expected, atol=1e-4, rtol=1e-4)
    # A camera slower than step_s: each frame against the one before (nothing closer to step_s)
    fc.reset()
    slow = [1.0 + 0.3 * i for i in range(4)]
    run_out = [fc.step(img, t) for img, t in zip(images[:4], slow)]
    assert run_out[-1] is not None and fc._times == pytest.approx([0.0, 0.3, 0.6, 0.9])


def test_context_of_one_frame_is_its_whole_frame_token():
    torch.manual_seed(0)
    fc = Forecaster.from_config("default", overrides={**DINOV2, "forecast.context": 1})
    images = frames(3)
    outs = run(fc, images)
    assert all(o is not None for o in outs)
    seed = fc.cfg.forecast.seed
    tokens, expected = release_layout_rollout(fc, images, [0.0, 0.1, 0.2], seed=seed)
    torch.testing.assert_close(fc._tokens, tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fc.forecast_window(images[-1:], [0.2]).features, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "second_stamp, second_shape, reason",
    [(0.0, None, "does not increase"), (-1.0, None, "does not increase"),
     (5.0, None, "exceeds max_gap_s"), (0.1, (24, 40), "image size changed")],
)
def test_resets(forecaster, caplog, second_stamp, second_shape, reason):
    forecaster.reset()
    run(forecaster, frames(4))
    resets = forecaster.resets
    img = frames(1)[0] if second_shape is None else np.zeros((*second_shape, 3), np.uint8)
    with caplog.at_level(logging.WARNING):
        out = forecaster.step(img, 0.3 + second_stamp if second_stamp > 0 else second_stamp)
    assert out is None
    assert forecaster.resets == resets + 1
    assert reason in forecaster.last_reset_reason
    assert reason in caplog.text
    assert forecaster.buffered == 1  # the frame that caused the reset starts the new stream


@pytest.mark.parametrize(
    "image, stamp, message",
    [
        (np.zeros((10, 10, 3), np.float32), 0.0, "uint8"),
        (np.zeros((10, 10), np.uint8), 0.0, "HxWx3"),
        (np.zeros((10, 10, 4), np.uint8), 0.0, "HxWx3"),
        (np.zeros((0, 10, 3), np.uint8), 0.0, "HxWx3"),
        ([[0]], 0.0, "numpy"),
        (np.zeros((10, 10, 3), np.uint8), float("nan"), "finite"),
        (np.zeros((10, 10, 3), np.uint8), "soon", "number"),
    ],
)
def test_bad_input_raises_clear_value_error(forecaster, image, stamp, message):
    forecaster.reset()
    with pytest.raises(ValueError, match=message):
        forecaster.step(image, stamp)
    assert forecaster.buffered == 0


def test_world_is_causal_and_uses_time():
    torch.manual_seed(0)
    world = DeltaWorld(token_dim=8, dim=32, depth=2, num_heads=2, layerscale_init=1.0).eval()
    tokens = torch.randn(1, 5, 8)
    times = torch.arange(5, dtype=torch.float64)[None] * 0.1
    queries = world.sample_queries(1, 4, torch.Generator().manual_seed(0))
    base = world(tokens, times, queries)
    changed = tokens.clone()
    changed[:, 3] += 1.0
    out = world(changed, times, queries)
    assert torch.equal(base[:, :3], out[:, :3])  # targets 1..3 never see token 3
    assert not torch.allclose(base[:, 3], out[:, 3])
    assert not torch.allclose(world(tokens, times * 1.37, queries), base)  # real timestamps matter


def test_deltatok_starts_as_copy_last():
    torch.manual_seed(0)
    tok = DeltaTok(feature_dim=24, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_hidden=32)
    prev, cur = torch.randn(2, 6, 24), torch.randn(2, 6, 24)
    z, recon = tok(prev, cur, (2, 3))
    assert z.shape == (2, 16)
    torch.testing.assert_close(recon, prev, atol=1e-3, rtol=0)  # LayerScale 1e-5: residual ~ 0
    with pytest.raises(ValueError, match="grid"):
        tok.encode(prev, cur, (3, 3))


def test_deltatok_encoder_stride_keeps_one_token_and_differs_from_full_grid():
    torch.manual_seed(0)
    full = DeltaTok(feature_dim=24, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_hidden=32,
                    layerscale_init=0.5)
    pooled = DeltaTok(feature_dim=24, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2, mlp_hidden=32,
                      layerscale_init=0.5, encoder_stride=2)
    pooled.load_state_dict(full.state_dict())  # same parameters: the stride is not a weight
    prev, cur = torch.randn(3, 24, 24), torch.randn(3, 24, 24)
    z_full, z_pooled = full.encode(prev, cur, (4, 6)), pooled.encode(prev, cur, (4, 6))
    assert z_full.shape == z_pooled.shape == (3, 16)
    assert not torch.allclose(z_full, z_pooled)
    # Pooling first is the same as encoding the 2x2-averaged grids at full stride.
    avg = lambda f: torch.nn.functional.avg_pool2d(f.transpose(1, 2).unflatten(2, (4, 6)), 2).flatten(2).transpose(1, 2)  # noqa: E731
    torch.testing.assert_close(z_pooled, full.encode(avg(prev), avg(cur), (2, 3)))


def test_heads_fold_batchnorm_at_inference_exactly():
    from deltaworld_core.heads import TaskHeads

    torch.manual_seed(0)
    heads = TaskHeads(24, ["a", "b", "c"], depth_bins=8)
    for bn in (heads.segmentation.bn, heads.depth.bn):  # non-trivial statistics and affine terms
        bn.running_mean.normal_(); bn.running_var.uniform_(0.5, 2.0); bn.weight.data.normal_(); bn.bias.data.normal_()
    feats = torch.randn(5, 4 * 6, 24)
    heads.eval()
    ids, depth = heads(feats, (4, 6), (8, 12))
    logits = torch.nn.functional.interpolate(heads.segmentation(feats, (4, 6)), size=(8, 12), mode="bilinear",
                                             align_corners=False)
    ref_depth = torch.nn.functional.interpolate(heads.depth(feats, (4, 6))[:, None], size=(8, 12), mode="bilinear",
                                                align_corners=False)[:, 0]
    assert torch.equal(ids, logits.argmax(1).to(torch.uint8))
    torch.testing.assert_close(depth, ref_depth, rtol=1e-5, atol=1e-4)


def test_heads_logits_are_affine_in_the_features():
    from deltaworld_core.heads import TaskHeads

    torch.manual_seed(0)
    heads = TaskHeads(24, ["a", "b", "c"], depth_bins=8).eval()
    heads.segmentation.bn.running_mean.normal_()
    heads.depth.bn.bias.data.normal_()
    feats, residual = torch.randn(5, 24, 24), torch.randn(5, 24, 24)
    torch.testing.assert_close(heads.logits(feats + residual), heads.logits(feats) + heads.logits_change(residual),
                               rtol=1e-5, atol=1e-5)
    assert heads.logits(feats).shape == (5, 24, heads.num_outputs) == (5, 24, 3 + 8)
    with pytest.raises(ValueError, match="do not match grid"):
        heads.maps(heads.logits(feats), (4, 5), (8, 10))


@pytest.mark.parametrize("grid,stride", [((4, 6), 2), ((5, 7), 2), ((4, 6), 1)])
def test_deltatok_residual_carry_replaces_pooling_full_features(grid, stride):
    torch.manual_seed(0)
    tok = DeltaTok(24, 16, 1, 1, 2, 32, layerscale_init=0.5, decoder_stride=stride).eval()
    n = grid[0] * grid[1]
    prev, z = torch.randn(3, n, 24), torch.randn(3, 16)
    residual = tok.decode_residual(z, tok.pool_for_decode(prev, grid), grid)
    coarse = tok.decode_grid(grid)
    assert residual.shape == (3, coarse[0] * coarse[1], 24)
    decoded = tok.decode(z, prev, grid)
    torch.testing.assert_close(decoded, prev + tok.upsample_residual(residual, grid))
    carry = tok.residual_carry(grid)
    torch.testing.assert_close(tok.pool_for_decode(decoded, grid),
                               tok.pool_for_decode(prev, grid) + carry @ residual, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="decode grid"):
        tok.decode_residual(z, prev, grid) if stride > 1 else tok.decode_residual(z, prev[:, 1:], grid)


def test_rollout_equals_decoding_step_by_step_at_full_resolution(forecaster):
    """The residual-form rollout (pooled view carried, features built at the end) is the plain
    autoregressive decode: each step decoded against the previous full-resolution features."""
    from deltaworld_core.rollout import rollout, sample_noise

    fc = forecaster
    fc.reset()
    run(fc, frames(4))
    times = torch.tensor([fc._times], dtype=torch.float64)
    targets = times[:, -1:] + torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    out = rollout(fc.tokenizer, fc.world, fc._tokens[None], times, fc._features, targets, fc.k,
                  torch.Generator().manual_seed(3), fc.grid)[0]  # [K, H, N, C]
    g = torch.Generator().manual_seed(3)
    kv = [(k.expand(fc.k, -1, -1, -1), v.expand(fc.k, -1, -1, -1)) for k, v in fc.world.context_kv(fc._tokens[None], times)]
    prev = fc._features.expand(fc.k, -1, -1)
    for h in range(2):
        t = targets[:, h:h + 1].expand(fc.k, 1)
        token = fc.world.predict(sample_noise(fc.world, 1, fc.k, g, prev.device, prev.dtype), t, kv)[:, 0]
        kv = [(torch.cat((k, nk), 2), torch.cat((v, nv), 2)) for (k, v), (nk, nv) in zip(kv, fc.world.context_kv(token[:, None], t))]
        prev = fc.tokenizer.decode(token, prev, fc.grid)
        torch.testing.assert_close(out[:, h], prev, rtol=1e-4, atol=1e-4)


def test_best_of_k_uses_the_release_smooth_l1_beta():
    """Beta 0.1 and beta 1 rank these two samples differently; the release's 0.1 decides."""
    from deltaworld_core.rollout import best_of_k

    truth = torch.zeros(1, 4, 2)
    spread = torch.full((4, 2), 0.5)  # beta 0.1: 0.45 per element; beta 1: 0.125
    peaked = torch.zeros(4, 2)
    peaked[:2] = 0.9  # beta 0.1: 0.425 on average; beta 1: 0.2025
    samples = torch.stack((spread, peaked))[None]  # [1, 2, 4, 2]
    score, pick = best_of_k(samples, truth)
    assert pick.tolist() == [1]
    torch.testing.assert_close(score, torch.tensor([[0.45, 0.425]]))
    assert best_of_k(samples, truth, beta=1.0)[1].tolist() == [0]


def test_closed_loop_codec_encodes_truth_against_its_own_reconstruction(forecaster):
    from deltaworld_core.rollout import reconstruct, reconstruct_closed_loop

    fc = forecaster
    torch.manual_seed(1)
    n = fc.grid[0] * fc.grid[1]
    last, truth = torch.randn(2, n, 48), torch.randn(2, 3, n, 48)
    closed = reconstruct_closed_loop(fc.tokenizer, truth, last, fc.grid)
    prev = last
    for h in range(3):
        prev = fc.tokenizer.decode(fc.tokenizer.encode(prev, truth[:, h], fc.grid), prev, fc.grid)
        torch.testing.assert_close(closed[:, h], prev)
    pairs = torch.cat((last[:, None], truth[:, :-1]), 1).flatten(0, 1)
    tokens = fc.tokenizer.encode(pairs, truth.flatten(0, 1), fc.grid).unflatten(0, (2, 3))
    open_loop = reconstruct(fc.tokenizer, tokens, last, fc.grid)
    torch.testing.assert_close(closed[:, 0], open_loop[:, 0], atol=1e-5, rtol=1e-5)
    change = lambda x: (x[:, 2] - last).norm()  # noqa: E731 - the random decoder's residuals are small
    assert (closed[:, 2] - open_loop[:, 2]).norm() > 1e-3 * change(open_loop)


def test_forecast_maps_are_the_heads_on_the_forecast_features(forecaster):
    """The forecaster reads the heads off decoder residuals; that must be the heads applied to
    the predicted features themselves."""
    forecaster.reset()
    fc = run(forecaster, frames(4))[-1]
    ids, depth = forecaster.heads(fc.features.flatten(0, 1), forecaster.grid, forecaster.output_size)
    agree = (ids.unflatten(0, fc.semantic.shape[:2]).numpy() == fc.semantic).mean()
    assert agree > 0.999  # float rounding may only flip exact near-ties
    np.testing.assert_allclose(depth.unflatten(0, fc.depth.shape[:2]).numpy(), fc.depth, rtol=1e-4, atol=1e-3)
    assert fc.residuals.shape[:2] == (4, 2)


def test_weights_round_trip_and_checkpoint_errors(tmp_path):
    cfg = load_config("default", DINOV2)
    tokenizer, world, heads = build_models(cfg)
    for name, module in (("tokenizer", tokenizer), ("world", world), ("heads", heads)):
        save_state(module.state_dict(), tmp_path / f"{name}.safetensors")
    t2, w2, h2 = build_models(cfg)
    load_weights(tmp_path, tokenizer=t2, world=w2, heads=h2)
    for a, b in ((tokenizer, t2), (world, w2), (heads, h2)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)

    state = tokenizer.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("norm.")}
    partial["extra.weight"] = torch.zeros(1)
    save_state(partial, tmp_path / "bad.safetensors")
    from deltaworld_core.checkpoint import load_module
    with pytest.raises(CheckpointError, match=r"missing keys: norm\.bias.*unexpected keys: extra\.weight"):
        load_module(t2, tmp_path / "bad.safetensors")

    other = build_models(load_config("default", {**DINOV2, "tokenizer.dim": 16, "tokenizer.num_heads": 1}))[0]
    save_state(other.state_dict(), tmp_path / "mismatch.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_module(t2, tmp_path / "mismatch.safetensors")

    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_module(t2, tmp_path / "corrupt.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_module(t2, tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"forecast.k": 0}, r"forecast.k must be in \[1, 256\], got 0"),
        ({"forecast.k": "eight"}, "expected an integer"),
        ({"vfm.family": "dinov9"}, "vfm.family"),
        ({"vfm.image_size": [225, 224]}, "multiples of the patch"),
        ({"world.bogus": 1}, "unknown config key"),
        ({"heads.min_depth": 100.0}, "min_depth"),
    ],
)
def test_bad_config_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("default", overrides)


def test_override_parsing_and_unknown_config():
    assert parse_override("forecast.k=16") == ("forecast.k", 16)
    assert parse_override("vfm.image_size=[112, 112]") == ("vfm.image_size", [112, 112])
    with pytest.raises(ConfigError, match="named configs"):
        load_config("no-such-config")


def test_paper_config_is_expressible():
    cfg = load_config("paper")
    tokenizer, world, _ = build_models(cfg)
    n_tok = sum(p.numel() for p in tokenizer.parameters())
    n_world = sum(p.numel() for p in world.parameters())
    # Paper: ~7.1M per DeltaTok block, ~170M for encoder + decoder; ~86M for the predictor.
    assert 160e6 < n_tok < 180e6, n_tok
    assert 80e6 < n_world < 95e6, n_world
    assert cfg.vfm.image_size == (512, 512) and cfg.forecast.k == 20


def test_heads_file_class_names_override_config(tmp_path):
    cfg = load_config("default", DINOV2)
    names = ["free", "obstacle", "person"]
    tokenizer, world, _ = build_models(cfg)
    heads = build_models(load_config("default", {**DINOV2, "heads.class_names": names}))[2]
    save_state(tokenizer.state_dict(), tmp_path / "tokenizer.safetensors")
    save_state(world.state_dict(), tmp_path / "world.safetensors")
    save_state(heads.state_dict(), tmp_path / "heads.safetensors", metadata={"class_names": json.dumps(names)})
    fc = Forecaster.from_config("default", overrides=DINOV2, weights=tmp_path)
    assert fc.class_names == names
    out = [fc.step(img, i * 0.1) for i, img in enumerate(frames(3))][-1]
    assert out.class_names == names and out.semantic.max() < len(names)


def test_int8_quantization_stays_close_to_fp32():
    torch.manual_seed(0)
    ref = Forecaster.from_config("default", overrides=DINOV2)
    q = Forecaster.from_config("default", overrides={**DINOV2, "forecast.quantize": "int8"})
    a, b = run(ref, frames(4))[-1], run(q, frames(4))[-1]
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert any(isinstance(m, DynamicInt8Linear) for m in q.tokenizer.modules())
    err = (a.features - b.features).norm() / a.features.norm()
    assert err < 0.05, err
    with pytest.raises(ValueError, match="CPU in float32"):
        Forecaster.from_config("default", overrides={**DINOV2, "forecast.quantize": "int8"}, dtype=torch.float64)


def test_forecast_grid_picture(forecaster):
    from deltaworld_core.viz import forecast_grid

    forecaster.reset()
    images = frames(3, h=30, w=60)
    fc = run(forecaster, images)[-1]
    grid = forecast_grid(images[-1], fc)
    h = fc.semantic.shape[2]
    assert grid.dtype == np.uint8
    # a legend band, then the mode row and 4 sample rows of 2 tiles per step at the camera's 2:1
    assert grid.shape[0] > (1 + 4) * h and grid.shape[1] >= 2 * 2 * 2 * h and grid.shape[2] == 3


def test_bf16_tokenizer_stays_close_to_fp32_and_keeps_float32_interfaces():
    torch.manual_seed(0)
    ref = Forecaster.from_config("default", overrides=DINOV2)
    half = Forecaster.from_config("default", overrides={**DINOV2, "forecast.quantize": "bf16"})
    assert half.tokenizer.dtype == torch.bfloat16 and half.world.norm.weight.dtype == torch.float32
    a, b = run(ref, frames(4))[-1], run(half, frames(4))[-1]
    assert b.features.dtype == torch.float32 and half._tokens.dtype == torch.float32
    err = (a.features - b.features).norm() / a.features.norm()
    assert err < 0.02, err


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "avx2_only"])
def test_quantize_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    """forecast.quantize: auto (the shipped default's) is bf16 on a CPU with AVX512-BF16/AMX and
    float32 elsewhere: an AVX2-only CPU emulates bfloat16 (results/bench_cpu_avx2_quantize_bf16.json).
    The bench reports what it resolved to beside the setting."""
    from deltaworld_core import bench, forecaster

    monkeypatch.setattr(forecaster, "cpu_has_native_bf16", lambda: native)
    assert forecaster.resolve_quantize("auto", "cpu") == ("bf16" if native else "none")
    assert [forecaster.resolve_quantize(q, "cpu") for q in ("none", "int8", "bf16")] == ["none", "int8", "bf16"]
    assert forecaster.resolve_quantize("auto", "meta") == "none"
    assert load_config("default").forecast.quantize == "auto"
    fc = Forecaster.from_config("default", overrides={**DINOV2, "forecast.quantize": "auto"})
    assert fc.tokenizer.dtype == (torch.bfloat16 if native else torch.float32)
    r = bench.run("default", overrides={**DINOV2, "forecast.quantize": "auto"}, steps=1)
    assert r["config"]["quantize"] == ("bf16" if native else "none") and r["config"]["quantize_setting"] == "auto"


def test_publish_k_and_summary_size_cut_the_published_maps_only():
    """publish_k: all K decoded and summarised, the first publish_k published; summary_size: the
    summaries over all K at a smaller size, resized to the published one."""
    base = {**DINOV3, "forecast.k": 6}
    full = Forecaster.from_config("default", overrides=base)
    cut = Forecaster.from_config("default", overrides={**base, "forecast.publish_k": 2})
    small = Forecaster.from_config("default", overrides={**base, "forecast.publish_k": 2,
                                                         "forecast.summary_size": [10, 12]})
    images = frames(4, h=32, w=48)
    a, b, c = (run(fc, images)[-1] for fc in (full, cut, small))
    assert a.k == 6 and b.k == c.k == 2 and b.semantic.shape == (2, 2, 20, 24)
    np.testing.assert_array_equal(b.semantic, a.semantic[:2])
    np.testing.assert_array_equal(b.depth, a.depth[:2])
    for name in ("semantic_mode", "agreement", "depth_mean", "depth_std"):
        np.testing.assert_array_equal(getattr(b.summary, name), getattr(a.summary, name))  # over all K
        assert getattr(c.summary, name).shape == (2, 20, 24)
    assert torch.equal(b.residuals, a.residuals) and b.features.shape[0] == 6  # all K decoded
    assert (c.summary.semantic_mode == a.summary.semantic_mode).mean() > 0.7
    np.testing.assert_allclose(c.summary.depth_mean, a.summary.depth_mean, rtol=0.1)
    assert c.summary.semantic_mode.dtype == np.uint8 and c.summary.depth_std.dtype == np.float32


def test_fused_attention_matches_the_explicit_softmax():
    """Every transformer here runs torch's fused scaled_dot_product_attention (flash / memory-
    efficient kernels on a GPU): it computes the explicit softmax(q k^T / sqrt(d)) v, with the
    boolean mask, RoPE, QK-norm and the sigmoid gate around it."""
    from deltaworld_core.layers import Attention, apply_rope, rope_2d

    torch.manual_seed(0)
    attn = Attention(32, 4, qk_norm=True, gated=True).eval()
    x, ctx = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    rope = rope_2d((2, 2), 8, 100.0)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True  # every query sees something

    def explicit(x, kv, mask, rope):
        q = attn._heads(attn.q_proj(x))
        if rope is not None:
            q = apply_rope(q, *rope)
        q = attn.q_norm(q)
        scores = q @ kv[0].transpose(-1, -2) / math.sqrt(attn.head_dim)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ kv[1]
        out = out * attn.attn_gate(x).transpose(-1, -2).unsqueeze(-1).sigmoid()
        return attn.o_proj(out.transpose(-3, -2).flatten(-2))

    with torch.no_grad():
        kv = attn.project_kv(ctx)
        torch.testing.assert_close(attn(x, kv=kv, mask=mask), explicit(x, kv, mask, None), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(attn(x, rope=rope), explicit(x, attn.project_kv(x, rope), None, rope),
            atol=1e-6, rtol=1e-5)
    assert set(attn.state_dict()) == {f"{p}.{w}" for p in ("q_proj", "v_proj", "o_proj", "attn_gate", "q_norm", "k_norm")
                                      for w in ("weight", "bias")} | {"k_proj.weight"}
