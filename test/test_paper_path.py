"""The paper path end to end on CPU: the authors' file formats in, futures out.

Release-format checkpoints (the paper's widths: DINOv3 ViT-B/16 width 768, 12 heads; reduced depth
and a 64 px image so that it stays fast) are written here exactly as the release stores them: a
bare ``pytorch_model.bin`` (the published files) and the ``{"state_dict": {"network.…"}}`` form the
release's training saves. ``python -m deltaworld_core.released convert`` turns them into our files,
then ``Forecaster.from_config("paper", weights=...)`` and the ROS node run on them, with DINOv3
backbone checkpoints in Meta's (``.pth``) and Hugging Face's (``model.safetensors``) layouts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deltaworld_core import Forecaster, load_config
from deltaworld_core.released import CITYSCAPES_CLASSES, released_key_shapes
from deltaworld_core.rollout import rollout
from deltaworld_core.vfm import build_vfm

REPO = Path(__file__).resolve().parents[1]
# The paper config at CI size: every width as in the paper, one block per stack, a 4x4 patch grid.
SMALL = {"vfm.depth": 1, "vfm.image_size": [64, 64], "tokenizer.encoder_depth": 1, "tokenizer.decoder_depth": 1,
         "world.depth": 1, "forecast.k": 3, "forecast.publish_k": 2, "forecast.output_size": [32, 32]}
# The paper config's geometry (two_squares) prepares a 90 x 120 frame as the release does (resized
# whole to 64 x 85, OpenCV bilinear) and cuts two 64 x 64 views of it; the maps cover the frame at
# its 3:4 aspect, 32 x 43.
PREPARED = (85, 64)  # (w, h) for cv2.resize
VIEWS = (slice(0, 64), slice(21, 85))
CANVAS = (32, 43)
SEG_CLASSES, DEPTH_BINS = 19, 256  # seg-head-cityscapes, depth-head-kitti


def release_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors of the release's names and shapes, scaled like trained weights (norm gains
    near 1, small linear weights, positive BatchNorm variances) so that activations stay sane."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "bn.weight", "q_norm.weight",
                           "k_norm.weight")):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("lambda1"):
            out[key] = 0.1 + 0.05 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.02 * torch.randn(shape, generator=g)
    return out


def dinov3_meta_and_hf(backbone) -> tuple[dict, dict]:
    """Our DINOv3 backbone's weights renamed to Meta's release layout and to Hugging Face's."""
    sd = {k: v.clone() for k, v in backbone.state_dict().items()}
    d, depth = backbone.embed_dim, backbone.depth
    meta = dict(sd)
    meta["mask_token"] = torch.zeros(1, d)
    meta["storage_tokens"] = meta.pop("register_tokens")
    meta["rope_embed.periods"] = backbone.rope.periods.clone()
    hf = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": torch.zeros(1, 1, d),
          "embeddings.register_tokens": sd["register_tokens"],
          "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
          "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    for i in range(depth):
        b = f"blocks.{i}."
        mask = torch.ones(3 * d)
        mask[d:2 * d] = 0  # Meta stores a K bias and masks it out
        meta[b + "attn.qkv.bias_mask"] = mask
        h = f"layer.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3)
        qb, _, vb = sd[b + "attn.qkv.bias"].chunk(3)
        hf.update({h + "norm1.weight": sd[b + "norm1.weight"], h + "norm1.bias": sd[b + "norm1.bias"],
                   h + "attention.q_proj.weight": q, h + "attention.q_proj.bias": qb,
                   h + "attention.k_proj.weight": k,  # Hugging Face's DINOv3 has no K bias at all
                   h + "attention.v_proj.weight": v, h + "attention.v_proj.bias": vb,
                   h + "attention.o_proj.weight": sd[b + "attn.proj.weight"],
                   h + "attention.o_proj.bias": sd[b + "attn.proj.bias"],
                   h + "layer_scale1.lambda1": sd[b + "ls1.gamma"],
                   h + "norm2.weight": sd[b + "norm2.weight"], h + "norm2.bias": sd[b + "norm2.bias"],
                   h + "mlp.up_proj.weight": sd[b + "mlp.fc1.weight"], h + "mlp.up_proj.bias": sd[b + "mlp.fc1.bias"],
                   h + "mlp.down_proj.weight": sd[b + "mlp.fc2.weight"],
                   h + "mlp.down_proj.bias": sd[b + "mlp.fc2.bias"],
                   h + "layer_scale2.lambda1": sd[b + "ls2.gamma"]})
    return meta, {k: v.contiguous() for k, v in hf.items()}


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """Release-format files, converted by the CLI; DINOv3 checkpoints in both layouts."""
    root = tmp_path_factory.mktemp("paper")
    cfg = load_config("paper", SMALL)
    release = {
        "deltatok": release_state(released_key_shapes(cfg, "deltatok"), seed=1),
        "deltaworld": release_state(released_key_shapes(cfg, "deltaworld"), seed=2),
        "seg": release_state(released_key_shapes(cfg, "seg_head", SEG_CLASSES), seed=3),
        "depth": release_state(released_key_shapes(cfg, "depth_head", DEPTH_BINS), seed=4),
    }
    files = {name: root / name / "pytorch_model.bin" for name in release}
    for path in files.values():
        path.parent.mkdir()
    torch.save(release["deltatok"], files["deltatok"])  # as published: a bare state dict
    torch.save(release["seg"], files["seg"])
    # As the release's training saves them: Lightning's {"state_dict": ...}, the network under
    # "network." (compiled: "_orig_mod."), frozen backbone/tokenizer included.
    world_ckpt = {f"network._orig_mod.{k}": v for k, v in release["deltaworld"].items()}
    world_ckpt["network._orig_mod.tokenizer.z_embed.weight"] = torch.zeros(1, 768)
    world_ckpt["network._orig_mod.backbone.backbone.norm.weight"] = torch.ones(768)
    torch.save({"state_dict": world_ckpt, "epoch": 7, "global_step": 300000}, files["deltaworld"])
    torch.save({"state_dict": {f"network.{k}": v for k, v in release["depth"].items()}}, files["depth"])

    out = root / "converted"
    sets = [a for key, value in SMALL.items() if not key.startswith("forecast.")
            for a in ("--set", f"{key}={json.dumps(value)}")]
    cmd = [sys.executable, "-m", "deltaworld_core.released", "convert", "--deltatok", str(files["deltatok"]),
           "--deltaworld", str(files["deltaworld"]), "--seg-head", str(files["seg"]),
           "--depth-head", str(files["depth"]), "--out", str(out), *sets]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    torch.manual_seed(0)
    backbone = build_vfm(cfg.vfm, seed=5).backbone
    with torch.no_grad():  # DINOv3 masks the K bias: the reference backbone must not use one either
        for block in backbone.blocks:
            block.attn.qkv.bias[768:1536] = 0
    meta, hf = dinov3_meta_and_hf(backbone)
    (root / "meta").mkdir()
    (root / "hf").mkdir()
    torch.save(meta, root / "meta" / "dinov3_vitb16.pth")
    save_file(hf, str(root / "hf" / "model.safetensors"))
    return {"weights": out, "release": release, "backbone": backbone,
            "dinov3": {"meta": root / "meta" / "dinov3_vitb16.pth", "hf": root / "hf" / "model.safetensors"}}


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (90, 120 + 6 * n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 6 * i: 6 * i + 120]) for i in range(n)]  # a panning camera


