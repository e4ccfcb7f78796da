"""What every command line of the project shares: one override syntax, one thread setting, and
one line plus exit status 2 for a user's mistake instead of a traceback.

Overrides are positional ``key.path=value`` arguments (the value is parsed as YAML), the same on
``forecast``, ``bench``, ``evaluate``, ``released``, ``train`` and the ROS ``demo``; unknown keys,
wrong types and bad values are errors naming the key (:func:`deltaworld_core.config.load_config`).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from typing import Any, Callable

from .config import ConfigError, parse_override
from .devices import check_device
from .threads import THREADS_HELP

# What bad input raises: ConfigError / CheckpointError / ImageConversionError are ValueErrors; a
# missing or unreadable file is an OSError; EvaluationError and a missing optional reader are
# RuntimeErrors; a hostile pickle is an UnpicklingError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError, KeyError, pickle.UnpicklingError)
try:
    from safetensors import SafetensorError

    USER_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - safetensors is pinned
    pass
try:
    import yaml

    USER_ERRORS += (yaml.YAMLError,)
except ImportError:  # pragma: no cover - PyYAML is pinned
    pass

# The longest error line a tool prints: a message that quotes a huge value is cut here.
MAX_ERROR_CHARS = 2000

OVERRIDES_HELP = ("config overrides, key.path=value (value parsed as YAML), e.g. forecast.k=16 "
                  "vfm.image_size=[224,224]; unknown keys are errors")


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """The positional ``key.path=value ...`` list (argparse dest ``overrides``)."""
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help=OVERRIDES_HELP)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (dest ``threads``; None = the default of :mod:`deltaworld_core.threads`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def parse_overrides(texts: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["forecast.k=16", ...]`` -> ``{"forecast.k": 16}``; a malformed item is a ConfigError."""
    overrides: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {text!r} must look like key.path=value")
        overrides[key] = value
    return overrides


def one_line(err: BaseException) -> str:
    """The error as one line; the type is named unless it is one of the project's own errors."""
    text = " ".join(str(err).split()) or "(no message)"
    if len(text) > MAX_ERROR_CHARS - 80:  # a backstop: the messages quote values through safe_yaml.quote
        text = text[:MAX_ERROR_CHARS - 120] + f"... ({len(text):,} characters in all)"
    # "__main__": an error class of the module run with `python -m deltaworld_core.<tool>`
    own = type(err).__module__.startswith(("deltaworld_core", "deltaworld_ros", "__main__"))
    if own or (type(err) in (ValueError, FileNotFoundError, OSError, PermissionError) and str(err)):
        return text  # these messages already say what is wrong
    return f"{type(err).__name__}: {text}"


def run_cli(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
            argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs ``body(args)``; bad input prints ``PROG: error: ...`` (one line
    on stderr) and returns 2, the exit status argparse uses for bad arguments."""
    # argparse hands a positional list only the first run of positionals (and a subcommand's
    # positionals only before its options): overrides given after other flags come back as extras.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        with warnings.catch_warnings():
            # torch's safe unpickler remarks on the pickle protocol of any .pth it refuses or
            # reads; the loader's own one-line error says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            if isinstance(getattr(args, "device", None), str):
                check_device(args.device)  # a device this machine lacks: one line now, not a traceback later
            return body(args)
    except USER_ERRORS as err:
        print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
