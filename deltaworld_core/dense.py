"""Dense baseline: a deterministic DINO-Foresight-style predictor of all next-frame patch features.

Where DeltaWorld predicts one token per frame, this model predicts the full ``N``-token feature
grid of the next frame from the grids of the last ``context`` frames (context*N tokens), so the
two can be compared at equal VFM, data and training loop.

Design (the released "DINOWorld" shape: N spatial queries per future frame attending to all
context patch tokens, deterministic):

* context tokens = ``Linear(features) + time(t_i - t_target)``; never updated (each block has its
  own LayerNorm and K/V projection of them), which keeps the cost linear in the context;
* N query tokens = ``Linear(last frame) + time(0) + query type``; each block lets the queries
  attend jointly to [context tokens; queries] (one softmax), then an MLP;
* space: the 2-D RoPE of the patch grid, shared by every frame and the queries, so the model is
  grid-size agnostic; time: sinusoidal features of real seconds, so the step may vary;
* output: ``last + Linear(LN(queries))`` with a zero-initialised output map, i.e. it starts as
  copy-last and learns the change (a small-budget convenience; the function class is unchanged).

Shapes: features ``[B, T, N, C]``, times ``[B, T]`` seconds. :meth:`DenseForesight.rollout`
matches DeltaWorld's rollout contract: ``[B, T, N, C] -> [B, steps, N, C]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .checkpoint import CheckpointError, load_state_strict, read_state, save_state
from .config import ConfigError, from_dict
from .layers import Attention, LayerScale, MLP, init_weights, rope_2d


@dataclass
class DenseConfig:
    """Dense baseline size and context."""

    dim: int = 192
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    context: int = 4  # frames of context (rollout keeps the last ``context``)
    layerscale_init: float = 0.1
    rope_base: float = 100.0
    time_freqs: int = 16  # sinusoidal time features, periods 0.05 s .. 20 s

    def validate(self) -> "DenseConfig":
        for name in ("dim", "depth", "num_heads", "mlp_ratio", "context", "rope_base", "time_freqs"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"dense.{name} must be > 0, got {getattr(self, name)!r}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 4:
            raise ConfigError("dense.dim / dense.num_heads must be a multiple of 4 (2-D RoPE)")
        if self.layerscale_init < 0:
            raise ConfigError("dense.layerscale_init must be >= 0")
        return self


class TimeEmbedding(nn.Module):
    """Seconds ``[...]`` -> ``[..., dim]`` via log-spaced sinusoids and a linear map."""

    def __init__(self, dim: int, freqs: int):
        super().__init__()
        periods = torch.logspace(math.log10(0.05), math.log10(20.0), freqs)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(2 * freqs, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[..., None] * self.omega
        return self.proj(torch.cat((angles.sin(), angles.cos()), dim=-1))


class QueryBlock(nn.Module):
    """Pre-LN block: queries attend to [context; queries], then an MLP. Context is read-only."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, layerscale_init: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm_context = nn.LayerNorm(dim, eps=1e-5)
        self.attention = Attention(dim, num_heads, qk_norm=True)
        self.layer_scale1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = MLP(dim, mlp_hidden, swiglu=False)
        self.layer_scale2 = LayerScale(dim, layerscale_init)

    def forward(self, x: torch.Tensor, context: torch.Tensor, rope_q, rope_kv) -> torch.Tensor:
        """x [B, N, D] queries, context [B, S, D] -> [B, N, D]."""
        h = self.norm1(x)
        kv = self.attention.project_kv(torch.cat((self.norm_context(context), h), dim=1), rope_kv)
        x = x + self.layer_scale1(self.attention(h, rope=rope_q, kv=kv))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class DenseForesight(nn.Module):
    """Deterministic next-frame feature predictor; see the module docstring."""

    def __init__(self, feature_dim: int, cfg: DenseConfig | None = None):
        super().__init__()
        self.cfg = cfg = (cfg or DenseConfig()).validate()
        self.feature_dim, self.dim, self.context = feature_dim, cfg.dim, cfg.context
        self.head_dim = cfg.dim // cfg.num_heads
        self.feature_in = nn.Linear(feature_dim, cfg.dim)
        self.time = TimeEmbedding(cfg.dim, cfg.time_freqs)
        self.type_embed = nn.Embedding(2, cfg.dim)  # 0: context frame, 1: query (future frame)
        self.blocks = nn.ModuleList(
            QueryBlock(cfg.dim, cfg.num_heads, int(cfg.dim * cfg.mlp_ratio), cfg.layerscale_init)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-5)
        self.head = nn.Linear(cfg.dim, feature_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.type_embed.weight, std=0.02)
        nn.init.zeros_(self.head.weight)  # starts as copy-last
        self._rope_cache: dict = {}

    def _rope(self, grid: tuple[int, int], frames: int, device):
        key = (grid, frames, str(device))
        if key not in self._rope_cache:
            cos, sin = rope_2d(grid, self.head_dim, self.cfg.rope_base, device)
            self._rope_cache[key] = (cos.repeat(frames, 1), sin.repeat(frames, 1))
        return self._rope_cache[key]

    def forward(self, features: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """One step. features [B, T, N, C] at ``times`` [B, T] (s) -> features at
        ``target_times`` [B] (s): [B, N, C]."""
        b, t, n, _ = features.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"features {tuple(features.shape)} do not match grid {grid}")
        dt = (times - target_times[:, None]).to(features.dtype)  # [B, T], <= 0
        ctx = self.feature_in(features) + self.time(dt)[:, :, None] + self.type_embed.weight[0]
        ctx = ctx.flatten(1, 2)  # [B, T*N, D]
        last = features[:, -1]
        x = self.feature_in(last) + self.time(torch.zeros_like(target_times))[:, None] + self.type_embed.weight[1]
        rope_q = self._rope(grid, 1, x.device)
        rope_kv = self._rope(grid, t + 1, x.device)
        rope_q = tuple(r.to(x.dtype) for r in rope_q)
        rope_kv = tuple(r.to(x.dtype) for r in rope_kv)
        for block in self.blocks:
            x = block(x, ctx, rope_q, rope_kv)
        return last + self.head(self.norm(x))

    @torch.no_grad()
    def rollout(self, context_features: torch.Tensor, steps: int, grid: tuple[int, int] | None = None,
                step_s: float = 0.2, context_times: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive: context_features [B, T, N, C] (T >= 1, the last ``context`` are used)
        -> [B, steps, N, C]. Frames are ``step_s`` apart unless ``context_times`` [B, T] is given;
        targets follow the last context frame every ``step_s``. ``grid`` defaults to square."""
        b, t, n, _ = context_features.shape
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} tokens per frame is not a square grid: pass grid=(gh, gw)")
            grid = (side, side)
        if context_times is None:
            context_times = torch.arange(t - 1, -1, -1, device=context_features.device, dtype=torch.float64)
            context_times = (-step_s * context_times).expand(b, t)
        frames, times = context_features, context_times.to(torch.float64)
        out = []
        for _ in range(steps):
            frames, times = frames[:, -self.context:], times[:, -self.context:]
            target = times[:, -1] + step_s
            nxt = self(frames, times, target, grid)
            out.append(nxt)
            frames = torch.cat((frames, nxt[:, None]), dim=1)
            times = torch.cat((times, target[:, None]), dim=1)
        return torch.stack(out, dim=1)


def save_dense(model: DenseForesight, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """safetensors with the config in the metadata, so :func:`load_dense` needs nothing else."""
    meta = {"config": json.dumps(dataclasses.asdict(model.cfg)), "feature_dim": str(model.feature_dim),
            "kind": "deltaworld-dense"}
    return save_state(model.state_dict(), path, metadata=meta, dtype=dtype)


def load_dense(path: str | Path, cfg: DenseConfig | None = None, feature_dim: int | None = None) -> DenseForesight:
    """Builds a :class:`DenseForesight` from a file written by :func:`save_dense` (or a folder
    holding ``dense.safetensors``). ``cfg``/``feature_dim`` override the stored metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / "dense.safetensors"
    state = read_state(path)
    if cfg is None or feature_dim is None:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta or "feature_dim" not in meta:
            raise CheckpointError(f"{path}: no dense config in metadata; pass cfg= and feature_dim=")
        cfg = cfg or from_dict(DenseConfig, json.loads(meta["config"]), "dense.")
        feature_dim = feature_dim or int(meta["feature_dim"])
    model = DenseForesight(feature_dim, cfg)
    load_state_strict(model, state, source=str(path))
    return model.eval()