def paper_forecaster(paper_files, layout: str) -> Forecaster:
    return Forecaster.from_config("paper", weights=paper_files["weights"],
                                  overrides={**SMALL, "vfm.weights": str(paper_files["dinov3"][layout])})


@pytest.fixture(scope="module")
def forecasts(paper_files):
    """Per DINOv3 layout: the forecaster and its forecasts over a 7-frame stream."""
    out = {}
    for layout in ("meta", "hf"):
        fc = paper_forecaster(paper_files, layout)
        out[layout] = (fc, [fc.step(img, 2.0 + 0.2 * i) for i, img in enumerate(frames(7))])
    return out


def test_converted_weights_are_the_release_tensors(paper_files, forecasts):
    fc, _ = forecasts["meta"]
    rel = paper_files["release"]
    assert fc.cfg.name == "paper" and fc.class_names == CITYSCAPES_CLASSES
    attn = fc.tokenizer.encoder_blocks[0].attention
    assert torch.equal(attn.q_norm.weight, rel["deltatok"]["encoder_blocks.0.attention.q_norm.weight"])
    assert torch.equal(fc.tokenizer.z_embed.weight, rel["deltatok"]["z_embed.weight"])
    kv = rel["deltaworld"]["predictor.blocks.0.attention.kv_proj.weight"]
    assert torch.equal(fc.world.blocks[0].attention.k_proj.weight, kv[:768])
    assert torch.equal(fc.world.blocks[0].attention.v_proj.weight, kv[768:])
    assert torch.equal(fc.world.head.weight, rel["deltaworld"]["predictor.head.weight"])
    assert torch.equal(fc.heads.segmentation.conv.weight, rel["seg"]["head.weight"])
    assert torch.equal(fc.heads.depth.bn.running_var, rel["depth"]["bn.running_var"])
    assert fc.heads.depth.conv.weight.shape[0] == DEPTH_BINS


@pytest.mark.parametrize("layout", ["meta", "hf"])
def test_dinov3_checkpoint_loads_in_both_layouts(paper_files, forecasts, layout):
    fc, _ = forecasts[layout]
    for (key, ours), theirs in zip(fc.vfm.backbone.state_dict().items(), paper_files["backbone"].state_dict().values()):
        assert torch.equal(ours, theirs), key


