"""Frames per second of each recording format through the data reader (scripts/bench_loader.py)."""

from __future__ import annotations

from pathlib import Path

from .common import fmt, load, provenance, table
from .registry import renderer


LOADER_FORMATS = {
    "video_mp4": "video (mp4)",
    "frame_folder_jpg": "JPEG frame folder",
    "bag_mcap_rgb8": "bag, MCAP, rgb8",
    "bag_mcap_jpeg": "bag, MCAP, JPEG CompressedImage",
    "bag_db3_rgb8": "bag, sqlite3, rgb8",
    "shard_jpg": "tar shard, JPEG frames (full size)",
    "shard_jpg_256px": "tar shard, JPEG frames (written with `--max-side 256`)",
    "shard_mp4": "tar shard, mp4",
}


@renderer("loader_cpu")
def render_loader_cpu(results: Path) -> str:
    """Frames per second of each recording format through the data reader (results/loader_cpu.json)."""
    d = load(results, "loader_cpu.json")
    sides = list(next(iter(d["formats"].values())))
    rows = [[LOADER_FORMATS.get(name, f"`{name}`"), *(fmt(f.get(side, {}).get("frames_per_s"), 0) for side in sides)]
            for name, f in d["formats"].items()]
    header = ["format", *("full size" if side == "full" else f"{side} px" for side in sides)]
    m = d.get("machine", {})
    return (table(header, rows) + f"\n\nFrames per second, one core ({d.get('timing', '')}); source "
            f"{d.get('source', '?')}; {m.get('cpu', '?')}, {m.get('cores', '?')} cores, 1-minute load "
            f"{fmt(m.get('load_1min'), 1)} at the start. {provenance(d, results, 'loader_cpu.json')}.")




@renderer("cdr_decode")
def render_cdr_decode(results: Path) -> str:
    """CDR decoding of one camera Image per decoder (results/loader_cpu.json, cdr_decode_*)."""
    d = load(results, "loader_cpu.json")
    key = next(k for k in d if k.startswith("cdr_decode_"))
    c = d[key]
    decoders = [("deltaworld_cdr_us", "this project's decoder"),
                ("deltaworld_cdr_plus_rgb_us", "this project's decoder and the conversion to an RGB array"),
                ("rosbags_deserialize_us", "`rosbags`"), ("mcap_ros2_support_decode_us", "`mcap-ros2-support`"),
                ("rclpy_deserialize_us", "rclpy's `deserialize_message`")]
    rows = [[label, fmt(c.get(k), 1)] for k, label in decoders if k in c]
    what = key.removeprefix("cdr_decode_").replace("_", " ")
    return (table(["decoder", "us a message"], rows)
            + f"\n\nOne {what} `Image` ({fmt(c.get('message_bytes'))} bytes), {c.get('timing', '?')}. "
              f"{provenance(d, results, 'loader_cpu.json')}.")


@renderer("train_loader")
def render_train_loader(results: Path) -> str:
    """The streaming loader against what a training stage consumes (results/train_loader_cpu.json,
    scripts/bench_train_loader.py)."""
    d = load(results, "train_loader_cpu.json")
    c, loader, many = d["config"], d["loader"], d.get("loader_many_recordings") or {}
    use = d["consumption_tokenizer_stage"]
    rows = [[f"loader, {c.get('workers')} workers, {len(c.get('videos', []))} recordings", fmt(loader["clips_per_s"], 1),
             fmt(loader.get("workers_rss_mb_max"), 0)]]
    if many:
        rows.append([f"loader, {c.get('workers')} workers, {many.get('recordings')} recordings",
                     fmt(many["clips_per_s"], 1), fmt(many.get("workers_rss_mb_max"), 0)])
    rows.append([f"tokenizer stage, VFM on the fly, {use.get('threads')} threads (batch {c.get('batch_size')})",
                 fmt(use["clips_per_s"], 1), "-"])
    m = d.get("machine", {})
    return (table(["what", "pairs/s", "workers' peak RSS MB"], rows)
            + f"\n\nLoader over consumption: **{fmt(d.get('loader_over_consumption'), 1)}x** (target {d.get('target')}: "
              f"{'met' if d.get('met') else 'missed'}); {c.get('image_size', ['?'])[0]} px pairs; {m.get('cpu', '?')}, "
              f"{m.get('cores', '?')} cores, 1-minute load {fmt(m.get('load_avg_1min_at_start'), 1)} at the start. "
              f"{provenance(d, results, 'train_loader_cpu.json')}.")
