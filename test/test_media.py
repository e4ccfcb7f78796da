"""deltaworld_core.data.media: folders, lists (plain, CSV, Kinetics), frame folders and tar shards
of small videos written here expand cheaply and read back; bad input is one clear error naming
the file, or a frame skipped and counted, never a hang."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from deltaworld_core.config import ConfigError
from deltaworld_core.data.media import MediaError, duration_s, expand_media, iter_frames, main, skipped

from deltaworld_core.data.synthetic import SyntheticWorld

FPS = 25.0
FRAMES = 12


def write_video(path: Path, seed: int, fourcc: str = "MJPG", frames: int = FRAMES) -> np.ndarray:
    clip = SyntheticWorld(seed, (48, 64)).render_clip(frames, FPS)["frames"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (64, 48))
    for rgb in clip:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return clip


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """root/b/x.avi, root/a/y.avi, root/a/cam/ (a frame folder with timestamps), root/notes.md,
    root/b/thumbs/cover.png."""
    root = tmp_path_factory.mktemp("library")
    write_video(root / "b" / "x.avi", 1)
    write_video(root / "a" / "y.avi", 2)
    frames = SyntheticWorld(3, (48, 64)).render_clip(4, FPS)["frames"]
    (root / "a" / "cam").mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(root / "a" / "cam" / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (root / "a" / "cam" / "timestamps.txt").write_text("10.0\n10.1\n10.2\n10.5\n")
    (root / "notes.md").write_text("not media")
    (root / "b" / "thumbs").mkdir()  # images without timestamps.txt: not a frame folder
    cv2.imwrite(str(root / "b" / "thumbs" / "cover.png"), np.zeros((4, 4, 3), np.uint8))
    return root


def test_a_folder_expands_recursively_in_sorted_order(library, caplog):
    with caplog.at_level(logging.WARNING):
        refs = expand_media([library])
    assert f"1 folder(s) of images without timestamps.txt not read (first: {library}/b/thumbs)" in caplog.text
    assert [(r.kind, r.name) for r in refs] == [("frames", f"{library}/a/cam"), ("video", f"{library}/a/y.avi"),
                                                ("video", f"{library}/b/x.avi")]
    assert expand_media([str(library)]) == refs  # deterministic
    cam = list(iter_frames(refs[0]))
    assert [t for _, t in cam] == [10.0, 10.1, 10.2, 10.5] and cam[0][0].shape == (48, 64, 3)
    video = list(iter_frames(refs[1]))
    assert len(video) == FRAMES and [t for _, t in video] == pytest.approx([i / FPS for i in range(FRAMES)])
    small = next(iter_frames(refs[1], max_side=32))[0]
    assert small.shape == (24, 32, 3)


def test_lists_plain_csv_and_kinetics(library, tmp_path, caplog):
    (library / "train.txt").write_text("# training videos\nb/x.avi\n\na/y.avi\n")
    listed = [r.path for r in expand_media([library / "train.txt"])]
    assert listed == [str(library / "b/x.avi"), str(library / "a/y.avi")]
    (library / "paths.csv").write_text(f"label,path\nstreet,{library}/a/y.avi\nstreet,a/cam\n")
    assert [r.kind for r in expand_media([library / "paths.csv"])] == ["video", "frames"]
    # Kinetics: label,youtube_id,time_start,time_end,split -> <id>_<start:06d>_<end:06d>.<ext> under the list's folder
    kin = tmp_path / "kinetics"
    write_video(kin / "train" / "abseiling" / "AbC-dEf_ghi_000012_000022.avi", 4)
    write_video(kin / "train" / "zumba" / "zzz_000000_000010.avi", 5)
    (kin / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n" "zumba,zzz,0,10,train\n"
                                   "abseiling,AbC-dEf_ghi,12,22,train\n" "abseiling,gone,3,13,train\n")
    with caplog.at_level(logging.WARNING):
        refs = expand_media([kin / "train.csv"])
    assert [Path(r.path).name for r in refs] == ["zzz_000000_000010.avi", "AbC-dEf_ghi_000012_000022.avi"]
    assert "1 of 3 Kinetics rows have no video file" in caplog.text
    (kin / "none.csv").write_text("label,youtube_id,time_start,time_end,split\nx,gone,3,13,train\n")
    with pytest.raises(MediaError, match="none.csv: none of its 1 Kinetics rows"):
        expand_media([kin / "none.csv"])


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty: a folder with no videos"),
    (lambda d: d / "missing.mp4", "missing.mp4: no such file or folder"),
    (lambda d: (d / "list.txt").write_text("gone.mp4\n") and d / "list.txt", "gone.mp4: no such file"),
    (lambda d: (d / "list.csv").write_text("a,b\n1,2\n") and d / "list.csv", "list.csv: a CSV needs a header"),
    (lambda d: (d / "blank.txt").write_text("# nothing\n") and d / "blank.txt", "blank.txt: an empty list"),
    (lambda d: (d / "data.xyz").write_text("?") and d / "data.xyz", "data.xyz: not a recording this reader knows"),
    (lambda d: (d / "f").mkdir() or cv2.imwrite(str(d / "f" / "0.png"), np.zeros((4, 4, 3), np.uint8)) and d / "f",
     "f: a frame folder needs timestamps.txt"),
    (lambda d: (d / "s.tar").write_bytes(b"\x01" * 700) and d / "s.tar", "s.tar: not a readable uncompressed tar"),
])
def test_bad_entries_are_one_clear_error_naming_the_file(tmp_path, make, message):
    with pytest.raises(MediaError, match=message):
        expand_media([make(tmp_path)])


def test_a_video_that_fails_to_decode_mid_stream_is_skipped_and_counted(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, 6, "mp4v", frames=20)
    data = bytearray(video.read_bytes())
    data[len(data) // 2:len(data) // 2 + 300] = bytes(300)  # one frame's packet zeroed
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    ref = expand_media([bad])[0]
    frames = list(iter_frames(ref))
    assert 0 < len(frames) < 20 and skipped(ref) == 20 - len(frames)
    positions = [round(t * FPS) for _, t in frames]  # later frames keep their own times
    assert positions == sorted(positions) and positions[-1] == 19
    truncated = tmp_path / "cut.avi"
    write_video(tmp_path / "whole.avi", 6, frames=20)
    truncated.write_bytes((tmp_path / "whole.avi").read_bytes()[:(tmp_path / "whole.avi").stat().st_size // 2])
    ref = expand_media([truncated])[0]
    n = len(list(iter_frames(ref)))
    assert 0 < n < 20 and skipped(ref) == 20 - n
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 2048)
    with pytest.raises(MediaError, match="garbage.mp4: cannot open the video"):
        list(iter_frames(expand_media([garbage])[0]))


@pytest.mark.parametrize("fmt", ["jpg", "mp4"])
def test_tar_shards_write_expand_and_read(library, tmp_path, fmt, capsys):
    out = tmp_path / "shards"
    assert main(["shard", "--out", str(out), "--per-shard", "2", "--format", fmt, str(library / "b"),
                 str(library / "a" / "y.avi"), str(library / "b" / "x.avi")]) == 0
    shards = capsys.readouterr().out.split()
    assert shards == [str(out / "shard-000000.tar"), str(out / "shard-000001.tar")]
    assert not list(out.glob(".*.tmp"))
    refs = expand_media([f"{out}/shard-{{000000..000001}}.tar"])
    assert [r.kind for r in refs] == ["shard"] * 3 and len({r.name for r in refs}) == 3
    assert [(r.path, r.member) for r in expand_media([out])] == [(r.path, r.member) for r in refs]  # a folder of shards
    source = list(iter_frames(expand_media([library / "a" / "y.avi"])[0]))
    got = list(iter_frames(refs[1]))
    assert [t for _, t in got] == pytest.approx([t for _, t in source])
    for (a, _), (b, _) in zip(got, source):
        assert np.abs(a.astype(int) - b).mean() < (4 if fmt == "jpg" else 1e-9)
    assert next(iter_frames(refs[1], max_side=32))[0].shape == (24, 32, 3)


def test_a_damaged_frame_in_a_shard_is_skipped_and_counted(tmp_path):
    shard = tmp_path / "s.tar"
    frames = SyntheticWorld(7, (48, 64)).render_clip(3, FPS)["frames"]
    with tarfile.open(shard, "w") as tar:
        for i, rgb in enumerate(frames):
            data = cv2.imencode(".jpg", rgb)[1].tobytes() if i != 1 else b"\xff\xd8\xff\xe0broken"
            info = tarfile.TarInfo(f"clip.{i:06d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        meta = b'{"stamps": [0.0, 0.1, 0.2]}'
        info = tarfile.TarInfo("clip.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    (ref,) = expand_media([shard])
    assert ref.member == "clip"
    assert [t for _, t in iter_frames(ref)] == [0.0, 0.2] and skipped(ref) == 1


def test_data_videos_paths_and_topic_in_a_training_config(library, tmp_path):
    from deltaworld_core.config import from_dict
    from deltaworld_core.data.rosbag import BagWriter, image_message
    from deltaworld_core.data.windows import DataConfig, video_files

    d = from_dict(DataConfig, {"videos": {"paths": [str(library), str(library / "b" / "x.avi")], "topic": "/cam"}})
    d.validate()
    files = video_files(d.videos, None)
    assert [f.name for f in files] == [f"{library}/a/cam", f"{library}/a/y.avi", f"{library}/b/x.avi", "x.avi"]
    with BagWriter(tmp_path / "cam.mcap") as writer:
        writer.write("/cam", image_message(np.zeros((8, 8, 3), np.uint8), 1.0))
    d = from_dict(DataConfig, {"videos": {"paths": [str(tmp_path / "cam.mcap")], "topic": ["/cam"]}})
    d.validate()
    with pytest.raises(ConfigError, match="read by the streaming loader"):
        video_files(d.videos, None)
    with pytest.raises(ConfigError, match="data.videos.paths: .*empty: a folder with no videos"):
        (tmp_path / "empty").mkdir()
        video_files(from_dict(DataConfig, {"videos": {"paths": [str(tmp_path / "empty")]}}).videos, None)
    with pytest.raises(ConfigError, match="data.videos.topic must be a topic name"):
        from_dict(DataConfig, {"videos": {"topic": 3}}).validate()


def _in(t: float, lo: float, hi: float) -> bool:
    return lo <= t < hi


@pytest.mark.parametrize("fourcc,ext", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_a_video_window_is_exactly_the_frames_stamped_in_it(tmp_path, fourcc, ext):
    """mp4v has keyframes every few frames: the seek must still land on the exact frame."""
    video = tmp_path / f"v{ext}"
    write_video(video, 4, fourcc, frames=40)
    (ref,) = expand_media([video])
    whole = list(iter_frames(ref))
    assert duration_s(ref) == pytest.approx((0.0, 39 / FPS))
    for lo, hi in ((0.5, 0.9), (0.0, 0.13), (1.3, 5.0)):
        got = list(iter_frames(ref, start_s=lo, stop_s=hi))
        want = [(f, t) for f, t in whole if _in(t, lo, hi)]
        assert [t for _, t in got] == [t for _, t in want] and got
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(got, want))
    assert [t for _, t in iter_frames(ref, start_s=1.0)] == [t for _, t in whole if t >= 1.0]
    assert not list(iter_frames(ref, start_s=2.0, stop_s=3.0))  # past the end: nothing, not an error
    assert skipped(ref) == 0
    for bad in ({"start_s": 1.0, "stop_s": 1.0}, {"start_s": float("nan")}):
        with pytest.raises(ValueError, match="start_s"):
            next(iter_frames(ref, **bad))


def test_frame_folder_and_jpeg_shard_windows_skip_files_outside(library, tmp_path):
    """A frame outside the window is never read: a broken one there is not even noticed."""
    folder = tmp_path / "cam"
    folder.mkdir()
    for f in (library / "a" / "cam").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "0000.png").write_bytes(b"broken")
    (ref,) = expand_media([folder])
    assert duration_s(ref) == (10.0, 10.5)
    assert [t for _, t in iter_frames(ref, start_s=10.05, stop_s=10.3)] == [10.1, 10.2] and skipped(ref) == 0
    assert [t for _, t in iter_frames(ref, stop_s=10.15)] == [10.1] and skipped(ref) == 1  # frame 0 in: read

    from deltaworld_core.data.convert import write_shards

    for fmt in ("jpg", "mp4"):
        shard = write_shards(expand_media([library / "a" / "y.avi"]), tmp_path / fmt, 1, fmt=fmt)[0]
        (sample,) = expand_media([shard])
        whole = list(iter_frames(sample))
        got = list(iter_frames(sample, start_s=0.1, stop_s=0.3))
        want = [(f, t) for f, t in whole if _in(t, 0.1, 0.3)]
        assert [t for _, t in got] == [t for _, t in want] == pytest.approx([0.12, 0.16, 0.2, 0.24, 0.28])
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(got, want))
        # jpg: the JSON's stamps; mp4: only an fps (the frame count needs the video copied out)
        assert duration_s(sample) == (pytest.approx((0.0, (FRAMES - 1) / FPS)) if fmt == "jpg" else None)
