"""The person teacher: MediaPipe selfie segmentation (npm ``@mediapipe/selfie_segmentation``,
Apache-2.0) run from Python through LiteRT (PyPI ``ai-edge-litert``, an optional dependency:
``pip install ai-edge-litert==2.3.0 backports.strenum``).

The model takes the whole frame resized to its input (RGB / 255, float32 ``[1, h, w, 3]``) and
returns a person probability ``[1, h, w, 1]``. Two variants ship: ``general`` (256 x 256) and
``landscape`` (144 x 256); ``auto`` picks the one whose aspect ratio is closer to the frame's, so a
wide street frame is squeezed less.

The model was made for people close to the camera: a whole street frame misses people smaller than
about a fifth of its height, and a crop holding no person at all can come out as a person. So
:meth:`PersonSegmenter.views` averages the whole frame with ``tiles x tiles`` overlapping crops
(each ``tile_frac`` of the frame's sides): a small person found in the crops around it rises above
the whole frame's zero, and a crop's hallucination is diluted by the other views covering it. The
label rule (:mod:`.labels`) then leaves the middle of the range unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .packages import TeacherError

MODELS = {"general": "selfie_segmentation.tflite", "landscape": "selfie_segmentation_landscape.tflite"}
INSTALL_HINT = "pip install ai-edge-litert==2.3.0 backports.strenum"


def choose_model(variant: str, frame_hw: tuple[int, int]) -> str:
    """``general`` / ``landscape``; ``auto``: landscape for frames at least 4:3 wide, else general."""
    if variant == "auto":
        h, w = frame_hw
        return "landscape" if w >= 4 / 3 * h else "general"
    if variant not in MODELS:
        raise TeacherError(f"selfie model {variant!r} is not one of auto, {', '.join(MODELS)}")
    return variant


class PersonSegmenter:
    """Person probability of whole frames.

    Args:
        folder: the fetched teacher folder (:func:`~deltaworld_core.teachers.packages.fetch_teacher`).
        variant: ``auto`` | ``general`` | ``landscape``.
        threads: LiteRT interpreter threads.
    """

    def __init__(self, folder: str | Path, variant: str = "auto", threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter  # optional: only the labelling step needs it
        except ImportError as err:
            raise TeacherError(f"the selfie teacher needs LiteRT: {INSTALL_HINT} ({err})") from None
        choose_model(variant, (1, 1))  # validates the name
        self.variant, self.folder = variant, Path(folder)
        self._interpreters = {}
        for name, file in MODELS.items():
            path = self.folder / file
            if not path.is_file():
                raise TeacherError(f"{path} is missing: run `python -m deltaworld_core.teachers fetch`")
            interp = Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
            self._interpreters[name] = interp

    def input_hw(self, model: str) -> tuple[int, int]:
        shape = self._interpreters[model].get_input_details()[0]["shape"]
        return int(shape[1]), int(shape[2])

    def __call__(self, rgb: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 RGB ``[H, W, 3]`` -> float32 person probability ``[H, W]`` (or ``out_hw``) in [0, 1]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB frame [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
        model = choose_model(self.variant, rgb.shape[:2])
        interp = self._interpreters[model]
        h, w = self.input_hw(model)
        x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 255.0
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        prob = interp.get_tensor(interp.get_output_details()[0]["index"])[0, :, :, 0]
        oh, ow = out_hw or rgb.shape[:2]
        return np.clip(cv2.resize(prob, (ow, oh), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)

    def views(self, rgb: np.ndarray, out_hw: tuple[int, int], tiles: int = 0, tile_frac: float = 0.6) -> np.ndarray:
        """:func:`mean_over_views` of this model."""
        return mean_over_views(self, rgb, out_hw, tiles, tile_frac)

    def model_files(self) -> dict[str, str]:
        return {name: str(self.folder / file) for name, file in MODELS.items()}


def mean_over_views(predict: Callable[[np.ndarray, tuple[int, int]], np.ndarray], rgb: np.ndarray,
                    out_hw: tuple[int, int], tiles: int = 0, tile_frac: float = 0.6) -> np.ndarray:
    """The mean of ``predict(view, hw)`` (a probability ``[*hw]``) over the whole frame and
    ``tiles x tiles`` overlapping crops of ``tile_frac`` of its sides, each placed where its crop
    lies: float32 ``[*out_hw]``. ``tiles`` 0 or 1: the whole frame alone."""
    prob = np.asarray(predict(rgb, out_hw), np.float64)
    if tiles < 2:
        return prob.astype(np.float32)
    cover = np.ones_like(prob)
    H, W = rgb.shape[:2]
    oh, ow = out_hw
    th, tw = max(1, round(H * tile_frac)), max(1, round(W * tile_frac))
    for a in range(tiles):
        for b in range(tiles):
            y0, x0 = round((H - th) * a / (tiles - 1)), round((W - tw) * b / (tiles - 1))
            r0, r1 = round(y0 * oh / H), round((y0 + th) * oh / H)  # the crop in output pixels
            c0, c1 = round(x0 * ow / W), round((x0 + tw) * ow / W)
            if r1 <= r0 or c1 <= c0:
                continue
            crop = np.ascontiguousarray(rgb[y0:y0 + th, x0:x0 + tw])
            prob[r0:r1, c0:c1] += predict(crop, (r1 - r0, c1 - c0))
            cover[r0:r1, c0:c1] += 1
    return (prob / cover).astype(np.float32)
