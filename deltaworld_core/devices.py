"""Which torch device a tool runs on, checked before any model is built.

Without this check ``--device cuda`` on a PyTorch built without CUDA ends in torch's
``AssertionError: Torch not compiled with CUDA enabled`` traceback from deep inside model loading.
Every tool asks :func:`check_device` first (``run_cli`` for each ``--device`` flag, ``train`` for
its ``device:`` key, the ROS node for its ``device`` parameter): a device the host does not have
is one line (exit 2 from a command line).
"""

from __future__ import annotations

import torch

from .safe_yaml import quote


class DeviceError(ValueError):
    """The requested device does not exist here; the message says what to use."""


def check_device(name: str) -> torch.device:
    """The device ``name`` names (``auto``: CUDA if torch sees a device, else the CPU), after
    checking that it exists here. Raises :class:`DeviceError` in one line otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as err:
        raise DeviceError(f"device {quote(name)} is not a torch device (use auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise DeviceError(f"device {name}: this PyTorch ({torch.__version__}) is built without CUDA; "
                              "use --device cpu (or device=cpu), or install a CUDA build of PyTorch")
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError(f"device {name}: no CUDA device is visible (driver missing, or CUDA_VISIBLE_DEVICES "
                              "hides them); use --device cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name}: {count} CUDA device(s) are visible, cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name}: Apple's MPS backend is not available here; use --device cpu")
    return device
