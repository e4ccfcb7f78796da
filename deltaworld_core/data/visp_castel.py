"""A real RGB-D sequence to measure depth fine-tuning on: ``mbt-depth/castel`` of Debian's
``visp-images-data`` (GPL-2, Inria; 30 frames of a castle model, 640x480 grey from one camera and
640x480 raw depth from a Creative SR300 beside it).

Fetched by name with ``apt-get download`` into a cache outside the repository (the package is
deleted once the sequence is copied out; ``manifest.json`` records the package, version, licence
and each file's sha256). The depth camera is not the colour camera: its images are registered to
the colour camera here (:func:`register_depth`): every depth pixel back-projected with the depth
intrinsics, moved by the ``depth_M_color.txt`` pose, projected with the colour intrinsics, nearest
surface kept. Intrinsics are the package's ``chateau.xml`` / ``chateau_depth.xml``; the raw depth
scale (0.000124986647 m per unit) and the depth lens' distortion are the SR300 constants ViSP's
``mbtGenericTrackingDepth`` example states for this sequence. The frames carry no timestamps.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..checkpoint import atomic_write
from .fetch import download_package
from .refs import MediaError
from .rosbag import BagWriter, depth_message, image_message
from .sources import SOURCES

VISP, LICENCE = SOURCES["visp"], "GPL-2"  # the real-video source's package and pinned version
MEMBER = "usr/share/visp-images-data/ViSP-images/mbt-depth/castel"
KEPT = ("chateau.xml", "chateau_depth.xml", "depth_M_color.txt")
DEPTH_SCALE_M = 0.000124986647  # SR300 raw unit
DEPTH_DISTORTION = (0.165056542, -0.0508309528, 0.00435937941, 0.00541406544, 0.250085592)  # k1 k2 p1 p2 k3
MAX_DEPTH_BYTES = 16 << 20


def default_cache() -> Path:
    return Path("~/.cache/deltaworld/rgbd/visp-castel").expanduser()


def fetch_castel(cache: str | Path | None = None) -> Path:
    """The sequence's folder in ``cache`` (default ``~/.cache/deltaworld/rgbd/visp-castel``),
    fetched with ``apt-get download visp-images-data`` (:func:`~.fetch.download_package`, as the
    real-video source ``visp``) unless its manifest already lists it."""
    root = Path(cache).expanduser() if cache else default_cache()
    if (root / "manifest.json").is_file():
        return root
    with tempfile.TemporaryDirectory(prefix="visp-") as scratch:
        tree = download_package(VISP, Path(scratch))
        src = tree / MEMBER
        root.mkdir(parents=True, exist_ok=True)
        files = [src / name for name in KEPT] + sorted((src / "castel").iterdir())
        files.append(tree / "usr/share/doc" / VISP.package / "copyright")
        rows = {}
        for f in files:
            shutil.copyfile(f, root / f.name)
            rows[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    manifest = {"registry": VISP.registry, "package": VISP.package, "version": VISP.version, "licence": LICENCE,
                "member": MEMBER, "files": rows}
    atomic_write(root / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return root


def intrinsics(xml: Path) -> np.ndarray:
    """[3, 3] pinhole matrix from a ViSP tracker config's ``<camera>`` px, py, u0, v0."""
    text = xml.read_text()
    px, py, u0, v0 = (float(re.search(rf"<{k}>\s*([-0-9.eE+]+)\s*</{k}>", text).group(1))
                      for k in ("px", "py", "u0", "v0"))
    return np.array([[px, 0, u0], [0, py, v0], [0, 0, 1]], np.float64)


def read_raw_depth(path: Path) -> np.ndarray:
    """ViSP's ``depth_image_NNNN.bin``: uint32 height, uint32 width (little endian), then uint16
    values row by row -> uint16 [H, W]; MediaError for a size that the file does not hold."""
    size = path.stat().st_size
    h, w = np.fromfile(path, "<u4", 2)
    if size > MAX_DEPTH_BYTES or 8 + 2 * int(h) * int(w) != size:
        raise MediaError(f"{path}: declares {w}x{h} depth but holds {size} bytes")
    return np.fromfile(path, "<u2", offset=8).reshape(int(h), int(w))


def register_depth(raw: np.ndarray, k_depth: np.ndarray, k_colour: np.ndarray, depth_m_colour: np.ndarray,
                   size: tuple[int, int], scale_m: float = DEPTH_SCALE_M,
                   distortion: tuple[float, ...] = DEPTH_DISTORTION) -> np.ndarray:
    """Raw depth [H, W] (``scale_m`` metres a unit, 0 = none) -> metres [h, w] (``size``) seen from
    the colour camera, NaN where no depth point lands; where several land, the nearest.
    ``depth_m_colour``: [4, 4] pose taking colour-camera points to depth-camera points."""
    h, w = raw.shape
    z = raw.astype(np.float64) * scale_m
    v, u = np.mgrid[0:h, 0:w]
    x, y = (u - k_depth[0, 2]) / k_depth[0, 0], (v - k_depth[1, 2]) / k_depth[1, 1]
    k1, k2, p1, p2, k3 = distortion  # inverse Brown-Conrady deprojection, as the SR300 reports it
    r2 = x * x + y * y
    f = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
    x, y = x * f + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * f + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    valid = raw > 0
    points = np.stack([x[valid] * z[valid], y[valid] * z[valid], z[valid], np.ones(int(valid.sum()))])
    cam = np.linalg.inv(depth_m_colour) @ points  # depth frame -> colour frame
    ahead = cam[2] > 1e-6
    cam = cam[:, ahead]
    pu = np.round(k_colour[0, 0] * cam[0] / cam[2] + k_colour[0, 2]).astype(np.int64)
    pv = np.round(k_colour[1, 1] * cam[1] / cam[2] + k_colour[1, 2]).astype(np.int64)
    inside = (pu >= 0) & (pu < size[1]) & (pv >= 0) & (pv < size[0])
    out = np.full(size, np.inf)
    np.minimum.at(out, (pv[inside], pu[inside]), cam[2, inside])
    out[np.isinf(out)] = np.nan
    return out.astype(np.float32)


def castel_frames(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(RGB uint8 [480, 640, 3] (grey replicated), registered depth float32 [480, 640] m)`` per
    frame, in the sequence's order."""
    k_colour, k_depth = intrinsics(root / "chateau.xml"), intrinsics(root / "chateau_depth.xml")
    pose = np.loadtxt(root / "depth_M_color.txt").reshape(4, 4)
    out = []
    for image in sorted(root.glob("image_*.pgm")):
        grey = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise MediaError(f"{image}: not a readable PGM")
        raw = read_raw_depth(root / image.name.replace("image_", "depth_image_").replace(".pgm", ".bin"))
        out.append((np.repeat(grey[..., None], 3, axis=2), register_depth(raw, k_depth, k_colour, pose, grey.shape)))
    return out


def write_castel_bag(root: Path, out: Path, period_s: float, colour_topic: str, depth_topic: str) -> int:
    """The sequence as an MCAP bag: mono8 colour and 32FC1 registered depth, stamped ``period_s``
    apart (the frames carry no time of their own); returns the frame count."""
    frames = castel_frames(root)
    with BagWriter(out) as bag:
        for i, (rgb, depth) in enumerate(frames):
            stamp = 1.0 + i * period_s
            bag.write(colour_topic, image_message(rgb, stamp, "colour", encoding="mono8"))
            bag.write(depth_topic, depth_message(depth, stamp, "colour", encoding="32FC1"))
    return len(frames)
