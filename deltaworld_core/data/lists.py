"""Lists of recordings (``.txt`` one path a line, CSV with a path column, Kinetics annotation
CSVs) and WebDataset's brace ranges of shard names."""

from __future__ import annotations

import csv
import logging
import os
import re
import urllib.parse
from pathlib import Path

from .refs import VIDEO_EXTS, MediaError

log = logging.getLogger(__name__)


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


MAX_LINE_BYTES = 128 << 10  # a path, or a CSV row naming one; a longer line is not a list's
MAX_LIST_LINES = 1_000_000


def list_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the list's non-blank, non-comment lines, read line by line:
    a line over MAX_LINE_BYTES or more than MAX_LIST_LINES lines is refused (MediaError naming
    the file and line) before the rest is read."""
    out: list[tuple[int, str]] = []
    try:
        with open(path, "rb") as f:
            for number in range(1, MAX_LIST_LINES + 2):
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return out
                if len(raw) > MAX_LINE_BYTES:
                    raise MediaError(f"{path}: line {number} is longer than {MAX_LINE_BYTES} bytes (not a list of "
                                     "recordings)")
                if number > MAX_LIST_LINES:
                    raise MediaError(f"{path}: more than {MAX_LIST_LINES} lines")
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
                if text.strip() and not text.lstrip().startswith("#"):
                    out.append((number, text))
    except UnicodeDecodeError as err:
        raise MediaError(f"{path}: line {number} is not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise MediaError(f"{path}: cannot read the list ({err.strerror or err})") from None
    return out


def read_list(path: Path) -> list[str]:
    """The entries a ``.txt``/``.csv`` list names, as paths (see :func:`list_entries`)."""
    return [entry for _, entry in list_entries(path)]


def list_entries(path: Path) -> list[tuple[int, str]]:
    """``(line number, entry)`` of a ``.txt``/``.csv`` list, as paths (relative ones resolved
    against the list's folder), lines streamed by :func:`list_lines`:

    * one path per line (``#`` starts a comment; blank lines ignored; a ``file://`` URL is its
      path), or
    * a CSV whose header has a ``path``/``video``/``file``/``filename``/``filepath`` column, or
    * a Kinetics annotation CSV (``youtube_id,time_start,time_end`` columns): each row names the
      file ``<youtube_id>_<time_start:06d>_<time_end:06d>.<video ext>`` found anywhere under the
      list's folder (one recursive listing of names, no decoding). Kinetics downloads always miss
      some videos: rows without a file are skipped and counted in one warning; none found is an
      error.
    """
    lines = list_lines(path)
    if not lines:
        raise MediaError(f"{path}: an empty list")
    try:
        header = [h.strip().lower() for h in next(csv.reader([lines[0][1]]))]
        base = path.parent
        if all(c in header for c in KINETICS_COLUMNS):
            return _kinetics_rows(path, lines, header)
        column = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
        if column is not None:
            entries = []
            for number, text in lines[1:]:
                row = next(csv.reader([text]), [])
                if len(row) <= column or not row[column].strip():
                    raise MediaError(f"{path}: line {number} has no {header[column]!r} value")
                entries.append((number, row[column].strip()))
        elif path.suffix.lower() == ".csv" and "," in lines[0][1]:
            raise MediaError(f"{path}: a CSV needs a header with a path column ({', '.join(PATH_COLUMNS)}) or the "
                             f"Kinetics columns ({', '.join(KINETICS_COLUMNS)}); got {', '.join(header)[:200]}")
        else:
            entries = [(number, text.strip()) for number, text in lines]
    except csv.Error as err:
        raise MediaError(f"{path}: not a readable CSV ({err})") from None
    out = []
    for number, entry in entries:
        entry = local_path(entry, f"{path}: line {number}")
        out.append((number, entry if Path(entry).expanduser().is_absolute() else str(base / entry)))
    return out


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def local_path(entry: str, where: str) -> str:
    """``entry`` as a local path: a ``file://`` URL becomes its (unquoted) path; another URL is
    a MediaError (recordings are read from local files)."""
    if not _URL.match(entry):
        return entry
    url = urllib.parse.urlparse(entry)
    if url.scheme.lower() == "file" and url.netloc in ("", "localhost"):
        return urllib.parse.unquote(url.path)
    raise MediaError(f"{where}: {entry[:200]!r} is a URL: recordings are read from local paths "
                     "(download it first)")


def _kinetics_rows(path: Path, lines: list[tuple[int, str]], header: list[str]) -> list[tuple[int, str]]:
    ids = [header.index(c) for c in KINETICS_COLUMNS]
    by_stem: dict[str, str] = {}
    for here, dirs, files in os.walk(path.parent):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTS:
                by_stem.setdefault(stem, os.path.join(here, f))
    out, missing = [], 0
    for line_no, text in lines[1:]:
        row = next(csv.reader([text]), [])
        if not row:
            continue
        try:
            yid, start, end = (row[i].strip() for i in ids)
            stem = f"{yid}_{int(float(start)):06d}_{int(float(end)):06d}"
        except (IndexError, ValueError) as err:
            raise MediaError(f"{path}: line {line_no} is not a Kinetics row ({err})") from None
        if stem in by_stem:
            out.append((line_no, by_stem[stem]))
        else:
            missing += 1
    if not out:
        raise MediaError(f"{path}: none of its {missing} Kinetics rows has a video file under {path.parent}")
    if missing:
        log.warning("%s: %d of %d Kinetics rows have no video file under %s (skipped)", path, missing,
                    missing + len(out), path.parent)
    return out
