"""Video input, clip sampling, clip-consistent augmentation and the eval-dataset loaders."""
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from deltaworld_core.data import (CityscapesClips, ClipAugment, FrameFolder, KittiDepthClips,
                                  VideoClipDataset, VideoReader, VSPWClips, apply_crop,
                                  collate_eval, open_video, sample_crop, sample_video_paths)


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _coded(value, hw=(6, 8)):
    """A frame whose red channel encodes an integer (robust to jpg)."""
    img = np.zeros((*hw, 3), np.uint8)
    img[..., 0] = value
    return img


# ------------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def bikes():
    return sample_video_paths()["bikes.mp4"]


def test_sample_paths_and_reader(bikes):
    paths = sample_video_paths()
    assert {"bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"} <= set(paths)
    r = open_video(bikes)
    assert isinstance(r, VideoReader) and r.fps == pytest.approx(25.0)
    assert r.num_frames == 250
    frames, stamps = r.read_all(max_frames=20, stride=2)
    assert frames.shape == (20, 272, 640, 3) and frames.dtype == np.uint8
    assert np.all(np.diff(stamps) > 0) and stamps[1] == pytest.approx(2 / 25)
    img, t = next(iter(r))
    np.testing.assert_array_equal(img, frames[0])


def test_frame_folder(tmp_path):
    stamps = [0.0, 0.05, 0.12, 0.2]
    for i in range(4):
        _write_rgb(tmp_path / f"{i:04d}.png", _coded(10 * i))
    (tmp_path / "timestamps.txt").write_text("\n".join(map(str, stamps)) + "\n")
    ff = open_video(tmp_path)
    assert isinstance(ff, FrameFolder) and ff.num_frames == 4
    frames, ts = ff.read_all()
    np.testing.assert_allclose(ts, stamps)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30]
    (tmp_path / "timestamps.txt").unlink()
    _, ts = FrameFolder(tmp_path, fps=20).read_all(stride=2)
    np.testing.assert_allclose(ts, [0.0, 0.1])
    with pytest.raises(ValueError, match="timestamps"):
        FrameFolder(tmp_path)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError):
        VideoReader(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ValueError, match="cannot decode"):
        open_video(bad)
    with pytest.raises(FileNotFoundError):
        FrameFolder(tmp_path / "missing_dir")


