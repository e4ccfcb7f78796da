"""Streaming training (``data.feature_cache: false``): a folder, a CSV list, tar shards and a
rosbag2 bag each train; the sample stream does not depend on the DataLoader's worker count and a
run killed mid-way (workers on) resumes to the same samples, losses and weights as one that was
never stopped; bad input gives one clear error, a recording that fails mid-run is skipped and
counted; no feature shard is written.

Tiny everything: random-weight 1-block VFM at 56 px, width-32 parts, 40-frame 80x64 videos.
"""

from __future__ import annotations

import csv
import math
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from deltaworld_core.checkpoint import read_state
from deltaworld_core.config import ConfigError
from deltaworld_core.data.media import expand_media
from deltaworld_core.data.stream import ClipSpec, ClipStream, steps
from deltaworld_core.train import load_train_config, main, run
from test_train import TINY as FEATURE_CACHE_TINY

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "stage": "tokenizer",
    "model_base": None,
    # test_train's tiny model; the streamed stages (tokenizer, world) train no heads
    "model": {part: value for part, value in FEATURE_CACHE_TINY["model"].items() if part != "heads"},
    "data": {"feature_cache": False, "videos": {"paths": [], "segment": [0.0, 1.0]}, "clip_frames": 4,
             "step_s": [0.1, 0.2], "stream": {"workers": 0, "round_steps": 2}},
    "optim": {"lr": 3e-3, "warmup_steps": 2},
    "loss": {"bom_k": 8},
    "steps": 3,
    "batch_size": 4,
    "threads": 1,
    "checkpoint_every": 2,
    "log_every": 1,
}


def _write_video(path: Path, seed: int, frames: int = 40) -> None:
    """A textured strip panning 2 px per frame, 25 fps, MJPG."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (64, 80 + 2 * frames, 3), dtype=np.uint8), (9, 9), 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (80, 64))
    for i in range(frames):
        writer.write(np.ascontiguousarray(base[:, 2 * i:2 * i + 80]))
    writer.release()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder of 3 videos, a CSV list naming them, tar shards of them and a config factory."""
    root = tmp_path_factory.mktemp("stream")
    videos = root / "videos"
    videos.mkdir()
    for i in range(3):
        _write_video(videos / f"clip{i}.avi", i)
    with open(root / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for i in range(3):
            w.writerow([f"videos/clip{i}.avi", "x"])
    from deltaworld_core.data.convert import write_shards

    write_shards(expand_media([str(videos)]), root / "shards", per_shard=2)
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))

    def make(out: Path, paths, **overrides):
        return load_train_config(cfg_path, {"out": str(out), "data.videos.paths": [str(p) for p in paths], **overrides})

    make.root, make.videos, make.path = root, videos, cfg_path
    return make


