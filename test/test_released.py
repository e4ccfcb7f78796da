"""Loading the authors' released checkpoints: state dicts with exactly the release's names and the
paper's per-block shapes (DINOv3 ViT-B/16 width 768, 12 heads, SwiGLU 2048, MLP 3072), at reduced
depth to stay small, saved as ``pytorch_model.bin`` and loaded strictly into our modules."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from deltaworld_core import load_config
from deltaworld_core.checkpoint import CheckpointError
from deltaworld_core.deltatok import DeltaTok
from deltaworld_core.forecaster import build_models, load_weights
from deltaworld_core.heads import TaskHeads
from deltaworld_core.released import (
    CITYSCAPES_CLASSES,
    check_released_file,
    load_released_deltatok,
    load_released_deltaworld,
    load_released_head,
    main,
    released_key_shapes,
)
from deltaworld_core.world import DeltaWorld

D, H, SWIGLU, MLP = 768, 12, 2048, 3072

# Per block, as the release names them (HF DINOv3ViTLayer + models/qk_norm.py + models/gated_attn.py).
DELTATOK_BLOCK = {
    "norm1.weight": (D,), "norm1.bias": (D,),
    "attention.q_proj.weight": (D, D), "attention.q_proj.bias": (D,),
    "attention.k_proj.weight": (D, D),
    "attention.v_proj.weight": (D, D), "attention.v_proj.bias": (D,),
    "attention.o_proj.weight": (D, D), "attention.o_proj.bias": (D,),
    "attention.q_norm.weight": (D // H,), "attention.k_norm.weight": (D // H,),
    "attention.attn_gate.weight": (H, D), "attention.attn_gate.bias": (H,),
    "layer_scale1.lambda1": (D,),
    "norm2.weight": (D,), "norm2.bias": (D,),
    "mlp.gate_proj.weight": (SWIGLU, D), "mlp.gate_proj.bias": (SWIGLU,),
    "mlp.up_proj.weight": (SWIGLU, D), "mlp.up_proj.bias": (SWIGLU,),
    "mlp.down_proj.weight": (D, SWIGLU), "mlp.down_proj.bias": (D,),
    "layer_scale2.lambda1": (D,),
}
DELTATOK_TOP = {"z_embed.weight": (1, D), "xy_embed.weight": (2, D), "norm.weight": (D,), "norm.bias": (D,)}
# models/predictor.py: Predictor._Block with _CrossAttn (fused kv_proj) and DINOv3ViTMLP.
PREDICTOR_BLOCK = {
    "norm1.weight": (D,), "norm1.bias": (D,),
    "attention.q_proj.weight": (D, D), "attention.q_proj.bias": (D,),
    "attention.kv_proj.weight": (2 * D, D), "attention.kv_proj.bias": (2 * D,),
    "attention.out_proj.weight": (D, D), "attention.out_proj.bias": (D,),
    "layer_scale1.lambda1": (D,),
    "norm2.weight": (D,), "norm2.bias": (D,),
    "mlp.up_proj.weight": (MLP, D), "mlp.up_proj.bias": (MLP,),
    "mlp.down_proj.weight": (D, MLP), "mlp.down_proj.bias": (D,),
    "layer_scale2.lambda1": (D,),
}
PREDICTOR_TOP = {"predictor.norm.weight": (D,), "predictor.norm.bias": (D,),
                 "predictor.head.weight": (D, D), "predictor.head.bias": (D,)}


def head_shapes(out: int) -> dict:
    return {"bn.weight": (D,), "bn.bias": (D,), "bn.running_mean": (D,), "bn.running_var": (D,),
            "bn.num_batches_tracked": (), "head.weight": (out, D, 1, 1), "head.bias": (out,)}


def deltatok_shapes(enc: int, dec: int) -> dict:
    shapes = dict(DELTATOK_TOP)
    for stack, depth in (("encoder_blocks", enc), ("decoder_blocks", dec)):
        for i in range(depth):
            shapes.update({f"{stack}.{i}.{k}": s for k, s in DELTATOK_BLOCK.items()})
    return shapes


def predictor_shapes(depth: int) -> dict:
    shapes = dict(PREDICTOR_TOP)
    for i in range(depth):
        shapes.update({f"predictor.blocks.{i}.{k}": s for k, s in PREDICTOR_BLOCK.items()})
    return shapes


def random_state(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
            for k, s in shapes.items()}


def paper_cfg(enc: int = 2, dec: int = 2, world: int = 2, **extra):
    return load_config("paper", {"tokenizer.encoder_depth": enc, "tokenizer.decoder_depth": dec,
                                 "world.depth": world, **extra})


@pytest.fixture(scope="module")
def cfg():
    return paper_cfg()


# ------------------------------------------------------------------------------------------------
# Names and shapes


def test_released_key_shapes_match_the_release_layout(cfg):
    assert released_key_shapes(cfg, "deltatok") == deltatok_shapes(2, 2)
    assert released_key_shapes(cfg, "deltaworld") == predictor_shapes(2)
    assert released_key_shapes(cfg, "seg_head", num_classes=19) == head_shapes(19)
    assert released_key_shapes(cfg, "depth_head") == head_shapes(256)
    det = paper_cfg(**{"world.deterministic": True})
    assert released_key_shapes(det, "deltaworld")["q_embed.weight"] == (1, D)


def test_full_paper_sizes_agree_with_the_paper():
    full = load_config("paper")

    def count(shapes):
        return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith("num_batches_tracked"))

    per_block = count(DELTATOK_BLOCK)
    assert 7.0e6 < per_block < 7.2e6  # "about 7.1M parameters per block"
    assert 165e6 < count(released_key_shapes(full, "deltatok")) < 175e6  # "about 170M"
    assert 84e6 < count(released_key_shapes(full, "deltaworld")) < 88e6  # "about 86M"
    with torch.device("meta"):  # shapes only: no 170M-parameter initialisation
        tokenizer = DeltaTok.from_config(full.tokenizer, feature_dim=full.vfm.embed_dim)
    ours = {k: tuple(v.shape) for k, v in tokenizer.state_dict().items()}
    release = released_key_shapes(full, "deltatok")
    extra = set(ours) - set(release)
    assert extra and all(k.endswith(("q_norm.bias", "k_norm.bias")) for k in extra)  # filled with zeros
    assert all(ours[k] == s for k, s in release.items())


# ------------------------------------------------------------------------------------------------
# DeltaTok


def test_deltatok_loads_strictly_from_a_released_bin(cfg, tmp_path):
    state = random_state(deltatok_shapes(2, 2))
    wrapped = {f"network.{k}": v for k, v in state.items()}
    wrapped["network.backbone.backbone.embeddings.cls_token"] = torch.zeros(1, 1, D)  # frozen: dropped
    path = tmp_path / "pytorch_model.bin"
    torch.save(wrapped, path)
    tokenizer = DeltaTok.from_config(cfg.tokenizer, feature_dim=cfg.vfm.embed_dim)
    load_released_deltatok(tokenizer, path)
    assert torch.equal(tokenizer.z_embed.weight, state["z_embed.weight"])
    assert torch.equal(tokenizer.xy_embed.weight, state["xy_embed.weight"])
    attn = tokenizer.encoder_blocks[1].attention
    assert torch.equal(attn.q_norm.weight, state["encoder_blocks.1.attention.q_norm.weight"])
    assert torch.equal(attn.q_norm.bias, torch.zeros(D // H)) and torch.equal(attn.k_norm.bias, torch.zeros(D // H))
    assert torch.equal(attn.attn_gate.weight, state["encoder_blocks.1.attention.attn_gate.weight"])
    assert attn.k_proj.bias is None
    block = tokenizer.decoder_blocks[0]
    assert torch.equal(block.mlp.gate_proj.weight, state["decoder_blocks.0.mlp.gate_proj.weight"])
    assert torch.equal(block.layer_scale2.lambda1, state["decoder_blocks.0.layer_scale2.lambda1"])
    assert torch.equal(tokenizer.norm.bias, state["norm.bias"])
    assert check_released_file(path, cfg, "deltatok") == []


def test_deltatok_accepts_the_compile_prefix_and_refuses_names_the_release_never_had():
    small = paper_cfg(enc=1, dec=1)
    state = random_state(deltatok_shapes(1, 1), seed=1)
    tokenizer = DeltaTok.from_config(small.tokenizer, feature_dim=small.vfm.embed_dim)
    load_released_deltatok(tokenizer, {"network._orig_mod." + k: v for k, v in state.items()})
    assert torch.equal(tokenizer.decoder_blocks[0].attention.k_norm.weight,
                       state["decoder_blocks.0.attention.k_norm.weight"])
    prerope = {k.replace(".q_norm.", ".q_norm_prerope."): v for k, v in state.items()}  # forks' name
    with pytest.raises(CheckpointError, match=r"q_norm_prerope"):
        load_released_deltatok(tokenizer, prerope)


def test_an_in_memory_state_dict_container_is_unwrapped_as_a_file_is(tmp_path):
    """{"state_dict": ...} (what the release's training saves, with its epoch and optimizer beside
    it) loads the same from memory as from a file; before, only the file was unwrapped."""
    small = paper_cfg(enc=1, dec=1)
    state = random_state(deltatok_shapes(1, 1), seed=3)
    checkpoint = {"state_dict": dict(state), "epoch": 7, "optimizer_states": [{"lr": 1e-4}]}
    path = tmp_path / "last.ckpt.pth"
    torch.save(checkpoint, path)
    from_memory = DeltaTok.from_config(small.tokenizer, feature_dim=small.vfm.embed_dim)
    from_file = DeltaTok.from_config(small.tokenizer, feature_dim=small.vfm.embed_dim)
    load_released_deltatok(from_memory, checkpoint)
    load_released_deltatok(from_file, path)
    for (name, a), b in zip(from_memory.state_dict().items(), from_file.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(from_memory.z_embed.weight, state["z_embed.weight"])
    with pytest.raises(CheckpointError, match="no tensors found"):
        load_released_deltatok(from_memory, {"state_dict": {"epoch": 7}})


def test_time_rope_is_the_release_convention():
    """Frequencies 1 / 10 ** linspace(-2, 2, 30) in float32, angle 2*pi*t*f, rotate-half pairs over
    the first 60 of 64 dims: identical to that formula written out here in float32."""
    from deltaworld_core.layers import apply_rope, rope_time

    t = torch.tensor([[0.0, 0.04, 0.5, 3.7]])
    cos, sin = rope_time(t, 60, 0.01, 100.0)
    inv_freq = 1.0 / (10.0 ** torch.linspace(-2, 2, 30, dtype=torch.float32))
    angle = (2 * torch.pi) * t[..., None] * inv_freq  # [1, T, 30]
    assert torch.equal(cos, torch.cat((angle.cos(), angle.cos()), -1))
    assert torch.equal(sin, torch.cat((angle.sin(), angle.sin()), -1))
    x = torch.randn(1, 2, 4, 64)
    rotated = apply_rope(x, cos[:, None], sin[:, None])
    even, odd = x[..., :30], x[..., 30:60]
    c, s = angle.cos()[:, None], angle.sin()[:, None]
    expected = torch.cat((even * c - odd * s, even * s + odd * c, x[..., 60:]), -1)
    torch.testing.assert_close(rotated, expected, rtol=0, atol=1e-6)
    # float64 stream times: the same frequencies, angles without the float32 rounding (an angle of
    # ~1,700 rad at 3.7 s and 72 Hz has a float32 step of 1.2e-4)
    cos64, _ = rope_time(t.double(), 60, 0.01, 100.0)
    torch.testing.assert_close(cos64, cos, rtol=0, atol=2e-4)


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("encoder_blocks.0.attention.attn_gate.bias"), "encoder_blocks.0.attention.attn_gate.bias"),
    (lambda s: s.update({"decoder_head.weight": torch.zeros(D, D)}), "decoder_head.weight"),
    (lambda s: s.update({"xy_embed.weight": torch.zeros(3, D)}), "xy_embed.weight"),
    (lambda s: s.update({"decoder_blocks.0.attention.k_proj.bias": torch.zeros(D)}),
     "decoder_blocks.0.attention.k_proj.bias"),
])
def test_deltatok_mismatch_names_the_key(change, named):
    small = paper_cfg(enc=1, dec=1)
    state = random_state(deltatok_shapes(1, 1))
    change(state)
    tokenizer = DeltaTok.from_config(small.tokenizer, feature_dim=small.vfm.embed_dim)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_released_deltatok(tokenizer, state)


# ------------------------------------------------------------------------------------------------
# DeltaWorld


def test_deltaworld_maps_the_predictor_names(cfg, tmp_path):
    state = random_state(predictor_shapes(2), seed=2)
    wrapped = {f"network.{k}": v for k, v in state.items()}
    wrapped["network.tokenizer.z_embed.weight"] = torch.zeros(1, D)  # frozen tokenizer: dropped
    path = tmp_path / "pytorch_model.bin"
    torch.save(wrapped, path)
    world = DeltaWorld.from_config(cfg.world, token_dim=D)
    load_released_deltaworld(world, path)
    for i in range(2):
        attn, p = world.blocks[i].attention, f"predictor.blocks.{i}."
        kv_w, kv_b = state[p + "attention.kv_proj.weight"], state[p + "attention.kv_proj.bias"]
        assert torch.equal(attn.k_proj.weight, kv_w[:D]) and torch.equal(attn.v_proj.weight, kv_w[D:])
        assert torch.equal(attn.k_proj.bias, kv_b[:D]) and torch.equal(attn.v_proj.bias, kv_b[D:])
        assert torch.equal(attn.o_proj.weight, state[p + "attention.out_proj.weight"])
        assert torch.equal(attn.q_proj.bias, state[p + "attention.q_proj.bias"])
        assert torch.equal(world.blocks[i].mlp.up_proj.weight, state[p + "mlp.up_proj.weight"])
        assert torch.equal(world.blocks[i].layer_scale1.lambda1, state[p + "layer_scale1.lambda1"])
    assert torch.equal(world.head.weight, state["predictor.head.weight"])
    assert torch.equal(world.norm.weight, state["predictor.norm.weight"])
    assert check_released_file(path, cfg, "deltaworld") == []


def release_source(key: str) -> tuple[str, slice | None]:
    """Where our DeltaWorld key comes from in the release: (release key, row slice of the fused kv_proj)."""
    if key == "query":
        return "q_embed.weight", None
    rel = "predictor." + key.replace(".attention.o_proj.", ".attention.out_proj.")
    for name, rows in (("k_proj", slice(0, D)), ("v_proj", slice(D, 2 * D))):
        if f".attention.{name}." in rel:
            return rel.replace(f".attention.{name}.", ".attention.kv_proj."), rows
    return rel, None


def test_deltaworld_loads_the_full_predictor_strictly(cfg, caplog):
    state = random_state(predictor_shapes(2), seed=3)
    world = DeltaWorld.from_config(cfg.world, token_dim=D)  # as built for our own training: no changes
    assert isinstance(world.context_in, torch.nn.Identity)
    with caplog.at_level(logging.WARNING, logger="deltaworld_core.released"):
        load_released_deltaworld(world, state)
    assert caplog.text == ""  # paper config: the release's RoPE, nothing approximate
    ours = world.state_dict()
    used = set()
    for key, tensor in ours.items():  # every one of our tensors comes from exactly its release tensor
        rel, rows = release_source(key)
        assert rel in state, key
        want = state[rel] if rows is None else state[rel][rows]
        assert torch.equal(tensor, want), key
        used.add(rel)
    assert used == set(state)  # and every release tensor is used
    for i in range(2):
        attn, kv_b = world.blocks[i].attention, state[f"predictor.blocks.{i}.attention.kv_proj.bias"]
        assert torch.equal(attn.k_proj.bias, kv_b[:D]) and torch.equal(attn.v_proj.bias, kv_b[D:])
        assert kv_b[:D].any()  # the key bias is real, not a filled zero
        assert torch.equal(attn.o_proj.weight, state[f"predictor.blocks.{i}.attention.out_proj.weight"])
        assert torch.equal(attn.o_proj.bias, state[f"predictor.blocks.{i}.attention.out_proj.bias"])
        assert not any("norm_context" in k for k in ours)


def test_deltaworld_warns_when_the_rope_differs_from_the_release(caplog):
    small = paper_cfg(world=1, **{"world.rope_unrotated": 8, "world.rope_min_hz": 0.1})
    world = DeltaWorld.from_config(small.world, token_dim=D)
    with caplog.at_level(logging.WARNING, logger="deltaworld_core.released"):
        load_released_deltaworld(world, random_state(predictor_shapes(1)))
    assert "rotates 60 of 64" in caplog.text and "rotates 56" in caplog.text


def test_deltaworld_refuses_a_context_projection():
    small = paper_cfg(world=1, **{"world.dim": 384, "world.num_heads": 6})
    world = DeltaWorld.from_config(small.world, token_dim=D)
    assert isinstance(world.context_in, torch.nn.Linear)
    with pytest.raises(CheckpointError, match="no context projection"):
        load_released_deltaworld(world, random_state(released_key_shapes(small, "deltaworld")))


def test_deltaworld_deterministic_query():
    det = paper_cfg(world=1, **{"world.deterministic": True})
    state = random_state(released_key_shapes(det, "deltaworld"), seed=4)
    world = DeltaWorld.from_config(det.world, token_dim=D)
    load_released_deltaworld(world, state)
    assert torch.equal(world.query, state["q_embed.weight"][0])


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("predictor.norm.weight"), "norm.weight"),
    (lambda s: s.update({"predictor.blocks.0.attention.extra.weight": torch.zeros(D)}),
     "predictor.blocks.0.attention.extra.weight"),
    (lambda s: s.update({"predictor.head.weight": torch.zeros(D, 2 * D)}), "predictor.head.weight"),
    (lambda s: s.update({"q_embed.weight": torch.zeros(1, D)}), "q_embed.weight"),
    (lambda s: s.update({"predictor.blocks.0.mlp.up_proj.weight": torch.zeros(4 * MLP, D)}),
     "predictor.blocks.0.mlp.up_proj.weight"),
])
def test_deltaworld_mismatch_names_the_key(change, named):
    small = paper_cfg(world=1)
    state = random_state(predictor_shapes(1))
    change(state)
    world = DeltaWorld.from_config(small.world, token_dim=D)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_released_deltaworld(world, state)


def test_deltaworld_rejects_a_tokenizer_file():
    small = paper_cfg(enc=1, dec=1, world=1)
    world = DeltaWorld.from_config(small.world, token_dim=D)
    with pytest.raises(CheckpointError, match="no predictor"):
        load_released_deltaworld(world, random_state(DELTATOK_TOP))


# ------------------------------------------------------------------------------------------------
# Heads


def test_heads_load_from_nested_release_files(cfg, tmp_path):
    seg, depth = random_state(head_shapes(19), seed=5), random_state(head_shapes(256), seed=6)
    seg_path, depth_path = tmp_path / "seg.bin", tmp_path / "depth.bin"
    torch.save({"state_dict": {f"network.{k}": v for k, v in seg.items()}, "epoch": 3}, seg_path)
    depth["head.weight"] = depth["head.weight"][:, :, 0, 0]  # stored as a linear map: reshaped
    torch.save(depth, depth_path)
    heads = TaskHeads(D, CITYSCAPES_CLASSES)
    load_released_head(heads, seg_path, "segmentation")
    load_released_head(heads, depth_path, "depth")
    assert torch.equal(heads.segmentation.conv.weight, seg["head.weight"])
    assert torch.equal(heads.segmentation.bn.running_var, seg["bn.running_var"])
    assert heads.segmentation.bn.num_batches_tracked.item() == 7
    assert torch.equal(heads.depth.conv.weight[:, :, 0, 0], depth["head.weight"])
    assert torch.equal(heads.depth.conv.bias, depth["head.bias"])
    assert check_released_file(seg_path, cfg, "seg_head") == []


def test_heads_mismatch_names_the_key(cfg):
    seg = random_state(head_shapes(19))
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(19, 768, 1, 1\)"):
        load_released_head(TaskHeads(D, cfg.heads.class_names), seg, "segmentation")  # 9 classes
    heads = TaskHeads(D, CITYSCAPES_CLASSES)
    bad = dict(seg)
    bad.pop("bn.running_mean")
    with pytest.raises(CheckpointError, match=r"bn\.running_mean"):
        load_released_head(heads, bad, "segmentation")
    extra = {**seg, "criterion.weight": torch.zeros(19)}
    with pytest.raises(CheckpointError, match=r"criterion\.weight"):
        load_released_head(heads, extra, "segmentation")
    load_released_head(heads, extra, "segmentation", extra_ok=True)
    with pytest.raises(ValueError):
        load_released_head(heads, seg, "normals")


# ------------------------------------------------------------------------------------------------
# CLI


def test_convert_cli_writes_weights_our_loader_reads(tmp_path):
    small = {"tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "world.depth": 1}
    files = {}
    for name, shapes in (("deltatok", deltatok_shapes(1, 1)), ("deltaworld", predictor_shapes(1)),
                         ("seg", head_shapes(19)), ("depth", head_shapes(256))):
        files[name] = tmp_path / f"{name}.bin"
        torch.save(random_state(shapes), files[name])
    out = tmp_path / "converted"
    sets = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    args = ["convert", "--deltatok", str(files["deltatok"]), "--deltaworld", str(files["deltaworld"]),
            "--seg-head", str(files["seg"]), "--depth-head", str(files["depth"]), "--out", str(out), *sets]
    assert main(args) == 0
    with safe_open(str(out / "heads.safetensors"), "pt") as f:
        names = json.loads(f.metadata()["class_names"])
    assert names == CITYSCAPES_CLASSES
    cfg = load_config("paper", {**small, "heads.class_names": names})
    tokenizer, world, heads = build_models(cfg)
    load_weights(out, tokenizer=tokenizer, world=world, heads=heads)
    release = torch.load(files["deltatok"], weights_only=True)
    o_proj = release["encoder_blocks.0.attention.o_proj.weight"]
    assert torch.equal(tokenizer.encoder_blocks[0].attention.o_proj.weight, o_proj)
    kv_bias = torch.load(files["deltaworld"], weights_only=True)["predictor.blocks.0.attention.kv_proj.bias"]
    assert torch.equal(world.blocks[0].attention.k_proj.bias, kv_bias[:D])
    assert main(["check", str(files["deltatok"]), "--part", "deltatok", *sets]) == 0
    assert main(["check", str(files["deltatok"]), "--part", "deltatok"]) == 1  # full paper depth: missing blocks
