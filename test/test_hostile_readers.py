"""Hostile recordings, shards and lists, generated here: every reader bounds what it allocates
before it allocates, every reader error is one line naming the file (counted), the run goes on
with the other recordings, and a run with no valid recording exits 2. Bombs are read in a
subprocess whose peak resident memory is asserted."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import sqlite3
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from deltaworld_core.data import rosbag
from deltaworld_core.data.media import MediaError, expand_media, iter_frames, main as media_main, skipped
from deltaworld_core.data.synthetic import SyntheticWorld
from deltaworld_core.data.video import open_video

REPO = Path(__file__).resolve().parents[1]
TOPIC = "/camera/image_raw"
MB = 1 << 20


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return SyntheticWorld(5, (32, 48)).render_clip(8, 25.0)["frames"]  # uint8 [8, 32, 48, 3]


def stamped(frames) -> list:
    return [(f, 1700000000.0 + i / 25) for i, f in enumerate(frames)]


def png_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def png_bomb(side: int) -> bytes:
    """A valid 1-bit grey PNG of ``side`` x ``side`` zeros: a few hundred KB that OpenCV would
    decode to ``3 * side**2`` bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_mb(code: str) -> tuple[float, str]:
    """Runs ``code`` (after importing the readers) in a fresh interpreter: (growth of the peak
    resident set in MB from just before it ran, its stdout)."""
    script = textwrap.dedent("""
        import logging, resource, sys
        import numpy, cv2
        from deltaworld_core.data.media import expand_media, iter_frames, skipped
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    """) + textwrap.dedent(code) + textwrap.dedent("""
        print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = int(proc.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return peak / 1024, proc.stdout


# ------------------------------------------------------------------ 1. sqlite3 cells of the wrong type
@pytest.mark.parametrize("cell", ["'text'", "42", "NULL", "x'0001'"])
def test_a_sqlite_data_cell_of_the_wrong_type_is_skipped_and_counted(tmp_path, clip, cell, caplog):
    bag = tmp_path / "cam.db3"
    rosbag.write_frames(bag, TOPIC, stamped(clip))
    with sqlite3.connect(bag) as db:  # without rosbag2's NOT NULL constraint, as a hand-made bag may be
        db.execute("CREATE TABLE loose AS SELECT * FROM messages")
        db.execute("DROP TABLE messages")
        db.execute("ALTER TABLE loose RENAME TO messages")
        db.execute(f"UPDATE messages SET data = {cell} WHERE id = 3")
    (ref,) = expand_media([bag])
    with caplog.at_level(logging.WARNING):
        frames = list(iter_frames(ref))
    assert len(frames) == len(clip) - 1 and skipped(ref) == 1
    assert str(bag.name) in caplog.text


def test_a_sqlite_text_timestamp_is_skipped_and_named(tmp_path, clip, caplog):
    bag = tmp_path / "cam.db3"
    rosbag.write_frames(bag, TOPIC, stamped(clip))
    with sqlite3.connect(bag) as db:
        db.execute("UPDATE messages SET timestamp = 'soon' WHERE id = 2")
    (ref,) = expand_media([bag])
    from deltaworld_core.data.media import duration_s

    span = duration_s(ref)
    assert span is not None and span[0] < span[1]  # the integer stamps only
    with caplog.at_level(logging.WARNING):
        frames = list(iter_frames(ref, start_s=0.0, stop_s=1e10)) + list(iter_frames(ref))
    assert len(frames) == 2 * (len(clip) - 1) and skipped(ref) >= 1
    assert "cam.db3" in caplog.text and "timestamp" in caplog.text


# ------------------------------------------------------------------ 2. MCAP chunk declaring 1 GiB
def _zstd_mcap(path: Path, clip) -> Path:
    pytest.importorskip("zstandard")
    from mcap.writer import CompressionType, Writer

    with open(path, "wb") as stream:
        writer = Writer(stream, compression=CompressionType.ZSTD)
        writer.start("ros2", "test")
        schema = writer.register_schema(rosbag.IMAGE_TYPE, "ros2msg",
                                        rosbag.MSG_DEFINITIONS[rosbag.IMAGE_TYPE].encode())
        channel = writer.register_channel(TOPIC, "cdr", schema)
        for i, (rgb, stamp) in enumerate(stamped(clip)):
            data = rosbag.encode_image_message(rosbag.image_message(rgb, stamp))
            writer.add_message(channel, log_time=10**9 + i, data=data, publish_time=10**9 + i)
        writer.finish()
    return path


def _declare(path: Path, uncompressed: int) -> None:
    """Rewrites the first chunk's declared uncompressed size (its records are left as they are)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"zstd") - 4 - 4 - 8  # compression string (len u32) <- crc u32 <- size u64
    data[at:at + 8] = struct.pack("<Q", uncompressed)
    path.write_bytes(bytes(data))


def test_an_mcap_chunk_declaring_a_gibibyte_is_refused_before_it_is_allocated(tmp_path, clip):
    bag = _zstd_mcap(tmp_path / "bomb.mcap", clip)
    _declare(bag, 1 << 30)
    assert bag.stat().st_size < 200_000
    grew, out = peak_rss_mb(f"""
        (ref,) = expand_media([{str(bag)!r}])
        frames = list(iter_frames(ref))
        print("FRAMES", len(frames), "SKIPPED", skipped(ref))
    """)
    assert "FRAMES 0 SKIPPED 1" in out and "bomb.mcap" in out and "declares" in out
    assert grew < 150, f"reading a 1 GiB-declared chunk grew the peak RSS by {grew:.0f} MB"


def test_a_good_zstd_mcap_still_reads(tmp_path, clip):
    bag = _zstd_mcap(tmp_path / "good.mcap", clip)
    (ref,) = expand_media([bag])
    assert len(list(iter_frames(ref))) == len(clip) and skipped(ref) == 0


# ------------------------------------------------------------------ 3, 4. tar shard members and JSON
def _shard(path: Path, clip, meta=None, extra=()) -> Path:
    with tarfile.open(path, "w") as tar:
        for i, rgb in enumerate(clip):
            data = png_bytes(rgb)
            info = tarfile.TarInfo(f"s.{i:06d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
        if meta is not None:
            body = meta.encode() if isinstance(meta, str) else json.dumps(meta).encode()
            info = tarfile.TarInfo("s.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def _link(name: str, target: str, hard: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize("target,hard", [("/etc/passwd", False), ("s.000009.png", False), ("s.000009.png", True),
                                         ("/etc/passwd", True)])
def test_a_link_member_is_skipped_never_followed(tmp_path, clip, target, hard, caplog):
    for name, meta in (("fps.tar", {"fps": 25}), ("stamps.tar", {"stamps": [0, .04, .08, .12, .16]})):
        shard = _shard(tmp_path / name, clip[:4], meta, extra=[_link("s.000009.png", target, hard)])
        (ref,) = expand_media([shard])
        with caplog.at_level(logging.WARNING):
            frames = list(iter_frames(ref))
        assert len(frames) == 4 and skipped(ref) == 1 and "s.000009.png" in caplog.text


@pytest.mark.parametrize("meta,why", [({"fps": "fast"}, "fps"), ({"stamps": 5}, "stamps"),
                                      ('{"stamps": [0, NaN, 0.08, 0.12]}', "finite"),
                                      ({"stamps": [0, "x", 0.08, 0.12]}, "stamps"), ({"fps": float("inf")}, "fps"),
                                      ({"fps": True}, "fps"), ([1, 2], "object")])
def test_a_shard_json_of_the_wrong_type_is_one_line_naming_the_member(tmp_path, clip, meta, why):
    shard = _shard(tmp_path / "meta.tar", clip[:4], meta)
    (ref,) = expand_media([shard])
    with pytest.raises(MediaError) as err:
        list(iter_frames(ref))
    line = str(err.value)
    assert "meta.tar" in line and "s.json" in line and why in line and "\n" not in line
    from deltaworld_core.data.media import duration_s

    with pytest.raises(MediaError, match="s.json"):
        duration_s(ref)


# ------------------------------------------------------------------ 5. decompression bombs
def test_png_bombs_in_folders_and_shards_are_refused_from_their_header(tmp_path, clip):
    bomb = png_bomb(20000)
    assert len(bomb) < 400_000
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, rgb in enumerate(clip[:3]):
        (folder / f"{i:04d}.png").write_bytes(png_bytes(rgb))
    (folder / "0003.png").write_bytes(bomb)
    (folder / "timestamps.txt").write_text("\n".join(str(i / 25) for i in range(4)))
    shard = _shard(tmp_path / "bomb.tar", clip[:2], {"fps": 25}, extra=())
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("s.000002.png")
        info.size = len(bomb)
        tar.addfile(info, io.BytesIO(bomb))
    grew, out = peak_rss_mb(f"""
        from deltaworld_core.data.video import open_video
        (folder,) = expand_media([{str(folder)!r}])
        print("STREAM", len(list(iter_frames(folder))), skipped(folder))
        print("FOLDER", len(list(open_video({str(folder)!r}))))
    """)
    assert "STREAM 3 1" in out and "FOLDER 3" in out, out
    assert "exceeds" in out and "0003.png" in out
    assert grew < 150, f"a 20000x20000 PNG bomb in a folder grew the peak RSS by {grew:.0f} MB"
    grew, out = peak_rss_mb(f"""
        (shard,) = expand_media([{str(shard)!r}])
        print("SHARD", len(list(iter_frames(shard))), skipped(shard))
    """)
    assert "SHARD 2 1" in out and "exceeds" in out and "s.000002.png" in out, out
    assert grew < 150, f"a 20000x20000 PNG bomb in a shard grew the peak RSS by {grew:.0f} MB"


# ------------------------------------------------------------------ 7. undecodable frames in a folder
def test_empty_and_undecodable_frames_in_a_folder_are_skipped(tmp_path, clip, caplog):
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, rgb in enumerate(clip):
        (folder / f"{i:04d}.png").write_bytes(png_bytes(rgb))
    (folder / "0002.png").write_bytes(b"")
    (folder / "0005.png").write_bytes(b"not a png at all")
    (folder / "timestamps.txt").write_text("\n".join(str(i / 25) for i in range(len(clip))))
    with caplog.at_level(logging.WARNING):
        frames = list(open_video(folder))
    assert len(frames) == len(clip) - 2
    assert [round(t * 25) for _, t in frames] == [0, 1, 3, 4, 6, 7]  # each frame keeps its own stamp
    assert "0002.png" in caplog.text and "0005.png" in caplog.text
    (ref,) = expand_media([folder])
    assert len(list(iter_frames(ref))) == len(clip) - 2 and skipped(ref) == 2


# ------------------------------------------------------------------ 8, 17. list files
def test_a_list_line_over_the_cap_is_refused_without_reading_the_file(tmp_path):
    listing = tmp_path / "huge.txt"
    with open(listing, "wb") as f:
        f.write(b"a" * (200 << 10))
        f.truncate(1 << 30)  # a sparse GiB after it
    grew, out = peak_rss_mb(f"""
        from deltaworld_core.data.media import MediaError
        try:
            expand_media([{str(listing)!r}])
        except MediaError as err:
            print("ERROR", err)
    """)
    line = out.split("ERROR", 1)[1].splitlines()[0]
    assert "huge.txt" in line and "line 1" in line
    assert grew < 100, f"a 1 GiB list grew the peak RSS by {grew:.0f} MB"


def test_list_entries_that_are_not_recordings_name_the_list_and_line(tmp_path, clip):
    good = tmp_path / "good.db3"
    rosbag.write_frames(good, TOPIC, stamped(clip))
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    cases = {f"{'x' * 300}.mp4": "too long", str(fifo): "FIFO", "/dev/zero": "device", str(loop): "symbolic link",
             str(tmp_path / "missing.mp4"): "no such file"}
    for entry, why in cases.items():
        listing = tmp_path / "list.txt"
        listing.write_text(f"# cameras\n{good}\n{entry}\n")
        with pytest.raises(MediaError) as err:
            expand_media([listing])
        line = str(err.value)
        assert "list.txt" in line and "line 3" in line and why in line and "\n" not in line, line
        errors: list[str] = []
        refs = expand_media([listing], errors=errors)
        assert [r.path for r in refs] == [str(good)] and len(errors) == 1 and why in errors[0]


def test_a_file_url_in_a_list_is_its_path(tmp_path, clip):
    good = tmp_path / "my cam.db3"
    rosbag.write_frames(good, TOPIC, stamped(clip))
    listing = tmp_path / "list.txt"
    listing.write_text(f"file://{str(good).replace(' ', '%20')}\n")
    (ref,) = expand_media([listing])
    assert ref.path == str(good)
    listing.write_text("https://example.com/cam.mp4\n")
    with pytest.raises(MediaError, match="URL"):
        expand_media([listing])


def test_an_empty_bag_is_refused_by_list_naming_it(tmp_path, clip, capsys):
    good = tmp_path / "good.mcap"
    rosbag.write_frames(good, TOPIC, stamped(clip))
    for suffix in (".mcap", ".db3"):
        empty = tmp_path / f"empty{suffix}"
        with rosbag.BagWriter(empty) as writer:
            writer.write(TOPIC, rosbag.image_message(clip[0], 1.0))
        if suffix == ".db3":
            with sqlite3.connect(empty) as db:
                db.execute("DELETE FROM messages")
        else:
            empty.unlink()
            from mcap.writer import Writer

            with open(empty, "wb") as stream:
                w = Writer(stream)
                w.start("ros2", "test")
                s = w.register_schema(rosbag.IMAGE_TYPE, "ros2msg", b"")
                w.register_channel(TOPIC, "cdr", s)
                w.finish()
        assert media_main(["list", str(empty)]) == 2
        err = capsys.readouterr().err
        assert empty.name in err and "no messages" in err and len(err.strip().splitlines()) == 1
        assert media_main(["list", str(good), str(empty)]) == 2
        out, err = capsys.readouterr()
        assert "good.mcap" in out and empty.name in err


# ------------------------------------------------------------------ 18. any file OpenCV decodes
def test_a_video_with_an_extension_not_listed_is_read_if_it_decodes(tmp_path, clip):
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (48, 32))
    for f in clip:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    ts = tmp_path / "clip.ts"
    ts.write_bytes(avi.read_bytes())
    for name in ("clip.ts", "clip.bin"):  # a listed extension, and one OpenCV decodes anyway
        ts = avi.rename(tmp_path / name) if name == "clip.bin" else ts
        (ref,) = expand_media([ts])
        assert ref.kind == "video" and len(list(iter_frames(ref))) == len(clip)
    junk = tmp_path / "notes.bin"
    junk.write_text("not a video")
    with pytest.raises(MediaError, match="notes.bin"):
        expand_media([junk])


