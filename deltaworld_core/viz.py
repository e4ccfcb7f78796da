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


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


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


def forecast_grid(image: np.ndarray, forecast, max_hypotheses: int = 4, max_depth: float = 80.0) -> np.ndarray:
    """One picture of a forecast: a header row (input, then the per-step semantic mode and
    disagreement), then per hypothesis its semantic and depth maps per step. Tiles keep the camera's
    aspect ratio (the model sees a squashed frame) within the bounds of :func:`grid_tile_size`. image [H, W, 3] uint8 RGB; forecast: a
    :class:`~deltaworld_core.forecaster.Forecast`."""
    k, horizon, h, _ = forecast.semantic.shape
    tile = grid_tile_size(image.shape[:2], h)

    def fit(x: np.ndarray, nearest: bool = False) -> np.ndarray:
        return cv2.resize(x, tile, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    header = [_label(fit(image), "input")]
    for step in range(horizon):
        dt = forecast.stamps[step] - forecast.stamp
        header.append(_label(fit(colorize_semantic(forecast.summary.semantic_mode[step]), True), f"mode +{dt:.2f}s"))
        header.append(_label(fit(colorize_agreement(forecast.summary.agreement[step])), "disagreement"))
    rows = [header]
    for i in range(min(k, max_hypotheses)):
        row = [_label(np.zeros((tile[1], tile[0], 3), np.uint8), f"sample {i}")]
        for step in range(horizon):
            row.append(_label(fit(colorize_semantic(forecast.semantic[i, step]), True), f"sem +{step + 1}"))
            row.append(_label(fit(colorize_depth(forecast.depth[i, step], max_depth)), f"depth +{step + 1}"))
        rows.append(row)
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
