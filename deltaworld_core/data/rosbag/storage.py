"""The storage files of a rosbag2 recording (MCAP or sqlite3), told apart by their first bytes,
and a count of what the readers pulled from them."""

from __future__ import annotations

import re
from pathlib import Path

from ..refs import MediaError

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"

# The most bytes one message (or one MCAP chunk, or one MCAP record) may take once read: a raw
# 16384 x 2048 rgba8 frame, or 8K UHD bgra8 (133 MB), fits. A declared size above it is refused
# before anything is allocated (a 33 KB MCAP chunk may declare a gibibyte).
MAX_MESSAGE_BYTES = 160 << 20

# What the readers pulled from disk in this process: MCAP chunks and their bytes, sqlite3 rows and
# their bytes (process-local, like the skip counters; tests and benchmarks measure windows with it).
reads = {"chunks": 0, "chunk_bytes": 0, "rows": 0, "row_bytes": 0}


def read_counts() -> dict[str, int]:
    """MCAP ``chunks``/``chunk_bytes`` and sqlite3 ``rows``/``row_bytes`` read so far in this
    process (a copy)."""
    return dict(reads)


def bag_files(path: str | Path) -> list[Path]:
    """The storage files of a bag given as a file or a rosbag2 folder, in recording order
    (split files ``name_0.mcap``, ``name_1.mcap`` ... by their number)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file()]
        if not files:
            compressed = sorted(p.name for p in path.iterdir() if p.name.endswith((".zstd", ".zst")))
            hint = f" (file-compressed {compressed[0]}: decompress it first, e.g. zstd -d)" if compressed else ""
            raise MediaError(f"{path}: a folder without .mcap files or .db3 files, not a rosbag2 recording{hint}")
        return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not path.is_file():
        raise MediaError(f"{path}: no such bag")
    return [path]


def storage(path: Path) -> str:
    """``"mcap"`` or ``"sqlite3"`` by the file's first bytes (MediaError for anything else)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError as err:
        raise MediaError(f"{path}: cannot read the bag ({err})") from err
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if head.startswith(SQLITE_MAGIC):
        return "sqlite3"
    raise MediaError(f"{path}: not an MCAP file nor a sqlite3 rosbag2 file (starts {head[:8]!r})")
