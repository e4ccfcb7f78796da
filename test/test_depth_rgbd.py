"""Registered depth beside colour from rosbag2 recordings, and the depth head fine-tuned on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deltaworld_core.data.depth_pairs import PairStats, depth_to_metres, match_stamps, pool_depth, rgbd_pairs
from deltaworld_core.data.refs import MediaError
from deltaworld_core.data.rosbag import BagWriter, depth_message, image_message


def scene(i: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A frame whose brightness tells its depth: a bright near box (0.8 m) moving over a dark far
    wall (3 m), with a hole of no measurement in a corner."""
    rgb = np.full((h, w, 3), 40, np.uint8)
    depth = np.full((h, w), 3.0, np.float32)
    x = 4 + 3 * i
    rgb[10:30, x:x + 20] = 220
    depth[10:30, x:x + 20] = 0.8
    depth[:6, :6] = np.nan
    return rgb, depth


def write_rgbd(path, n: int = 8, encoding: str = "16UC1", skip_depth: tuple[int, ...] = (),
               offset_s: float = 0.004, depth_size: tuple[int, int] | None = None) -> None:
    """Colour at 10 Hz on /camera/color/image_raw and registered depth on
    /camera/aligned_depth_to_color/image_raw stamped ``offset_s`` later (none for ``skip_depth``)."""
    with BagWriter(path) as bag:
        for i in range(n):
            rgb, depth = scene(i)
            bag.write("/camera/color/image_raw", image_message(rgb, 1.0 + 0.1 * i))
            if i in skip_depth:
                continue
            if depth_size is not None:
                depth = pool_depth(depth, depth_size)
            bag.write("/camera/aligned_depth_to_color/image_raw",
                      depth_message(depth, 1.0 + 0.1 * i + offset_s, encoding=encoding))


COLOUR, DEPTH = "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw"


@pytest.mark.parametrize("suffix,encoding", [(".mcap", "16UC1"), (".db3", "32FC1"), (".mcap", "32FC1")])
def test_pairs_metres_and_invalid(tmp_path, suffix, encoding):
    bag = tmp_path / f"rgbd{suffix}"
    write_rgbd(bag, n=6, encoding=encoding, skip_depth=(2,))
    stats = PairStats()
    pairs = list(rgbd_pairs(bag, COLOUR, DEPTH, tolerance_s=0.02, stats=stats))
    assert [round(s, 3) for _, _, s in pairs] == [1.0, 1.1, 1.3, 1.4, 1.5]
    assert (stats.colour, stats.depth, stats.paired, stats.unmatched) == (6, 5, 5, 1)
    for k, (rgb, depth, _) in zip([0, 1, 3, 4, 5], pairs):
        want_rgb, want_depth = scene(k)
        assert np.array_equal(rgb, want_rgb) and depth.dtype == np.float32
        assert np.array_equal(np.isnan(depth), np.isnan(want_depth))
        assert np.allclose(depth[~np.isnan(depth)], want_depth[~np.isnan(want_depth)], atol=1e-3)


def test_tolerance_leaves_far_depth_unmatched(tmp_path):
    bag = tmp_path / "late.mcap"
    write_rgbd(bag, n=4, offset_s=0.03)
    stats = PairStats()
    assert list(rgbd_pairs(bag, COLOUR, DEPTH, tolerance_s=0.02, stats=stats)) == []
    assert stats.unmatched == 4
    assert len(list(rgbd_pairs(bag, COLOUR, DEPTH, tolerance_s=0.05))) == 4


def test_match_stamps_nearest():
    colour = np.array([0.0, 0.1, 0.2, 0.5])
    depth = np.array([0.21, 0.09, 0.012])
    assert match_stamps(colour, depth, 0.02).tolist() == [2, 1, 0, -1]


def test_smaller_registered_depth_is_pooled_to_colour(tmp_path):
    bag = tmp_path / "half.mcap"
    write_rgbd(bag, n=2, depth_size=(24, 32))
    rgb, depth, _ = next(rgbd_pairs(bag, COLOUR, DEPTH))
    assert depth.shape == rgb.shape[:2]
    assert np.nanmin(depth) == pytest.approx(0.8, abs=0.01) and np.nanmax(depth) == pytest.approx(3.0, abs=0.01)