def test_replay_never_publishes_a_zero_size_or_absurd_image(tmp_path, clip):
    pytest.importorskip("sensor_msgs.msg")
    from deltaworld_ros.replay import bag_messages

    bag = tmp_path / "zero.mcap"
    with rosbag.BagWriter(bag) as writer:
        for i, rgb in enumerate(clip[:3]):
            writer.write(TOPIC, rosbag.image_message(rgb, 1.0 + i))
        writer.write(TOPIC, rosbag.ImageMessage(1, 0, "cam", memoryview(b""), 0, 0, "rgb8", False, 0))
        writer.write(TOPIC, rosbag.ImageMessage(1, 0, "cam", memoryview(b"\0" * 64), 40000, 40000, "rgb8", False, 0))
    sent = [msg for _, msg in bag_messages(bag, TOPIC)]
    assert len(sent) == 3 and all(m.height == 32 and m.width == 48 for m in sent)
    assert skipped(f"{bag}#{TOPIC}") == 2


# ------------------------------------------------------------------ the run goes on: evaluate
from test_evaluate import TINY_YAML  # noqa: E402 - the evaluate tests' tiny random model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture(scope="module")
def long_clip() -> np.ndarray:
    return SyntheticWorld(7, (32, 48)).render_clip(40, 25.0)["frames"]


