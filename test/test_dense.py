"""Dense baseline: shapes, copy-last start, rollout contract, time handling, save/load, overfit."""

from __future__ import annotations

import pytest
import torch

from deltaworld_core.checkpoint import CheckpointError
from deltaworld_core.config import ConfigError
from deltaworld_core.dense import DenseConfig, DenseForesight, load_dense, save_dense

GRID = (4, 4)
CFG = DenseConfig(dim=32, depth=2, num_heads=2, context=3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared 2-core machine: threads only add overhead
    yield
    torch.set_num_threads(threads)


def _model(seed: int = 0) -> DenseForesight:
    torch.manual_seed(seed)
    return DenseForesight(24, CFG)


def test_forward_and_rollout_shapes():
    m = _model().eval()
    feats = torch.randn(2, 5, 16, 24)
    times = torch.arange(5, dtype=torch.float64).expand(2, 5) * 0.2
    assert m(feats, times, torch.full((2,), 1.0, dtype=torch.float64), GRID).shape == (2, 16, 24)
    out = m.rollout(feats, steps=3, grid=GRID)
    assert out.shape == (2, 3, 16, 24)
    assert m.rollout(feats, steps=2).shape == (2, 2, 16, 24)  # square grid inferred
    assert m.rollout(feats[:, :1], steps=1).shape == (2, 1, 16, 24)  # fewer frames than context
    with pytest.raises(ValueError, match="grid"):
        m(feats, times, times[:, -1], (3, 4))


def test_starts_as_copy_last():
    feats = torch.randn(1, 3, 16, 24)
    out = _model().rollout(feats, steps=2, grid=GRID)
    assert torch.equal(out[:, 0], feats[:, -1]) and torch.equal(out[:, 1], feats[:, -1])


def test_rollout_uses_last_context_frames_and_relative_time():
    m = _model()
    torch.nn.init.normal_(m.head.weight, std=0.1)  # leave copy-last
    feats = torch.randn(2, 6, 16, 24)
    a = m.rollout(feats, steps=2, grid=GRID)
    b = m.rollout(feats[:, -CFG.context:], steps=2, grid=GRID)
    torch.testing.assert_close(a, b)
    # Only time differences matter: shifting every timestamp changes nothing.
    times = torch.arange(6, dtype=torch.float64).expand(2, 6) * 0.2
    c = m.rollout(feats, steps=2, grid=GRID, context_times=times + 1000.0)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    # A different step is a different prediction (the model reads real seconds).
    assert not torch.allclose(a, m.rollout(feats, steps=2, grid=GRID, step_s=0.05))
    # Deterministic: same input, same output.
    assert torch.equal(a, m.rollout(feats, steps=2, grid=GRID))


def test_overfits_a_tiny_sequence():
    torch.manual_seed(0)
    m = _model()
    feats = torch.randn(2, 3, 16, 24)
    times = torch.tensor([[0.0, 0.2, 0.4]] * 2, dtype=torch.float64)
    target = torch.randn(2, 16, 24)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(m(feats, times, torch.full((2,), 0.6, dtype=torch.float64), GRID), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * first


def test_save_load_round_trip(tmp_path):
    m = _model()
    torch.nn.init.normal_(m.head.weight, std=0.1)
    path = save_dense(m, tmp_path / "dense.safetensors")
    n = load_dense(tmp_path)  # a folder works too
    assert n.cfg == CFG and n.feature_dim == 24
    feats = torch.randn(1, 3, 16, 24)
    assert torch.equal(m.rollout(feats, 2, GRID), n.rollout(feats, 2, GRID))
    half = load_dense(save_dense(m, tmp_path / "half.safetensors", dtype=torch.float16))
    torch.testing.assert_close(half.rollout(feats, 1, GRID), m.rollout(feats, 1, GRID), atol=5e-2, rtol=1e-2)
    with pytest.raises(CheckpointError):
        load_dense(path, cfg=DenseConfig(dim=64, depth=2, num_heads=2, context=3), feature_dim=24)


def test_bad_config():
    with pytest.raises(ConfigError, match="dense.dim"):
        DenseConfig(dim=30, num_heads=4).validate()
    with pytest.raises(ConfigError, match="dense.context"):
        DenseConfig(context=0).validate()
