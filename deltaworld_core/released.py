"""Loading the authors' released checkpoints (amazon-far/deltatok, Hugging Face Amazon-FAR/*) into our modules.

The release ships ``pytorch_model.bin`` files (model weights only, ``torch.load(weights_only=True)``
safe). This module maps their parameter names and shapes onto :class:`~deltaworld_core.deltatok.DeltaTok`,
:class:`~deltaworld_core.world.DeltaWorld` and :class:`~deltaworld_core.heads.TaskHeads`, then loads
strictly: every key is accounted for, every shape checked, and a mismatch raises
:class:`~deltaworld_core.checkpoint.CheckpointError` naming the keys *as the release spells them*.

What was verified, and how
---------------------------
The loaders below were compared with the release's public model code (amazon-far/deltatok at its
HEAD, every parameter random, paper sizes, fp32, eval): all three parts load strictly, and our
modules agree with the release's: DeltaTok to 1e-6, the heads to 1e-5, the predictor to about 3e-5
in float32, not exactly. Both build the time RoPE's inverse
frequencies in float32 (:func:`~deltaworld_core.layers.rope_time`), but the release forms the
angles ``2*pi * t * inv_freq`` in float32 while we form them in the times' precision (float64 for
streams), so the angles agree to float32 rounding only. Not verified against the real released
files: they cannot be downloaded here.

Files. The released ``pytorch_model.bin`` files hold model weights only (a flat state dict; the
release's README says so). What the release's loader does, read in ``training/base.py`` at its HEAD
e1ec9b5: ``load_sd`` takes the ``state_dict`` entry of a checkpoint if there is one, then matches
keys by name exactly as they are stored: a key the module lacks is skipped without a word, a shape
mismatch or a trainable parameter left unfilled is an error; torch.compile's wrapper is unwrapped
on the module (``getattr(module, "_orig_mod", module)``), not in the keys. Its ``on_save_checkpoint``
stores the network's own names (no ``network.`` or ``_orig_mod.`` prefix) for the submodules that
have trainable parameters. (Its first commits, 24a12a6 and 1d7b20c, compared keys with ``network.``
and ``_orig_mod.`` removed (``_canonicalize``), unwrapped nested head files (``_extract_head_sd``)
and loaded heads with ``allow_unmapped=True``; none of these exists at HEAD.)
:func:`read_released` takes the ``state_dict`` (or ``model`` / ``module``) entry, of a file and of an
in-memory dict alike, and removes ``network.`` and ``_orig_mod.`` wherever they occur. The release's
files carry neither, so this changes nothing for them; it lets a state dict of a Lightning module or
of a compiled network, saved by other code, load too. It also drops parts we never load from these
files, should a file carry them (the DINOv3 ``backbone.*``, the recomputed ``rope_embeddings.*``
buffer, and inside a DeltaWorld file the frozen ``tokenizer.*``).

DeltaTok (``models/deltatok.py``, paper config ``configs/deltatok_vitb_dinov3_vitb_kinetics.yaml``):
width D = the backbone width (768), blocks are Hugging Face ``DINOv3ViTLayer`` with SwiGLU
(intermediate ``2 * 3072 // 3 = 2048``), so per block ``i`` of ``encoder_blocks`` / ``decoder_blocks``::

    norm1.{weight,bias} [D]                     norm2.{weight,bias} [D]
    attention.q_proj.{weight [D,D], bias [D]}   attention.k_proj.weight [D,D]   (HF key_bias=False)
    attention.v_proj.{weight,bias}              attention.o_proj.{weight,bias}
    attention.q_norm.weight [D/h]               attention.k_norm.weight [D/h]   (models/qk_norm.py:
                                                LayerNorm(head_dim, bias=False), applied after RoPE)
    attention.attn_gate.{weight [h,D], bias [h]}  (models/gated_attn.py)
    layer_scale1.lambda1 [D]                    layer_scale2.lambda1 [D]
    mlp.{gate_proj,up_proj}.{weight [2048,D], bias [2048]}   mlp.down_proj.{weight [D,2048], bias [D]}

plus ``z_embed.weight [1,D]``, ``xy_embed.weight [2,D]`` and ``norm.{weight,bias} [D]`` (``use_delta=True``;
the non-delta ablation's ``decoder_norm`` / ``decoder_head`` are not part of the paper model).
Mapping onto ours: identity, except our per-head QK LayerNorms carry a bias the release lacks; it is
filled with zeros, which is exact (LayerNorm without bias == LayerNorm with zero bias). Keys under
any other name (e.g. ``q_norm_prerope``, which appears in forks but in no commit of the release)
are refused by name.

DeltaWorld (``models/deltaworld.py``, ``models/predictor.py``, ``models/world.py``): the predictor is the
submodule ``predictor``; per block ``i`` of ``predictor.blocks`` (width P = 768, MLP 4P, GELU)::

    norm1, norm2 (LayerNorm [P])                layer_scale1.lambda1, layer_scale2.lambda1 [P]
    attention.q_proj.{weight [P,P], bias [P]}
    attention.kv_proj.{weight [2P,D], bias [2P]}   (fused: keys = first P rows, values = last P)
    attention.out_proj.{weight [P,P], bias [P]}
    mlp.up_proj.{weight [4P,P], bias}           mlp.down_proj.{weight [P,4P], bias}

then ``predictor.norm [P]`` and ``predictor.head.{weight [D,P], bias [D]}``; ``q_embed.weight [1,P]`` only
for the deterministic (no best-of-many) ablation. The file may also carry ``tokenizer.*`` (the frozen
DeltaTok, loaded separately from its own file) which is dropped.

Layout: our ``DeltaWorld`` is built like the release's predictor, so the mapping above loads strictly
with no gaps: cross-attention keys/values are projected from the raw context tokens (no context
LayerNorm; ``context_in`` is ``nn.Identity`` because token width == predictor width, and a
configuration where they differ is refused, since the release has no context projection), and the key
projection has a bias (``kv_proj.bias[:P]``). Renames: ``predictor.*`` -> ours without the prefix,
``kv_proj`` -> ``k_proj`` / ``v_proj`` (weight and bias halves), ``out_proj`` -> ``o_proj``,
``q_embed.weight`` -> ``query``. RoPE is not a parameter, so the key mapping cannot check it; it is
the release's predictor code's: the first ``head_dim - 4`` dims of each head rotated
(``rope_axis_sizes=(60,)``, ``rope_unrotated_size=4``) in rotate-half pairs (dim i with dim i + 30),
``inv_freq = 1 / 10 ** linspace(-2, 2, 30)`` built in float32, i.e. 100 .. 0.01 cycles per second
(``world.rope_unrotated``, ``world.rope_min_hz``, ``world.rope_max_hz``), angles ``2*pi * t * inv_freq``
with ``t`` in seconds (the comparison above confirms the ``2*pi``). We form the angles in the
times' precision (float64 for streams), which matches the release's float32 angles to float32
rounding. A warning is logged when the configured RoPE differs from the release's.

Task heads (``models/task_heads.py``): ``SegHead``/``DepthHead`` are ``bn`` (BatchNorm2d over D:
weight, bias, running_mean, running_var, num_batches_tracked) and ``head`` (Conv2d 1x1: weight
[C,D,1,1], bias [C]); C = 124 (VSPW), 19 (Cityscapes), 256 depth bins (KITTI, 1e-3..80 m). Our
``conv`` is their ``head``. The release's ``load_sd`` skips keys a head lacks (at HEAD for every part;
its first commits passed ``allow_unmapped=True`` for the heads); we unwrap containers as it does
but report extra keys unless ``extra_ok=True``. (Behaviour note: the release's depth head turns logits into weights with
``relu(logits) + 0.1`` normalised to sum 1, not a softmax; our ``DepthHead`` does the same.)

CLI::

    python -m deltaworld_core.released convert --deltatok PATH --deltaworld PATH \\
        --seg-head PATH --depth-head PATH --out DIR [--config paper] [key.path=value ...]
    python -m deltaworld_core.released check --part deltatok PATH [--config paper] [key.path=value ...]

(``--set KEY=VALUE`` is the older spelling of an override and still works.) Bad input is one line
on stderr and exit status 2; ``check`` exits 1 when the file does not match.

``convert`` writes our ``tokenizer.safetensors`` / ``world.safetensors`` / ``heads.safetensors``
for ``Forecaster.from_config(config, weights=DIR)``; the heads file records its class names in its
metadata (``class_names``, JSON), which must match ``heads.class_names`` of the config used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .cli import add_overrides_argument, parse_overrides, run_cli
from .checkpoint import CheckpointError, load_state_strict, mismatch_report, read_state, save_state
from .config import ModelConfig, load_config
from .data.datasets import CITYSCAPES_CLASSES  # the release's 19-class heads are Cityscapes'
from .forecaster import WEIGHT_FILES, build_models

log = logging.getLogger(__name__)

# Removed wherever they occur. The release's files at its HEAD carry neither (its first commits'
# loader removed both as well); a Lightning module's (network.) or a compiled network's (_orig_mod.)
# state dict saved by other code does.
_WRAPPERS = ("_orig_mod.", "network.")
# Frozen or recomputed parts that the release may store and we never load from these files.
_DROPPED_PREFIXES = ("backbone.", "rope_embeddings.")
_RELEASE_UNROTATED = 4  # predictor rope_unrotated_size in the release
_RELEASE_ROPE_HZ = (0.01, 100.0)  # inv_freq = 1 / 10 ** linspace(-2, 2, 30) cycles per second


State = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Reading


def _extract_tensors(obj: Any) -> State | None:
    """A flat {name: tensor} dict from a loaded object: unwraps containers, ignores non-tensor entries."""
    while isinstance(obj, dict):
        inner = next((obj[c] for c in ("state_dict", "model", "module") if isinstance(obj.get(c), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    for value in obj.values():
        found = _extract_tensors(value)
        if found:
            return found
    return None


def read_released(source: str | Path | Mapping[str, Any]) -> tuple[State, str]:
    """Reads a released file (.bin/.pth with ``weights_only=True``, or .safetensors), or takes an
    in-memory dict; either way a ``{"state_dict": ...}`` (``model``, ``module``) container is
    unwrapped and entries that are not tensors are left out. Returns the tensors with wrapper
    prefixes removed, and a name for messages."""
    if isinstance(source, Mapping):
        name = "state dict"
        # unwrapped as a file's contents are (a dict loaded with torch.load is the same object)
        state = _extract_tensors(dict(source))
        if not state:
            raise CheckpointError(f"{name}: no tensors found (expected {{name: tensor}} or {{'state_dict': {{...}}}})")
    else:
        name = str(source)
        try:
            state = read_state(source)
        except CheckpointError as err:
            if "not a state dict of tensors" not in str(err):
                raise
            state = _extract_tensors(torch.load(source, map_location="cpu", weights_only=True))
            if not state:
                raise CheckpointError(f"{source}: no tensors found in the checkpoint") from err
    out: State = {}
    for key, value in state.items():
        canon = key
        for wrapper in _WRAPPERS:
            canon = canon.replace(wrapper, "")
        if canon in out:
            raise CheckpointError(f"{name}: keys {key!r} and another both map to {canon!r}")
        out[canon] = value
    return out, name


def _subtree(state: State, prefix: str) -> State:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# Strict check with the release's names in the message


def _check_and_load(module: nn.Module, mapped: dict[str, tuple[torch.Tensor, str]], unmapped: list[str],
                    source: str, what: str, hints: Mapping[str, str] | None = None) -> None:
    """``mapped``: our key -> (tensor, release key it came from or a description); ``unmapped``:
    release keys that have no place in our module. Raises CheckpointError naming release keys."""
    expected = module.state_dict()
    unexpected = sorted(set(unmapped) | {rel for ours, (_, rel) in mapped.items() if ours not in expected})
    missing = sorted(set(expected) - set(mapped))
    mismatched = sorted(
        f"{rel}: checkpoint {tuple(t.shape)} vs {tuple(expected[ours].shape)} expected (our {ours})"
        for ours, (t, rel) in mapped.items()
        if ours in expected and t.shape != expected[ours].shape
    )
    if missing or unexpected or mismatched:
        report = mismatch_report(missing, unexpected, mismatched, limit=10)
        hint = ""
        for key, text in (hints or {}).items():
            if any(key in k for k in (*missing, *unexpected)):
                hint += f" ({text})"
        raise CheckpointError(f"{source} is not a released {what} checkpoint matching {type(module).__name__} "
                              f"(missing keys use our names; others the release's): " + report + hint)
    load_state_strict(module, {k: t for k, (t, _) in mapped.items()}, source=source)


# --------------------------------------------------------------------------------------------------
# DeltaTok


def deltatok_state(state: State, tokenizer: nn.Module) -> tuple[dict[str, tuple[torch.Tensor, str]], list[str]]:
    """Release DeltaTok keys (wrappers removed) -> our keys. Returns (mapped, unmapped release keys)."""
    own = ("encoder_blocks.", "decoder_blocks.", "z_embed.")
    if not any(k.startswith(own) for k in state) and any(k.startswith("tokenizer.") for k in state):
        state = _subtree(state, "tokenizer.")  # e.g. a DeltaWorld file that carries its tokenizer
    expected = tokenizer.state_dict()
    mapped: dict[str, tuple[torch.Tensor, str]] = {}
    for key, value in state.items():
        if key.startswith(_DROPPED_PREFIXES):
            continue
        mapped[key] = (value, key)
    for ours in expected:  # bias-free QK LayerNorm in the release == zero bias here (exact)
        if ours.endswith((".attention.q_norm.bias", ".attention.k_norm.bias")) and ours not in mapped:
            weight = ours[: -len("bias")] + "weight"
            if weight in mapped:
                mapped[ours] = (torch.zeros_like(mapped[weight][0]), f"(zero bias for {mapped[weight][1]})")
    return mapped, []


def load_released_deltatok(tokenizer: nn.Module, path: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Loads the released DeltaTok (Amazon-FAR/deltatok-kinetics ``pytorch_model.bin``) into ``tokenizer``."""
    state, source = read_released(path)
    mapped, unmapped = deltatok_state(state, tokenizer)
    _check_and_load(tokenizer, mapped, unmapped, source, "DeltaTok", hints={
        "decoder_head": "decoder_norm/decoder_head belong to the release's non-delta ablation, not the paper model",
        "feature_in": "the release's DeltaTok has the backbone's width; tokenizer.dim must equal vfm.embed_dim",
        "predictor.": "this looks like a DeltaWorld file; use load_released_deltaworld",
    })
    return tokenizer