def evaluate(tiny, tmp_path, *args, monkeypatch=None) -> tuple[int, dict | None, list[int]]:
    """(exit status, JSON result or None, sizes of the VFM's batches)."""
    from deltaworld_core import evaluate as ev
    from deltaworld_core.evaluation import cli

    batches: list[int] = []
    if monkeypatch is not None:
        build = cli.build_vfm

        def counting(*a, **kw):
            vfm = build(*a, **kw)
            vfm.register_forward_pre_hook(lambda _m, inputs: batches.append(len(inputs[0])))
            return vfm

        monkeypatch.setattr(cli, "build_vfm", counting)
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    rc = ev.main(["--config", str(tiny), "--k", "2", "--no-cache", "--json", str(out), *args])
    return rc, json.loads(out.read_text()) if out.is_file() else None, batches


def test_evaluate_goes_on_past_unusable_recordings_and_exits_2_without_any(tiny, tmp_path, long_clip, capsys,
                                                                          caplog):
    good = tmp_path / "good.mcap"
    rosbag.write_frames(good, TOPIC, stamped(long_clip))
    bad = tmp_path / "bad.db3"  # every data cell NULL: a bag with no valid frame
    rosbag.write_frames(bad, TOPIC, stamped(long_clip[:10]))
    with sqlite3.connect(bad) as db:
        db.execute("CREATE TABLE loose AS SELECT * FROM messages")
        db.execute("DROP TABLE messages")
        db.execute("ALTER TABLE loose RENAME TO messages")
        db.execute("UPDATE messages SET data = NULL")
    empty = tmp_path / "empty.db3"
    rosbag.write_frames(empty, TOPIC, stamped(long_clip[:1]))
    with sqlite3.connect(empty) as db:
        db.execute("DELETE FROM messages")
    rc, res, _ = evaluate(tiny, tmp_path, "--video", str(bad), "--video", str(good), "--video", str(empty))
    assert rc == 0 and res["clips"] > 0 and list(res["videos"]) == [f"{good}#{TOPIC}"]
    assert set(res["refused"]) == {f"{bad}#{TOPIC}", str(empty)}
    assert "empty.db3" in res["refused"][str(empty)] and "no messages" in res["refused"][str(empty)]
    capsys.readouterr()
    caplog.clear()
    rc, res, _ = evaluate(tiny, tmp_path, "--video", str(bad), "--video", str(empty))
    err = capsys.readouterr().err
    assert rc == 2 and res is None and "no valid recording (2 refused" in err
    assert "bad.db3" in caplog.text and "empty.db3" in caplog.text  # each refusal is logged with its reason


