"""Hostile and broken model files, heads metadata and videos, all generated here: every failure is
one line naming the file and what is wrong, never advice to load unsafely, and no code from a file
ever runs (issue 13, items 7, 9, 10 and 14)."""

from __future__ import annotations

import ast
import json
import shutil
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deltaworld_core import load_config, vfm_weights
from deltaworld_core.checkpoint import CheckpointError, CheckpointNotFoundError, load_module, save_state
from deltaworld_core.data.video import TruncatedVideoWarning, VideoReader
from deltaworld_core.forecaster import WEIGHT_FILES, build_models, load_models
from deltaworld_core.vfm import VisionTransformer, build_vfm

TINY = {
    "weights": None, "forecast.quantize": "none",
    "vfm.weights": "random", "vfm.backend": "torch", "vfm.embed_dim": 48, "vfm.depth": 1, "vfm.num_heads": 2,
    "vfm.image_size": [28, 28],
    "tokenizer.dim": 32, "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1, "tokenizer.num_heads": 2,
    "tokenizer.mlp_hidden": 64, "world.dim": 32, "world.depth": 1, "world.num_heads": 2, "heads.depth_bins": 16,
    "forecast.context": 2, "forecast.horizon": 1, "forecast.k": 2, "forecast.output_size": [14, 14],
}
VFM_ARCH = dict(family="dinov2", patch_size=14, embed_dim=32, depth=1, num_heads=2, pos_embed_grid=2)


def tiny_vfm(**kw) -> VisionTransformer:
    return VisionTransformer(**{**VFM_ARCH, **kw}).init_weights(0)


def assert_clear(err: BaseException, path: Path, *fragments: str) -> None:
    """One line, names the file, says what is wrong, never suggests weights_only=False."""
    text = str(err)
    assert "\n" not in text, text
    assert str(path) in text, text
    assert "weights_only" not in text and "trusted source" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


class _RunsCode:
    """Pickles as a call of shutil.copyfile: loading it unsafely would create ``dst``."""

    def __init__(self, src: Path, dst: Path):
        self.src, self.dst = str(src), str(dst)

    def __reduce__(self):
        return shutil.copyfile, (self.src, self.dst)


