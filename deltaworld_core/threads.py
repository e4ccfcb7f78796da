"""How many CPU threads the model's kernels use (torch intra-op and the VFM's ONNX Runtime pool).

A robot's CPU is never idle. With every core given to the model, another process taking a core
stalls each parallel torch kernel at its barrier. Measured with ``python -m deltaworld_core.bench
--threads 1/2 --steps 12`` on a 2-core AMD EPYC (avx512_bf16), 2026-11-30: with two busy loops at
the same priority, 1 thread 786 ms per streaming step, 2 threads 4,132 ms (encode 41 -> 746 ms,
decode 84 -> 1,279 ms); with the machine only lightly used, 1 thread 203 ms, 2 threads 225 ms
(on a fully idle machine 2 threads are faster: 104 ms in the README's Performance table). So the
default leaves half the cores to the rest of the robot: ``auto`` = max(1, min(4, cores // 2)).
"""

from __future__ import annotations

import os

import torch

MAX_AUTO_THREADS = 4  # beyond ~4 threads the small kernels of a streaming step stop scaling

THREADS_HELP = ("CPU threads for the model (torch and ONNX Runtime); 0 or unset = auto: half the cores, "
                "1 to 4, which keeps speed when other processes load the CPU")


def auto_threads(cores: int | None = None) -> int:
    """The default thread count for a machine with ``cores`` CPUs (default: this one's)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_THREADS, cores // 2))


def resolve_threads(threads: int | None) -> int:
    """``None`` or 0 -> :func:`auto_threads`; a positive count as is; negative is a ValueError."""
    if threads is None or threads == 0:
        return auto_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a positive integer or 0 (auto), got {threads!r}")
    return threads


def apply_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads for this process (they are per process, not per model) and
    returns the count. ONNX Runtime sessions built afterwards use the same count."""
    count = resolve_threads(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
