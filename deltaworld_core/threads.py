"""How many CPU threads the model's kernels use (torch intra-op and the VFM's ONNX Runtime pool).

A robot's CPU is never idle. With every core given to the model, another process taking a core
stalls each parallel torch kernel at its barrier. Measured with ``python -m deltaworld_core.bench
--threads 1/2 --steps 12`` on a 2-core AMD EPYC (avx512_bf16), 2026-11-30: with two busy loops at
the same priority, 1 thread 786 ms per streaming step, 2 threads 4,132 ms (encode 41 -> 746 ms,
decode 84 -> 1,279 ms); with the machine only lightly used, 1 thread 203 ms, 2 threads 225 ms
(on a fully idle machine 2 threads are faster: 104 ms in the README's Performance table). So the
default leaves half the cores to the rest of the robot: ``auto`` = max(1, min(4, cores // 2)).

More threads than cores only adds waiting at those barriers (measured: 256 threads on 2 cores ran
5.2x slower), so a count above the cores this process may use is lowered to them, with
a warning.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
_warned: set[tuple[int, int]] = set()  # (asked, cores) pairs already warned about in this process

MAX_AUTO_THREADS = 4  # beyond ~4 threads the small kernels of a streaming step stop scaling

THREADS_HELP = ("CPU threads for the model (torch and ONNX Runtime); 0 or unset = auto: half the cores, "
                "1 to 4, which keeps speed when other processes load the CPU")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's or ``taskset``'s
    share), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None) -> int:
    """The default thread count for a machine with ``cores`` CPUs (default: this process's)."""
    cores = cores if cores is not None else available_cores()
    return max(1, min(MAX_AUTO_THREADS, cores // 2))


def too_many_threads(threads: int, cores: int | None = None) -> str | None:
    """Why ``threads`` will be lowered to ``cores`` (default: :func:`available_cores`), or None
    when they fit."""
    cores = cores if cores is not None else available_cores()
    if threads <= cores:
        return None
    return (f"threads={threads} is more than the {cores} CPU cores this process can use: using {cores} "
            "(more threads than cores only wait on each other)")


def clamp_threads(threads: int, cores: int | None = None) -> int:
    """``threads`` lowered to ``cores`` (default: :func:`available_cores`), warning once per value."""
    cores = cores if cores is not None else available_cores()
    warning = too_many_threads(threads, cores)
    if warning is None:
        return threads
    if (threads, cores) not in _warned:
        _warned.add((threads, cores))
        log.warning(warning)
    return cores


def resolve_threads(threads: int | None) -> int:
    """``None`` or 0 -> :func:`auto_threads`; a positive count as is, at most the available cores
    (:func:`clamp_threads`); negative is a ValueError."""
    if threads is None or threads == 0:
        return auto_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a positive integer or 0 (auto), got {threads!r}")
    return clamp_threads(threads)


def apply_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads for this process (they are per process, not per model) and
    returns the count. ONNX Runtime sessions built afterwards use the same count."""
    count = resolve_threads(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