def test_paper_forecasts(paper_files, forecasts):
    """The futures: shapes and ranges a planner relies on, the release's context layout from
    scratch, and the same futures whichever layout the DINOv3 checkpoint came in."""
    fc, outs = forecasts["meta"]
    assert outs[:3] == [None] * 3 and all(o is not None for o in outs[3:])  # context 4 frames
    last = outs[-1]
    assert fc.geometry == "two_squares" and fc.context_spacing == "step" and fc.cfg.forecast.cuda_precision == "bf16"
    # publish_k = 2 of K = 3 hypotheses published; the summaries over all 3
    assert last.semantic.shape == last.depth.shape == (2, 3, *CANVAS) and last.region == (0, 0, 90, 120)
    assert last.summary.depth_mean.shape == (3, *CANVAS)
    assert last.semantic.max() < SEG_CLASSES and np.isfinite(last.depth).all()
    lo, hi = fc.cfg.heads.min_depth, fc.cfg.heads.max_depth
    assert (last.depth >= lo).all() and (last.depth <= hi).all()
    np.testing.assert_allclose(last.stamps, 2.0 + 0.2 * 6 + 0.2 * np.arange(1, 4))
    hypotheses = last.features.flatten(2)  # [V, K, ...]
    assert last.features.shape[:3] == (2, 3, 3)
    assert not torch.allclose(hypotheses[0, 0], hypotheses[0, 1])  # K distinct futures

    # From scratch, per view (the two squares cut here by hand): the last 4 frames, the oldest
    # against black, then true deltas; one rollout of both views (view 0 draws its noise first).
    images, stamps = frames(7)[-4:], [2.0 + 0.2 * i for i in range(3, 7)]
    fc.reset()
    for img, t in zip(frames(7)[:-1], [2.0 + 0.2 * i for i in range(6)]):
        fc.step(img, t)
    fc.generator.manual_seed(123)
    streamed = fc.step(frames(7)[-1], 2.0 + 0.2 * 6)
    with torch.no_grad():
        tokens, last_feats = [], []
        for cols in VIEWS:
            feats = fc.vfm(np.stack([np.ascontiguousarray(cv2.resize(img, PREPARED, interpolation=cv2.INTER_LINEAR)
                                                          [:, cols]) for img in images]))
            tokens.append(fc.tokenizer.encode(torch.cat((fc.vfm.black_features(1), feats[:-1])), feats, fc.grid))
            last_feats.append(feats[-1:])
        times = torch.tensor([[t - 2.0 for t in stamps]] * 2, dtype=torch.float64)
        targets = times[:, -1:] + 0.2 * torch.arange(1, 4, dtype=torch.float64)[None]
        expected = rollout(fc.tokenizer, fc.world, torch.stack(tokens), times, torch.cat(last_feats), targets, 3,
                           torch.Generator().manual_seed(123), fc.grid)
    torch.testing.assert_close(fc._context_tokens, torch.stack(tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed.features, expected, atol=1e-4, rtol=1e-4)

    hf_outs = forecasts["hf"][1]
    for a, b in zip(outs[3:], hf_outs[3:]):
        torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=1e-5)
        assert (a.semantic == b.semantic).mean() > 0.999


def test_node_runs_the_paper_config(paper_files, tmp_path, ros_env, ros_node):
    """The ROS node with the paper config (its CI-size variant, as a YAML file named paper.yaml)
    and the converted weights publishes futures for the frames it gets."""
    pytest.importorskip("rclpy")
    import yaml

    from deltaworld_ros.futures_msg import decode_futures, seconds_to_time, time_to_ns
    from ros_harness import Harness, NodeProcess

    cfg = load_config("paper", {**SMALL, "vfm.weights": str(paper_files["dinov3"]["hf"]),
                                "heads.class_names": CITYSCAPES_CLASSES})
    config_path = tmp_path / "paper.yaml"
    config_path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict()))))
    harness = Harness(ros_node)
    node = NodeProcess(tmp_path, ros_env, model_config=str(config_path), weights=str(paper_files["weights"]),
                       device="auto", diagnostics_period_s=0.5)
    try:
        harness.wait_until_connected(node)
        sent = []
        start = time.time()
        for i, rgb in enumerate(frames(8)):
            stamp = start + 0.2 * i
            sent.append(time_to_ns(seconds_to_time(stamp)))
            harness.send(rgb, stamp)
            time.sleep(max(0.0, stamp + 0.2 - time.time()))
        harness.wait_for(lambda: any(time_to_ns(m.header.stamp) == sent[-1] for m in harness.futures), 30,
                         "the forecast of the last frame", node)
        futures = list(harness.futures)
        assert futures and all(time_to_ns(m.header.stamp) in sent[3:] for m in futures)
        for msg in futures:
            assert list(msg.class_names) == CITYSCAPES_CLASSES
            decoded = decode_futures(msg)
            assert decoded.semantic.shape == decoded.depth.shape == (2, 3, *CANVAS)
            assert decoded.semantic.max() < SEG_CLASSES and np.isfinite(decoded.depth).all()
    finally:
        harness.close()
        assert node.stop() == 0, node.log()
