"""Where a stage's weights start, and which of them stay fixed: fine-tuning from a run folder or
from the authors' release (:mod:`deltaworld_core.released`).

* ``init``: the trained part starts from these weights instead of random ones (step 0 only; a
  resumed run continues from its checkpoint). A folder (a run or weights folder: its
  ``<part>.safetensors``), a ``.safetensors`` file in our layout, or a file of the authors'
  release (``pytorch_model.bin`` / ``.pt`` / ``.pth``: DeltaTok for stage tokenizer, DeltaWorld
  for stage world), loaded strictly through :mod:`deltaworld_core.released`.
* ``pretrained``: where a later stage finds the frozen earlier parts (the world stage's
  tokenizer): a folder as always, or a released DeltaTok file.
* ``freeze``: parameter-name prefixes of the trained part kept fixed (``encoder_blocks``,
  ``decoder_blocks.0``, ``blocks.0`` ...); each must name at least one parameter.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..checkpoint import CheckpointError, load_state_strict, read_state
from ..config import ConfigError
from ..released import load_released_deltatok, load_released_deltaworld

PART_FILES = {"tokenizer": "tokenizer.safetensors", "world": "world.safetensors", "heads": "heads.safetensors",
              "dense": "dense.safetensors"}
RELEASED_PARTS = {"tokenizer": "DeltaTok", "world": "DeltaWorld"}


def is_released_file(path: Path) -> bool:
    """A file of the authors' release (anything but our ``.safetensors``)."""
    return path.is_file() and path.suffix != ".safetensors"


def load_part(part: str, module: nn.Module, source: str | Path) -> str:
    """Loads ``module`` (part ``tokenizer``/``world``/...) from ``source`` strictly; returns a
    description of what was loaded. Raises :class:`CheckpointError` naming the file."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / PART_FILES[part]
    if not path.exists():
        raise CheckpointError(f"no {part} weights at {path}")
    if is_released_file(path):
        if part not in RELEASED_PARTS:
            raise CheckpointError(f"{path}: the authors' release has no {part} part to start from")
        (load_released_deltatok if part == "tokenizer" else load_released_deltaworld)(module, path)
        return f"{path} (the authors' {RELEASED_PARTS[part]} release)"
    load_state_strict(module, read_state(path), source=str(path))
    return str(path)


def freeze(net: nn.Module, prefixes: list[str]) -> int:
    """Keeps the parameters whose names start with one of ``prefixes`` fixed; returns how many
    values that fixes. :class:`ConfigError` for a prefix that names nothing."""
    names = [n for n, _ in net.named_parameters()]
    fixed = 0
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"freeze: {prefix!r} names no parameter of the trained part "
                              f"(its parts: {', '.join(tops)})")
    for name, p in net.named_parameters():
        if any(name == pre or name.startswith(pre.rstrip(".") + ".") for pre in prefixes):
            p.requires_grad_(False)
            fixed += p.numel()
    if not any(p.requires_grad for p in net.parameters()):
        raise ConfigError("freeze: every parameter of the trained part is frozen: nothing would train")
    return fixed
