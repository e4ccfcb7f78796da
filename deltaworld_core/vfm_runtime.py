"""How the frozen VFM runs on the device at hand: ``vfm.precision: auto | fp32 | bf16 | int8``.

- ``fp32``: today's behaviour, the backbone in float32 (torch or ONNX Runtime, ``vfm.backend``).
- ``bf16``: the transformer's linear layers in bfloat16 with weights cast once (:class:`Bf16Backbone`);
  LayerNorms, the residual stream, the position embedding and the features stay float32. On CUDA
  the torch backbone under ``torch.autocast(bfloat16)`` instead (the existing GPU path).
- ``int8``: ONNX Runtime with int8 weights (per output channel) and int8 activations quantised per
  call (dynamic), for the linear layers only; attention, norms and GELU stay float32. Built at run time
  from the float32 export into the user cache (:func:`int8_onnx`), never shipped.
- ``auto``: the fastest precision the device runs within the accuracy bound (docs/vfm-precision.md):
  ``bf16`` on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16), else ``fp32``. On an
  AVX2-only CPU bf16 is emulated and 5-7x slower than fp32, so auto never picks it there; int8 is
  never picked because its error on the frame-to-frame feature change (measured: 14% of the change,
  33% on a night-city clip) is far outside the bound that bf16 meets (2%). On CUDA auto leaves the
  choice to the caller (the forecaster's bf16 autocast with ``forecast.quantize: bf16``).
"""
from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import apply_rope

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# CPU features that give bfloat16 matmuls in hardware (oneDNN uses them through torch).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: torch's own probe (``torch.cpu.get_capabilities``, what its kernels
    dispatch on) united with ``/proc/cpuinfo``'s flags where that file exists."""
    flags: set[str] = set()
    try:
        caps = torch.cpu.get_capabilities()
        flags |= {name for name, value in caps.items() if value is True}
    except (AttributeError, RuntimeError):  # an older torch: /proc/cpuinfo alone
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return frozenset(flags)


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> the concrete precision for ``device`` (``fp32``/``bf16``; on CUDA ``auto`` stays
    ``auto``: the caller's autocast decides). A forced precision is returned as given; ``bf16`` on a
    CPU without native bfloat16 warns that it is slow, ``int8`` on a GPU falls back to ``auto``."""
    if precision not in PRECISIONS:
        raise ValueError(f"vfm.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if kind != "cpu":
        if precision == "int8":
            log.warning("vfm.precision=int8 runs on the CPU only (ONNX Runtime); on %s the VFM runs as auto", kind)
            return "auto"
        return precision
    if precision == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_native_bf16():
        warnings.warn("vfm.precision=bf16 on a CPU without AVX512-BF16/AMX: bfloat16 is emulated there, "
                      "5-7x slower than fp32 (vfm.precision=auto picks fp32 on this CPU)", RuntimeWarning,
                      stacklevel=2)
    return precision


# --------------------------------------------------------------------------- bf16 on the CPU

class _Bf16Linear(nn.Module):
    """``F.linear`` in bfloat16 with the weight cast once: ``[..., in] (any float) -> [..., out] bf16``.
    ``scale`` (``[out]``) folds a following LayerScale into the weight and bias (exact in real arithmetic)."""

    def __init__(self, linear: nn.Linear, scale: Tensor | None = None):
        super().__init__()
        w = linear.weight.detach().float()
        b = linear.bias.detach().float() if linear.bias is not None else None
        if scale is not None:
            w, b = w * scale[:, None], None if b is None else b * scale
        self.register_buffer("weight", w.to(torch.bfloat16))
        self.register_buffer("bias", None if b is None else b.to(torch.bfloat16))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias)


class _Bf16Block(nn.Module):
    """A :class:`~deltaworld_core.vfm.Block` with bf16 matmuls and attention: ``[B, T, C] f32 -> f32``.
    The residual stream and both LayerNorms stay float32 (a bf16 residual stream measured 1.5x the
    feature error); LayerScale is folded into ``proj`` and the FFN's output layer."""

    def __init__(self, block: nn.Module):
        super().__init__()
        gamma = lambda ls: ls.gamma.detach().float() if hasattr(ls, "gamma") else None  # noqa: E731
        self.norm1, self.norm2 = block.norm1, block.norm2
        self.num_heads = block.attn.num_heads
        self.qkv = _Bf16Linear(block.attn.qkv)
        self.proj = _Bf16Linear(block.attn.proj, gamma(block.ls1))
        mlp = block.mlp
        self.swiglu = hasattr(mlp, "w12")
        if self.swiglu:
            self.fc_in, self.fc_out = _Bf16Linear(mlp.w12), _Bf16Linear(mlp.w3, gamma(block.ls2))
        else:
            self.fc_in, self.fc_out = _Bf16Linear(mlp.fc1), _Bf16Linear(mlp.fc2, gamma(block.ls2))

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # SDPA's fused CPU kernel keeps the softmax in float32 (bf16 q @ k.T then softmax in bf16
        # measured twice the error on the frame-to-frame change)
        out = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(out.transpose(1, 2).reshape(b, t, c))
        h = self.fc_in(self.norm2(x))
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return x + self.fc_out(h)


class Bf16Backbone(nn.Module):
    """A :class:`~deltaworld_core.vfm.VisionTransformer` for one input size with bf16 linear
    layers: normalised pixels ``[B, 3, h, w]`` float32 -> final-LayerNorm patch tokens ``[B, N, C]``
    float32. Position inputs for the grid are computed once here (the bicubic resize of DINOv2's
    37x37 table took ~1 ms a call); the patch embedding runs in float32 (1 conv, ~2% of the time)."""

    def __init__(self, backbone: nn.Module, image_size: tuple[int, int]):
        super().__init__()
        if any(t.dtype != torch.float32 for t in backbone.parameters()):
            raise ValueError("Bf16Backbone wraps a float32 backbone")
        # The float32 parts (patch embedding, norms, tokens) are the backbone's own modules, shared
        # and not copied: both are frozen, and a copy would hold a second float32 model in memory.
        self.patch_embed, self.norm = backbone.patch_embed, backbone.norm
        self.cls_token, self.register_tokens = backbone.cls_token, backbone.register_tokens
        self.num_prefix = 1 + backbone.num_registers
        self.image_size = tuple(image_size)
        with torch.no_grad():
            pos, rope = backbone.positional(*backbone.grid_size(*image_size))
        self.register_buffer("pos", None if pos is None else pos.detach().clone())
        # RoPE in bf16: q and k are bf16 here
        self.register_buffer("cos", None if rope is None else rope[0].to(torch.bfloat16))
        self.register_buffer("sin", None if rope is None else rope[1].to(torch.bfloat16))
        self.blocks = nn.ModuleList(_Bf16Block(b) for b in backbone.blocks)
        self.requires_grad_(False)

    def forward(self, pixels: Tensor) -> Tensor:
        if tuple(pixels.shape[-2:]) != self.image_size:
            raise ValueError(f"pixels must be {self.image_size}, got {tuple(pixels.shape[-2:])}")
        x = self.patch_embed(pixels.float())  # [B, N, C]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.pos is not None:
            cls, x = cls + self.pos[:, :1], x + self.pos[:, 1:]
        parts = [cls, x] if self.register_tokens is None else [cls, self.register_tokens.expand(x.shape[0], -1, -1), x]
        x = torch.cat(parts, dim=1)
        rope = None if self.cos is None else (self.cos, self.sin)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x[:, self.num_prefix:])


# --------------------------------------------------------------------------- int8 with ONNX Runtime

INT8_SETTINGS = {"mode": "dynamic", "weights": "int8 per channel", "ops": ["MatMul"], "version": 1}


def int8_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Quantise the float32 export ``fp32_path`` to int8 at ``out_path`` (atomically): the linear
    layers' weights int8 per output channel, their inputs int8 per call (ONNX Runtime's dynamic
    quantisation); the attention products (two activations), norms, softmax and GELU stay float32.
    Measured on the embedded DINOv2-S/14: ~10 s, the first call only (the result is cached)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # lazy: only int8 needs it

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".onnx.tmp")
    os.close(fd)
    # The quantiser logs advice to pre-process the model on the root logger (measured: pre-processing
    # changed neither speed nor error here); that one line is dropped, anything else still shows.
    advice = lambda record: not record.getMessage().startswith("Please consider to run pre-processing")  # noqa: E731
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32_path), tmp, per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
        os.replace(tmp, out_path)
    finally:
        root.removeFilter(advice)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path
