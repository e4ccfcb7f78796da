"""Frame geometry: how a camera frame becomes the VFM's input views, and how the views' maps
become one published map.

``forecast.geometry`` names the rule:

- ``squash``: the whole frame resized to the model's input size, aspect not kept (one view; the
  embedded default was trained and calibrated this way). The maps cover the whole frame at
  ``output_size``.
- ``two_squares``: as the released models were trained and evaluated, and as the release prepares
  a frame: the whole frame is resized (OpenCV's bilinear, no antialiasing) so that its short side
  meets the model size with the aspect kept and its long side is at most twice the model's (a
  frame wider than 2:1 is squashed to 2:1), then windows of the model's shape are taken at both
  ends of the long side: two for a wide frame (overlapping when the aspect ratio is under 2), one
  for a frame of the model's aspect. Each window is one view of the streaming forecast (the views
  run as one batch). The views' logits and depth are blended back (averaged where they overlap)
  into one map of the camera's whole view, at the prepared frame's aspect (the camera's up to
  2:1): its short side is ``output_size``'s.
- ``center_crop``: one window of the model's shape from the frame's centre, the rest discarded.
  The maps cover that region only (``Forecast.region`` gives it in camera pixels).

``squash`` and ``center_crop`` windows are cut from the camera frame at its own resolution and
resized by the VFM; ``two_squares`` resizes the whole frame first (:func:`cut_views`), so the
pixels the VFM sees are the release's to the last grey level.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

GEOMETRIES = ("squash", "two_squares", "center_crop")


@dataclass(frozen=True)
class Layout:
    """Where the views lie, for one camera frame size.

    views: per view (y0, x0, y1, x1) in camera pixels (the window cut from the frame).
    region: (y0, x0, y1, x1) in camera pixels that the published maps cover.
    canvas: (h, w) of the published maps.
    placements: per view (y0, x0) of its ``view_size`` map inside the canvas.
    view_size: (h, w) of one view's map before it is placed.
    prepared: (h, w) the whole frame is resized to before the views are cut (None: cut from the
        frame as it is, each view resized by the VFM).
    crops: per view (y0, x0, y1, x1) in the prepared frame's pixels (with ``prepared``).
    """

    views: tuple[tuple[int, int, int, int], ...]
    region: tuple[int, int, int, int]
    canvas: tuple[int, int]
    placements: tuple[tuple[int, int], ...]
    view_size: tuple[int, int]
    prepared: tuple[int, int] | None = None
    crops: tuple[tuple[int, int, int, int], ...] = ()

    @property
    def num_views(self) -> int:
        return len(self.views)


def layout(geometry: str, frame: tuple[int, int], model: tuple[int, int], output: tuple[int, int]) -> Layout:
    """The views and the published map for a camera frame of ``frame`` (H, W) pixels, a model input
    of ``model`` (h, w) and ``output`` (h, w) = ``forecast.output_size`` (see the module docstring
    for each rule)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry {geometry!r} is not one of {', '.join(GEOMETRIES)}")
    fh, fw = (int(s) for s in frame)
    mh, mw = (int(s) for s in model)
    oh, ow = (int(s) for s in output)
    full = (0, 0, fh, fw)
    if geometry == "squash":
        return Layout((full,), full, (oh, ow), ((0, 0),), (oh, ow))
    if geometry == "two_squares":
        return _release_squares((fh, fw), (mh, mw), (oh, ow))
    # center_crop: the window of the model's aspect that spans the frame's short side, centred.
    scale = max(mh / fh, mw / fw)  # model pixels per camera pixel
    wh, ww = min(fh, mh / scale), min(fw, mw / scale)  # window in camera pixels (one side is the frame's)
    along_x = fw - ww > 0.5  # the frame is wider than the model's aspect
    length, window = (fw, ww) if along_x else (fh, wh)
    side = max(1, int(round(ww if along_x else wh)))
    start = max(0, min(int(round((length - window) / 2)), length - side))
    view = (0, start, fh, start + side) if along_x else (start, 0, start + side, fw)
    return Layout((view,), view, (oh, ow), ((0, 0),), (oh, ow))


MAX_PREPARED_ASPECT = 2.0  # the release caps the long side at twice the short (512 -> at most 1024)