def test_evaluate_takes_mixed_frame_sizes_and_skips_bad_frames(tiny, tmp_path, long_clip):
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, rgb in enumerate(long_clip):
        big = cv2.resize(rgb, (96, 64)) if i % 2 else rgb  # the camera switches resolution
        (folder / f"{i:04d}.png").write_bytes(png_bytes(big))
    (folder / "0007.png").write_bytes(b"")
    (folder / "0011.png").write_bytes(b"garbage")
    (folder / "timestamps.txt").write_text("\n".join(f"{i / 25:.6f}" for i in range(len(long_clip))))
    rc, res, _ = evaluate(tiny, tmp_path, "--video", str(folder), "--stride", "1")
    assert rc == 0 and res["clips"] > 0
    bag = tmp_path / "mixed.mcap"
    rosbag.write_frames(bag, TOPIC, [(cv2.resize(f, (96, 64)) if i % 3 == 0 else f, t)
                                     for i, (f, t) in enumerate(stamped(long_clip))])
    rc, res, _ = evaluate(tiny, tmp_path, "--video", str(bag))
    assert rc == 0 and res["clips"] > 0


def test_evaluate_with_stride_1_computes_each_frames_features_once(tiny, tmp_path, long_clip, monkeypatch):
    bag = tmp_path / "cam.mcap"
    rosbag.write_frames(bag, TOPIC, stamped(long_clip))  # 40 frames at 25 fps: 9 at 0.2 s steps
    rc, res, batches = evaluate(tiny, tmp_path, "--video", str(bag), "--stride", "1", monkeypatch=monkeypatch)
    assert rc == 0 and res["clips"] == 3  # windows of 7 of the 9 sub-sampled frames, one frame apart
    assert sum(batches) - 1 == 9  # each frame once, not 3 x 7 (the 1: the black frame's features)


