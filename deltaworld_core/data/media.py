"""The recording readers' names, imported from one place, and their command-line tools: every kind
of recording a user can train or evaluate on, named the same way and read as one stream of
``(RGB frame, stamp)``.

* :func:`expand_media` turns the entries of ``data.videos.paths`` (video files, frame folders,
  folders of videos, ``.txt``/``.csv`` lists, rosbag2 recordings, tar shards) into
  :class:`MediaRef` s, cheaply: it lists files and reads bag/tar indexes, never a frame.
* :func:`iter_frames` streams one ref's frames (a whole video is never held in memory), or only
  those of a time window (``start_s``/``stop_s``: the rest are never decoded). A frame or message
  that fails to decode mid-stream is skipped, counted (:func:`skipped`) and logged; a container
  that cannot be opened raises :class:`MediaError`.
* :func:`duration_s` gives a ref's first and last stamp without decoding a frame.
* :func:`monotonic_runs` cuts a stream where the forecast node restarts its context.

The dispatcher is :mod:`.recordings`; below it the readers (:mod:`.capture` video files,
:mod:`.folders`, :mod:`.lists`, :mod:`.rosbag` rosbag2 recordings without ROS, :mod:`.shards`);
above it :mod:`.convert` writes shards and bags. Command-line tools (docs/data-sources.md)::

    python -m deltaworld_core.data.media shard --out DIR --per-shard N VIDEOS...
    python -m deltaworld_core.data.media to-bag VIDEO OUT.mcap --topic /camera/image_raw [--compressed]
    python -m deltaworld_core.data.media list ENTRIES... [--topic T]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..context_rules import context_break
from ..imaging import decode_image
from .capture import video_fps
from .convert import write_bag, write_shards
from .lists import expand_brace_range, read_list
from .recordings import duration_s, expand_media, iter_frames
from .refs import (BAG_EXTS, IMAGE_EXTS, KINDS, LIST_EXTS, SHARD_EXTS, VIDEO_EXTS, MediaError, MediaRef, in_window,
                   record_skip, skipped, skipped_counts)
from .runs import monotonic_runs, run_starts

__all__ = ["BAG_EXTS", "IMAGE_EXTS", "KINDS", "LIST_EXTS", "SHARD_EXTS", "VIDEO_EXTS", "MediaError", "MediaRef",
           "build_parser", "context_break", "decode_image", "duration_s", "expand_brace_range", "expand_media",
           "in_window", "iter_frames", "main", "monotonic_runs", "read_list", "record_skip", "run_starts", "skipped",
           "skipped_counts", "video_fps", "write_bag", "write_shards"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.data.media",
                                     description="List recordings, and write tar shards or rosbag2 bags from videos.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the refs a set of entries names (no decoding); each recording that "
                       "cannot be used is one line on stderr, and the exit status is then 2")
    p.add_argument("entries", nargs="+")
    p.add_argument("--topic", action="append", default=None, help="bag image topic (repeat for several)")
    p = sub.add_parser("shard", help="write WebDataset tar shards of videos (frames as JPEG)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--per-shard", type=int, default=100, help="videos per shard")
    p.add_argument("--format", choices=("jpg", "mp4"), default="jpg",
                   help="jpg: one JPEG per frame (streams without a temp file; default); mp4: the file as is")
    p.add_argument("--max-side", type=int, default=None, help="shrink frames to this longer side (jpg only)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--topic", action="append", default=None, help="bag image topic, for bag inputs")
    p.add_argument("videos", nargs="+", help="any entries expand_media accepts")
    p = sub.add_parser("to-bag", help="write a video as a rosbag2 recording (.mcap or .db3) without ROS")
    p.add_argument("video", type=Path)
    p.add_argument("out", type=Path, help="OUT.mcap or OUT.db3")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage (jpeg) instead of Image rgb8")
    p.add_argument("--frame-id", default="camera")
    p.add_argument("--start", type=float, default=None,
                   help="stamp of the first frame, seconds since the epoch (default: now, as a live camera; "
                        "a zero stamp means 'unstamped' to ROS tools)")
    p.add_argument("--max-frames", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            errors: list[str] = []
            for ref in expand_media(args.entries, args.topic, errors=errors):
                print(f"{ref.kind}\t{ref.name}")
            for line in errors:  # each refused recording, one line; the others were listed
                print(f"{parser.prog}: error: {line}", file=sys.stderr)
            if errors:
                return 2
        elif args.command == "shard":
            if args.per_shard < 1:
                raise MediaError(f"--per-shard must be >= 1, got {args.per_shard}")
            refs = expand_media(args.videos, args.topic)
            for path in write_shards(refs, args.out, args.per_shard, fmt=args.format, max_side=args.max_side,
                                     quality=args.quality):
                print(path)
        elif args.command == "to-bag":
            n = write_bag(args.video, args.out, args.topic, compressed=args.compressed, frame_id=args.frame_id,
                          start=args.start, max_frames=args.max_frames)
            print(f"{args.out}: {n} frames on {args.topic}")
    except MediaError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run the imported module's main: under ``python -m`` this file is also ``__main__``, whose
    # MediaError class would not be the one the readers raise.
    from deltaworld_core.data.media import main as _main

    raise SystemExit(_main())