def _release_squares(frame: tuple[int, int], model: tuple[int, int], output: tuple[int, int]) -> Layout:
    """``two_squares``: the frame resized whole (short side to the model's, long side at most
    MAX_PREPARED_ASPECT times it), windows of the model's shape at both ends of the long side."""
    (fh, fw), (mh, mw), (oh, ow) = frame, model, output
    scale = max(mh / fh, mw / fw)  # prepared pixels per camera pixel on the short side
    ph, pw = fh * scale, fw * scale
    along_x, along_y = pw - mw > 0.5, ph - mh > 0.5
    pw = min(pw, MAX_PREPARED_ASPECT * mw) if along_x else mw
    ph = min(ph, MAX_PREPARED_ASPECT * mh) if along_y else mh
    prepared = (int(round(ph)), int(round(pw)))
    if along_x:
        crops = ((0, 0, mh, mw), (0, prepared[1] - mw, mh, prepared[1]))
    elif along_y:
        crops = ((0, 0, mh, mw), (prepared[0] - mh, 0, prepared[0], mw))
    else:
        crops = ((0, 0, mh, mw),)
    sy, sx = prepared[0] / fh, prepared[1] / fw  # prepared pixels per camera pixel (differ when squashed)
    views = tuple((int(round(y0 / sy)), int(round(x0 / sx)), min(fh, int(round(y1 / sy))), min(fw, int(round(x1 / sx))))
                  for y0, x0, y1, x1 in crops)
    # The published canvas: the prepared frame at the scale that maps one window onto output_size.
    canvas = (max(oh, int(round(ph * oh / mh))), max(ow, int(round(pw * ow / mw))))
    placements = [(0, 0)]
    if len(crops) == 2:  # the second view ends at the canvas edge exactly
        placements.append((0, canvas[1] - ow) if along_x else (canvas[0] - oh, 0))
    return Layout(views, (0, 0, fh, fw), canvas, tuple(placements), (oh, ow), prepared, crops)


def cut_views(image, lay: Layout):
    """HxWx3 uint8 frame -> [V, h, w, 3] windows. With ``lay.prepared`` the whole frame is
    resized to it first with OpenCV's bilinear (as the release prepares frames) and the windows
    are ``lay.crops`` of it, at the model's size; otherwise the windows are cut from the frame as
    it is (the VFM resizes them) and one view is a view of the frame, no copy."""
    if lay.prepared is not None:
        ph, pw = lay.prepared
        if image.shape[:2] != (ph, pw):
            image = cv2.resize(image, (pw, ph), interpolation=cv2.INTER_LINEAR).reshape(ph, pw, *image.shape[2:])
        crops = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in lay.crops]
        return np.stack(crops)
    crops = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in lay.views]
    return np.stack(crops) if len(crops) > 1 else crops[0][None]


def blend(values: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Per view maps [V, B, ch, vh, vw] (vh, vw = ``lay.view_size``; logits or depth, any
    channels ``ch``) -> [B, ch, H, W] on ``lay.canvas``, averaged where views overlap (views lie
    along one axis, as :func:`layout` places them). One view returns its map unchanged (no copy)."""
    if values.shape[0] != lay.num_views:
        raise ValueError(f"{values.shape[0]} views for a layout of {lay.num_views}")
    if lay.num_views == 1:
        return values[0]
    vh, vw = lay.view_size
    # In the views' memory layout: channels-last class logits stay channels-last, so the copies
    # below and the argmax over classes after run along contiguous memory (an NCHW canvas made
    # both strided).
    fmt = torch.channels_last if values.ndim == 5 and values[0].is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    out = torch.empty((*values.shape[1:3], *lay.canvas), dtype=values.dtype, device=values.device,
                      memory_format=fmt)
    # Each view copied to its place (a later one over an earlier one), then each overlap set to the
    # two views' mean: consecutive windows are at least half a window apart, so no pixel lies in
    # three views, and nothing outside an overlap is touched twice.
    for view, (y, x) in zip(values, lay.placements):
        out[..., y:y + vh, x:x + vw].copy_(view)
    for i in range(1, lay.num_views):
        (y0, x0), (y1, x1) = lay.placements[i - 1], lay.placements[i]
        if x1 > x0 and x1 < x0 + vw:
            out[..., :, x1:x0 + vw].add_(values[i - 1][..., :, x1 - x0:]).mul_(0.5)
        elif y1 > y0 and y1 < y0 + vh:
            out[..., y1:y0 + vh, :].add_(values[i - 1][..., y1 - y0:, :]).mul_(0.5)
    return out


def upsample_views(logits: torch.Tensor, depth: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [V, B, classes, gh, gw] and depth [V, B, gh, gw] at the feature grid -> class
    ids [B, H, W] uint8 and depth [B, H, W] on ``lay.canvas``: each view upsampled bilinearly to
    its place, blended (logits before the argmax, so overlaps vote with their confidence)."""
    v, b = logits.shape[:2]
    size = lay.view_size
    # Channels-last: the upsampling and the per-pixel argmax over classes run along contiguous memory.
    up = F.interpolate(logits.flatten(0, 1).float().contiguous(memory_format=torch.channels_last), size=size,
                       mode="bilinear", align_corners=False)
    up_depth = F.interpolate(depth.flatten(0, 1)[:, None].float(), size=size, mode="bilinear", align_corners=False)
    seg = blend(up.unflatten(0, (v, b)), lay)
    dep = blend(up_depth.unflatten(0, (v, b)), lay)[:, 0]
    return seg.permute(0, 2, 3, 1).argmax(dim=-1).to(torch.uint8), dep
