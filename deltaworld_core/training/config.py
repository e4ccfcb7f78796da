"""Training configuration: the YAML of ``python -m deltaworld_core.train`` validated into
:class:`TrainConfig` (``data:`` is :class:`~deltaworld_core.data.windows.DataConfig`).

A train YAML may ``extends: OTHER.yaml`` (relative to itself): the other file is loaded first and
this file's keys merged on top, so the stages of one recipe share one data section. Every key can
be overridden on the command line with dotted ``key.path=value`` pairs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (ConfigError, ModelConfig, apply_overrides, check_finite, check_ranges, from_dict, parse_override,
                      ranged, read_config_yaml, read_yaml_mapping, resolve_config_path)
from ..devices import DeviceError, check_device
from ..safe_yaml import quote
from ..threads import clamp_threads
from ..data.windows import DataConfig
from ..dense import DenseConfig
from .real_labels import RealLabelsConfig

STAGES = ("tokenizer", "world", "heads", "dense")


@dataclass
class OptimConfig:
    lr: float = ranged(3e-4, 0.0, 10.0, low_open=True)
    weight_decay: float = ranged(0.01, 0.0, 10.0)  # on Linear/Conv weights only
    betas: tuple[float, float] = (0.9, 0.999)  # each in [0, 1)
    warmup_steps: int = ranged(100, 0, 10**9)  # linear warm-up, then constant
    grad_clip: float = ranged(1.0, 0.0, 1e6)  # max global grad norm; 0 disables
    accumulate: int = 1  # micro-batches per step: each rank runs batch_size / (ranks x accumulate) samples at a time


@dataclass
class LossConfig:
    bom_k: int = 64  # world: noise queries per target (paper: 256)
    bom_beta: float = 0.1  # Smooth-L1 beta for scoring and the loss
    dense: str = "smooth_l1"  # "smooth_l1" | "mse"
    dense_beta: float = 1.0
    depth_weight: float = 0.1  # heads: depth L1 (metres) weight against segmentation CE


@dataclass
class TrainConfig:
    stage: str = "tokenizer"
    out: str = "runs/default"  # run folder: checkpoints, metrics, exported <part>.safetensors
    model_base: str | None = "default"  # named model config or YAML path; ``model`` is merged on top
    model: dict = field(default_factory=dict)  # ModelConfig keys (vfm/tokenizer/world/heads/forecast)
    dense: DenseConfig = field(default_factory=DenseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    real_labels: RealLabelsConfig = field(default_factory=RealLabelsConfig)  # heads: teacher-labelled real frames
    pretrained: str | None = None  # folder with earlier stages' exports (or a released DeltaTok file); None = ``out``
    init: str | None = None  # fine-tuning: the trained part starts here (folder/.safetensors/released file; init.py)
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes of the trained part kept fixed
    steps: int = 1000
    batch_size: int = 16  # global (the effective batch of one optimizer step), split across ranks and optim.accumulate
    seed: int = ranged(0, 0, 2**32 - 1)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "none"  # "none" | "bf16" (autocast; GPU)
    compile: bool = False
    threads: int = 0  # torch intra-op threads, 0 = torch's default
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    export_dtype: str = "float32"  # "float32" | "float16"

    # filled by load_train_config
    model_config: ModelConfig = field(default=None, repr=False)  # type: ignore[assignment]

    def validate(self) -> "TrainConfig":
        # NaN passes every `x < low` test and an infinite lr trains to NaN weights: numbers first
        check_finite("", self, skip=("model_config",))
        check_ranges("", self)
        check_ranges("optim", self.optim)
        if not all(0 <= b < 1 for b in self.optim.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {quote(self.optim.betas)}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {quote(self.stage)} is not one of {', '.join(STAGES)}")
        for key in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp: {quote(self.amp)} is not one of none, bf16")
        if self.export_dtype not in ("float32", "float16"):
            raise ConfigError(f"export_dtype: {quote(self.export_dtype)} is not one of float32, float16")
        if self.loss.dense not in ("smooth_l1", "mse"):
            raise ConfigError(f"loss.dense: {quote(self.loss.dense)} is not one of smooth_l1, mse")
        try:  # a device this machine lacks: one line now, not torch's traceback after the data is read
            check_device(self.device)
        except DeviceError as err:
            raise ConfigError(str(err)) from err
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        self.threads = clamp_threads(self.threads) if self.threads else 0
        if self.loss.bom_k < 1 or self.loss.bom_beta <= 0:
            raise ConfigError("loss.bom_k must be >= 1 and loss.bom_beta > 0")
        if not isinstance(self.optim.accumulate, int) or self.optim.accumulate < 1:
            raise ConfigError(f"optim.accumulate must be an integer >= 1, got {self.optim.accumulate!r}")
        if self.batch_size % self.optim.accumulate:
            raise ConfigError(f"batch_size {self.batch_size} must be divisible by optim.accumulate "
                              f"{self.optim.accumulate}")
        self.data.validate()
        self.dense.validate()
        self.real_labels.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("model_config")
        d["model"] = self.model_config.to_dict()
        return d


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A train YAML; ``extends: OTHER.yaml`` (relative to this file) is loaded first and this
    file's keys are merged on top, so stages share one data section."""
    if not path.is_file():
        raise ConfigError(f"train config not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular extends")
    data = read_config_yaml(path)  # bounded: size, alias expansion, nesting (deltaworld_core.safe_yaml)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _paths_from(path.parent, data)
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: extends must be a file name")
        data = _deep_merge(_read_yaml(path.parent / parent, seen + (path.resolve(),)), data)
    return data


# Keys naming files that a YAML resolves from its own folder (a command-line override from the
# working directory): the shipped configs name the shipped weights as ../weights/NAME
PATH_KEYS = ("init", "pretrained", "model_base")


def _paths_from(folder: Path, data: dict) -> None:
    """Relative ``init`` / ``pretrained`` (and a ``model_base`` that is a .yaml path) of a YAML in
    ``folder``, made absolute from ``folder`` in place, so the run does not depend on where it starts."""
    for key in PATH_KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        if key == "model_base" and Path(value).suffix not in (".yaml", ".yml"):
            continue  # a named model config (default, paper)
        data[key] = str((folder / value).resolve())


def load_train_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """YAML file + dotted overrides (``["optim.lr=1e-3", "model.world.depth=2"]`` or a dict)
    -> validated :class:`TrainConfig`. Raises :class:`ConfigError` naming the bad key."""
    data = _read_yaml(Path(path))
    if isinstance(overrides, dict):
        pairs = overrides
    else:
        pairs = dict(parse_override(o) for o in (overrides or []))
    data = apply_overrides(data, pairs)
    if "model_config" in data:
        raise ConfigError("unknown config key(s): model_config")
    if not isinstance(data.get("model", {}), dict):
        raise ConfigError("model: expected a mapping of model config keys (vfm/tokenizer/world/heads/forecast)")
    cfg = from_dict(TrainConfig, data)
    base: dict = {}
    if cfg.model_base:
        base_path = resolve_config_path(cfg.model_base)
        base = read_yaml_mapping(base_path)
    model = _deep_merge(base, cfg.model or {})
    model["weights"] = None  # training builds parts from scratch / ``pretrained``
    model.setdefault("name", Path(str(cfg.model_base or "custom")).stem)
    cfg.model_config = from_dict(ModelConfig, model, "model.").validate()
    return cfg.validate()
