"""The second person teacher: the people detectors that ship inside the OpenCV wheel the project
already installs (PyPI ``opencv-python-headless``, pinned in requirements.lock). Nothing is
downloaded: ``python -m deltaworld_core.teachers fetch --teacher opencv_people`` copies the Haar
cascades out of the installed wheel into the teacher cache and records their sha256, the wheel's
version and the licences (:mod:`.packages`).

Four detectors, each giving boxes (class ids of :data:`KINDS`):

* ``hog_body``: the HOG pedestrian SVM (``cv2.HOGDescriptor_getDefaultPeopleDetector``, a
  64 x 128 window) on the colour frame; score = its SVM margin, kept from ``hog_min_margin``;
* ``frontal_face``, ``profile_face`` (run on the frame and its mirror image, since the cascade
  sees faces turned one way only), ``full_body``: Haar cascades on the histogram-equalised grey
  frame; score = the number of neighbouring detections merged into the box, kept from each
  cascade's ``*_min_neighbours``.

The frame is first resized so its longer side is ``side``. The settings live in the teacher's
registry entry, so they are part of its identity and of every box file's key. They were chosen on
train recordings only: strict enough that hardly a box falls on the objects the selfie model calls
a person (a cockatoo, a cube), at the cost of missing many people in unusual poses. The upper-body
cascade is not run: at every setting that found people in the lab recordings it also fired on
the cockatoo.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .packages import TeacherError, get_teacher

NAME = "opencv_people"
KINDS = ("hog_body", "frontal_face", "profile_face", "full_body")
CASCADES = {"frontal_face": "haarcascade_frontalface_alt2.xml", "profile_face": "haarcascade_profileface.xml",
            "full_body": "haarcascade_fullbody.xml"}
MIN_NEIGHBOURS = {"frontal_face": "frontal_min_neighbours", "profile_face": "profile_min_neighbours",
                  "full_body": "fullbody_min_neighbours"}


class PeopleDetector:
    """The OpenCV people detectors with the teacher's settings. ``detect(rgb)`` -> float32 [n, 6]:
    ``x1, y1, x2, y2`` (frame pixels), score, kind (index into :data:`KINDS`).

    Args:
        folder: the fetched teacher folder holding the cascades
            (:func:`~deltaworld_core.teachers.packages.fetch_teacher`).
    """

    def __init__(self, folder: str | Path):
        self.settings = dict(get_teacher(NAME).settings)
        self.min_score = None  # each kind has its own threshold, recorded in the teacher's settings
        self._cascades = {}
        for kind, file in CASCADES.items():
            path = Path(folder) / file
            cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
            if cascade is None or cascade.empty():
                raise TeacherError(f"{path} is missing or unreadable: run "
                                   f"`python -m deltaworld_core.teachers fetch --teacher {NAME}`")
            self._cascades[kind] = cascade
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def _hog_boxes(self, rgb: np.ndarray) -> np.ndarray:
        rects, margins = self._hog.detectMultiScale(rgb, hitThreshold=0.0, winStride=(8, 8), padding=(8, 8),
                                                    scale=self.settings["hog_scale"])
        rows = [[x, y, x + w, y + h, m, KINDS.index("hog_body")] for (x, y, w, h), m in zip(rects, np.ravel(margins))]
        boxes = np.asarray(rows, np.float32).reshape(-1, 6)
        return boxes[boxes[:, 4] >= self.settings["hog_min_margin"]]

    def _cascade_boxes(self, grey: np.ndarray, kind: str, mirrored: bool) -> np.ndarray:
        image = np.ascontiguousarray(grey[:, ::-1]) if mirrored else grey
        side = int(self.settings["haar_min_side"])
        rects, neighbours = self._cascades[kind].detectMultiScale2(image, scaleFactor=self.settings["haar_scale"],
                                                                   minNeighbors=3, minSize=(side, side))
        out = np.zeros((len(rects), 6), np.float32)
        for i, ((x, y, w, h), n) in enumerate(zip(rects, np.ravel(neighbours))):
            if mirrored:
                x = image.shape[1] - x - w
            out[i] = (x, y, x + w, y + h, n, KINDS.index(kind))
        return out[out[:, 4] >= self.settings[MIN_NEIGHBOURS[kind]]]

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> boxes float32 [n, 6] (see the class docstring), in frame pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB frame [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
        h, w = rgb.shape[:2]
        scale = self.settings["side"] / max(h, w)
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        found = [self._hog_boxes(small)]
        for kind in CASCADES:
            found += [self._cascade_boxes(grey, kind, mirrored) for mirrored in
                      ((False, True) if kind == "profile_face" else (False,))]
        boxes = np.concatenate(found)
        boxes[:, :4] /= scale
        # OpenCV's threaded cascades return a frame's boxes in varying order: sort them (kind, then
        # corners, then score) so a box file is the same bytes on every run.
        return boxes[np.lexsort(boxes[:, [4, 3, 2, 1, 0, 5]].T)]