# --------------------------------------------------------------------------------------------------
# DeltaWorld


def deltaworld_state(state: State, world: nn.Module) -> tuple[dict[str, tuple[torch.Tensor, str]], list[str]]:
    """Release DeltaWorld keys (wrappers removed) -> our keys. Returns (mapped, unmapped release keys)."""
    token_dim, dim = getattr(world, "token_dim", None), getattr(world, "dim", None)
    if token_dim != dim or not isinstance(getattr(world, "context_in", nn.Identity()), nn.Identity):
        raise CheckpointError(
            f"the released DeltaWorld has no context projection (its kv_proj reads the raw tokens), but this "
            f"DeltaWorld projects tokens of width {token_dim} to width {dim} (context_in); world.dim must "
            "equal the token width (vfm.embed_dim) to load released weights")
    state = {k: v for k, v in state.items() if not k.startswith(("tokenizer.", *_DROPPED_PREFIXES))}
    if any(k.startswith("predictor.") for k in state):
        prefix = "predictor."
    elif any(k.startswith("blocks.") and ".attention.kv_proj." in k for k in state):
        prefix = ""  # the predictor's state dict on its own
    else:
        raise CheckpointError("no predictor.* keys: this is not a released DeltaWorld checkpoint "
                              f"(first keys: {', '.join(sorted(state)[:5]) or 'none'})")
    mapped: dict[str, tuple[torch.Tensor, str]] = {}
    unmapped: list[str] = []
    renames = {"attention.out_proj.": "attention.o_proj."}
    for key, value in state.items():
        if key == "q_embed.weight":  # deterministic ablation's learned query [1, P]
            mapped["query"] = (value.reshape(-1) if value.dim() == 2 and value.shape[0] == 1 else value, key)
            continue
        if not key.startswith(prefix):
            unmapped.append(key)
            continue
        rel = key[len(prefix):]
        if ".attention.kv_proj." in rel:
            head, tail = rel.split(".attention.kv_proj.")
            if value.shape[0] % 2:
                mapped[f"{head}.attention.k_proj.{tail}"] = (value, f"{key} (odd first dim)")
                continue
            k, v = value.chunk(2, dim=0)
            mapped[f"{head}.attention.k_proj.{tail}"] = (k, f"{key}[:P]")
            mapped[f"{head}.attention.v_proj.{tail}"] = (v, f"{key}[P:]")
            continue
        for old, new in renames.items():
            rel = rel.replace(old, new)
        mapped[rel] = (value, key)

    return mapped, unmapped


