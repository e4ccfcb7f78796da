"""DeltaTok: compresses the change between two VFM feature grids into one continuous token.

encode(prev, cur) -> z    one token per frame, [B, D]
decode(z, prev)  -> cur   the current frame's features, [B, N, C]

The encoder is a bidirectional ViT over [query] + [prev + type 0] + [cur + type 1]; both frames
share one 2-D RoPE, the query has none, and the token is the query's output through a LayerNorm
(continuous: no quantisation, no KL, no noise). The decoder is a ViT over [z] + [prev]; with
LayerScale initialised near zero it starts as copy-last and learns a residual.

With ``decoder_stride`` s > 1 the decoder attends over prev average-pooled s x s and its residual
is upsampled bilinearly. Both maps are linear, which lets a rollout work at the pooled grid
(:meth:`DeltaTok.decode_residual`, :meth:`DeltaTok.residual_carry`) and touch full-resolution
features only when they are asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenizerConfig
from .layers import Block, init_weights, rope_2d


class DeltaTok(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        dim: int,
        encoder_depth: int,
        decoder_depth: int,
        num_heads: int,
        mlp_hidden: int,
        swiglu: bool = True,
        qk_norm: bool = True,
        gated_attn: bool = True,
        layerscale_init: float = 1e-5,
        rope_base: float = 100.0,
        decoder_stride: int = 1,
        encoder_stride: int = 1,
        linear_path: bool = False,
        linear_grid: tuple[int, int] = (8, 8),
    ):
        super().__init__()
        self.feature_dim, self.dim = feature_dim, dim
        self.head_dim = dim // num_heads
        self.rope_base = rope_base
        self.decoder_stride = decoder_stride
        self.encoder_stride = encoder_stride
        self.z_embed = nn.Embedding(1, dim)
        self.xy_embed = nn.Embedding(2, dim)  # 0: previous frame, 1: current frame
        project = feature_dim != dim
        self.feature_in = nn.Linear(feature_dim, dim) if project else nn.Identity()
        self.feature_out = nn.Linear(dim, feature_dim) if project else nn.Identity()

        def blocks(depth: int) -> nn.ModuleList:
            return nn.ModuleList(
                Block(dim, num_heads, mlp_hidden, swiglu, qk_norm, gated_attn, layerscale_init) for _ in range(depth)
            )

        self.encoder_blocks = blocks(encoder_depth)
        self.decoder_blocks = blocks(decoder_depth)
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.linear_grid = tuple(linear_grid) if linear_path else None
        if linear_path:
            # One orthonormal basis serves both ways (encode: its transpose, scaled; decode: it,
            # unscaled), so it is stored once: token = s B^T (change - mean), residual = mean + B z / s.
            n = linear_grid[0] * linear_grid[1] * feature_dim
            self.linear_basis = nn.Parameter(torch.empty(n, dim))  # [n*C, D]
            self.linear_mean = nn.Parameter(torch.zeros(n))  # [n*C]
            self.register_buffer("linear_scale", torch.ones(()))
            self.token_gain = nn.Parameter(torch.ones(dim))  # on the transformer's part of the token
        init_weights(self)
        if linear_path:
            nn.init.trunc_normal_(self.linear_basis, std=0.02)
        nn.init.trunc_normal_(self.z_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.xy_embed.weight, std=0.02)
        for block in (*self.encoder_blocks, *self.decoder_blocks):  # init_weights reset LayerScale's neighbours only
            block.layer_scale1.lambda1.data.fill_(layerscale_init)
            block.layer_scale2.lambda1.data.fill_(layerscale_init)
        self._cache: dict = {}  # RoPE tables and residual carries per grid/device/dtype

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, feature_dim: int) -> "DeltaTok":
        return cls(
            feature_dim=feature_dim,
            dim=cfg.dim,
            encoder_depth=cfg.encoder_depth,
            decoder_depth=cfg.decoder_depth,
            num_heads=cfg.num_heads,
            mlp_hidden=cfg.mlp_hidden,
            swiglu=cfg.swiglu,
            qk_norm=cfg.qk_norm,
            gated_attn=cfg.gated_attn,
            layerscale_init=cfg.layerscale_init,
            rope_base=cfg.rope_base,
            decoder_stride=cfg.decoder_stride,
            encoder_stride=cfg.encoder_stride,
            linear_path=cfg.linear_path,
            linear_grid=cfg.linear_grid,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it computes in: inputs are cast to it and outputs back to the inputs' dtype
        (a bfloat16 tokenizer sits between float32 VFM features and predictor)."""
        return self.norm.weight.dtype  # a LayerNorm: stays float when the linear layers are quantised

    @property
    def token_dim(self) -> int:
        return self.dim

    def _rope(self, grid: tuple[int, int], device, dtype, repeats: int = 1):
        key = (grid, str(device), dtype, repeats)
        if key not in self._cache:
            cos, sin = rope_2d(grid, self.head_dim, self.rope_base, device)
            self._cache[key] = (cos.repeat(repeats, 1).to(dtype), sin.repeat(repeats, 1).to(dtype))
        return self._cache[key]

    def encode(self, prev: torch.Tensor, cur: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """prev, cur [B, N, C] (N = gh*gw) -> delta token z [B, D]."""
        _check_grid(prev, grid)
        _check_grid(cur, grid)
        out_dtype, prev, cur = prev.dtype, prev.to(self.dtype), cur.to(self.dtype)
        prev, coarse_grid = _pool(prev, grid, self.encoder_stride)
        cur, _ = _pool(cur, grid, self.encoder_stride)
        x = torch.cat(
            (
                self.z_embed.weight.expand(prev.shape[0], 1, -1),
                self.feature_in(prev) + self.xy_embed.weight[0],
                self.feature_in(cur) + self.xy_embed.weight[1],
            ),
            dim=1,
        )
        rope = self._rope(coarse_grid, x.device, x.dtype, repeats=2)  # both frames share positions
        for block in self.encoder_blocks:
            x = block(x, rope=rope)
        z = self.norm(x[:, 0])
        if self.linear_grid is not None:
            change = _resample(cur - prev, coarse_grid, self.linear_grid)  # [B, n, C]
            code = torch.matmul(self._basis_t(), (change.flatten(1) - self.linear_mean).T).T
            z = z * self.token_gain + code * self.linear_scale
        return z.to(out_dtype)

    def decode(self, z: torch.Tensor, prev: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """z [B, D], prev [B, N, C] -> reconstructed current features [B, N, C]."""
        residual = self.decode_residual(z, self.pool_for_decode(prev, grid), grid)
        return prev + self.upsample_residual(residual, grid)

    def decode_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The (pooled) grid the decoder attends over for a feature grid ``grid``."""
        return _pooled_grid(grid, self.decoder_stride)

    def pool_for_decode(self, prev: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """prev [B, N, C] -> the decoder's view of it, [B, n, C] on :meth:`decode_grid`."""
        _check_grid(prev, grid)
        return _pool(prev, grid, self.decoder_stride)[0]

    def linear_residual(self, z: torch.Tensor) -> torch.Tensor | None:
        """The linear path's share of the decoded change for tokens z [B, D] -> [B, n, C] on
        ``linear_grid`` (None without a linear path). Its basis is the largest tensor of the codec
        (8 x 8 x 384 x 192 for the default) and its read dominates the product: a rollout decodes
        the tokens of all its steps through it in one call (:meth:`decode_residual`'s ``linear``)."""
        if self.linear_grid is None:
            return None
        linear = torch.addmm(self.linear_mean, z.to(self.dtype) / self.linear_scale, self._basis_t())
        return linear.view(z.shape[0], -1, self.feature_dim)

    def _basis_t(self) -> torch.Tensor:
        """The linear basis as [D, n*C]: while it trains, the parameter's transposed view; frozen,
        a transposed copy in its own memory, so that both products stream it row by row (0.55x
        the time for encode's 2 rows, 0.75x for decode's 24 tokens with the [n*C, D] layout on a
        CPU, bf16, bench). Re-made when the parameter changes."""
        basis = self.linear_basis
        if basis.requires_grad:
            return basis.T
        key = (basis.data_ptr(), basis._version, basis.dtype, basis.device)
        cached = self._cache.get("basis_t")
        if cached is None or cached[0] != key:
            cached = self._cache["basis_t"] = (key, basis.detach().T.contiguous())
        return cached[1]

    def decode_residual(self, z: torch.Tensor, coarse: torch.Tensor, grid: tuple[int, int],
                        linear: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder at its own grid: z [B, D] and the previous features pooled by
        :meth:`pool_for_decode` [B, n, C] -> the residual [B, n, C] that :meth:`decode` upsamples
        and adds to the previous features. ``grid`` is the full feature grid; ``linear``: z's
        :meth:`linear_residual` when already computed."""
        coarse_grid = self.decode_grid(grid)
        if coarse.ndim != 3 or coarse.shape[1] != coarse_grid[0] * coarse_grid[1]:
            raise ValueError(f"pooled features {tuple(coarse.shape)} do not match the decode grid {coarse_grid}")
        base = self.feature_in(coarse.to(self.dtype))
        x = torch.cat((z[:, None].to(base.dtype), base), dim=1)
        rope = self._rope(coarse_grid, x.device, x.dtype)
        for block in self.decoder_blocks:
            x = block(x, rope=rope)
        residual = self.feature_out(x[:, 1:] - base)
        if self.linear_grid is not None:
            linear = self.linear_residual(z) if linear is None else linear
            residual = residual + _resample(linear.to(residual.dtype), self.linear_grid, coarse_grid)
        return residual.to(coarse.dtype)

    def linear_change(self, prev: torch.Tensor, cur: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """What the linear path encodes: cur - prev [B, N, C] pooled as the encoder sees them and
        resampled to ``linear_grid`` -> [B, n, C]."""
        prev, coarse_grid = _pool(prev.to(self.dtype), grid, self.encoder_stride)
        cur, _ = _pool(cur.to(self.dtype), grid, self.encoder_stride)
        return _resample(cur - prev, coarse_grid, self.linear_grid)

    @torch.no_grad()
    def init_linear_path(self, changes: torch.Tensor) -> dict[str, float]:
        """Sets the linear path to the PCA code of ``changes`` [M, n, C] (feature changes of
        training pairs on ``linear_grid``): token = s V^T (change - mean), residual = mean + V z / s,
        with s making the token's RMS 1; the transformer's share of the token starts at zero.
        Returns the share of the changes' energy the code keeps."""
        if self.linear_grid is None:
            raise ValueError("init_linear_path needs linear_path: true")
        x = changes.flatten(1).double()
        mean = x.mean(0)
        q = min(self.dim, x.shape[0] - 1, x.shape[1])
        _, sv, v = torch.svd_lowrank(x - mean, q=q, niter=4)
        basis = torch.zeros(x.shape[1], self.dim, dtype=torch.float64)
        basis[:, :q] = v
        coded = (sv[:q] ** 2).sum() / ((x - mean) ** 2).sum()
        scale = 1.0 / float((sv[:q] ** 2).sum() / x.shape[0] / self.dim).__pow__(0.5)  # token RMS 1
        self.linear_basis.copy_(basis)
        self.linear_mean.copy_(mean)
        self.linear_scale.fill_(scale)
        self.token_gain.zero_()
        return {"energy_kept": float(coded), "token_scale": scale, "pairs": x.shape[0]}

    def upsample_residual(self, residual: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """residual [B, n, C'] on :meth:`decode_grid` -> [B, N, C'] on ``grid``; linear, so it
        commutes with any per-position linear map of the channels (e.g. the task heads)."""
        return _unpool(residual, self.decode_grid(grid), grid)

    def residual_carry(self, grid: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """M [n, n] with ``pool(prev + upsample(r)) == pool(prev) + M @ r``: pooling and bilinear
        upsampling are both linear, so a rollout can carry the decoder's pooled view from step to
        step at the coarse grid instead of re-pooling full-resolution features."""
        key = ("carry", tuple(grid), str(device), dtype)
        if key not in self._cache:
            coarse = self.decode_grid(grid)
            n = coarse[0] * coarse[1]
            basis = torch.eye(n, device=device, dtype=torch.float64)[None]  # channel j = unit residual at j
            carried = _pool(_unpool(basis, coarse, grid), grid, self.decoder_stride)[0][0]  # [n(pos), n(unit)]
            self._cache[key] = carried.to(dtype)
        return self._cache[key]

    def forward(self, prev: torch.Tensor, cur: torch.Tensor, grid: tuple[int, int]):
        """Reconstruction pass: returns (z [B, D], reconstruction [B, N, C])."""
        z = self.encode(prev, cur, grid)
        return z, self.decode(z, prev, grid)


def _resample(features: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """[B, gh*gw, C] on ``grid`` -> [B, th*tw, C] on ``target``: area-averaged when it shrinks,
    bilinear when it grows, identity when equal (the default's 8x8 linear path on its 8x8 grid)."""
    if tuple(grid) == tuple(target):
        return features
    b, _, c = features.shape
    maps = features.reshape(b, *grid, c).permute(0, 3, 1, 2)
    if target[0] <= grid[0] and target[1] <= grid[1]:
        out = F.adaptive_avg_pool2d(maps, target)
    else:
        out = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(b, target[0] * target[1], c)


def _check_grid(features: torch.Tensor, grid: tuple[int, int]) -> None:
    if features.ndim != 3 or features.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"features {tuple(features.shape)} do not match grid {grid} ([B, gh*gw, C] expected)")


def _pool(features: torch.Tensor, grid: tuple[int, int], stride: int):
    """[B, gh*gw, C] -> average-pooled [B, gh'*gw', C] and its grid (identity for stride 1)."""
    if stride == 1:
        return features, grid
    b, _, c = features.shape
    # [B, N, C] memory is a channels-last [B, C, gh, gw] map: pool it in place of a transposed copy.
    maps = features.reshape(b, *grid, c).permute(0, 3, 1, 2)
    if grid[0] % stride == 0 and grid[1] % stride == 0:  # plain pooling is ~5x faster on CPU
        pooled = F.avg_pool2d(maps, stride)
    else:
        pooled = F.adaptive_avg_pool2d(maps, _pooled_grid(grid, stride))
    coarse = tuple(pooled.shape[-2:])
    return pooled.permute(0, 2, 3, 1).reshape(b, coarse[0] * coarse[1], c), coarse


def _pooled_grid(grid: tuple[int, int], stride: int) -> tuple[int, int]:
    """The grid :func:`_pool` returns for ``grid`` and ``stride``."""
    if stride == 1:
        return tuple(grid)
    return max(1, grid[0] // stride), max(1, grid[1] // stride)


def _unpool(features: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """[B, gh*gw, C] on ``grid`` -> bilinearly upsampled [B, th*tw, C] on ``target``."""
    if grid == target:
        return features
    b, _, c = features.shape
    maps = features.reshape(b, *grid, c).permute(0, 3, 1, 2)  # channels-last view: ~3x faster upsampling
    up = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return up.permute(0, 2, 3, 1).reshape(b, target[0] * target[1], c)
