"""Pictures a person can read: colour-coded semantics and depth, and a forecast grid."""

from __future__ import annotations

import cv2
import numpy as np

# Fixed, distinguishable colours for the first classes; more are generated deterministically.
_BASE_PALETTE = np.array(
    [
        [70, 130, 180], [128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35],
        [152, 251, 152], [0, 0, 142], [220, 20, 60], [153, 153, 153], [250, 170, 30],
        [220, 220, 0], [255, 0, 0], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
    ],
    dtype=np.uint8,
)


def palette(num_classes: int) -> np.ndarray:
    """[max(num_classes, 256), 3] uint8 colours; id 255 (ignore) is black."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    colours[: len(_BASE_PALETTE)] = _BASE_PALETTE
    colours[255] = 0
    return colours


def colorize_semantic(ids: np.ndarray, num_classes: int = 256) -> np.ndarray:
    """class ids [..., h, w] uint8 -> RGB [..., h, w, 3] uint8."""
    return palette(num_classes)[ids]


def colorize_depth(depth: np.ndarray, max_depth: float = 80.0) -> np.ndarray:
    """metres [h, w] -> RGB [h, w, 3]; inverse depth so near structure gets the contrast."""
    inv = 1.0 / np.clip(depth, 0.5, max_depth)
    norm = (inv - 1.0 / max_depth) / (1.0 / 0.5 - 1.0 / max_depth)
    grey = np.clip(np.sqrt(norm) * 255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA)[..., ::-1]


def colorize_agreement(agreement: np.ndarray) -> np.ndarray:
    """fraction in [0, 1] [h, w] -> RGB; low agreement (where the futures branch) is bright."""
    grey = np.clip((1.0 - agreement) * 255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[..., ::-1]


FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_SCALE = 0.35
LEGEND_SCALE = 0.4
LEGEND_LINE = 15  # px per legend text line at LEGEND_SCALE
LEGEND_MIN_WIDTH = 320
LEGEND_MAX_CLASSES = 48  # more are summarised as "+N more": the legend stays bounded
DEPTH_TICKS_M = (1, 2, 5, 10, 20, 50, 80, 150, 300)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Writes ``text`` on a dark strip at the top of ``tile`` (readable over any picture)."""
    tile = np.ascontiguousarray(tile)
    (w, h), _ = cv2.getTextSize(text, FONT, LABEL_SCALE, 1)
    tile[: h + 6, : w + 6] = (tile[: h + 6, : w + 6] * 0.35).astype(np.uint8)
    cv2.putText(tile, text, (3, h + 3), FONT, LABEL_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _depth_at(fraction: np.ndarray, max_depth: float) -> np.ndarray:
    """The depth (m) that :func:`colorize_depth` draws with colour-map position ``fraction`` in [0, 1]."""
    inv = np.square(fraction) * (1.0 / 0.5 - 1.0 / max_depth) + 1.0 / max_depth
    return 1.0 / inv


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = LEGEND_SCALE) -> int:
    """Writes one line with its baseline at ``y``; returns the x after it."""
    cv2.putText(canvas, text, (x, y), FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return x + cv2.getTextSize(text, FONT, scale, 1)[0][0]


def legend(width: int, class_names: list[str], max_depth: float = 80.0, lines: tuple[str, ...] = ()) -> np.ndarray:
    """The key to a forecast picture, ``[h, width, 3]`` uint8 RGB (h grows with the lines and
    classes, bounded by LEGEND_MAX_CLASSES): free text ``lines``, a swatch and the name of every
    class in the colours of :func:`colorize_semantic`, a depth colour bar in metres with ticks
    (the colours of :func:`colorize_depth`) and the disagreement scale (:func:`colorize_agreement`)."""
    width = max(int(width), LEGEND_MIN_WIDTH)
    pad, swatch = 6, 11
    colours = palette(len(class_names))
    shown = list(enumerate(class_names[:LEGEND_MAX_CLASSES]))
    # lay the swatches out first to know the height
    items, x, rows = [], pad, 0
    entries = [(colours[i], f"{i} {name}") for i, name in shown]
    if len(class_names) > LEGEND_MAX_CLASSES:
        entries.append((None, f"+{len(class_names) - LEGEND_MAX_CLASSES} more classes"))
    for colour, text in entries:
        w = swatch + 4 + cv2.getTextSize(text, FONT, LEGEND_SCALE, 1)[0][0] + 12
        if x + w > width - pad and x > pad:
            x, rows = pad, rows + 1
        items.append((x, rows, colour, text))
        x += w
    class_rows = rows + 1
    bar_h = 12
    height = pad + LEGEND_LINE * (len(lines) + 2 + class_rows) + 2 * (bar_h + LEGEND_LINE + 4) + pad
    canvas = np.full((height, width, 3), 32, np.uint8)
    y = pad + LEGEND_LINE - 4
    for line in lines:
        _text(canvas, line, pad, y)
        y += LEGEND_LINE
    _text(canvas, "semantic classes (id name; ids come from the heads' training data):", pad, y)
    for x, row, colour, text in items:
        top = y + 4 + row * LEGEND_LINE
        if colour is not None:
            canvas[top: top + swatch, x: x + swatch] = colour
        _text(canvas, text, x + swatch + 4, top + swatch - 1)
    y += LEGEND_LINE * class_rows + LEGEND_LINE
    # depth colour bar: far (left) to near (right), ticks in metres
    label_w = _text(canvas, "depth (m):", pad, y + bar_h - 2) + 8
    bar_w = width - label_w - pad
    fraction = np.linspace(0.0, 1.0, bar_w)
    depth_row = _depth_at(fraction, max_depth)[None].astype(np.float32)
    canvas[y: y + bar_h, label_w: label_w + bar_w] = colorize_depth(np.repeat(depth_row, bar_h, 0), max_depth)
    last_x = -100
    for tick in (max_depth, *[t for t in DEPTH_TICKS_M[::-1] if 0.5 <= t < max_depth], 0.5):
        grey_fraction = np.sqrt((1.0 / tick - 1.0 / max_depth) / (1.0 / 0.5 - 1.0 / max_depth))
        tx = label_w + int(round(grey_fraction * (bar_w - 1)))
        text = f"{tick:g}"
        tw = cv2.getTextSize(text, FONT, 0.33, 1)[0][0]
        if tx - tw // 2 < last_x + 4:
            continue
        canvas[y + bar_h: y + bar_h + 3, tx] = 235
        _text(canvas, text, min(max(tx - tw // 2, label_w), width - tw - 1), y + bar_h + 13, 0.33)
        last_x = tx + tw // 2
    y += bar_h + LEGEND_LINE + 4
    label_w = _text(canvas, "disagreement:", pad, y + bar_h - 2) + 8
    bar_w = width - label_w - pad
    agreement = np.repeat(np.linspace(1.0, 0.0, bar_w)[None], bar_h, 0)
    canvas[y: y + bar_h, label_w: label_w + bar_w] = colorize_agreement(agreement)
    _text(canvas, "0 (all K agree)", label_w, y + bar_h + 13, 0.33)
    text = "1 - fraction agreeing with the mode"
    _text(canvas, text, label_w + bar_w - cv2.getTextSize(text, FONT, 0.33, 1)[0][0], y + bar_h + 13, 0.33)
    return canvas[: y + bar_h + 13 + pad]


# Bounds of one tile of the forecast grid, whatever the camera's shape: a 1x4000 px frame must
# not make a 448,000 px wide picture. Wider or taller cameras are squashed to this aspect ratio.
MAX_TILE_HEIGHT = 256
MAX_TILE_ASPECT = 4.0


def grid_tile_size(image_hw: tuple[int, int], map_height: int) -> tuple[int, int]:
    """(w, h) of one grid tile for a camera of ``image_hw`` and maps ``map_height`` rows high:
    the camera's aspect ratio clamped to [1/MAX_TILE_ASPECT, MAX_TILE_ASPECT], at most
    MAX_TILE_HEIGHT rows, so a tile never exceeds MAX_TILE_ASPECT x MAX_TILE_HEIGHT^2 pixels."""
    height = max(1, min(map_height, MAX_TILE_HEIGHT))
    aspect = min(max(image_hw[1] / max(image_hw[0], 1), 1.0 / MAX_TILE_ASPECT), MAX_TILE_ASPECT)
    return max(1, round(height * aspect)), height


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``alpha`` of ``overlay`` over ``image`` (both [h, w, 3] uint8)."""
    return cv2.addWeighted(overlay, alpha, image, 1.0 - alpha, 0.0)


def forecast_grid(image: np.ndarray, forecast, max_hypotheses: int = 4, max_depth: float = 80.0,
                  future_frames: list[np.ndarray | None] | None = None) -> np.ndarray:
    """One picture of a forecast that explains itself. Every time is in seconds after the input frame.

    - top band: the input frame (+0.00 s) and the legend: K and which samples are drawn, the class
      colours with their names, the depth colour bar in metres, the disagreement scale;
    - row "mode": per step the most frequent class over the K samples and their disagreement;
    - row "real" (only with ``future_frames``, one RGB frame or None per step: what the camera
      really saw at each target time, when the input is a recording): per step that frame and the
      mode drawn over it, so a forecast can be judged by eye; a step without a frame says so;
    - one row per drawn sample (the first ``max_hypotheses`` of K): per step its semantics and depth.

    Tiles keep the camera's aspect ratio (the model sees a squashed frame) within the bounds of
    :func:`grid_tile_size`; the legend's size is bounded too. image [H, W, 3] uint8 RGB; forecast: a
    :class:`~deltaworld_core.forecaster.Forecast` (or anything with its stamp, stamps, semantic,
    depth, class_names and summary.semantic_mode / agreement). Returns [h, w, 3] uint8 RGB."""
    k, horizon, h, _ = forecast.semantic.shape
    tile = grid_tile_size(image.shape[:2], h)
    shown = min(k, max_hypotheses)
    if future_frames is not None and len(future_frames) != horizon:
        raise ValueError(f"future_frames: expected {horizon} entries (one per step), got {len(future_frames)}")

    def fit(x: np.ndarray, nearest: bool = False) -> np.ndarray:
        return cv2.resize(x, tile, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    offsets = [float(t - forecast.stamp) for t in forecast.stamps]
    when = [f"+{dt:.2f} s" for dt in offsets]
    mode = [fit(colorize_semantic(forecast.summary.semantic_mode[s]), True) for s in range(horizon)]
    rows = [[tile_ for s in range(horizon) for tile_ in (
        _label(mode[s].copy(), f"mode {when[s]}"),
        _label(fit(colorize_agreement(forecast.summary.agreement[s])), f"disagreement {when[s]}"))]]
    if future_frames is not None:
        row = []
        for s, frame in enumerate(future_frames):
            if frame is None:
                blank = np.full((tile[1], tile[0], 3), 64, np.uint8)
                row += [_label(blank.copy(), f"real {when[s]}: not recorded"),
                        _label(blank, f"mode on real {when[s]}: no frame")]
            else:
                real = fit(np.ascontiguousarray(frame))
                row += [_label(real, f"real {when[s]}"), _label(blend(real, mode[s]), f"mode on real {when[s]}")]
        rows.append(row)
    for i in range(shown):
        rows.append([tile_ for s in range(horizon) for tile_ in (
            _label(fit(colorize_semantic(forecast.semantic[i, s]), True), f"sample {i} {when[s]}"),
            _label(fit(colorize_depth(forecast.depth[i, s], max_depth)), f"depth {i} {when[s]}"))])
    body = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)

    which = f"samples 0-{shown - 1}" if shown > 1 else "sample 0"
    lines = (f"forecast of the frame at t = {forecast.stamp:.2f} s; times are seconds after it",
             f"K = {k} hypotheses; rows show {which} (the first {shown} of {k}); steps "
             + ", ".join(when))
    key = legend(body.shape[1] - tile[0], list(forecast.class_names), max_depth, lines)
    band_h = max(tile[1], key.shape[0])
    band_w = tile[0] + key.shape[1]
    band = np.full((band_h, band_w, 3), 32, np.uint8)
    band[: tile[1], : tile[0]] = _label(fit(image), "input +0.00 s")
    band[: key.shape[0], tile[0]:] = key
    width = max(band_w, body.shape[1])
    picture = np.full((band_h + body.shape[0], width, 3), 32, np.uint8)
    picture[:band_h, :band_w] = band
    picture[band_h:, : body.shape[1]] = body
    return picture
