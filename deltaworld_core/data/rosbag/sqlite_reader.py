"""rosbag2 sqlite3 storage files (``.db3``), read with Python's ``sqlite3``, read only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..refs import MediaError, MediaRef, record_skip
from .storage import MAX_MESSAGE_BYTES, reads


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to a rosbag2 sqlite3 file (MediaError if it has no ``topics`` table)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM topics").fetchone()
        return db
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err


def sqlite_topics(path: Path) -> dict[str, str]:
    """``{topic: message type}`` of the file's CDR topics."""
    db = sqlite_connect(path)
    try:
        return {name: ty for name, ty, fmt in db.execute("SELECT name, type, serialization_format FROM topics")
                if fmt == "cdr"}
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def sqlite_has_messages(path: Path, topic: str) -> bool:
    """Whether ``topic`` has a row in the file's ``messages`` table."""
    db = sqlite_connect(path)
    try:
        return db.execute("SELECT EXISTS (SELECT 1 FROM messages WHERE topic_id IN "
                          "(SELECT id FROM topics WHERE name = ?))", (topic,)).fetchone()[0] == 1
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def sqlite_span(path: Path, ref: MediaRef) -> tuple[int, int] | None:
    """First and last log time (ns) of ``ref.topic`` in the file, from the ``timestamp`` index."""
    db = sqlite_connect(path)
    try:
        row = db.execute("SELECT id FROM topics WHERE name = ?", (ref.topic,)).fetchone()
        if row is None:
            return None
        # ORDER BY ... LIMIT 1 walks the timestamp index from one end and stops at the topic's
        # first row (MIN/MAX with a WHERE on another column would scan the table).
        # Only integer stamps count: sqlite3 sorts text after every number (a hand-made bag's text
        # stamp is skipped when read, so it must not end the span either).
        first, last = (db.execute(f"SELECT timestamp FROM messages WHERE topic_id = ? AND typeof(timestamp) = "
                                  f"'integer' ORDER BY timestamp {order} LIMIT 1", (row[0],)).fetchone()
                       for order in ("ASC", "DESC"))
        return None if first is None else (int(first[0]), int(last[0]))
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()


def sqlite_messages(path: Path, ref: MediaRef, start_ns: int | None = None,
                    stop_ns: int | None = None) -> Iterator[tuple[int, str, memoryview]]:
    """``(log time ns, type, CDR bytes)`` of ``ref.topic`` logged in ``[start_ns, stop_ns)``, in
    rosbag2's order (timestamp, then insertion); a damaged page ends the file (counted)."""
    db = sqlite_connect(path)
    try:
        topics = db.execute("SELECT id, type FROM topics WHERE name = ?", (ref.topic,)).fetchall()
        if not topics:
            return
        (topic_id, type_name), = topics
        window = ("" if start_ns is None else " AND timestamp >= :start") + \
                 ("" if stop_ns is None else " AND timestamp < :stop")
        # A cell over the limit is never fetched: sqlite3 gives its length without reading it.
        cursor = db.execute("SELECT timestamp, CASE WHEN length(data) <= :limit THEN data END, typeof(data), "
                            f"length(data) FROM messages WHERE topic_id = :topic{window} ORDER BY timestamp, id",
                            {"topic": topic_id, "start": start_ns, "stop": stop_ns, "limit": MAX_MESSAGE_BYTES})
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.DatabaseError as err:  # a damaged page: the rest of the file is lost
                record_skip(ref, f"the rest of {path.name} (sqlite3: {err})")
                return
            if row is None:
                return
            stamp, data, kind, length = row
            if type(stamp) is not int or kind != "blob":  # sqlite3 cells have no fixed type
                record_skip(ref, f"a row of {path.name} with a {type(stamp).__name__} timestamp and {kind} data "
                                 "(rosbag2 stores an integer and a blob)")
                continue
            if data is None:
                record_skip(ref, f"a message of {length} bytes in {path.name} (over {MAX_MESSAGE_BYTES})")
                continue
            reads["rows"] += 1
            reads["row_bytes"] += len(data)
            yield stamp, type_name, memoryview(data)
    except sqlite3.Error as err:
        raise MediaError(f"{path}: unreadable sqlite3 bag ({err})") from err
    finally:
        db.close()
