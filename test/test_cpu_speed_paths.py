"""The CPU fast paths of a forecast's maps (issue 19, CPU target) give the numbers of the plain
kernels they replace: bilinear upsampling as two matmuls, the argmax over classes as a plane-wise
reduction, and the forecaster's one-view maps against geometry's general path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltaworld_core import geometry
from deltaworld_core.forecaster import upsample_views
from deltaworld_core.heads import (argmax_classes, interpolation_matrix, upsample_bilinear, upsample_maps)


def _reference_maps(seg: torch.Tensor, depth: torch.Tensor, size):
    """The kernels used before: F.interpolate (channels-last) and argmax over the class dim."""
    up = F.interpolate(seg.float().contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                       align_corners=False)
    dep = F.interpolate(depth[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return up, up.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.uint8), dep


def _ids_agree(ids: torch.Tensor, ref_ids: torch.Tensor, up: torch.Tensor, tol: float = 1e-5) -> None:
    """Class ids equal except where the reference's top two logits lie within ``tol`` (a near-tie
    that float rounding may decide either way)."""
    top2 = up.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) < tol
    differ = ids != ref_ids
    assert not (differ & ~near_tie).any(), f"{int((differ & ~near_tie).sum())} pixels differ off a near-tie"
    assert differ.float().mean() < 1e-3


@pytest.mark.parametrize("grid,size", [((16, 16), (112, 112)), ((8, 8), (224, 224)), ((16, 12), (37, 100)),
                                       ((16, 16), (16, 16)), ((5, 7), (5, 30)),
                                       ((16, 16), (5, 9)), ((16, 16), (480, 640))])
def test_upsample_bilinear_matches_interpolate(grid, size):
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 4, *grid, generator=g)
    ref = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    out = upsample_bilinear(maps, size)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # any memory layout in, the same numbers out
    torch.testing.assert_close(upsample_bilinear(maps.contiguous(memory_format=torch.channels_last), size), ref,
                               atol=1e-5, rtol=1e-5)


def test_interpolation_matrix_rows_are_convex():
    a = interpolation_matrix(16, 112)
    assert a.shape == (112, 16)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(1), torch.ones(112))


def test_argmax_classes_is_argmax_with_first_index_on_ties():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 9, 20, 24, generator=g)
    logits[:, 3] = logits[:, 7]  # exact ties: both are the max wherever 3 is
    logits[0, :, :5] = 1.5  # all classes tied: class 0
    ids = argmax_classes(logits)
    assert ids.dtype == torch.uint8
    torch.testing.assert_close(ids, logits.argmax(dim=1).to(torch.uint8), rtol=0, atol=0)
    assert (ids[0, :5] == 0).all()
    assert not (ids == 7).any()  # 7 only ever ties with 3, which comes first
    # a strided slice of a larger tensor (as upsample_maps passes it), and one class
    wide = torch.randn(2, 6, 9, 9, generator=g)
    torch.testing.assert_close(argmax_classes(wide[:, :5]), wide[:, :5].argmax(1).to(torch.uint8), rtol=0, atol=0)
    assert (argmax_classes(wide[:, :1]) == 0).all()


def test_argmax_classes_many_classes():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 255, 4, 4, generator=g)
    torch.testing.assert_close(argmax_classes(logits), logits.argmax(1).to(torch.uint8), rtol=0, atol=0)
    with pytest.raises(ValueError):
        argmax_classes(torch.randn(1, 256, 2, 2))


def test_upsample_maps_matches_the_kernels_it_replaces():
    g = torch.Generator().manual_seed(4)
    # channels-last class logits, as TaskHeads.grid_maps returns them
    seg = torch.randn(24, 16, 16, 9, generator=g).permute(0, 3, 1, 2) * 3
    depth = torch.rand(24, 16, 16, generator=g) * 80
    up, ref_ids, ref_depth = _reference_maps(seg, depth, (112, 112))
    ids, dep = upsample_maps(seg, depth, (112, 112))
    assert ids.dtype == torch.uint8 and ids.shape == (24, 112, 112)
    assert dep.dtype == torch.float32 and dep.shape == (24, 112, 112) and dep.is_contiguous()
    torch.testing.assert_close(dep, ref_depth, atol=4e-4, rtol=1e-5)  # 5e-6 of the 80 m range: weight rounding
    _ids_agree(ids, ref_ids, up)


@pytest.mark.parametrize("geom,frame", [("squash", (224, 224)), ("squash", (480, 640)), ("center_crop", (480, 640)),
                                        ("two_squares", (480, 1280)), ("two_squares", (480, 700))])
def test_forecaster_upsample_views_matches_geometry(geom, frame):
    lay = geometry.layout(geom, frame, (224, 224), (112, 112))
    g = torch.Generator().manual_seed(5)
    seg = torch.randn(lay.num_views, 6, 16, 16, 9, generator=g).permute(0, 1, 4, 2, 3)
    depth = torch.rand(lay.num_views, 6, 16, 16, generator=g) * 50
    ids, dep = upsample_views(seg, depth, lay)
    ref_ids, ref_dep = geometry.upsample_views(seg, depth, lay)
    assert ids.shape == ref_ids.shape and ids.dtype == ref_ids.dtype
    torch.testing.assert_close(dep, ref_dep, atol=4e-4, rtol=1e-5)
    canvas = geometry.blend(F.interpolate(seg.flatten(0, 1).float(), size=lay.view_size, mode="bilinear",
                                          align_corners=False).unflatten(0, seg.shape[:2]), lay)
    _ids_agree(ids, ref_ids, canvas)


def test_future_maps_equal_the_heads_on_full_features():
    """The forecast's maps (heads on the decoder's residuals at the small grid, summed along the
    horizon there, upsampled) are the heads' maps of the full predicted features."""
    from deltaworld_core.config import load_config
    from deltaworld_core.forecaster import build_models, future_maps
    from deltaworld_core.rollout import features_from_residuals

    cfg = load_config("default")
    torch.manual_seed(0)
    tokenizer, _, heads = build_models(cfg)
    heads.eval()
    g = torch.Generator().manual_seed(6)
    for bn in (heads.segmentation.bn, heads.depth.bn):  # non-trivial running statistics
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    grid, size, k, horizon = (16, 16), (112, 112), 4, 3
    last = torch.randn(1, 256, cfg.vfm.embed_dim, generator=g)
    n = tokenizer.decode_grid(grid)
    residuals = torch.randn(k, horizon, n[0] * n[1], cfg.vfm.embed_dim, generator=g) * 0.5
    with torch.inference_mode():
        ids, depth = future_maps(heads, tokenizer, last, residuals, grid, size)
        features = features_from_residuals(tokenizer, last, residuals[None], grid)[0]  # [K, H, N, C]
        logits = heads.logits(features.flatten(0, 1))
        ref_ids, ref_depth = heads.maps(logits, grid, size)
        seg, _ = heads.grid_maps(logits, grid)
        up = F.interpolate(seg.float(), size=size, mode="bilinear", align_corners=False)
    assert ids.shape == (k, horizon, *size) and depth.shape == (k, horizon, *size)
    torch.testing.assert_close(depth.flatten(0, 1), ref_depth, atol=1e-3, rtol=1e-4)
    _ids_agree(ids.flatten(0, 1), ref_ids, up, tol=1e-3)


def test_frozen_linear_basis_is_read_transposed_and_follows_changes():
    """The frozen codec's linear path uses a transposed copy of its basis (faster products on a
    CPU): the same token and residual as the parameter's own layout, and a changed basis is seen."""
    from deltaworld_core.deltatok import DeltaTok

    torch.manual_seed(0)
    tok = DeltaTok(24, 16, 1, 1, 2, 32, decoder_stride=2, encoder_stride=2, linear_path=True, linear_grid=(2, 2)).eval()
    prev, cur, grid = torch.randn(3, 16, 24), torch.randn(3, 16, 24), (4, 4)
    with torch.no_grad():
        trained_z = tok.encode(prev, cur, grid)  # basis still trainable: the parameter's layout
        trained_r = tok.linear_residual(trained_z)
        tok.requires_grad_(False)
        torch.testing.assert_close(tok.encode(prev, cur, grid), trained_z)
        torch.testing.assert_close(tok.linear_residual(trained_z), trained_r)
        tok.linear_basis.mul_(2.0)  # e.g. weights loaded into the module
        torch.testing.assert_close(tok.linear_residual(trained_z) - tok.linear_mean.view(1, -1, 24),
                                   2 * (trained_r - tok.linear_mean.view(1, -1, 24)))
