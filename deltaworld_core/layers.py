"""Transformer building blocks shared by DeltaTok and DeltaWorld.

Parameter names follow the Hugging Face DINOv3 layer (``norm1``, ``attention.q_proj``,
``layer_scale1.lambda1``, ``mlp.gate_proj`` ...) because the released DeltaTok checkpoint is
stored under those names; keeping them makes loading it a near-identity mapping.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the last ``cos.shape[-2]`` tokens of ``x`` [B, heads, T, d]; earlier tokens
    (query/prefix tokens) keep no position. ``cos``/``sin``: [..., N, d'] with d' <= d; the
    trailing d - d' dims of each head stay unrotated."""
    n, d_rot = cos.shape[-2], cos.shape[-1]
    tokens = x[..., -n:, :]
    rot = tokens[..., :d_rot]
    rot = rot * cos + rotate_half(rot) * sin
    # Skipping empty concatenations matters: a streaming step runs this a few hundred times.
    if d_rot < x.shape[-1]:
        rot = torch.cat((rot, tokens[..., d_rot:]), dim=-1)
    return rot if n == x.shape[-2] else torch.cat((x[..., :-n, :], rot), dim=-2)


def rope_2d(grid: tuple[int, int], head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3-style 2-D RoPE for a (gh, gw) patch grid: patch centres normalised to [-1, 1],
    head_dim/4 frequencies per axis. Returns cos, sin [gh*gw, head_dim] (float32)."""
    gh, gw = grid
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) / gw * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)  # [N, 2]
    inv_freq = 1.0 / base ** torch.arange(0, 1, 4 / head_dim, device=device, dtype=torch.float32)
    angles = (2 * math.pi * coords[:, :, None] * inv_freq).flatten(1).tile(2)  # [N, head_dim]
    return angles.cos(), angles.sin()


def rope_time(times: torch.Tensor, rotated_dim: int, min_hz: float, max_hz: float) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D RoPE over real timestamps in seconds at rotated_dim/2 frequencies log-spaced from
    ``max_hz`` down to ``min_hz``, angle ``2*pi * t * f``. ``times`` [..., T] (float64 recommended
    for long streams) -> cos, sin [..., T, rotated_dim] float32 (rotate-half layout: dim i pairs
    with dim i + rotated_dim/2).

    The frequencies are built in float32 exactly as the released predictor builds them
    (``1 / 10 ** linspace(-log10(max_hz), -log10(min_hz), half)``; the release: linspace(-2, 2));
    the angles are formed in the input's precision so that large absolute times keep the fine
    frequencies."""
    half = rotated_dim // 2
    exponents = torch.linspace(-math.log10(max_hz), -math.log10(min_hz), half, device=times.device,
                               dtype=torch.float32)
    hz = 1.0 / (10.0 ** exponents)  # float32, as the release
    angles = 2 * math.pi * times[..., None] * hz.to(times.dtype)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class Attention(nn.Module):
    """Multi-head attention with optional QK-LayerNorm (after RoPE) and a per-head sigmoid
    output gate. Self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, gated: bool = False, key_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=key_bias)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else None
        self.attn_gate = nn.Linear(dim, num_heads) if gated else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def project_kv(self, context: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Keys and values of ``context`` [B, S, C] -> ([B, h, S, d], [B, h, S, d]); cacheable."""
        k, v = self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
        if rope is not None:
            k = apply_rope(k, *rope)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C]. Without ``kv`` the keys/values come from ``x`` and share
        ``rope``; with ``kv`` (from :meth:`project_kv`) only the queries are rotated here."""
        q = self._heads(self.q_proj(x))
        if rope is not None:
            q = apply_rope(q, *rope)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if kv is None:
            kv = self.project_kv(x, rope)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        if self.attn_gate is not None:
            out = out * self.attn_gate(x).transpose(-1, -2).unsqueeze(-1).sigmoid()
        return self.o_proj(out.transpose(-3, -2).flatten(-2))


class MLP(nn.Module):
    """Plain MLP (GELU) or SwiGLU, HF DINOv3 parameter names."""

    def __init__(self, dim: int, hidden: int, swiglu: bool):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden) if swiglu else None
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-LN transformer block with LayerScale; self-attention, or cross-attention to
    precomputed keys/values (``kv``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        swiglu: bool = True,
        qk_norm: bool = True,
        gated_attn: bool = True,
        layerscale_init: float = 1e-5,
        key_bias: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attention = Attention(dim, num_heads, qk_norm=qk_norm, gated=gated_attn, key_bias=key_bias)
        self.layer_scale1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = MLP(dim, mlp_hidden, swiglu)
        self.layer_scale2 = LayerScale(dim, layerscale_init)

    def forward(self, x, rope=None, kv=None, mask=None) -> torch.Tensor:
        x = x + self.layer_scale1(self.attention(self.norm1(x), rope=rope, kv=kv, mask=mask))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal linear weights, zero biases (paper/release convention)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
