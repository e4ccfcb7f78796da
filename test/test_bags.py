"""rosbag2 recordings read without ROS (deltaworld_core.data.bags): MCAP and sqlite3 bags written
here of synthetic-world frames with real stamps (a gap, a frame whose stamp goes backwards), every
camera encoding, corrupt chunks and messages, wrong topics; the node's context rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from deltaworld_core.data import rosbag as bags
from deltaworld_core.data.rosbag import BagWriter, ImageMessage, image_message
from deltaworld_core.data.media import (MediaError, context_break, duration_s, expand_media, iter_frames,
                                        monotonic_runs, run_starts, skipped)
from deltaworld_core.data.synthetic import SyntheticWorld

REPO = Path(__file__).resolve().parents[1]
# Recorded in arrival order: 25 fps, a 0.6 s gap after frame 3, frame 6 stamped before frame 5.
STAMPS = [1700000000.0, 1700000000.04, 1700000000.08, 1700000000.12, 1700000000.72, 1700000000.76,
          1700000000.74, 1700000000.80, 1700000000.84, 1700000000.88]


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return SyntheticWorld(3, (48, 64)).render_clip(len(STAMPS), 25.0)["frames"]  # uint8 [10, 48, 64, 3]


def write(path: Path, clip, topic="/camera/image_raw", compressed=False, chunk_size=4 << 20, **kw) -> Path:
    with BagWriter(path, chunk_size=chunk_size) as writer:
        for i, (rgb, stamp) in enumerate(zip(clip, STAMPS)):
            # the log time is when the frame arrived: increasing, whatever the header says
            writer.write(topic, image_message(rgb, stamp, compressed=compressed, **kw), 10**9 + i * 40_000_000)
    return path


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_a_bag_yields_exactly_the_frames_and_stamps_written(tmp_path, clip, suffix):
    bag = write(tmp_path / f"cam{suffix}", clip)
    (ref,) = expand_media([bag])
    assert (ref.kind, ref.topic, ref.name) == ("bag", "/camera/image_raw", f"{bag}#/camera/image_raw")
    frames = list(iter_frames(ref))
    assert len(frames) == len(STAMPS)
    for (rgb, stamp), want, want_stamp in zip(frames, clip, STAMPS):
        np.testing.assert_array_equal(rgb, want)
        assert rgb.flags.writeable  # a frame of its own, not a view of the message buffer
        assert stamp == pytest.approx(want_stamp, abs=1e-6)  # header stamps, to the nanosecond
    # The node's rules: the 0.6 s gap and the stamp going backwards each start a new run.
    runs = list(monotonic_runs(frames, max_gap_s=0.5))
    assert [len(r) for r in runs] == [4, 2, 4]
    assert [r[0][1] for r in runs] == pytest.approx([STAMPS[0], STAMPS[4], STAMPS[6]])
    reasons = [why for _, _, why in run_starts(frames, 0.5) if why]
    assert reasons[0] == "start" and "gap 0.600 s" in reasons[1] and "does not increase" in reasons[2]
    assert skipped(ref) == 0


def test_context_break_is_the_forecasters_rule():
    """media.context_break and Forecaster._maybe_reset agree on every case (size change, a stamp
    that does not increase, a gap over max_gap_s, nothing)."""
    from deltaworld_core.forecaster import Forecaster

    cases = [((48, 64, 3), 1.0), ((48, 64, 3), 0.9), ((48, 64, 3), 0.5), ((48, 64, 3), 1.6), ((32, 64, 3), 0.6),
             ((48, 64, 3), 0.54)]
    for shape, stamp in cases:
        reasons = []
        fake = SimpleNamespace(_last_stamp=0.5, _image_shape=(48, 64, 3), max_gap_s=1.0, reset=reasons.append)
        Forecaster._maybe_reset(fake, shape, stamp)
        assert context_break(0.5, (48, 64, 3), stamp, shape, 1.0) == (reasons[0] if reasons else None), (shape, stamp)


def test_compressed_and_every_raw_encoding(tmp_path, clip):
    bag = write(tmp_path / "jpeg.mcap", clip, compressed=True)
    frames = list(iter_frames(expand_media([bag])[0]))
    assert [t for _, t in frames] == pytest.approx(STAMPS, abs=1e-6)
    assert all(np.abs(rgb.astype(int) - want).mean() < 6 for (rgb, _), want in zip(frames, clip))  # JPEG q90
    rgb = clip[0]
    h, w = rgb.shape[:2]

    def raw(encoding, pixels, step_pad=0, bigendian=False):
        rows = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype != np.uint8 else pixels.reshape(h, -1)
        padded = np.zeros((h, rows.shape[1] + step_pad), np.uint8)
        padded[:, :rows.shape[1]] = rows
        return bags.image_to_rgb(ImageMessage(1, 0, "cam", memoryview(padded.tobytes()), h, w, encoding, bigendian,
                                              padded.shape[1]))

    np.testing.assert_array_equal(raw("rgb8", rgb, step_pad=5), rgb)  # row padding skipped
    np.testing.assert_array_equal(raw("bgr8", np.ascontiguousarray(rgb[..., ::-1]), step_pad=3), rgb)
    np.testing.assert_array_equal(raw("rgba8", np.dstack([rgb, np.full((h, w), 7, np.uint8)])), rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(raw("mono8", grey, step_pad=2), np.dstack([grey] * 3))
    deep = grey.astype(np.uint16) * 257  # 0..65535
    np.testing.assert_array_equal(raw("mono16", deep), np.dstack([grey] * 3))
    np.testing.assert_array_equal(raw("mono16", deep.astype(">u2"), bigendian=True), np.dstack([grey] * 3))
    # Bayer RGGB of a flat colour demosaics to that colour
    flat = np.zeros((h, w), np.uint8)
    flat[0::2, 0::2], flat[0::2, 1::2], flat[1::2, 0::2], flat[1::2, 1::2] = 200, 120, 120, 40
    assert np.abs(raw("bayer_rggb8", flat)[4:-4, 4:-4].astype(int) - [200, 120, 40]).max() <= 1
    with pytest.raises(ValueError, match="unsupported camera encoding 'yuv422'"):
        raw("yuv422", rgb)
    with pytest.raises(ValueError, match="expected step x height"):
        bags.image_to_rgb(ImageMessage(1, 0, "", memoryview(b"\x00" * 10), h, w, "rgb8", False, w * 3))
    small = raw("rgb8", rgb)
    assert bags.image_to_rgb(image_message(rgb, 1.0, compressed=True), max_side=32).shape == (24, 32, 3)
    assert small.shape == rgb.shape


def test_cdr_matches_rclpy_both_ways(clip):
    """The small CDR codec reads what rclpy serializes and writes what rclpy deserializes."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from deltaworld_ros.image_conversion import array_to_image_msg, image_to_array

    msg = array_to_image_msg(clip[1][:, :63], "bgr8")  # odd width: odd string and data lengths
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = "cam_x", 1700000000, 123456789
    ours = bags.decode_image_message(bags.IMAGE_TYPE, serialize_message(msg))
    assert (ours.sec, ours.nanosec, ours.frame_id, ours.encoding, ours.width, ours.step) == \
        (1700000000, 123456789, "cam_x", "bgr8", 63, msg.step)
    np.testing.assert_array_equal(bags.image_to_rgb(ours), clip[1][:, :63, ::-1])  # its bytes, read as BGR
    back = deserialize_message(bags.encode_image_message(image_message(clip[2], 5.25, "f", encoding="mono8")), Image)
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id, back.encoding) == \
        (5, 250000000, "f", "mono8")
    np.testing.assert_array_equal(image_to_array(back), cv2.cvtColor(clip[2], cv2.COLOR_RGB2GRAY))
    jpeg = deserialize_message(bags.encode_image_message(image_message(clip[2], 5.0, compressed=True)), CompressedImage)
    assert jpeg.format == "jpeg" and bytes(jpeg.data[:3]) == b"\xff\xd8\xff"