def hostile_files(folder: Path, good: dict[str, torch.Tensor]) -> dict[str, tuple[Path, str]]:
    """name -> (file, a fragment its error must contain), each broken in its own way."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    save_file({k: v.contiguous() for k, v in good.items()}, folder / "good.safetensors")
    torch.save(good, folder / "good.pth")
    st, pth = (folder / "good.safetensors").read_bytes(), (folder / "good.pth").read_bytes()

    def write(name: str, data: bytes, fragment: str) -> None:
        (folder / name).write_bytes(data)
        files[name] = (folder / name, fragment)

    write("truncated.safetensors", st[: len(st) // 2], "truncated or corrupt")
    write("header_only.safetensors", st[:8], "truncated or corrupt")
    write("huge_header.safetensors", struct.pack("<Q", 1 << 40) + b"{}", "truncated or corrupt")
    write("empty.safetensors", b"", "truncated or corrupt")
    write("truncated.pth", pth[: len(pth) // 2], "corrupt or unreadable")
    write("garbage.pth", np.random.default_rng(0).bytes(4096), "corrupt or unreadable")
    write("empty.pth", b"", "corrupt or unreadable")
    torch.save({"weights": _RunsCode(folder / "good.pth", folder / "CODE_RAN")}, folder / "code.pth")
    files["code.pth"] = (folder / "code.pth", "would run code")
    torch.save({"a": 1, "b": "text"}, folder / "no_tensors.pth")
    files["no_tensors.pth"] = (folder / "no_tensors.pth", "not a state dict of tensors")
    torch.save([torch.zeros(2)], folder / "a_list.pth")
    files["a_list.pth"] = (folder / "a_list.pth", "not a state dict of tensors")
    return files


def test_hostile_vfm_checkpoints_are_wrapped_and_run_no_code(tmp_path):
    model = tiny_vfm()
    files = hostile_files(tmp_path, model.state_dict())
    for name, (path, fragment) in files.items():
        with pytest.raises(CheckpointError) as err:
            vfm_weights.load_checkpoint(tiny_vfm(), path)
        assert_clear(err.value, path, "VFM checkpoint", fragment)
        # build_vfm (what every command line and the node go through) reports it the same way
        cfg = SimpleNamespace(**VFM_ARCH, weights=str(path), image_size=(28, 28), backend="torch")
        with pytest.raises(CheckpointError) as err:
            build_vfm(cfg)
        assert_clear(err.value, path, fragment)
    assert not (tmp_path / "CODE_RAN").exists()
    assert "it calls shutil.copyfile" in str(pytest.raises(
        CheckpointError, vfm_weights.load_checkpoint, tiny_vfm(), files["code.pth"][0]).value)

    missing = tmp_path / "absent.pth"
    with pytest.raises(CheckpointNotFoundError) as err:
        vfm_weights.load_checkpoint(tiny_vfm(), missing)
    assert isinstance(err.value, FileNotFoundError) and "VFM checkpoint not found" in str(err.value)
    assert vfm_weights.load_checkpoint(tiny_vfm(), tmp_path / "good.safetensors") is not None  # the control


def test_hostile_model_files_are_wrapped_for_every_part(tmp_path):
    parts = build_models(load_config("default", TINY))
    for part, module in zip(WEIGHT_FILES, parts):
        files = hostile_files(tmp_path / part, module.state_dict())
        for name, (path, fragment) in files.items():
            with pytest.raises(CheckpointError) as err:
                load_module(module, path)
            assert_clear(err.value, path, fragment)
        assert not (tmp_path / part / "CODE_RAN").exists()
        load_module(module, tmp_path / part / "good.safetensors")  # the control


def _weights_folder(folder: Path, cfg, edit: dict[str, callable] | None = None, dtype=None) -> Path:
    """tokenizer/world/heads .safetensors of a seeded tiny model; ``edit[part]`` rewrites a state."""
    torch.manual_seed(0)
    for part, module in zip(WEIGHT_FILES, build_models(cfg)):
        state = module.state_dict()
        if edit and part in edit:
            state = edit[part](state)
        save_state(state, folder / WEIGHT_FILES[part], dtype=dtype)
    return folder


def _all(fn):
    return lambda state: {k: fn(v) if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize("part,edit,fragment", [
    ("tokenizer", _all(lambda v: (v * 100).to(torch.int8)), "wrong dtype: "),
    ("tokenizer", _all(lambda v: v > 0), "is bool, model has float32"),
    ("world", _all(lambda v: torch.full_like(v, float("nan"))), "NaN/inf values: "),
    ("heads", lambda s: {**s, "depth.conv.bias": torch.full_like(s["depth.conv.bias"], float("inf"))},
     "depth.conv.bias (16 of 16)"),
    ("heads", lambda s: {**s, "segmentation.bn.num_batches_tracked": torch.tensor(1.5)}, "num_batches_tracked is"),
])
def test_weights_of_the_wrong_kind_or_non_finite_are_rejected_at_load(tmp_path, part, edit, fragment):
    cfg = load_config("default", TINY)
    folder = _weights_folder(tmp_path, cfg, {part: edit})
    with pytest.raises(CheckpointError) as err:
        load_models(load_config("default", {**TINY, "weights": str(folder)}))
    assert_clear(err.value, folder / WEIGHT_FILES[part], "unusable weights", fragment)


def test_good_weights_still_load_in_float16_as_shipped(tmp_path):
    cfg = load_config("default", TINY)
    folder = _weights_folder(tmp_path, cfg, dtype=torch.float16)
    tokenizer, world, heads = load_models(load_config("default", {**TINY, "weights": str(folder)}))
    assert all(torch.isfinite(p).all() for m in (tokenizer, world, heads) for p in m.parameters())
    # a float32 value beyond float16's range becomes inf when a float16 model casts it: rejected
    big = _all(lambda v: v.float() * 0 + 1e6)
    with pytest.raises(CheckpointError, match="NaN/inf values"):
        from deltaworld_core.checkpoint import load_state_strict
        load_state_strict(world.half(), big(world.state_dict()), source="world")


def test_vfm_weights_of_the_wrong_kind_or_non_finite_are_rejected(tmp_path):
    state = tiny_vfm().state_dict()
    int8 = {k: (v * 100).to(torch.int8) for k, v in state.items()}
    nan = dict(state, **{"blocks.0.mlp.fc1.weight": state["blocks.0.mlp.fc1.weight"].clone().fill_(float("nan"))})
    for name, bad, fragment in (("int8.safetensors", int8, "is int8, model has float32"),
                                ("nan.pth", nan, "blocks.0.mlp.fc1.weight (")):
        (save_file if name.endswith("safetensors") else torch.save)(
            {k: v.contiguous() for k, v in bad.items()}, tmp_path / name)
        with pytest.raises(CheckpointError) as err:
            vfm_weights.load_checkpoint(tiny_vfm(), tmp_path / name)
        assert_clear(err.value, tmp_path / name, "unusable weights", fragment)


def test_dinov3_nan_in_the_masked_k_bias_still_loads():
    """Meta's DINOv3 files mask the K bias out (bias_mask); a NaN stored there is no weight."""
    arch = dict(family="dinov3", patch_size=16, embed_dim=32, depth=1, num_heads=2, num_registers=2, ffn="swiglu")
    src = VisionTransformer(**arch).init_weights(1)
    sd = {("storage_tokens" if k == "register_tokens" else k): v.clone() for k, v in src.state_dict().items()}
    mask = torch.ones(96)
    mask[32:64] = 0
    sd["blocks.0.attn.qkv.bias"][32:64] = float("nan")
    sd["blocks.0.attn.qkv.bias_mask"] = mask
    dst = vfm_weights.load_checkpoint(VisionTransformer(**arch), sd)
    assert torch.isfinite(dst.blocks[0].attn.qkv.bias).all() and dst.blocks[0].attn.qkv.bias[32:64].eq(0).all()