def test_frame_features_are_those_of_each_frame_alone():
    import torch

    from deltaworld_core.evaluation.frame_features import FrameFeatures

    seen: list[tuple] = []

    def encode(frames):
        seen.append(frames.shape)
        return torch.from_numpy(frames.reshape(len(frames), -1)[:, :4].astype(np.float32))[:, None]

    memo = FrameFeatures(encode, batch=2)
    frames = [(i, np.full((2 + i % 2, 3, 3), i, np.uint8), i * 0.2) for i in range(6)]
    a = memo.window(frames[0:4])
    b = memo.window(frames[1:5])
    assert memo.encoded == 5 and all(s[0] <= 2 for s in seen)
    assert a[:, 0, 0].tolist() == [0, 1, 2, 3] and b[:, 0, 0].tolist() == [1, 2, 3, 4]


# ------------------------------------------------------------------ the run goes on: train
def _train_config(tmp_path: Path, paths: list[Path], feature_cache: bool) -> Path:
    import yaml
    from test_train import TINY as CACHED
    from test_train_stream import TINY as STREAMED

    cfg = dict(CACHED if feature_cache else STREAMED)
    cfg["data"] = dict(cfg["data"])
    if feature_cache:
        cfg["data"].update({"synthetic": {"seeds": [0, 0]}, "motion": {"windows": 0},
                            "videos": {"paths": [str(p) for p in paths], "window": 8}})
    else:
        cfg["data"]["videos"] = {"paths": [str(p) for p in paths], "segment": [0.0, 1.0]}
    cfg.update({"steps": 2, "out": str(tmp_path / "run"), "data_cache": None})
    cfg.pop("data_cache")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("feature_cache", [False, True])