# ------------------------------------------------------------------------- transforms
def test_crop_shared_flip_and_determinism():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    frames[1] = frames[0]
    sem = rng.integers(0, 5, (3, 40, 60), dtype=np.uint8)
    depth = rng.uniform(1, 50, (3, 40, 60)).astype(np.float32)
    aug = ClipAugment((16, 24))
    a = aug(dict(frames=frames, semantic=sem, depth=depth), torch.Generator().manual_seed(3))
    b = aug(dict(frames=frames, semantic=sem, depth=depth), torch.Generator().manual_seed(3))
    for k in ("frames", "semantic", "depth"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["frames"].shape == (3, 16, 24, 3) and a["semantic"].shape == (3, 16, 24)
    np.testing.assert_array_equal(a["frames"][0], a["frames"][1])   # identical per frame
    assert set(np.unique(a["semantic"])) <= set(np.unique(sem))      # nearest keeps ids
    assert set(np.unique(a["depth"])) <= set(np.unique(depth))
    # Labels follow the frames: encode coordinates, check the same crop lands on both.
    yy, xx = np.mgrid[:40, :60]
    coord = np.stack([yy * 4, xx * 4, np.zeros_like(xx)], -1).astype(np.uint8)[None]
    gen = np.random.default_rng(1)
    for _ in range(5):
        p = sample_crop((40, 60), (20, 30), gen)
        assert 0.6 * 2400 * 0.9 <= p.height * p.width <= 2400
        img = apply_crop(coord, p, (20, 30), nearest=True)[0]
        lab = apply_crop((yy * 1000 + xx)[None].astype(np.float32), p, (20, 30), nearest=True,
                         channels=False)[0]
        np.testing.assert_array_equal(img[..., 0] // 4, lab // 1000)
        np.testing.assert_array_equal(img[..., 1] // 4, lab % 1000)
        col = img[0, :, 1].astype(int)
        assert np.all(np.diff(col) <= 0) if p.flip else np.all(np.diff(col) >= 0)
    flips = {sample_crop((40, 60), (20, 30), np.random.default_rng(s)).flip for s in range(20)}
    assert flips == {True, False}


# ------------------------------------------------------------------------- clip sampler
def test_clip_sampler(bikes):
    ds = VideoClipDataset(bikes, num_frames=3, gap_range=(1 / 25, 1 / 3), size=(34, 80),
                          clips_per_video=20, seed=7)
    c = ds[5]
    assert c["frames"].shape == (3, 34, 80, 3) and c["stamps"].dtype == np.float64
    for i in range(len(ds)):
        g = np.diff(ds[i]["stamps"])
        assert np.all(g >= 1 / 25 - 1e-9) and np.all(g <= 1 / 3 + 1 / 50)
    np.testing.assert_array_equal(ds[5]["stamps"], c["stamps"])
    np.testing.assert_array_equal(ds[5]["frames"], c["frames"])
    fixed = VideoClipDataset(bikes, num_frames=4, gap=0.2, size=(34, 80), clips_per_video=5)
    np.testing.assert_allclose(np.diff(fixed[0]["stamps"]), 0.2)
    # Segments: train on the first 80 %, hold out the last 20 % (250 frames -> 10 s).
    tr = VideoClipDataset(bikes, num_frames=2, gap=0.04, size=(34, 80), segment=(0, 0.8),
                          clips_per_video=30)
    ho = VideoClipDataset(bikes, num_frames=2, gap=0.04, size=(34, 80), segment=(0.8, 1.0),
                          clips_per_video=30)
    assert max(tr[i]["stamps"].max() for i in range(30)) < 8.0
    assert min(ho[i]["stamps"].min() for i in range(30)) >= 8.0
    batch = torch.utils.data.default_collate([tr[0], tr[1]])
    assert batch["frames"].shape == (2, 2, 34, 80, 3)


# ------------------------------------------------------------------------- eval datasets
def test_cityscapes_layout(tmp_path):
    city, seq, lab = "aachen", 3, 19
    for f in range(lab - 19, lab + 11):
        _write_rgb(tmp_path / f"leftImg8bit_sequence/val/{city}/{city}_{seq:06d}_{f:06d}"
                   f"_leftImg8bit.png", _coded(f))
    ids = np.array([[7, 8, 26, 0], [23, 24, 33, 4]], np.uint8)         # road sidewalk car ...
    gt = tmp_path / f"gtFine/val/{city}/{city}_{seq:06d}_{lab:06d}_gtFine_labelIds.png"
    gt.parent.mkdir(parents=True)
    cv2.imwrite(str(gt), cv2.resize(ids, (8, 6), interpolation=cv2.INTER_NEAREST))
    ds = CityscapesClips(tmp_path, "val")
    assert len(ds) == 1
    item = ds[0]
    assert [int(f[0, 0, 0]) for f in item["frames"]] == [1, 4, 7, 10, 13, 16, 19]
    np.testing.assert_allclose(np.diff(item["stamps"]), 3 / 17)
    assert item["semantic"][0, 0] == 0 and item["semantic"][0, 2] == 1
    assert item["semantic"][0, 4] == 13 and item["semantic"][0, 6] == 255
    assert item["semantic"][-1, 0] == 10 and item["semantic"][-1, 2] == 11
    assert item["semantic"][-1, 4] == 18 and item["semantic"][-1, 7] == 255
    assert item["depth"] is None and len(item["class_names"]) == 19


def test_kitti_layout(tmp_path):
    date, drive = "2011_09_26", "2011_09_26_drive_0002_sync"
    for f in range(0, 20):
        _write_rgb(tmp_path / f"raw/{date}/{drive}/image_02/data/{f:010d}.png", _coded(f))
    depth = np.zeros((6, 8), np.uint16)
    depth[0, 0], depth[0, 1], depth[0, 2] = 256 * 10, 256 * 90, 128      # 10 m, >80, 0.5 m
    for f in (5, 14):
        p = tmp_path / f"depth/train/{drive}/proj_depth/groundtruth/image_02/{f:010d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), depth)
    split = tmp_path / "eigen_test.txt"
    # 14 is complete; 5 lacks history for 7 frames at stride 2; 16 has no ground truth.
    split.write_text(f"{date}/{drive} 14 l\n{date}/{drive} 5 l\n{date}/{drive} 16 l\n")
    ds = KittiDepthClips(tmp_path / "raw", tmp_path / "depth", split)
    assert len(ds) == 1 and ds.skipped == 2
    item = ds[0]
    assert [int(f[0, 0, 0]) for f in item["frames"]] == [2, 4, 6, 8, 10, 12, 14]
    np.testing.assert_allclose(np.diff(item["stamps"]), 0.2)
    d = item["depth"]
    assert d.dtype == np.float32 and d[0, 0] == 10.0 and d[0, 1] == 0.0
    assert d[0, 2] == 0.5 and d[3, 3] == 0.0 and item["semantic"] is None


def _write_palette_png(path, idx, palette):
    """Minimal 8-bit palette PNG writer (as VSPW masks are stored)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    h, w = idx.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in idx.astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3,
                                                                         0, 0, 0))
                     + chunk(b"PLTE", palette.astype(np.uint8).tobytes())
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_vspw_layout(tmp_path):
    root = tmp_path / "VSPW"
    (root).mkdir()
    (root / "val.txt").write_text("127_-hIVCYO4C90\n")
    vid = root / "data/127_-hIVCYO4C90"
    for i in range(22):
        _write_rgb(vid / f"origin/{i:08d}.jpg", _coded(8 * i))
    pal = np.random.default_rng(0).permutation(256 * 3).reshape(256, 3) % 256
    pal = np.unique(pal, axis=0)[:256]
    mask = np.array([[0, 1, 124, 255], [19, 60, 2, 0]], np.uint8).repeat(3, 0).repeat(2, 1)
    for i in (18, 21):
        _write_palette_png(vid / f"mask/{i:08d}.png", mask, pal)
    ds = VSPWClips(root, "val")
    assert len(ds) == 2                                              # frames 18 and 21
    item = ds[1]
    coded = [int(f[..., 0].mean() / 8 + 0.5) for f in item["frames"]]
    assert coded == [3, 6, 9, 12, 15, 18, 21]
    np.testing.assert_allclose(np.diff(item["stamps"]), 3 / 15)
    s = item["semantic"]
    assert s.shape == (6, 8) and len(item["class_names"]) == 124
    assert list(s[0, ::2]) == [255, 0, 123, 255] and list(s[3, ::2]) == [18, 59, 1, 255]
    batch = collate_eval([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 7, 6, 8, 3) and batch["depth"] is None