def _losses(out: Path, stage: str = "tokenizer") -> list[float]:
    with open(out / f"metrics_{stage}.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("kind", ["folder", "csv", "shards"])
def test_folder_csv_list_and_tar_shards_each_train(media, tmp_path, kind):
    entry = {"folder": media.videos, "csv": media.root / "list.csv", "shards": media.root / "shards"}[kind]
    cache = tmp_path / "cache"
    export = run(media(tmp_path / "run", [entry], **{"data.cache_dir": str(cache)}))
    assert export.is_file()
    losses = _losses(tmp_path / "run")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert not cache.exists()  # no feature shard written


def test_world_stage_streams_with_the_frozen_tokenizer(media, tmp_path):
    out = tmp_path / "run"
    run(media(out, [media.videos], steps=2))
    before = read_state(out / "tokenizer.safetensors")
    run(media(out, [media.videos], stage="world", steps=3, **{"data.black_first_prob": 0.5}))
    assert all(math.isfinite(x) for x in _losses(out, "world"))
    assert all(torch.equal(before[k], v) for k, v in read_state(out / "tokenizer.safetensors").items())  # frozen
    assert (out / "world.safetensors").is_file()


def _synthetic_bag(path: Path) -> list[tuple[np.ndarray, float]]:
    """Synthetic-world frames at 10 fps with real stamps, a 2-s gap and one frame that arrives out
    of order (written in arrival order; its stamp goes back)."""
    from deltaworld_core.data.rosbag import write_frames
    from deltaworld_core.data.synthetic import SyntheticWorld

    clip = SyntheticWorld(3, (64, 80), num_cars=3, num_people=2).render_clip(40, 10.0)
    stamps = 100.0 + np.arange(40) / 10.0
    stamps[20:] += 2.0  # the gap
    frames = [(clip["frames"][i], float(stamps[i])) for i in range(40)]
    arrival = frames[:10] + [frames[11], frames[10]] + frames[12:]  # frame 10 arrives after frame 11
    write_frames(path, "/camera/image_raw", arrival, log_times_ns=[int(1e9 * (100 + i / 10)) for i in range(40)])
    return arrival


def test_bag_trains_a_tokenizer_and_its_loss_falls(media, tmp_path):
    bag = tmp_path / "robot.mcap"
    written = _synthetic_bag(bag)
    from deltaworld_core.data.media import iter_frames

    (ref,) = expand_media([str(bag)])
    read = list(iter_frames(ref))
    assert [t for _, t in read] == [t for _, t in written]  # exactly the stamps written, in arrival order
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(read, written))
    out = tmp_path / "run"
    cfg = media(out, [bag], steps=30, batch_size=8, **{"data.stream.round_steps": 5})
    export = run(cfg)
    assert len(_losses(out)) == cfg.steps
    # The loss on fixed held pairs of the bag (a stream of another seed) falls from the initial weights.
    from deltaworld_core.forecaster import build_models
    from deltaworld_core.train import log_cosh
    from deltaworld_core.vfm import build_vfm

    torch.manual_seed(cfg.seed)  # run() seeds the same way before building
    initial = build_models(cfg.model_config)[0].eval()
    trained = build_models(cfg.model_config)[0].eval()
    trained.load_state_dict(read_state(export))
    vfm = build_vfm(cfg.model_config.vfm)
    item = ClipStream([ref], ClipSpec("pair", 2), cfg.data, vfm.image_size, seed=99, batch_size=8).round(0)
    pairs = item["frames"].flatten(0, 1)  # black pairs hold a black frame: the VFM gives black's features
    with torch.no_grad():
        prev, cur = vfm(pairs[:, 0]), vfm(pairs[:, 1])
        before, after = (log_cosh(net(prev, cur, vfm.grid)[1], cur).item() for net in (initial, trained))
    assert after < 0.9 * before, (before, after)  # measured: 0.190 -> 0.162


def _stream(media, **data):
    cfg = media(Path("unused"), [media.videos], **{f"data.{k}": v for k, v in data.items()})
    refs = expand_media([str(media.videos)])
    return ClipStream(refs, ClipSpec("pair", 2), cfg.data, (56, 56), seed=5, batch_size=4)