def test_train_goes_on_past_unusable_recordings_and_exits_2_without_any(tmp_path, long_clip, feature_cache, caplog):
    from deltaworld_core.train import main as train_main

    folder = tmp_path / "cam"  # a frame folder with an empty and an undecodable frame: the rest trains
    folder.mkdir()
    for i, rgb in enumerate(long_clip):
        (folder / f"{i:04d}.png").write_bytes(png_bytes(cv2.resize(rgb, (80, 64))))
    (folder / "0003.png").write_bytes(b"")
    (folder / "0009.png").write_bytes(b"not a png")
    (folder / "timestamps.txt").write_text("\n".join(f"{i / 25:.6f}" for i in range(len(long_clip))))
    missing = tmp_path / "gone.mp4"
    listing = tmp_path / "cams.txt"
    listing.write_text(f"{folder}\n{missing}\n")
    fifo = tmp_path / "pipe.db3"
    os.mkfifo(fifo)
    cfg = _train_config(tmp_path, [listing, fifo], feature_cache)
    with caplog.at_level(logging.WARNING):
        assert train_main(["--config", str(cfg), "data.cache_dir=" + str(tmp_path / "cache")]) == 0
    assert "gone.mp4" in caplog.text and "cams.txt: line 2" in caplog.text and "FIFO" in caplog.text
    assert (tmp_path / "run").is_dir()
    cfg = _train_config(tmp_path, [missing, fifo], feature_cache)
    assert train_main(["--config", str(cfg), "out=" + str(tmp_path / "run2")]) == 2