def test_pool_depth_ignores_invalid():
    depth = np.array([[1.0, np.nan, 2.0, 2.0], [1.0, 0.0 + np.nan, 2.0, 2.0]], np.float32)
    out = pool_depth(depth, (1, 2))
    assert out[0, 0] == pytest.approx(1.0) and out[0, 1] == pytest.approx(2.0)
    assert np.isnan(pool_depth(np.array([[1.0, np.nan, np.nan, np.nan]], np.float32), (1, 1)))[0, 0]


def test_errors_name_bag_and_topic(tmp_path):
    bag = tmp_path / "wrong.mcap"
    with BagWriter(bag) as writer:
        for i in range(2):
            rgb, _ = scene(i)
            writer.write(COLOUR, image_message(rgb, 1.0 + 0.1 * i))
            writer.write(DEPTH, image_message(rgb, 1.0 + 0.1 * i))  # colour on the depth topic
    with pytest.raises(MediaError, match=f"wrong.mcap: topic {DEPTH}: encoding 'rgb8' is not depth"):
        list(rgbd_pairs(bag, COLOUR, DEPTH))
    with pytest.raises(MediaError, match="no image topic /nope"):
        list(rgbd_pairs(bag, COLOUR, "/nope"))
    unregistered = tmp_path / "unregistered.mcap"
    write_rgbd(unregistered, n=2, depth_size=(48, 48))
    with pytest.raises(MediaError, match="depth 48x48 is not registered to the 64x48 colour frames"):
        list(rgbd_pairs(unregistered, COLOUR, DEPTH))


def test_bad_depth_message_is_refused_before_allocating():
    msg = depth_message(np.ones((4, 4), np.float32), 1.0)
    msg.height = 1 << 20  # declares a huge image over 32 bytes of data
    with pytest.raises(ValueError, match="exceeds|bytes"):
        depth_to_metres(msg)
    short = depth_message(np.ones((4, 4), np.float32), 1.0)
    short.step = 4  # shorter than a row of 16UC1
    with pytest.raises(ValueError, match="step 4 is shorter"):
        depth_to_metres(short)


def test_big_endian_16uc1():
    msg = depth_message(np.array([[1.5, np.nan]], np.float32), 1.0)
    raw = np.frombuffer(msg.data, "<u2").astype(">u2").tobytes()
    msg.data, msg.is_bigendian = memoryview(raw), True
    out = depth_to_metres(msg)
    assert out[0, 0] == pytest.approx(1.5) and np.isnan(out[0, 1])


def test_split_held_out_is_contiguous_tail():
    from deltaworld_core.training.depth_finetune import split_held_out

    assert split_held_out(10, 0.3) == (range(0, 7), range(7, 10))
    assert split_held_out(10, 0.3, frames=2) == (range(0, 8), range(8, 10))
    with pytest.raises(ValueError, match="no frame to fine-tune on"):
        split_held_out(4, 1.0)
    with pytest.raises(ValueError, match="no frame to measure"):
        split_held_out(4, 0.01)