def test_corrupt_chunk_is_skipped_and_counted_never_garbage(tmp_path, clip, caplog):
    bag = write(tmp_path / "cam.mcap", clip, chunk_size=5_000)  # one frame (9 KB) a chunk
    data = bytearray(bag.read_bytes())
    middle = data.index(clip[5].tobytes()[:4000])  # inside frame 5's pixels
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    bad = tmp_path / "corrupt.mcap"
    bad.write_bytes(bytes(data))
    (ref,) = expand_media([bad])
    frames = list(iter_frames(ref))
    assert len(frames) == len(STAMPS) - 1 and skipped(ref) == 1
    kept = [i for i in range(len(STAMPS)) if i != 5]
    for (rgb, stamp), i in zip(frames, kept):  # every frame that comes out is exactly one written
        np.testing.assert_array_equal(rgb, clip[i])
        assert stamp == pytest.approx(STAMPS[i], abs=1e-6)
    assert any("corrupt MCAP chunk" in r.getMessage() and "corrupt.mcap" in r.getMessage() for r in caplog.records)


def test_truncated_mcap_without_summary_reads_what_is_there(tmp_path, clip):
    bag = write(tmp_path / "cam.mcap", clip, chunk_size=5_000)
    cut = tmp_path / "killed.mcap"  # a recorder killed mid-write: no summary, a half chunk at the end
    cut.write_bytes(bag.read_bytes()[:int(bag.stat().st_size * 0.55)])
    (ref,) = expand_media([cut])
    frames = list(iter_frames(ref))
    assert 3 <= len(frames) < len(STAMPS) and skipped(ref) == 1
    for i, (rgb, _) in enumerate(frames):
        np.testing.assert_array_equal(rgb, clip[i])


