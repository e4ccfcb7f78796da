"""Lists of recordings (``.txt`` one path a line, CSV with a path column, Kinetics annotation
CSVs) and WebDataset's brace ranges of shard names."""

from __future__ import annotations

import csv
import logging
import os
import re
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
