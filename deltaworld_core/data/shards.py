"""Sharded tar archives in the WebDataset layout, so a cluster reads a few large sequential files
from shared storage instead of many small ones.

A shard is a plain (uncompressed) tar; a sample is the run of members sharing a key (the file
name up to its first dot). Two sample layouts are read:

* frames (what :func:`write_shards` writes by default): ``KEY.000000.jpg``, ``KEY.000001.jpg``,
  ... and ``KEY.json`` ``{"name": ..., "stamps": [seconds, one per frame]}`` (or ``"fps"``);
  each frame is decoded straight from the tar (JPEGs at reduced scale when ``max_side`` allows);
* a video file: ``KEY.mp4`` (or any video extension) with an optional ``KEY.json``; OpenCV
  cannot read from memory, so the member is copied to a temporary file first.

Shards are written by :func:`deltaworld_core.data.convert.write_shards`. Measured per format in
results/loader_cpu.json (docs/data-sources.md).
"""

from __future__ import annotations

import json
import math
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..imaging import ImageError, decode_image
from .capture import video_frames
from .refs import VIDEO_EXTS, MediaError, MediaRef, in_window, record_skip

FRAME_EXTS = (".jpg", ".jpeg", ".png")
MAX_JSON_BYTES = 64 << 20  # a sample's stamps; anything larger is not ours


def sample_key(member_name: str) -> str:
    """WebDataset's key: the path up to the first dot of the file name (``dir/a.0001.jpg`` -> ``dir/a``)."""
    head, _, base = member_name.rpartition("/")
    return (head + "/" if head else "") + base.split(".", 1)[0]