def test_finetune_on_rgbd_bag_lowers_loss_and_writes_loadable_heads(tmp_path):
    import torch

    from deltaworld_core.checkpoint import load_module
    from deltaworld_core.config import load_config
    from deltaworld_core.forecaster import load_models
    from deltaworld_core.heads import TaskHeads, recorded_class_names
    from deltaworld_core.training.depth_finetune import main

    bag = tmp_path / "rgbd.db3"
    write_rgbd(bag, n=10)
    out = tmp_path / "ft"
    rc = main(["--bag", str(bag), "--color-topic", COLOUR, "--depth-topic", DEPTH, "--out", str(out),
               "--held-out-frames", "3", "--steps", "60", "--max-depth", "10"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fine_tune_frames"] == 7 and metrics["held_out_frames"] == 3
    assert metrics["loss_last"] < 0.5 * metrics["loss_first"]
    assert metrics["held_out_finetuned"]["rmse"] < metrics["held_out_base"]["rmse"]
    cfg = load_config(out / "model.yaml")
    assert cfg.heads.max_depth == 10.0 and Path(cfg.weights) == out.resolve()
    heads = load_module(TaskHeads.from_config(cfg.heads, cfg.vfm.embed_dim), out / "heads.safetensors")
    shipped = load_models(load_config("default"))[2]
    assert torch.equal(heads.segmentation.conv.weight, shipped.segmentation.conv.weight)
    assert not torch.equal(heads.depth.conv.weight, shipped.depth.conv.weight)
    assert recorded_class_names(out / "heads.safetensors") == shipped.class_names
    assert load_models(cfg)[2].max_depth == 10.0


def test_finetune_cli_refuses_a_bag_without_pairs(tmp_path, capsys):
    from deltaworld_core.training.depth_finetune import main

    bag = tmp_path / "late.mcap"
    write_rgbd(bag, n=3, offset_s=0.5)
    assert main(["--bag", str(bag), "--color-topic", COLOUR, "--depth-topic", DEPTH, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("python -m deltaworld_core.training.depth_finetune: error: ")
    assert "late.mcap: no colour frame of /camera/color/image_raw has a depth image" in err[0]
    assert not (tmp_path / "o").exists()


def test_register_depth_moves_points_to_the_colour_camera():
    from deltaworld_core.data.visp_castel import register_depth

    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    raw = np.full((48, 64), 1000, np.uint16)  # a wall 1 m away
    raw[:, :8] = 0  # no measurement
    same = register_depth(raw, k, k, np.eye(4), (48, 64), scale_m=1e-3, distortion=(0, 0, 0, 0, 0))
    assert np.allclose(same[:, 8:], 1.0) and np.isnan(same[:, :8]).all()
    pose = np.eye(4)
    pose[0, 3] = -0.1  # a colour point at x lies at x - 0.1 in the depth camera: the colour camera sits 0.1 m left
    moved = register_depth(raw, k, k, pose, (48, 64), scale_m=1e-3, distortion=(0, 0, 0, 0, 0))
    # 0.1 m at 1 m and 50 px focal = 5 px: the hole moves 5 px right in the colour image
    assert np.isnan(moved[:, :13]).all() and np.allclose(moved[:, 13:], 1.0)
    wider = register_depth(raw, k, np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]), np.eye(4), (48, 64),
                           scale_m=1e-3, distortion=(0, 0, 0, 0, 0))
    assert np.isnan(wider).mean() > 0.4  # a longer colour focal spreads the depth points: gaps stay NaN


def test_read_raw_depth_checks_its_declared_size(tmp_path):
    from deltaworld_core.data.visp_castel import read_raw_depth

    good = tmp_path / "depth_image_0000.bin"
    good.write_bytes(np.array([2, 3], "<u4").tobytes() + np.arange(6, dtype="<u2").tobytes())
    assert read_raw_depth(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad = tmp_path / "depth_image_0001.bin"
    bad.write_bytes(np.array([480, 640], "<u4").tobytes() + b"\0" * 10)
    with pytest.raises(MediaError, match="depth_image_0001.bin: declares 640x480 depth but holds 18 bytes"):
        read_raw_depth(bad)


def test_iter_rgbd_through_recordings(tmp_path):
    from deltaworld_core.data.recordings import expand_media, iter_rgbd

    bag = tmp_path / "rgbd.mcap"
    write_rgbd(bag, n=3)
    (ref,) = expand_media([str(bag)], topic=COLOUR)
    assert len(list(iter_rgbd(ref, DEPTH))) == 3
    video = tmp_path / "frames"
    video.mkdir()
    from deltaworld_core.data.refs import MediaRef
    with pytest.raises(MediaError, match="not a bag; depth beside colour is read from rosbag2"):
        list(iter_rgbd(MediaRef("frames", str(video), "frames"), DEPTH))


def test_undecodable_depth_is_skipped_and_counted(tmp_path):
    bag = tmp_path / "short.db3"
    with BagWriter(bag) as writer:
        for i in range(3):
            rgb, depth = scene(i)
            writer.write(COLOUR, image_message(rgb, 1.0 + 0.1 * i))
            msg = depth_message(depth, 1.0 + 0.1 * i)
            if i == 1:
                msg.height *= 2  # declares more rows than its data hold
            writer.write(DEPTH, msg)
    stats = PairStats()
    assert [round(s, 3) for _, _, s in rgbd_pairs(bag, COLOUR, DEPTH, stats=stats)] == [1.0, 1.2]
    assert (stats.paired, stats.skipped, stats.unmatched) == (2, 1, 1)


def test_depth_stamps_far_out_of_order_are_refused(tmp_path, monkeypatch):
    from deltaworld_core.data import depth_pairs

    monkeypatch.setattr(depth_pairs, "MAX_WAITING_DEPTH", 2)
    bag = tmp_path / "shuffled.mcap"
    with BagWriter(bag) as writer:
        for i in range(5):
            rgb, depth = scene(i)
            writer.write(COLOUR, image_message(rgb, 1.0 + 0.1 * i))
            writer.write(DEPTH, depth_message(depth, 1.0 + 0.1 * (4 - i)), log_time_ns=10**9 + i)  # stamps reversed
    with pytest.raises(MediaError, match=f"shuffled.mcap: topic {DEPTH}: more than 2 depth images wait"):
        list(rgbd_pairs(bag, COLOUR, DEPTH))


def test_finetune_refuses_frames_that_change_size(tmp_path):
    from deltaworld_core.training.depth_finetune import DepthFinetuneConfig, run

    bag = tmp_path / "resized.mcap"
    with BagWriter(bag) as writer:
        for i, (h, w) in enumerate([(48, 64), (24, 32)]):
            rgb, depth = scene(0, h, w)
            writer.write(COLOUR, image_message(rgb, 1.0 + 0.1 * i))
            writer.write(DEPTH, depth_message(depth, 1.0 + 0.1 * i))
    with pytest.raises(MediaError, match=f"resized.mcap: topic {COLOUR}: frames change size \\(64x48 to 32x24\\)"):
        run(DepthFinetuneConfig(str(bag), COLOUR, DEPTH, str(tmp_path / "out")))


def test_castel_folder_becomes_a_registered_rgbd_bag(tmp_path):
    """A folder laid out as visp-images-data's mbt-depth/castel (grey PGMs, raw depth .bin, the
    two cameras' XML and the depth-to-colour pose) -> an MCAP bag the pairing reads back."""
    import cv2

    from deltaworld_core.data.visp_castel import fetch_castel, write_castel_bag

    camera = "<conf><camera><px>{f}</px><py>{f}</py><u0>32</u0><v0>24</v0></camera></conf>"
    (tmp_path / "chateau.xml").write_text(camera.format(f=50.0))
    (tmp_path / "chateau_depth.xml").write_text(camera.format(f=50.0))
    np.savetxt(tmp_path / "depth_M_color.txt", np.eye(4))
    (tmp_path / "manifest.json").write_text("{}")  # already fetched: nothing is downloaded
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"image_{i:04d}.pgm"), np.full((48, 64), 10 * i, np.uint8))
        raw = np.full((48, 64), 4000 + 1000 * i, "<u2")  # 0.5, 0.625, 0.75 m at the SR300's unit
        (tmp_path / f"depth_image_{i:04d}.bin").write_bytes(np.array([48, 64], "<u4").tobytes() + raw.tobytes())
    assert fetch_castel(tmp_path) == tmp_path
    bag = tmp_path / "castel.mcap"
    assert write_castel_bag(tmp_path, bag, 0.2, COLOUR, DEPTH) == 3
    pairs = list(rgbd_pairs(bag, COLOUR, DEPTH))
    assert [round(s, 3) for _, _, s in pairs] == [1.0, 1.2, 1.4]
    for i, (rgb, depth, _) in enumerate(pairs):
        assert (rgb == 10 * i).all()
        centre = depth[20:28, 28:36]  # the lens model bends the edges, not the centre
        assert np.allclose(centre, (4000 + 1000 * i) * 0.000124986647, atol=1e-4)
