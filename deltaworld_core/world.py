"""DeltaWorld: a cross-attention-only predictor of future delta tokens.

Each target query attends to the raw context delta tokens (never updated; each layer has its own
K/V projection of them, as in the released model) under a causal mask, with 1-D RoPE over real timestamps in seconds: the
query carries its target's time, the keys their frames' times, so frame rate may vary. A query is
pure Gaussian noise, so K queries give K futures in one batched pass. ``deterministic=True``
replaces the noise by one learned query (the discriminative ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import WorldConfig
from .layers import Block, init_weights, rope_time

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, S, d]


class CrossBlock(Block):
    """Pre-LN block whose attention reads keys/values projected from the raw context tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, layerscale_init: float):
        super().__init__(dim, num_heads, mlp_hidden, swiglu=False, qk_norm=False, gated_attn=False,
                         layerscale_init=layerscale_init, key_bias=True)

    def context_kv(self, context: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention.project_kv(context, rope)


class DeltaWorld(nn.Module):
    def __init__(
        self,
        token_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layerscale_init: float = 1e-5,
        rope_unrotated: int = 4,
        rope_min_hz: float = 0.01,
        rope_max_hz: float = 100.0,
        noise_std: float = 0.02,
        deterministic: bool = False,
    ):
        super().__init__()
        self.token_dim, self.dim = token_dim, dim
        self.noise_std = noise_std
        self.deterministic = deterministic
        self.rope_hz = (rope_min_hz, rope_max_hz)
        self.rotated_dim = dim // num_heads - rope_unrotated
        self.context_in = nn.Linear(token_dim, dim) if token_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(
            CrossBlock(dim, num_heads, int(dim * mlp_ratio), layerscale_init) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, token_dim)
        self.query = nn.Parameter(torch.zeros(dim)) if deterministic else None
        init_weights(self)
        if self.query is not None:
            nn.init.trunc_normal_(self.query, std=noise_std)
        for block in self.blocks:
            block.layer_scale1.lambda1.data.fill_(layerscale_init)
            block.layer_scale2.lambda1.data.fill_(layerscale_init)

    @classmethod
    def from_config(cls, cfg: WorldConfig, token_dim: int) -> "DeltaWorld":
        return cls(
            token_dim=token_dim,
            dim=cfg.dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            layerscale_init=cfg.layerscale_init,
            rope_unrotated=cfg.rope_unrotated,
            rope_min_hz=cfg.rope_min_hz,
            rope_max_hz=cfg.rope_max_hz,
            noise_std=cfg.noise_std,
            deterministic=cfg.deterministic,
        )

    def _rope(self, times: torch.Tensor, dtype: torch.dtype):
        cos, sin = rope_time(times, self.rotated_dim, *self.rope_hz)
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]  # [B, 1(heads), T, d]

    def context_kv(self, tokens: torch.Tensor, times: torch.Tensor) -> KV:
        """Per-layer keys/values of context tokens [B, S, Dt] at ``times`` [B, S] seconds.
        Cacheable: appending a token only needs its own K/V."""
        x = self.context_in(tokens)
        rope = self._rope(times, x.dtype)
        return [block.context_kv(x, rope) for block in self.blocks]

    def sample_queries(self, batch: int, num: int, generator: torch.Generator | None = None,
                       device=None, dtype=None) -> torch.Tensor:
        """Queries [batch, num, D]: Gaussian noise (std ``noise_std``) or the learned query."""
        p = self.norm.weight  # a LayerNorm: stays float when the linear layers are quantised
        device, dtype = device or p.device, dtype or p.dtype
        if self.query is not None:
            return self.query.to(dtype).expand(batch, num, -1)
        noise = torch.randn(batch, num, self.dim, generator=generator, device=device, dtype=torch.float32)
        return (noise * self.noise_std).to(dtype)

    def predict(self, queries: torch.Tensor, query_times: torch.Tensor, kv: KV,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """queries [B, Q, D] at ``query_times`` [B, Q] attend to cached ``kv`` -> tokens [B, Q, Dt].
        ``mask`` [Q, S] (True = may attend) or None for full context."""
        x = queries
        rope = self._rope(query_times, x.dtype)
        for block, layer_kv in zip(self.blocks, kv):
            x = block(x, rope=rope, kv=layer_kv, mask=mask)
        return self.head(self.norm(x))

    def forward(self, tokens: torch.Tensor, times: torch.Tensor, queries: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced prediction over a clip: tokens [B, T, Dt] at times [B, T]; target i
        (1..T-1) sees tokens < i. ``queries`` [B, T-1, D] (noise is drawn when None).
        Returns predicted tokens [B, T-1, Dt]."""
        b, t, _ = tokens.shape
        if queries is None:
            queries = self.sample_queries(b, t - 1, generator, tokens.device, tokens.dtype)
        kv = self.context_kv(tokens[:, :-1], times[:, :-1])
        return self.predict(queries, times[:, 1:], kv, causal_mask(t - 1, t - 1, tokens.device))


def causal_mask(num_queries: int, num_context: int, device=None) -> torch.Tensor:
    """[Q, S] bool: target i sees context tokens 0..i (the tokens before target frame i+1)."""
    q = torch.arange(num_queries, device=device)[:, None]
    s = torch.arange(num_context, device=device)[None, :]
    return s <= q