# ---------------------------------------------------------------- class_names metadata (item 10)

NINE = ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car", "person", "pole"]


def _heads_with_metadata(folder: Path, cfg, class_names: str) -> Path:
    folder = _weights_folder(folder, cfg)
    heads_file = folder / WEIGHT_FILES["heads"]
    from deltaworld_core.checkpoint import read_state
    save_state(read_state(heads_file), heads_file, metadata={"class_names": class_names})
    return heads_file


@pytest.mark.parametrize("raw,fragment", [
    ("5", "must be a non-empty JSON list"),
    ('"abc"', "must be a non-empty JSON list"),
    ("{not json", "is not valid JSON"),
    ("[]", "must be a non-empty JSON list"),
    ('["sky", ""]', "non-empty strings"),
    ("[1, 2]", "non-empty strings"),
    (json.dumps(NINE[:8] + ["sky"]), "repeats sky"),
    (json.dumps(NINE[:3]), "lists 3 names but the segmentation head has 9 outputs"),
    (json.dumps([f"c{i}" for i in range(300)]), "at most 255"),
], ids=["int", "string", "bad_json", "empty", "empty_name", "numbers", "repeated", "too_few", "too_many"])
def test_bad_class_names_metadata_is_a_clear_error(tmp_path, raw, fragment):
    cfg = load_config("default", TINY)
    heads_file = _heads_with_metadata(tmp_path, cfg, raw)
    with pytest.raises(CheckpointError) as err:
        load_models(load_config("default", {**TINY, "weights": str(tmp_path)}))
    assert_clear(err.value, heads_file, "metadata class_names", fragment)


def test_recorded_class_names_are_adopted(tmp_path):
    cfg = load_config("default", TINY)
    names = [f"class_{i}" for i in range(9)]
    _heads_with_metadata(tmp_path, cfg, json.dumps(names))
    run_cfg = load_config("default", {**TINY, "weights": str(tmp_path)})
    heads = load_models(run_cfg)[2]
    assert heads.class_names == names == run_cfg.heads.class_names


# ---------------------------------------------------------------- truncated video (item 14)

def _mjpeg_avi(path: Path, frames: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_truncated_video_warns_with_frames_read_of_claimed(tmp_path):
    whole = _mjpeg_avi(tmp_path / "whole.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])

    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)  # the intact file: no warning
        intact = VideoReader(whole)
        assert len(intact.read_all()[0]) == 30 and intact.frames_read == intact.claimed_frames == 30
        assert len(VideoReader(cut).read_all(max_frames=3)[0]) == 3  # stopped early: nothing to say

    reader = VideoReader(cut)
    assert reader.claimed_frames == 30
    with pytest.warns(TruncatedVideoWarning, match=r"cut\.avi: truncated or corrupt video: read \d+ of the 30 "):
        frames, stamps = reader.read_all()
    assert 0 < reader.frames_read == len(frames) == len(stamps) < 30
    assert reader.num_frames == reader.frames_read  # what is really there from now on


# ---------------------------------------------------------------- import direction (issue 11)

def test_vfm_weights_does_not_import_vfm():
    """vfm imports vfm_weights (formats, the embedded weights); never the other way round."""
    source = Path(vfm_weights.__file__)
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
            imported.update(f"{'.' * node.level}{node.module or ''}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    offending = {m for m in imported if m in (".vfm", "..vfm", "deltaworld_core.vfm") or m.startswith(".vfm.")}
    assert not offending, offending
    assert "vfm_weights" in Path(source.parent / "vfm.py").read_text()