def test_a_message_that_is_not_cdr_is_skipped(tmp_path, clip):
    bag = tmp_path / "cam.db3"
    with BagWriter(bag) as writer:
        writer.write("/cam", image_message(clip[0], 1.0))
        writer._db.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (1, 1050000000, ?)",
                           (b"\x00\x01\x00\x00" + b"\xff" * 40,))  # a string length past the end
        writer.write("/cam", image_message(clip[1], 1.1))
    (ref,) = expand_media([bag])
    assert [t for _, t in iter_frames(ref)] == pytest.approx([1.0, 1.1]) and skipped(ref) == 1


def test_topics_listed_when_missing_or_ambiguous(tmp_path, clip):
    bag = tmp_path / "two.mcap"
    with BagWriter(bag) as writer:
        for i in range(2):
            writer.write("/left/image_raw", image_message(clip[i], 1.0 + i))
            writer.write("/right/image_raw/compressed", image_message(clip[i], 1.0 + i, compressed=True))
    with pytest.raises(MediaError, match=r"several image topics \(/left/image_raw, /right/image_raw/compressed\)"):
        expand_media([bag])
    with pytest.raises(MediaError, match=r"two.mcap: no image topic /front .*image topics in this bag: /left"):
        expand_media([bag], topic="/front")
    refs = expand_media([bag], topic=["/right/image_raw/compressed", "/left/image_raw"])
    assert [r.topic for r in refs] == ["/right/image_raw/compressed", "/left/image_raw"]
    assert [len(list(iter_frames(r))) for r in refs] == [2, 2]


def write_split_bag(folder, clip):
    """A rosbag2 folder of two MCAP files (frames 0-3 and 4-9 on /cam, each logged at its header
    stamp) and its metadata.yaml; returns the folder."""
    folder.mkdir()
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  storage_identifier: mcap\n")
    for part, (lo, hi) in enumerate([(0, 4), (4, 10)]):
        with BagWriter(folder / f"{folder.name}_{part}.mcap") as writer:
            for i in range(lo, hi):
                writer.write("/cam", image_message(clip[i], STAMPS[i]))
    return folder


def test_bag_folder_with_split_files_reads_in_order(tmp_path, clip):
    folder = write_split_bag(tmp_path / "rosbag2_2026_12_01", clip)
    (ref,) = expand_media([tmp_path])  # found by searching the parent folder
    assert ref.name == f"{tmp_path}/rosbag2_2026_12_01#/cam"
    assert [t for _, t in iter_frames(ref)] == pytest.approx(STAMPS, abs=1e-6)


@pytest.mark.parametrize("name, content, message", [
    ("notes.mcap", b"not a recording", "not an MCAP file"),
    ("notes.db3", b"SQLite format 3\x00" + b"\x00" * 200, "unreadable sqlite3 bag"),
    ("missing.mcap", None, "no such file"),
])
def test_bad_bags_are_one_clear_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=message) as err:
        expand_media([path])
    assert name in str(err.value)


