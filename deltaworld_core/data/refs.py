"""What every recording reader shares: :class:`MediaRef` (one stream of frames), :class:`MediaError`
(a recording that cannot be used), the file kinds by extension, the per-recording skip counters
and the time window a read may be limited to."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".m2ts",
              ".mts", ".3gp", ".ogv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".pgm", ".ppm")
BAG_EXTS = (".mcap", ".db3")
LIST_EXTS = (".txt", ".csv")
SHARD_EXTS = (".tar",)
KINDS = ("video", "frames", "bag", "shard")
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


def no_valid_recording(refused: list[str]) -> str:
    """The one line for a run none of whose recordings can be read (``refused``: one line each,
    at least one): the refusal itself, or how many and the first."""
    return (f"no valid recording: {refused[0]}" if len(refused) == 1 else
            f"no valid recording ({len(refused)} refused; first: {refused[0]})")


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


# ------------------------------------------------------------------ time windows
def check_window(start_s: float | None, stop_s: float | None) -> None:
    """Raises ValueError unless ``[start_s, stop_s)`` is a window of finite seconds (None = open)."""
    for key, value in (("start_s", start_s), ("stop_s", stop_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{key} must be a finite number of seconds or None, got {value!r}")
    if start_s is not None and stop_s is not None and not start_s < stop_s:
        raise ValueError(f"a frame window needs start_s < stop_s, got [{start_s}, {stop_s})")


def in_window(t: float, start_s: float | None, stop_s: float | None) -> bool:
    """Whether ``t`` lies in the half-open window ``[start_s, stop_s)`` (None = open)."""
    return (start_s is None or t >= start_s) and (stop_s is None or t < stop_s)