def _open(path: str | Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as err:
        raise MediaError(f"{path}: not a readable uncompressed tar shard ({err})") from err


def shard_members(path: str | Path) -> list[str]:
    """The sample keys of a shard in tar order, from its member headers (no member is read).
    Samples without frames or a video are ignored; a shard with none raises MediaError."""
    keys: dict[str, None] = {}
    with _open(path) as tar:
        try:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(FRAME_EXTS + VIDEO_EXTS):
                    keys.setdefault(sample_key(member.name), None)
        except (tarfile.TarError, OSError) as err:
            raise MediaError(f"{path}: damaged tar shard ({err})") from err
    if not keys:
        raise MediaError(f"{path}: a tar shard with no samples (KEY.NNNNNN.jpg frames or KEY.mp4 videos)")
    return list(keys)


def _sample_members(tar: tarfile.TarFile, ref: MediaRef) -> list[tarfile.TarInfo]:
    """The members of ``ref.member``: contiguous in a WebDataset shard, so the header scan stops
    at the first member of another key after them."""
    found: list[tarfile.TarInfo] = []
    try:
        for member in tar:
            if sample_key(member.name) == ref.member:
                found.append(member)
            elif found:
                break
    except (tarfile.TarError, OSError) as err:
        if not found:
            raise MediaError(f"{ref.name}: damaged tar shard ({err})") from err
        record_skip(ref, f"the rest of the shard ({err})")
    if not found:
        raise MediaError(f"{ref.name}: no sample {ref.member!r} in {ref.path}")
    return found


def shard_frames(ref: MediaRef, max_side: int | None = None, *, start_s: float | None = None,
                 stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames and stamps of one shard sample (see the module docstring for the layouts);
    ``start_s``/``stop_s``: only the frames stamped in ``[start_s, stop_s)``, the JPEG members
    of the others never read."""
    with _open(ref.path) as tar:
        members = _sample_members(tar, ref)
        meta = _sample_meta(tar, ref, members)
        videos = [m for m in members if m.name.lower().endswith(VIDEO_EXTS) and m.isfile()]
        if videos:
            yield from _video_member(tar, ref, videos[0], meta, max_side, start_s, stop_s)
            return
        frames, stamps = _frame_stamps(ref, members, meta)
        for member, stamp in zip(frames, stamps):
            if not in_window(float(stamp), start_s, stop_s):
                continue  # not read: a plain tar member is skipped by a seek
            if not member.isfile():  # a link would read another member or a file outside the shard
                record_skip(ref, f"member {member.name} of {ref.path} (a link, never followed)")
                continue
            try:
                data = tar.extractfile(member).read()
            except (tarfile.TarError, OSError, AttributeError) as err:
                record_skip(ref, f"frame {member.name} (unreadable: {err})")
                continue
            try:
                rgb = decode_image(data, max_side)
            except ImageError as err:
                record_skip(ref, f"frame {member.name} of {ref.path} ({err})")
                continue
            yield rgb, float(stamp)


def _frame_stamps(ref: MediaRef, members: list[tarfile.TarInfo], meta: dict) -> tuple[list[tarfile.TarInfo], list]:
    """The frame members of a JPEG-layout sample in order, and their stamps (MediaError if the
    JSON gives none that fit)."""
    frames = sorted((m for m in members if m.name.lower().endswith(FRAME_EXTS)), key=lambda m: m.name)
    stamps = meta.get("stamps")
    if stamps is None:
        if "fps" not in meta:
            raise MediaError(f"{ref.name}: frames without stamps: {ref.member}.json needs 'stamps' or 'fps'")
        stamps = [i / meta["fps"] for i in range(len(frames))]
    if len(stamps) != len(frames):
        raise MediaError(f"{ref.name}: {len(stamps)} stamps in {ref.member}.json for {len(frames)} frames")
    return frames, stamps


def shard_duration(ref: MediaRef) -> tuple[float, float] | None:
    """Earliest and latest stamp of a shard sample from its member headers and ``KEY.json`` (no
    frame read); None for a video member without stamps (its length needs the file copied out)."""
    with _open(ref.path) as tar:
        members = _sample_members(tar, ref)
        meta = _sample_meta(tar, ref, members)
        if any(m.name.lower().endswith(VIDEO_EXTS) for m in members):
            stamps = meta.get("stamps")
        else:
            stamps = _frame_stamps(ref, members, meta)[1]
    if not stamps:
        return None
    return float(min(stamps)), float(max(stamps))


def _sample_meta(tar: tarfile.TarFile, ref: MediaRef, members: list[tarfile.TarInfo]) -> dict:
    metas = [m for m in members if m.name.lower().endswith(".json") and m.isfile()]
    if not metas:
        return {}
    if metas[0].size > MAX_JSON_BYTES:
        raise MediaError(f"{ref.name}: {metas[0].name} is {metas[0].size} bytes (over {MAX_JSON_BYTES})")
    try:
        meta = json.loads(tar.extractfile(metas[0]).read())
    except (tarfile.TarError, OSError, ValueError, AttributeError) as err:
        raise MediaError(f"{ref.name}: unreadable {metas[0].name} ({err})") from err
    where = f"{ref.path}: {metas[0].name}"
    if not isinstance(meta, dict):
        raise MediaError(f"{where} must hold a JSON object, not a {type(meta).__name__}")
    if "fps" in meta and not (_finite(meta["fps"]) and meta["fps"] > 0):
        raise MediaError(f"{where}: 'fps' must be a finite number > 0, got {str(meta['fps'])[:40]!r}")
    stamps = meta.get("stamps")
    if stamps is not None and not (isinstance(stamps, list) and all(map(_finite, stamps))):
        what = (f"a {type(stamps).__name__}" if not isinstance(stamps, list)
                else f"{str(next(v for v in stamps if not _finite(v)))[:40]!r} among them")
        raise MediaError(f"{where}: 'stamps' must be a list of finite numbers of seconds, got {what}")
    return meta


def _finite(value) -> bool:
    """A JSON number that is finite (``true``/``false`` are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _video_member(tar: tarfile.TarFile, ref: MediaRef, member: tarfile.TarInfo, meta: dict,
                  max_side: int | None, start_s: float | None = None,
                  stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    suffix = Path(member.name).suffix
    with tempfile.TemporaryDirectory(prefix="deltaworld-shard-") as tmp:
        video = Path(tmp) / f"sample{suffix}"
        try:
            with tar.extractfile(member) as src, open(video, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except (tarfile.TarError, OSError, AttributeError) as err:
            raise MediaError(f"{ref.name}: cannot copy {member.name} out of the shard ({err})") from err
        inner = MediaRef(ref.name, str(video), "video")
        stamps = meta.get("stamps")
        if stamps is None:  # the video's own index / fps stamps: the video reader seeks to the window
            yield from video_frames(inner, max_side, start_s, stop_s)
            return
        # stamps of the JSON: frame i's stamp is known only by counting, so the window filters
        for i, (rgb, t) in enumerate(video_frames(inner, max_side)):
            stamp = float(stamps[i]) if i < len(stamps) else t
            if in_window(stamp, start_s, stop_s):
                yield rgb, stamp