def test_to_bag_tool_video_to_mcap_and_db3(tmp_path, clip, capsys):
    from deltaworld_core.data.media import main

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for rgb in clip:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    for out, extra in ((tmp_path / "clip.mcap", []), (tmp_path / "clip.db3", ["--compressed"])):
        assert main(["to-bag", str(video), str(out), "--topic", "/camera/image_raw", "--start", "100", *extra]) == 0
        assert capsys.readouterr().out.strip() == f"{out}: 10 frames on /camera/image_raw"
        frames = list(iter_frames(expand_media([out])[0]))
        assert [t for _, t in frames] == pytest.approx([100 + i / 25 for i in range(10)], abs=1e-6)
    # as a user runs it (python -m: the readers' MediaError must be the one main catches)
    bad = subprocess.run([sys.executable, "-m", "deltaworld_core.data.media", "to-bag", str(tmp_path / "nope.mp4"),
                          str(tmp_path / "x.mcap")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope.mp4" in bad.stderr
    assert not (tmp_path / "x.mcap").exists()


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_reading_memory_does_not_grow_with_the_recording(tmp_path, clip, suffix):
    """Readers stream: the peak memory of reading 4x more frames stays that of a few frames."""
    import tracemalloc

    def peak(frames: int) -> int:
        bag = tmp_path / f"{frames}{suffix}"
        with BagWriter(bag, chunk_size=20_000) as writer:
            for i in range(frames):
                writer.write("/cam", image_message(clip[i % len(clip)], 1.0 + i / 25))
        ref = expand_media([bag])[0]
        tracemalloc.start()
        count = sum(1 for _ in iter_frames(ref))
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == frames
        return top

    short, long = peak(40), peak(160)
    assert 9216 < short and long < 1.3 * short + 50_000, (short, long)  # at least one frame was traced


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_a_window_reads_only_its_chunks_or_rows_and_exactly_its_frames(tmp_path, clip, suffix):
    """Windows and durations are on the log (receive) time, the clock a bag indexes: here 1.00 s,
    1.04 s, ... while the header stamps the frames carry are 1.7e9 s."""
    bag = write(tmp_path / f"cam{suffix}", clip, chunk_size=5_000)  # MCAP: one frame (9 KB) a chunk
    (ref,) = expand_media([bag])
    log_s = [1.0 + 0.04 * i for i in range(len(STAMPS))]
    assert bags.bag_duration(ref) == pytest.approx((log_s[0], log_s[-1]), abs=1e-9)
    assert duration_s(ref) == bags.bag_duration(ref)
    before = bags.read_counts()
    whole = list(iter_frames(ref))
    mid = bags.read_counts()
    got = list(iter_frames(ref, start_s=1.1, stop_s=1.25))
    after = bags.read_counts()
    inside = [i for i, t in enumerate(log_s) if 1.1 <= t < 1.25]
    assert inside == [3, 4, 5, 6]
    assert [t for _, t in got] == [whole[i][1] for i in inside]  # the header stamps, as an unwindowed read
    assert all(np.array_equal(a, whole[i][0]) for (a, _), i in zip(got, inside))
    unit = "chunks" if suffix == ".mcap" else "rows"
    assert (mid[unit] - before[unit], after[unit] - mid[unit]) == (10, 4)
    assert skipped(ref) == 0
    assert not list(iter_frames(ref, start_s=5.0))


def test_window_and_duration_over_split_files_and_without_a_summary(tmp_path, clip):
    folder = write_split_bag(tmp_path / "rosbag2", clip)
    (ref,) = expand_media([folder])
    assert duration_s(ref) == pytest.approx((STAMPS[0], STAMPS[-1]), abs=1e-6)
    lo, hi = 1700000000.1, 1700000000.75  # across the split; frame 5 (.76) is out, frame 6 (.74) in
    got = [t for _, t in iter_frames(ref, start_s=lo, stop_s=hi)]
    assert got == pytest.approx([t for t in STAMPS if lo <= t < hi], abs=1e-6) and len(got) == 3
    # a killed recorder's file: no index, so no duration; a window still yields exactly its frames
    bag = write(tmp_path / "cam.mcap", clip, chunk_size=5_000)
    cut = tmp_path / "killed.mcap"
    cut.write_bytes(bag.read_bytes()[:int(bag.stat().st_size * 0.55)])
    (killed,) = expand_media([cut])
    assert duration_s(killed) is None
    assert len(list(iter_frames(killed))) >= 4
    assert [t for _, t in iter_frames(killed, start_s=1.05, stop_s=1.13)] == pytest.approx(STAMPS[2:4], abs=1e-6)