# ------------------------------------------------------------------ 14. forecast reads what train reads
def test_forecast_takes_bags_and_bag_folders(tmp_path, long_clip, capsys):
    import yaml
    from deltaworld_core import forecast
    from test_cli import TINY as FORECAST_TINY

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(FORECAST_TINY))
    bag = tmp_path / "cam.mcap"
    rosbag.write_frames(bag, TOPIC, stamped(long_clip[:10]))
    folder = tmp_path / "bagdir"
    folder.mkdir()
    rosbag.write_frames(folder / "bagdir_0.db3", TOPIC, stamped(long_clip[:10]))
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 5, storage_identifier: sqlite3}\n")
    for entry in (bag, folder):
        out = tmp_path / f"out_{entry.name}"
        assert forecast.main(["--video", str(entry), "--out", str(out), "--config", str(cfg), "--threads", "1"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["frames"] == 10 and summary["forecasts"] > 0
    two = tmp_path / "two.mcap"
    with rosbag.BagWriter(two) as writer:
        for rgb, t in stamped(long_clip[:4]):
            writer.write("/a/image", rosbag.image_message(rgb, t))
            writer.write("/b/image", rosbag.image_message(rgb, t))
    assert forecast.main(["--video", str(two), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "/a/image" in err and "Traceback" not in err


# ------------------------------------------------------------------ 20. calibrate on any recording
def test_calibrate_fits_on_bags_and_folders_and_refuses_the_bad_alone(tiny, tmp_path, long_clip, capsys):
    from deltaworld_core import calibrate

    bag = tmp_path / "drive.mcap"
    rosbag.write_frames(bag, TOPIC, stamped(long_clip))
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, rgb in enumerate(long_clip):
        (folder / f"{i:04d}.png").write_bytes(png_bytes(rgb))
    (folder / "timestamps.txt").write_text("\n".join(f"{i / 25:.6f}" for i in range(len(long_clip))))
    out = tmp_path / "calibration.json"
    args = ["--config", str(tiny), "--no-cache", "--k", "2"]
    assert calibrate.main([*args, "--video", str(bag), "--video", str(folder), "--video", str(tmp_path / "gone.mcap"),
                           "--json", str(out)]) == 0
    fit = json.loads(out.read_text())
    assert set(fit["videos"]) == {f"{bag}#{TOPIC}", "cam"} and fit["mean_scale"] >= 0
    assert list(fit["refused"]) == [str(tmp_path / "gone.mcap")]
    capsys.readouterr()
    assert calibrate.main([*args, "--video", str(tmp_path / "gone.mcap")]) == 2
    assert "gone.mcap" in capsys.readouterr().err


def test_evaluate_and_calibrate_say_no_valid_recording_in_the_same_words(tiny, tmp_path, capsys, caplog):
    from deltaworld_core import calibrate
    from deltaworld_core.data.refs import no_valid_recording

    gone = ["--video", str(tmp_path / "gone.mcap"), "--video", str(tmp_path / "lost.mcap")]
    rc, _, _ = evaluate(tiny, tmp_path, *gone)
    evaluate_err = capsys.readouterr().err
    assert rc == 2
    assert calibrate.main(["--config", str(tiny), "--no-cache", "--k", "2", *gone]) == 2
    calibrate_err = capsys.readouterr().err
    refused = [r.getMessage().split("refused ", 1)[1] for r in caplog.records if r.name.endswith("evaluation.cli")]
    assert len(refused) == 2 and "lost.mcap" in refused[1]  # each refusal still logged, not only the first
    assert [r.getMessage() for r in caplog.records if r.name.endswith("calibrate")] == [f"refused {x}" for x in refused]
    line = no_valid_recording(refused)
    assert evaluate_err.splitlines()[-1].endswith(f"error: {line}")
    assert calibrate_err.splitlines()[-1].endswith(f"error: {line}")


def test_each_compressed_decode_reads_the_header_once(clip, monkeypatch):
    """The frame folders' files, a recording's CompressedImage and the node's camera message each
    read the PNG/JPEG header once: the decoder is handed what the size check read."""
    from deltaworld_core.imaging import decode, decode_image

    jpeg = cv2.imencode(".jpg", clip[0])[1].tobytes()
    reads = []
    size = decode.compressed_size
    monkeypatch.setattr(decode, "compressed_size", lambda data: reads.append(1) or size(data))
    paths = {"file": lambda: decode_image(jpeg, max_side=32),
             "recording": lambda: rosbag.image_to_rgb(rosbag.ImageMessage(1, 0, "cam", memoryview(jpeg), format="jpeg"),
                                                      max_side=32)}
    if importlib.util.find_spec("rclpy") is not None:
        from sensor_msgs.msg import CompressedImage

        from deltaworld_ros.image_conversion import msg_to_rgb

        paths["camera"] = lambda: msg_to_rgb(CompressedImage(format="jpeg", data=jpeg), model_size=(16, 16))
    for name, read in paths.items():
        reads.clear()
        assert read().ndim == 3 and len(reads) == 1, name


def test_one_decode_function_checks_every_image_format_header_first(clip):
    from deltaworld_core.imaging import ABSURD_SIZE, UNDECODABLE, ZERO_SIZE, ImageError, decode_image

    rgb = clip[0]
    for ext in (".png", ".jpg", ".ppm", ".pgm"):
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if ext == ".pgm" else np.ascontiguousarray(rgb[..., ::-1])
        data = cv2.imencode(ext, pixels)[1].tobytes()
        assert decode_image(data).shape == (32, 48, 3) and decode_image(data, max_side=24).shape == (16, 24, 3)
    bad = {b"": ZERO_SIZE, b"GIF89a....": UNDECODABLE, b"P5\n30000 30000\n255\n" + b"\0" * 64: ABSURD_SIZE,
           png_bomb(20000)[:200]: ABSURD_SIZE}
    for data, cause in bad.items():
        with pytest.raises(ImageError) as err:
            decode_image(data)
        assert err.value.cause == cause and "\n" not in str(err.value)
