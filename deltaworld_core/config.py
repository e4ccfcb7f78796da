"""Model and forecast configuration: YAML files validated into dataclasses.

A config names the VFM, the DeltaTok codec, the DeltaWorld predictor, the task heads and the
streaming-forecast settings. Named configs ship in ``deltaworld_core/configs/NAME.yaml``;
any other YAML path works the same. Every key can be overridden with a dotted path
(``{"forecast.k": 16}`` or ``forecast.k=16`` on a command line).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .safe_yaml import MAX_CONFIG_BYTES, YAMLBoundsError, clip, load_yaml, quote, read_yaml_file  # noqa: F401 (MAX_CONFIG_BYTES: re-exported)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# K x horizon x output pixels: the forecast's maps (and the class logits upsampled to build them,
# ~4 bytes per class per pixel) must fit in memory. The paper config uses 20 x 3 x 512 x 512 = 15.7M.
MAX_MAP_PIXELS = 1 << 26


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def ranged(default: Any, low: float, high: float, low_open: bool = False) -> Any:
    """A dataclass field whose value (each element, for a pair like ``image_size``) must lie in
    ``[low, high]`` (``(low, high]`` with ``low_open``) and be finite; checked by ``validate``."""
    return field(default=default, metadata={"range": (low, high, low_open)})


def _interval(low: float, high: float, low_open: bool) -> str:
    fmt = lambda v: str(int(v)) if float(v).is_integer() else f"{v:g}"  # noqa: E731
    return f"{'(' if low_open else '['}{fmt(low)}, {fmt(high)}]"


def check_ranges(prefix: str, obj: Any) -> None:
    """Every ``ranged`` field of ``obj`` within its range: one line naming the key otherwise."""
    for f in dataclasses.fields(obj):
        if "range" not in f.metadata:
            continue
        low, high, low_open = f.metadata["range"]
        value = getattr(obj, f.name)
        for v in (value if isinstance(value, (tuple, list)) else () if value is None else (value,)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
                (v > low if low_open else v >= low) and v <= high)
            if not ok:
                key = f"{prefix}.{f.name}" if prefix else f.name
                raise ConfigError(f"{key} must be in {_interval(low, high, low_open)}, got {quote(value)}")


def check_finite(key: str, value: Any, skip: tuple[str, ...] = ()) -> None:
    """Every number anywhere in ``value`` (a dataclass, mapping or list, walked whole) is finite:
    a NaN or infinity is one :class:`ConfigError` naming its key (``optim.betas[0] must be a finite
    number, got nan``). Fields named in ``skip`` are left out (ones validated elsewhere)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key or 'value'} must be a finite number, got {quote(value)}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.name not in skip:
                check_finite(f"{key}.{f.name}" if key else f.name, getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite(f"{key}.{clip(str(k), 60)}" if key else clip(str(k), 60), v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(f"{key}[{i}]", v)


def numeric_ranges() -> dict[str, str]:
    """Every numeric key of a model config and its allowed interval, e.g. ``{"forecast.k": "[1, 256]"}``
    (the table in README's "Limits and failure behaviour")."""
    out = {}
    for section, cls in typing.get_type_hints(ModelConfig).items():
        if dataclasses.is_dataclass(cls):
            out.update({f"{section}.{f.name}": _interval(*f.metadata["range"])
                        for f in dataclasses.fields(cls) if "range" in f.metadata})
    return out


@dataclass
class VFMConfig:
    """The frozen vision foundation model (a DINO-family ViT)."""

    family: str = "dinov2"  # "dinov2" (patch 14, learned pos-embed) | "dinov3" (patch 16, RoPE)
    weights: str = "embedded"  # "embedded" | "random" | path to a Meta .pth or HF checkpoint
    patch_size: int = ranged(14, 1, 64)
    embed_dim: int = ranged(384, 1, 8192)
    depth: int = ranged(12, 1, 96)
    num_heads: int = ranged(6, 1, 128)
    mlp_ratio: float = ranged(4.0, 0.0, 16.0, low_open=True)
    num_registers: int = ranged(0, 0, 64)
    ffn: str = "mlp"  # "mlp" | "swiglu"
    image_size: tuple[int, int] = ranged((224, 224), 1, 2048)  # (h, w) the camera frame is resized to
    backend: str = "torch"  # "torch" | "onnxruntime"
    # "auto" | "fp32" | "bf16" | "int8" (deltaworld_core/vfm_runtime.py, docs/vfm-precision.md): auto =
    # bf16 on CPUs with AVX512-BF16/AMX, else fp32; fp32 = the float32 backbone on any device.
    # fp32 by default: a config opts in (the embedded default does), so none changes unasked.
    precision: str = "fp32"

    def validate(self) -> None:
        _choice("vfm.family", self.family, ("dinov2", "dinov3"))
        _choice("vfm.ffn", self.ffn, ("mlp", "swiglu"))
        _choice("vfm.backend", self.backend, ("torch", "onnxruntime"))
        _choice("vfm.precision", self.precision, ("auto", "fp32", "bf16", "int8"))
        check_ranges("vfm", self)
        if self.embed_dim % self.num_heads:
            raise ConfigError("vfm.embed_dim must be divisible by vfm.num_heads")
        _image_size("vfm.image_size", self.image_size, self.patch_size)


@dataclass
class TokenizerConfig:
    """DeltaTok: one continuous token per frame, encoding the change from the previous frame."""

    dim: int = ranged(384, 4, 8192)  # transformer width; token width too. Projections in/out when != VFM width.
    encoder_depth: int = ranged(12, 1, 96)
    decoder_depth: int = ranged(12, 1, 96)
    num_heads: int = ranged(12, 1, 128)
    mlp_hidden: int = ranged(2048, 1, 32768)
    swiglu: bool = True
    qk_norm: bool = True
    gated_attn: bool = True
    layerscale_init: float = ranged(1e-5, 0.0, 1.0)
    rope_base: float = ranged(100.0, 0.0, 1e6, low_open=True)
    # The decoder attends over the previous frame's grid pooled by this factor and predicts a
    # residual that is upsampled back onto the full-resolution previous features (CPU lever).
    decoder_stride: int = ranged(1, 1, 16)
    # The encoder sees both frames pooled by this factor: one token per frame either way, at a
    # fraction of the cost of a pair (CPU lever; the release uses 1).
    encoder_stride: int = ranged(1, 1, 16)
    # A linear path beside the transformers: the token gets a linear map of the feature change
    # (both frames resampled to linear_grid) and the decoder's residual a linear map of the token,
    # both initialised by PCA of training changes (measured: a 192-d PCA code of 8x8 changes alone
    # reached 0.33-0.74x copy-last on held-out videos where the transformer-only codec stayed ~1x).
    linear_path: bool = False
    linear_grid: tuple[int, int] = ranged((8, 8), 1, 64)

    def validate(self) -> None:
        check_ranges("tokenizer", self)
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 4:
            raise ConfigError("tokenizer.dim / tokenizer.num_heads must be a multiple of 4 (2-D RoPE)")


@dataclass
class WorldConfig:
    """DeltaWorld: cross-attention-only predictor of future delta tokens."""

    dim: int = ranged(384, 1, 8192)
    depth: int = ranged(12, 1, 96)
    num_heads: int = ranged(12, 1, 128)
    mlp_ratio: float = ranged(4.0, 0.0, 16.0, low_open=True)
    layerscale_init: float = ranged(1e-5, 0.0, 1.0)
    # 1-D RoPE over time in seconds: all but `rope_unrotated` dims of each head rotate, at
    # frequencies log-spaced from rope_min_hz to rope_max_hz (the release's layout: 60 of 64, 0.01-100 Hz).
    rope_unrotated: int = ranged(4, 0, 8192)
    rope_min_hz: float = ranged(0.01, 0.0, 1e4, low_open=True)
    rope_max_hz: float = ranged(100.0, 0.0, 1e4, low_open=True)
    noise_std: float = ranged(0.02, 0.0, 10.0, low_open=True)
    deterministic: bool = False  # learned query instead of noise (discriminative ablation)

    def validate(self) -> None:
        check_ranges("world", self)
        if self.dim % self.num_heads or (self.dim // self.num_heads - self.rope_unrotated) % 2:
            raise ConfigError("world.dim / world.num_heads - world.rope_unrotated must be even")
        if not 0 <= self.rope_unrotated <= self.dim // self.num_heads:
            raise ConfigError("world.rope_unrotated must be in [0, head dim]")
        if self.rope_min_hz > self.rope_max_hz:
            raise ConfigError("world.rope_min_hz must be <= world.rope_max_hz")


@dataclass
class HeadsConfig:
    """Linear probes on one frame's features."""

    class_names: list[str] = field(default_factory=lambda: ["background"])
    depth_bins: int = ranged(256, 1, 1024)
    min_depth: float = ranged(1e-3, 0.0, 1e4, low_open=True)  # metres
    max_depth: float = ranged(80.0, 0.0, 1e4, low_open=True)

    def validate(self) -> None:
        if not self.class_names or not all(isinstance(n, str) and n for n in self.class_names):
            raise ConfigError("heads.class_names must be a non-empty list of names")
        if len(self.class_names) > 255:
            raise ConfigError("heads.class_names: at most 255 classes (class ids are uint8, 255 = ignore)")
        check_ranges("heads", self)
        if self.min_depth >= self.max_depth:
            raise ConfigError("heads.min_depth must be < heads.max_depth")


@dataclass
class ForecastConfig:
    """Streaming forecast settings."""

    context: int = ranged(4, 1, 64)  # frames of context: the oldest as a whole-frame token, then deltas
    horizon: int = ranged(3, 1, 64)  # future steps
    k: int = ranged(8, 1, 256)  # hypotheses sampled per step
    step_s: float = ranged(0.2, 0.0, 60.0, low_open=True)  # seconds between target frames
    max_gap_s: float = ranged(1.0, 0.0, 3600.0, low_open=True)  # a larger gap between frames resets the buffer
    # (h, w) of the semantic/depth maps; None = VFM input
    output_size: tuple[int, int] | None = ranged(None, 1, 2048)
    seed: int = ranged(0, 0, 2**63 - 1)
    # Calibration of the K hypotheses, both fitted on whole calibration videos that no training
    # stage saw (`python -m deltaworld_core.calibrate`, README): their deviations from their mean
    # are scaled by `spread` (1 = as sampled), their mean change from the last frame by
    # `mean_scale` (1 = as predicted; < 1 = toward persistence, as far as the predictor's skill
    # on unseen video warrants)
    spread: float = ranged(1.0, 0.0, 16.0)
    mean_scale: float = ranged(1.0, 0.0, 4.0)
    # "samples": spread x the deviations as sampled; "last_change": each forecast's first-step
    # spread is `spread` x the RMS of the last observed change (per step), so it follows how much
    # the scene is changing (the predictor's own spread barely does); needs context >= 2
    spread_from: str = "samples"
    # how the change's RMS grows with the time gap, RMS ~ gap ** change_growth (0.5 = random walk):
    # last_change brings the last change to one step with it; calibrate fits it from copy-last's
    # error at 1..horizon steps of the calibration videos
    change_growth: float = ranged(0.5, 0.0, 2.0)
    # "int8": dynamic int8 linear layers in DeltaTok/DeltaWorld (CPU only); "bf16": DeltaTok in
    # bfloat16 (CPUs with AVX512-BF16/AMX, or GPUs), DeltaWorld and heads in the model dtype;
    # "auto": bf16 where the device computes bfloat16 natively, else none (an AVX2-only CPU emulates
    # bfloat16: a step ~3.5x slower there, results/bench_cpu_avx2_quantize_bf16.json). Resolved by
    # forecaster.resolve_quantize
    quantize: str = "none"
    # How a camera frame becomes the VFM's input (deltaworld_core/geometry.py): "squash" (the whole
    # frame resized to vfm.image_size, aspect not kept), "two_squares" (as the release trains and
    # evaluates: short side to the model size, aspect kept, two overlapping windows of the model's
    # shape for a wide frame, their maps blended back over the camera's full view at its aspect),
    # "center_crop" (one window from the centre; the maps cover that region, Forecast.region)
    geometry: str = "squash"
    # "frames": the context is the newest `context` frames the forecaster was given, each encoded
    # against the one before; "step": each new frame is encoded against the kept frame nearest
    # step_s earlier, so the context is spaced step_s apart (as the release's models were trained
    # and evaluated) whatever the camera rate, while a forecast still comes with every frame
    context_spacing: str = "frames"
    # Decode all K hypotheses (the summaries use all of them) but publish the maps of the first
    # publish_k only (None = K; more than K publishes K, so a node's `k` below it stays valid):
    # the message shrinks with it
    publish_k: int | None = ranged(None, 1, 256)
    # (h, w) the summaries (mode, agreement, depth mean/std over all K) are computed at before they
    # are upsampled to the published size; None = the published size
    summary_size: tuple[int, int] | None = ranged(None, 1, 2048)
    # On CUDA only (the CPU keeps `quantize`): "bf16" runs as the release validates, the VFM under
    # bfloat16 autocast, DeltaTok in bfloat16 and the remaining float32 matmuls in TF32; "fp32"
    # keeps `quantize`'s choice
    cuda_precision: str = "fp32"
    # On CUDA only: the fixed-shape parts of a streaming step (predictor and decoder calls) compiled
    # with torch.compile(mode="reduce-overhead"), i.e. replayed as CUDA graphs; ignored on CPU
    cuda_graphs: bool = False
    # On a CPU with threads >= 2: true runs a stream's frames in two stages on two threads, the VFM
    # of the next frame beside the encode/predict/decode/heads of the current one, each stage with
    # threads // 2 kernel threads; false in one stage with every thread; null (the default) measures
    # both at start and keeps the faster (deltaworld_core/stages.py). Latency per frame is unchanged
    pipeline: bool | None = None

    def validate(self) -> None:
        check_ranges("forecast", self)
        _choice("forecast.quantize", self.quantize, ("none", "int8", "bf16", "auto"))
        _choice("forecast.spread_from", self.spread_from, ("samples", "last_change"))
        _choice("forecast.geometry", self.geometry, ("squash", "two_squares", "center_crop"))
        _choice("forecast.context_spacing", self.context_spacing, ("frames", "step"))
        _choice("forecast.cuda_precision", self.cuda_precision, ("fp32", "bf16"))
        if self.output_size is not None:
            _image_size("forecast.output_size", self.output_size, 1)
        if self.summary_size is not None:
            _image_size("forecast.summary_size", self.summary_size, 1)


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`~deltaworld_core.forecaster.Forecaster`."""

    name: str = "custom"
    vfm: VFMConfig = field(default_factory=VFMConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    # Folder with tokenizer/world/heads .safetensors (relative paths are relative to the config
    # file); None runs untrained (random) codec, predictor and heads.
    weights: str | None = None

    def validate(self) -> "ModelConfig":
        for part in (self.vfm, self.tokenizer, self.world, self.heads, self.forecast):
            part.validate()
        h, w = self.forecast.output_size or self.vfm.image_size
        maps = self.forecast.k * self.forecast.horizon * h * w
        if maps > MAX_MAP_PIXELS:
            raise ConfigError(f"forecast.k x forecast.horizon x output pixels = {maps:,} exceeds {MAX_MAP_PIXELS:,} "
                              "(the forecast's maps would not fit in memory): lower k, horizon or output_size")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def weights_dir(self) -> Path | None:
        return None if self.weights is None else Path(self.weights)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {quote(value)} is not one of {', '.join(allowed)}")


def _image_size(key: str, size: Any, multiple: int) -> None:
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"{key} must be [height, width] of positive ints, got {quote(size)}")
    if any(s % multiple for s in size):
        raise ConfigError(f"{key} {list(size)} must be multiples of the patch size {multiple}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks ``value`` against a dataclass field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {quote(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {quote(value)}")
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {quote(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {quote(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {quote(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {quote(value)}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        shown = ", ".join(clip(prefix + str(k), 60) for k in unknown[:8])
        more = f", ... ({len(unknown)} in all)" if len(unknown) > 8 else ""
        raise ConfigError(f"unknown config key(s): {shown}{more}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, value, hint)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """``"forecast.k=16"`` -> ``("forecast.k", 16)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {quote(text)} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), load_yaml(raw)
    except YAMLBoundsError as err:
        raise ConfigError(f"override {clip(key.strip(), 60)}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"override {clip(key.strip(), 60)}: invalid YAML: {_yaml_problem(err)}") from err


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sets dotted keys in a nested dict (in place) and returns it."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"override {quote(dotted)}: empty key part")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {clip(dotted)}: {clip(part)} is not a section")
        node[parts[-1]] = value
    return data


def resolve_config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    named = CONFIG_DIR / f"{name_or_path}.yaml"
    if not named.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown config {quote(str(name_or_path))}; named configs: {', '.join(names)}")
    return named


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` ({} for an empty file); :class:`ConfigError` in one line for a
    file too large to be a config, not UTF-8, not valid YAML, whose aliases expand beyond a config's
    size (:mod:`deltaworld_core.safe_yaml`), or whose top level is not a mapping."""
    data = read_config_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (vfm:, tokenizer:, world:, heads:, "
                          f"forecast:, weights:), got a {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message in one line, bounded (it quotes the offending line)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def read_config_yaml(path: Path) -> Any:
    """The YAML value of a config file through the bounded reader; every failure is one
    :class:`ConfigError` naming the file."""
    try:
        return read_yaml_file(path)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start})") from err
    except YAMLBoundsError as err:
        raise ConfigError(f"{path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(err)}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from err


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """Loads a named config or YAML file, applies dotted overrides and validates."""
    path = resolve_config_path(name_or_path)
    data = read_yaml_mapping(path)
    data = apply_overrides(data, dict(overrides or {}))
    data.setdefault("name", path.stem)
    cfg = from_dict(ModelConfig, data)
    if cfg.weights is not None and not Path(cfg.weights).is_absolute():
        cfg.weights = str((path.parent / cfg.weights).resolve())
    return cfg.validate()
