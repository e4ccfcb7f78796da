"""The one error of camera image conversion, with a short stable ``cause`` key for each way an
image can be unusable (the node counts and logs each cause once; the recording readers count
skips)."""

from __future__ import annotations

UNSUPPORTED_ENCODING = "unsupported_encoding"
TRUNCATED_DATA = "truncated_data"
ZERO_SIZE = "zero_size"
ABSURD_SIZE = "absurd_size"
UNDECODABLE = "undecodable"


class ImageError(ValueError):
    """An image that cannot be converted; ``cause`` is one of the keys above."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def quoted(text: str, limit: int = 64) -> str:
    """``repr`` of a string from a message (an encoding, a format), cut to ``limit`` characters
    and saying how long it really was: a 10 MB encoding must not make a 10 MB error line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
