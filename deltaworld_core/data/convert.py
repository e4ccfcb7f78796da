"""Recordings rewritten in another layout: any recording :func:`~.recordings.expand_media` reads
as WebDataset tar shards (:func:`write_shards`) or as a rosbag2 bag (:func:`write_bag`), the
command-line tools of ``python -m deltaworld_core.data.media``."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import cv2

from .capture import video_fps
from .recordings import expand_media, iter_frames
from .refs import MediaError, MediaRef
from .rosbag import write_frames


def _key(index: int, name: str) -> str:
    """A key unique in the shard set and free of dots (WebDataset splits keys at the first dot)."""
    return f"{index:06d}_" + re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[-80:]


def write_shards(refs: Sequence[MediaRef], out: str | Path, per_shard: int, *, fmt: str = "jpg",
                 max_side: int | None = None, quality: int = 90) -> list[Path]:
    """Writes ``refs`` (``per_shard`` samples a shard) as ``out/shard-000000.tar``, ... and
    returns the shard paths. ``fmt`` "jpg": one JPEG per frame (``max_side`` shrinks them) and a
    JSON of stamps; "mp4": video files copied as they are (only plain video refs). Each shard is
    written under a temporary name and renamed when complete."""
    if per_shard < 1:
        raise MediaError(f"per_shard must be >= 1, got {per_shard}")
    if fmt not in ("jpg", "mp4"):
        raise MediaError(f"shard format must be jpg or mp4, got {fmt!r}")
    if not 1 <= quality <= 100:
        raise MediaError(f"JPEG quality must be in [1, 100], got {quality}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, len(refs), per_shard):
        path = out / f"shard-{s // per_shard:06d}.tar"
        tmp = out / f".{path.name}.tmp"
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                for i, ref in enumerate(refs[s:s + per_shard], start=s):
                    key = _key(i, ref.name)
                    if fmt == "mp4":
                        if ref.kind != "video":
                            raise MediaError(f"{ref.name}: --format mp4 copies video files; a {ref.kind} needs jpg")
                        tar.add(ref.path, f"{key}{Path(ref.path).suffix.lower()}", filter=_reproducible)
                        meta = {"name": ref.name, "fps": video_fps(ref.path)}
                    else:
                        stamps = []
                        for j, (rgb, stamp) in enumerate(iter_frames(ref, max_side)):
                            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                                    [cv2.IMWRITE_JPEG_QUALITY, quality])
                            if not ok:
                                raise MediaError(f"{ref.name}: JPEG encoding of frame {j} failed")
                            _add_bytes(tar, f"{key}.{j:06d}.jpg", jpeg.tobytes())
                            stamps.append(stamp)
                        meta = {"name": ref.name, "stamps": stamps}
                    _add_bytes(tar, f"{key}.json", json.dumps(meta).encode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # shards are reproducible byte for byte from the same input
    tar.addfile(info, io.BytesIO(data))


def write_bag(video: str | Path, out: str | Path, topic: str = "/camera/image_raw", *, compressed: bool = False,
              frame_id: str = "camera", start: float | None = None, max_frames: int | None = None) -> int:
    """A video (any entry :func:`expand_media` reads as one stream) as a rosbag2 bag on
    ``topic``: frame ``i`` stamped ``start + i / fps`` (``start`` None: now). Returns the frame count."""
    refs = expand_media([video])
    if len(refs) != 1:
        raise MediaError(f"{video}: names {len(refs)} recordings; to-bag writes one")
    if max_frames is not None and max_frames < 1:
        raise MediaError(f"--max-frames must be >= 1, got {max_frames}")
    t0 = time.time() if start is None else float(start)
    frames = ((rgb, t0 + t) for rgb, t in islice(iter_frames(refs[0]), max_frames))
    n = write_frames(out, topic, frames, compressed=compressed, frame_id=frame_id)
    if n == 0:
        Path(out).unlink(missing_ok=True)
        raise MediaError(f"{video}: no frame decodes")
    return n