def load_released_deltaworld(world: nn.Module, path: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Loads the released DeltaWorld predictor (Amazon-FAR/deltaworld-kinetics ``pytorch_model.bin``)
    strictly. Raises CheckpointError for missing/extra/mis-shaped keys, or when ``world`` has a context
    projection (token width != ``world.dim``), which the release does not have."""
    state, source = read_released(path)
    mapped, unmapped = deltaworld_state(state, world)
    _check_and_load(world, mapped, unmapped, source, "DeltaWorld", hints={
        "query": "q_embed (a learned query) exists only with world.deterministic=true, the ablation",
    })
    head_dim = world.dim // world.blocks[0].attention.num_heads if len(world.blocks) else 0
    rotated, hz = getattr(world, "rotated_dim", None), getattr(world, "rope_hz", None)
    if (rotated is not None and rotated != head_dim - _RELEASE_UNROTATED) or (
            hz is not None and tuple(map(float, hz)) != _RELEASE_ROPE_HZ):
        log.warning("the released predictor rotates %d of %d dims per head at %g..%g Hz; this DeltaWorld "
                    "rotates %s at %s Hz: predictions will differ from the release's",
                    head_dim - _RELEASE_UNROTATED, head_dim, *_RELEASE_ROPE_HZ, rotated, hz)
    return world


# --------------------------------------------------------------------------------------------------
# Task heads


def _head_module(heads: nn.Module, task: str) -> nn.Module:
    if task not in ("segmentation", "depth"):
        raise ValueError(f"task must be 'segmentation' or 'depth', not {task!r}")
    return getattr(heads, task, heads)  # TaskHeads, or a SegmentationHead/DepthHead itself


def head_state(state: State) -> tuple[dict[str, tuple[torch.Tensor, str]], list[str]]:
    """Release head keys ``bn.*``, ``head.*`` (under any one common prefix) -> ours ``bn.*``, ``conv.*``."""
    prefixes = set()
    for key in state:
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in ("bn", "head"):
            prefixes.add(".".join(parts[:-2]) + "." if len(parts) > 2 else "")
    prefix = prefixes.pop() if len(prefixes) == 1 else ""
    mapped: dict[str, tuple[torch.Tensor, str]] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        rel = key[len(prefix):] if key.startswith(prefix) else key
        if rel.startswith("bn."):
            mapped[rel] = (value, key)
        elif rel.startswith("head."):
            if rel == "head.weight" and value.dim() == 2:  # stored as a linear map: [C, D] -> [C, D, 1, 1]
                value = value[:, :, None, None]
            mapped["conv." + rel[len("head."):]] = (value, key)
        else:
            unmapped.append(key)
    return mapped, unmapped


def load_released_head(heads: nn.Module, path: str | Path | Mapping[str, torch.Tensor], task: str = "segmentation",
                       extra_ok: bool = False) -> nn.Module:
    """Loads a released linear head (seg-head-vspw / seg-head-cityscapes / depth-head-kitti) into
    ``heads.segmentation`` or ``heads.depth``. The class (or bin) count must match our head's."""
    module = _head_module(heads, task)
    state, source = read_released(path)
    mapped, unmapped = head_state(state)
    if extra_ok:
        unmapped = []
    _check_and_load(module, mapped, unmapped, source, f"{task} head")
    return heads


def released_head_outputs(path: str | Path | Mapping[str, torch.Tensor]) -> int:
    """The number of classes (or depth bins) of a released head file."""
    state, source = read_released(path)
    mapped, _ = head_state(state)
    if "conv.weight" not in mapped:
        raise CheckpointError(f"{source}: no head.weight found (keys: {', '.join(sorted(state)[:6])})")
    return int(mapped["conv.weight"][0].shape[0])


# --------------------------------------------------------------------------------------------------
# The release's names and shapes for a config


def released_key_shapes(cfg: ModelConfig, part: str, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """The names and shapes a released checkpoint has for ``cfg`` (the wrapper prefix ``network.`` and
    frozen ``backbone.*`` keys aside). ``part``: "deltatok", "deltaworld", "seg_head" or "depth_head"."""
    t, w, v = cfg.tokenizer, cfg.world, cfg.vfm
    shapes: dict[str, tuple[int, ...]] = {}
    if part == "deltatok":
        d, h = v.embed_dim, t.num_heads  # the release's DeltaTok runs at the backbone's width
        shapes["z_embed.weight"] = (1, d)
        shapes["xy_embed.weight"] = (2, d)
        for stack, depth in (("encoder_blocks", t.encoder_depth), ("decoder_blocks", t.decoder_depth)):
            for i in range(depth):
                p = f"{stack}.{i}."
                shapes.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,)})
                for name in ("q_proj", "v_proj", "o_proj"):
                    shapes.update({p + f"attention.{name}.weight": (d, d), p + f"attention.{name}.bias": (d,)})
                shapes[p + "attention.k_proj.weight"] = (d, d)
                if t.qk_norm:
                    shapes.update({p + "attention.q_norm.weight": (d // h,), p + "attention.k_norm.weight": (d // h,)})
                if t.gated_attn:
                    shapes.update({p + "attention.attn_gate.weight": (h, d), p + "attention.attn_gate.bias": (h,)})
                shapes[p + "layer_scale1.lambda1"] = (d,)
                shapes.update({p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
                hidden = t.mlp_hidden if t.swiglu else 4 * d
                for name in (("gate_proj", "up_proj") if t.swiglu else ("up_proj",)):
                    shapes.update({p + f"mlp.{name}.weight": (hidden, d), p + f"mlp.{name}.bias": (hidden,)})
                shapes.update({p + "mlp.down_proj.weight": (d, hidden), p + "mlp.down_proj.bias": (d,)})
                shapes[p + "layer_scale2.lambda1"] = (d,)
        shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
    elif part == "deltaworld":
        d, pw = v.embed_dim, w.dim  # token width (backbone width) and predictor width
        hidden = int(pw * w.mlp_ratio)
        for i in range(w.depth):
            p = f"predictor.blocks.{i}."
            shapes.update({p + "norm1.weight": (pw,), p + "norm1.bias": (pw,)})
            shapes.update({p + "attention.q_proj.weight": (pw, pw), p + "attention.q_proj.bias": (pw,)})
            shapes.update({p + "attention.kv_proj.weight": (2 * pw, d), p + "attention.kv_proj.bias": (2 * pw,)})
            shapes.update({p + "attention.out_proj.weight": (pw, pw), p + "attention.out_proj.bias": (pw,)})
            shapes[p + "layer_scale1.lambda1"] = (pw,)
            shapes.update({p + "norm2.weight": (pw,), p + "norm2.bias": (pw,)})
            shapes.update({p + "mlp.up_proj.weight": (hidden, pw), p + "mlp.up_proj.bias": (hidden,)})
            shapes.update({p + "mlp.down_proj.weight": (pw, hidden), p + "mlp.down_proj.bias": (pw,)})
            shapes[p + "layer_scale2.lambda1"] = (pw,)
        shapes.update({"predictor.norm.weight": (pw,), "predictor.norm.bias": (pw,)})
        shapes.update({"predictor.head.weight": (d, pw), "predictor.head.bias": (d,)})
        if w.deterministic:
            shapes["q_embed.weight"] = (1, pw)
    elif part in ("seg_head", "depth_head"):
        d = v.embed_dim
        out = num_classes or (len(cfg.heads.class_names) if part == "seg_head" else cfg.heads.depth_bins)
        shapes.update({"bn.weight": (d,), "bn.bias": (d,), "bn.running_mean": (d,), "bn.running_var": (d,),
                       "bn.num_batches_tracked": (), "head.weight": (out, d, 1, 1), "head.bias": (out,)})
    else:
        raise ValueError(f"part must be deltatok, deltaworld, seg_head or depth_head, not {part!r}")
    return shapes


def check_released_file(path: str | Path, cfg: ModelConfig, part: str) -> list[str]:
    """Differences between a released file and :func:`released_key_shapes` (empty when it matches)."""
    state, _ = read_released(path)
    state = {k: t for k, t in state.items() if not k.startswith(_DROPPED_PREFIXES)}
    if part == "deltaworld":
        state = {k: t for k, t in state.items() if not k.startswith("tokenizer.")}
    num = None
    if part in ("seg_head", "depth_head"):
        mapped, _ = head_state(state)
        num = int(mapped["conv.weight"][0].shape[0]) if "conv.weight" in mapped else None
    want = released_key_shapes(cfg, part, num)
    problems = [f"missing {k} {want[k]}" for k in sorted(set(want) - set(state))]
    problems += [f"unexpected {k} {tuple(state[k].shape)}" for k in sorted(set(state) - set(want))]
    problems += [f"shape {k}: {tuple(state[k].shape)} vs {want[k]}" for k in sorted(set(want) & set(state))
                 if tuple(state[k].shape) != want[k]]
    return problems


# --------------------------------------------------------------------------------------------------
# CLI


def _class_names(count: int, configured: list[str]) -> list[str]:
    if len(configured) == count:
        return list(configured)
    if count == len(CITYSCAPES_CLASSES):
        return list(CITYSCAPES_CLASSES)
    return [f"vspw_{i}" if count == 124 else f"class_{i}" for i in range(count)]


def convert(out: str | Path, config: str | Path = "paper", overrides: dict[str, Any] | None = None,
            deltatok: str | Path | None = None, deltaworld: str | Path | None = None,
            seg_head: str | Path | None = None, depth_head: str | Path | None = None) -> dict[str, Path]:
    """Converts released files into ``out``/{tokenizer,world,heads}.safetensors. Returns what was written."""
    if (seg_head is None) != (depth_head is None):
        raise CheckpointError("heads.safetensors holds both heads: give both --seg-head and --depth-head")
    cfg = load_config(config, overrides)
    if seg_head is not None:
        cfg.heads.class_names = _class_names(released_head_outputs(seg_head), cfg.heads.class_names)
        cfg.heads.depth_bins = released_head_outputs(depth_head)
    tokenizer, world, heads = build_models(cfg)
    out = Path(out)
    written: dict[str, Path] = {}
    if deltatok is not None:
        load_released_deltatok(tokenizer, deltatok)
        written["tokenizer"] = save_state(tokenizer.state_dict(), out / WEIGHT_FILES["tokenizer"],
                                          metadata={"source": "amazon-far/deltatok release", "file": str(deltatok)})
    if deltaworld is not None:
        load_released_deltaworld(world, deltaworld)
        written["world"] = save_state(world.state_dict(), out / WEIGHT_FILES["world"],
                                      metadata={"source": "amazon-far/deltatok release", "file": str(deltaworld)})
    if seg_head is not None:
        load_released_head(heads, seg_head, "segmentation")
        load_released_head(heads, depth_head, "depth")
        written["heads"] = save_state(heads.state_dict(), out / WEIGHT_FILES["heads"], metadata={
            "source": "amazon-far/deltatok release", "class_names": json.dumps(cfg.heads.class_names),
            "depth_bins": str(cfg.heads.depth_bins)})
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.released",
                                     description="Convert or check the authors' released checkpoints "
                                                 "(Hugging Face Amazon-FAR/deltatok-kinetics, deltaworld-kinetics, "
                                                 "seg-head-vspw, seg-head-cityscapes, depth-head-kitti).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{convert,check}")
    conv = sub.add_parser("convert", help="write our tokenizer/world/heads .safetensors",
                          description="Write our tokenizer/world/heads .safetensors from the released files.")
    conv.add_argument("--deltatok", type=Path, help="deltatok-kinetics/pytorch_model.bin")
    conv.add_argument("--deltaworld", type=Path, help="deltaworld-kinetics/pytorch_model.bin (needs --deltatok)")
    conv.add_argument("--seg-head", type=Path, help="seg-head-cityscapes or seg-head-vspw/pytorch_model.bin "
                      "(with --depth-head)")
    conv.add_argument("--depth-head", type=Path, help="depth-head-kitti/pytorch_model.bin (with --seg-head)")
    conv.add_argument("--out", type=Path, required=True, help="output folder for the .safetensors")
    check = sub.add_parser("check", help="compare a released file with the names/shapes expected for a config",
                           description="List every missing, unexpected or mis-shaped parameter of a released "
                                       "file against a config; exit 0 when it matches, 1 when not.")
    check.add_argument("path", type=Path, help="the released pytorch_model.bin (or any state dict file)")
    check.add_argument("--part", required=True, choices=("deltatok", "deltaworld", "seg_head", "depth_head"),
                       help="which release file it is")
    for p in (conv, check):
        p.add_argument("--config", default="paper", help="config name or YAML path (default: paper)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override (alias of the positional key.path=value form)")
        add_overrides_argument(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    def body(args: argparse.Namespace) -> int:
        overrides = parse_overrides([*args.set, *args.overrides])
        if args.command == "check":
            problems = check_released_file(args.path, load_config(args.config, overrides), args.part)
            print("\n".join(problems) if problems else f"{args.path}: matches the released {args.part} layout")
            return 1 if problems else 0
        written = convert(args.out, args.config, overrides, args.deltatok, args.deltaworld, args.seg_head,
                          args.depth_head)
        for part, path in written.items():
            print(f"{part}: {path}")
        if "heads" in written:
            print("heads.class_names of the config must be the names recorded in heads.safetensors' metadata")
        return 0

    return run_cli(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