def _take(it, n):
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def test_sample_stream_is_worker_independent_and_resumes_mid_round(media):
    def batches(start, workers, n):
        return _take(steps(_stream(media, **{"stream.round_steps": 3}), start, workers, 2), n)

    plain = batches(0, 0, 7)
    resumed = batches(1, 2, 6)  # two workers, started mid-round (round 0 is steps 0-2)
    for a, b in zip(plain[1:], resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a step holds clips of different recordings, and steps differ
    assert not torch.equal(plain[0]["frames"], plain[1]["frames"])
    assert plain[0]["frames"].shape == (4, 2, 56, 56, 3) and plain[0]["times"].shape == (4, 2)


def test_ranks_read_disjoint_recordings_and_the_global_batch_does_not_depend_on_them(media):
    refs = expand_media([str(media.videos), str(media.root / "shards")])  # 6 distinct recordings
    assert len({r.name for r in refs}) == 6
    cfg = media(Path("unused"), [media.videos])
    one = ClipStream(refs, ClipSpec("pair", 2), cfg.data, (56, 56), 5, 4).round(0)
    halves = [ClipStream(refs, ClipSpec("pair", 2), cfg.data, (56, 56), 5, 4, rank=r, ranks=2) for r in range(2)]
    both = [h.round(0) for h in halves]
    assert torch.equal(torch.cat([b["frames"] for b in both], 1), one["frames"])
    # rank r makes reads [2r, 2r + 2) of round 0: different recordings (one epoch reads each once)
    read = [{halves[r].ref_of(n).name for n in range(2 * r, 2 * r + 2)} for r in range(2)]
    assert len(read[0]) == len(read[1]) == 2 and not read[0] & read[1]
    assert sorted(halves[0].ref_of(n).name for n in range(6)) == sorted(r.name for r in refs)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_kill_and_resume_with_workers_gives_the_same_stream_and_weights(media, tmp_path):
    common = [f"data.videos.paths=[{media.videos}]", "data.stream.workers=2", "checkpoint_every=2", "log_every=1"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "deltaworld_core.train", "--config", str(media.path), f"out={killed}",
           "steps=100000", *common]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = killed / "checkpoints" / "tokenizer" / "latest"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not latest.is_file():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # no handler runs: only what is on disk survives
    proc.communicate(timeout=60)
    assert latest.is_file(), "the run never wrote a checkpoint"
    k = int(latest.read_text().strip().split("_")[1])
    assert k >= 2
    total = k + 3  # resume mid-round (round_steps 2)
    resumed = read_state(run(load_train_config(media.path, [f"out={killed}", f"steps={total}", *common]), resume=True))
    whole = tmp_path / "whole"  # in this process without workers: the stream does not depend on them
    straight = read_state(run(load_train_config(media.path, [f"out={whole}", f"steps={total}", *common,
                                                              "data.stream.workers=0"])))
    assert all(torch.equal(resumed[k_], straight[k_]) for k_ in straight)
    assert _losses(killed) == _losses(whole)
    assert len(_losses(whole)) == total


def test_bad_input_gives_one_clear_error(media, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="empty"):
        run(media(tmp_path / "a", [empty]))
    with pytest.raises(ConfigError, match="segment"):
        run(media(tmp_path / "b", [media.videos], **{"data.videos.segment": [0.0, 0.8]}))
    with pytest.raises(ConfigError, match="stage 'heads'"):
        run(media(tmp_path / "c", [media.videos], stage="heads"))
    with pytest.raises(ConfigError, match="feature_cache"):
        media(tmp_path / "d", [media.videos], **{"data.feature_cache": "yes"})
    with pytest.raises(ConfigError, match="accumulate"):
        media(tmp_path / "e", [media.videos], **{"optim.accumulate": 3})
    assert main(["--config", str(media.path), f"out={tmp_path / 'f'}", f"data.videos.paths=[{empty}]"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(empty) in err


def test_a_recording_that_fails_mid_run_is_skipped_and_counted(media, tmp_path, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(2):
        (folder / f"good{i}.avi").write_bytes((media.videos / f"clip{i}.avi").read_bytes())
    (folder / "broken.avi").write_bytes(b"RIFF" + os.urandom(4000))  # listed cheaply, fails to decode
    caplog.set_level("INFO")
    run(media(tmp_path / "run", [folder], steps=4))
    assert "broken.avi" in caplog.text and "skipped" in caplog.text
    assert re.search(r"\| skipped [1-9]\d* recordings", caplog.text)  # counted in the progress line
    assert len(_losses(tmp_path / "run")) == 4


def test_a_set_where_nothing_decodes_stops_with_one_line(media, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(2):
        (folder / f"broken{i}.avi").write_bytes(b"RIFF" + os.urandom(4000))
    for workers in (0, 2):
        assert main(["--config", str(media.path), f"out={tmp_path / f'run{workers}'}", f"data.videos.paths=[{folder}]",
                     f"data.stream.workers={workers}", "data.stream.max_attempts=3"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (tqdm's bar aside)
        assert len(errors) == 1 and "no usable clip after 3 recordings" in errors[0], errors
        assert "broken" in errors[0] and "Traceback" not in errors[0]


def test_finetune_from_the_release_with_frozen_parts(media, tmp_path):
    """The recipe of docs/training.md at tiny size: the authors' DeltaTok and DeltaWorld files
    (release layout, random values), the predictor fine-tuned on a bag with some parts frozen."""
    from deltaworld_core.forecaster import load_weights
    from deltaworld_core.released import load_released_deltaworld, released_key_shapes
    from deltaworld_core.world import DeltaWorld

    bag = tmp_path / "robot.mcap"
    _synthetic_bag(bag)
    model = {"vfm": {"embed_dim": 32, "depth": 1, "num_heads": 2, "num_registers": 0, "image_size": [64, 64]},
             "tokenizer": {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "mlp_hidden": 64},
             "world": {"dim": 32, "depth": 1, "num_heads": 2},
             "forecast": {"output_size": [32, 32], "geometry": "squash"}}
    path = tmp_path / "paper_tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "model_base": "paper", "model": model}))
    out = tmp_path / "mine"
    cfg = load_train_config(path, {"out": str(out), "data.videos.paths": [str(bag)], "stage": "world", "steps": 3})
    g = torch.Generator().manual_seed(0)
    files = {}
    for part in ("deltatok", "deltaworld"):
        files[part] = tmp_path / part / "pytorch_model.bin"
        files[part].parent.mkdir()
        shapes = released_key_shapes(cfg.model_config, part)
        torch.save({k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}, files[part])
    frozen = ["norm", "blocks.0.norm1"]
    run(load_train_config(path, {"out": str(out), "data.videos.paths": [str(bag)], "stage": "world", "steps": 3,
                                 "pretrained": str(files["deltatok"]), "init": str(files["deltaworld"]),
                                 "freeze": frozen}))
    released = load_released_deltaworld(DeltaWorld.from_config(cfg.model_config.world,
                                                                token_dim=cfg.model_config.tokenizer.dim),
                                        files["deltaworld"]).state_dict()
    tuned = read_state(out / "world.safetensors")
    assert set(tuned) == set(released)
    kept = [k for k in tuned if k.startswith(("norm.", "blocks.0.norm1."))]
    assert kept and all(torch.equal(tuned[k], released[k]) for k in kept)
    assert any(not torch.equal(tuned[k], released[k]) for k in tuned if k not in kept)  # the rest trained
    load_weights(out, world=DeltaWorld.from_config(cfg.model_config.world, token_dim=cfg.model_config.tokenizer.dim))
    with pytest.raises(ConfigError, match="names no parameter"):
        run(load_train_config(path, {"out": str(tmp_path / "x"), "data.videos.paths": [str(bag)], "stage": "world",
                                     "pretrained": str(files["deltatok"]), "freeze": ["no_such_part"]}))


def test_the_gpu_throughput_script_runs_at_tiny_size_on_cpu(media, tmp_path):
    """scripts/bench_train_stream.py (device_check.sh's train_stream stage) at tiny sizes: every
    stage runs and the JSON has its keys, so a lent GPU does not find it broken."""
    out = tmp_path / "device_train_stream.json"
    env = {**_env(), "DELTAWORLD_TRAIN_STREAM_TINY": "1"}
    res = subprocess.run([sys.executable, "scripts/bench_train_stream.py", "--out", str(out), "--steps", "1",
                          "--videos", *[str(p) for p in sorted(media.videos.iterdir())]],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    import json

    result = json.loads(out.read_text())
    assert result["tiny"] and set(result["stages"]) == {"tokenizer_stream", "tokenizer_random", "world_stream"}
    for stage in result["stages"].values():
        assert stage["samples_per_s"] > 0 and stage["flops_per_step"] > 0 and math.isfinite(stage["loss"])
    assert result["stream_over_random"] > 0 and "command" in result and "date" in result


@pytest.fixture(scope="module")
def long_bag(tmp_path_factory) -> Path:
    """A 60-s bag at 10 fps (600 frames of 48x64 rgb8, a 40-frame synthetic clip looped), 64 KB
    MCAP chunks (~7 frames each)."""
    from deltaworld_core.data.rosbag import BagWriter, image_message
    from deltaworld_core.data.synthetic import SyntheticWorld

    clip = SyntheticWorld(4, (48, 64), num_cars=3, num_people=2).render_clip(40, 10.0)["frames"]
    bag = tmp_path_factory.mktemp("long") / "long.mcap"
    with BagWriter(bag, chunk_size=64_000) as writer:
        for i in range(600):
            writer.write("/camera/image_raw", image_message(clip[i % 40], 500.0 + i / 10))
    return bag


def test_a_long_bag_streams_in_windows_that_read_far_fewer_chunks(media, long_bag, monkeypatch):
    from deltaworld_core.data import rosbag as bags, stream as stream_module
    from deltaworld_core.data.media import iter_frames

    (ref,) = expand_media([str(long_bag)])
    yielded = []

    def counting(*args, **kwargs):  # the frames each read decodes
        yielded.append(0)
        for item in iter_frames(*args, **kwargs):
            yielded[-1] += 1
            yield item

    monkeypatch.setattr(stream_module, "iter_frames", counting)
    cost = {}
    for window in (None, 4.0):
        cfg = media(Path("unused"), [long_bag], **{"data.stream.window_s": window})
        clip_stream = ClipStream([ref], ClipSpec("pair", 2), cfg.data, (56, 56), seed=5, batch_size=4)
        yielded.clear()
        before = bags.read_counts()
        item = clip_stream.round(0)
        after = bags.read_counts()
        assert item["frames"].shape == (2, 4, 2, 56, 56, 3) and not item["skipped"]
        cost[window] = (after["chunks"] - before["chunks"], after["chunk_bytes"] - before["chunk_bytes"], list(yielded))
        if window is not None:  # 4 reads, each of its own window inside the bag's 59.9 s
            windows = [clip_stream.window_of(ref, n) for n in range(4)]
            assert len(set(windows)) == 4 and all(500.0 <= a and b == pytest.approx(a + 4.0) and b <= 559.9 + 1e-6
                                                  for a, b in windows)
            assert windows == [clip_stream.window_of(ref, n) for n in range(4)]  # a function of (seed, read)
    whole, windowed = cost[None], cost[4.0]
    assert whole[2] == [600] * 4 and all(39 <= n <= 41 for n in windowed[2])  # 4 s at 10 fps
    assert windowed[0] * 8 < whole[0] and windowed[1] * 8 < whole[1], (whole[:2], windowed[:2])
    with pytest.raises(ConfigError, match="window_s"):
        media(Path("unused"), [long_bag], **{"data.stream.window_s": -1})
    with pytest.raises(ConfigError, match="too short"):
        ClipStream([ref], ClipSpec("pair", 2), media(Path("unused"), [long_bag], **{"data.stream.window_s": 1.0}).data,
                   (56, 56), seed=5, batch_size=4)


def test_windowed_stream_is_worker_independent_and_resumes_mid_round(media, long_bag):
    cfg = media(Path("unused"), [long_bag], **{"data.stream.window_s": 3.0, "data.stream.round_steps": 3})

    def batches(start, workers, n):
        clip_stream = ClipStream(expand_media([str(long_bag)]), ClipSpec("pair", 2), cfg.data, (56, 56), seed=5,
                                 batch_size=4)
        return _take(steps(clip_stream, start, workers, 2), n)

    plain = batches(0, 0, 5)
    resumed = batches(1, 2, 4)  # two workers, started mid-round
    for a, b in zip(plain[1:], resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(plain[0]["frames"], plain[3]["frames"])  # rounds read other windows
