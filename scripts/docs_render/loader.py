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


