"""Evaluation clips from Cityscapes, KITTI (Eigen depth split) and VSPW in their public layouts.

Every item is ``context + horizon`` frames at a fixed stride that END on the labelled frame:
    frames   uint8 [T, H, W, 3]  (RGB)
    stamps   float64 [T]         seconds (source frame index / fps, or KITTI's own timestamps)
    semantic uint8 [H, W] or None  train ids of the last frame, 255 = ignore
    depth    float32 [H, W] or None  metres of the last frame, 0 = invalid
    class_names list[str] (empty for depth-only data)
    name     str  identifier of the labelled frame
Use :func:`collate_eval` with a DataLoader (the default collate cannot batch ``None``).
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from .video import read_rgb

IGNORE = 255

# --------------------------------------------------------------------------- Cityscapes
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle"]
# labelId of each train id above (all other labelIds -> ignore).
_CS_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITYSCAPES_LUT = np.full(256, IGNORE, np.uint8)
CITYSCAPES_LUT[_CS_LABEL_IDS] = np.arange(len(_CS_LABEL_IDS))

# --------------------------------------------------------------------------- VSPW
# Mask value 0 = "others" and 255 = void are ignored; values 1..124 are classes 0..123.
VSPW_CLASSES = [
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "Playground_slide",
    "handrail_or_fence", "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass",
    "sand", "athletic_field", "road", "path", "crosswalk", "building", "house", "bridge",
    "tower", "windmill", "well_or_well_lid", "other_construction", "sky", "mountain", "stone",
    "wood", "ice", "snowfield", "grandstand", "sea", "river", "lake", "waterfall", "water",
    "billboard_or_Bulletin_Board", "sculpture", "pipeline", "flag", "parasol_or_umbrella",
    "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck", "bicycle", "motorcycle",
    "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre", "traffic_light", "lamp",
    "person", "cat", "dog", "horse", "cattle", "other_animal", "tree", "flower", "other_plant",
    "toy", "ball_net", "backboard", "skateboard", "bat", "ball",
    "cupboard_or_showcase_or_storage_rack", "box", "traveling_case_or_trolley_case", "basket",
    "bag_or_package", "trash_can", "cage", "plate", "tub_or_bowl_or_pot", "bottle_or_cup",
    "barrel", "fishbowl", "bed", "pillow", "table_or_desk", "chair_or_seat", "bench", "sofa",
    "shelf", "bathtub", "gun", "commode", "roaster", "other_machine", "refrigerator",
    "washing_machine", "Microwave_oven", "fan", "curtain", "textiles", "clothes",
    "painting_or_poster", "mirror", "flower_pot_or_vase", "clock", "book", "tool", "blackboard",
    "tissue", "screen_or_television", "computer", "printer", "Mobile_phone", "keyboard",
    "other_electronic_product", "fruit", "food", "instrument", "train"]
assert len(VSPW_CLASSES) == 124
VSPW_LUT = np.full(256, IGNORE, np.uint8)
VSPW_LUT[1:125] = np.arange(124)


def _read_label(path: Path, flags=cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"cannot read label map (missing or corrupt): {path}")
    return img


def _resize(frames: np.ndarray, sem, depth, size):
    """Optional downscale to (h, w): frames area, labels/depth nearest."""
    if size is None:
        return frames, sem, depth
    hw = (size[1], size[0])
    frames = np.stack([cv2.resize(f, hw, interpolation=cv2.INTER_AREA) for f in frames])
    if sem is not None:
        sem = cv2.resize(sem, hw, interpolation=cv2.INTER_NEAREST)
    if depth is not None:
        depth = cv2.resize(depth, hw, interpolation=cv2.INTER_NEAREST)
    return frames, sem, depth


class _EvalClips(torch.utils.data.Dataset):
    """Shared logic: subclasses fill ``self.items`` and implement ``_frame_path``/``_labels``."""
    class_names: list[str] = []

    def __init__(self, context: int, horizon: int, stride: int, fps: float, size):
        self.context, self.horizon, self.stride, self.fps = context, horizon, stride, fps
        self.size = size
        self.items: list = []

    @property
    def num_frames(self) -> int:
        return self.context + self.horizon

    def offsets(self) -> np.ndarray:
        """Frame offsets relative to the labelled frame, e.g. [-18, ..., -3, 0]."""
        return -self.stride * np.arange(self.num_frames - 1, -1, -1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        idx = [self._frame_index(item) + int(o) for o in self.offsets()]
        frames = np.stack([read_rgb(self._frame_path(item, i)) for i in idx])
        stamps = self._stamps(item, idx)
        sem, depth = self._labels(item)
        frames, sem, depth = _resize(frames, sem, depth, self.size)
        return dict(frames=frames, stamps=stamps, semantic=sem, depth=depth,
                    class_names=list(self.class_names), name=self._name(item))

    def _stamps(self, item, idx) -> np.ndarray:
        return np.asarray(idx, np.float64) / self.fps


class CityscapesClips(_EvalClips):
    """Cityscapes val/train snippets ending on the gtFine-labelled frame (frame 19 of 30).

    Layout under ``root``:
        leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
        gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    labelIds are mapped to the 19 train ids (others 255). Defaults: stride 3 at 17 fps.
    """
    class_names = CITYSCAPES_CLASSES
    _PAT = re.compile(r"^(.+)_(\d{6})_(\d{6})_gtFine_labelIds\.png$")

    def __init__(self, root: str | Path, split: str = "val", context: int = 4, horizon: int = 3,
                 stride: int = 3, fps: float = 17.0, size: tuple[int, int] | None = None):
        super().__init__(context, horizon, stride, fps, size)
        self.root = Path(root)
        gt = self.root / "gtFine" / split
        if not gt.is_dir():
            raise FileNotFoundError(f"Cityscapes labels not found: {gt}")
        self.seq_dir = self.root / "leftImg8bit_sequence" / split
        for p in sorted(gt.glob("*/*_gtFine_labelIds.png")):
            m = self._PAT.match(p.name)
            if m:
                self.items.append((m[1], int(m[2]), int(m[3]), p))
        if not self.items:
            raise FileNotFoundError(f"no *_gtFine_labelIds.png under {gt}")

    def _frame_index(self, item) -> int:
        return item[2]

    def _frame_path(self, item, frame: int) -> Path:
        city, seq = item[0], item[1]
        return self.seq_dir / city / f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"

    def _labels(self, item):
        return CITYSCAPES_LUT[_read_label(item[3], cv2.IMREAD_GRAYSCALE)], None

    def _name(self, item) -> str:
        return f"{item[0]}_{item[1]:06d}_{item[2]:06d}"


class KittiDepthClips(_EvalClips):
    """KITTI raw clips ending on an Eigen-split frame with depth-benchmark ground truth.

    Args:
        raw_root: KITTI raw: ``{date}/{date}_drive_{drive:04d}_sync/image_02/data/{frame:010d}.png``
            (``image_03`` for right-camera lines); ``image_0X/timestamps.txt`` is used when
            present, else frame / fps.
        depth_root: KITTI depth benchmark: ``[train|val/]{date}_drive_{drive:04d}_sync/proj_depth/
            groundtruth/image_0X/{frame:010d}.png`` (uint16, metres * 256, 0 = invalid).
        split_file: lines ``{date}/{date}_drive_{drive:04d}_sync {frame} {l|r}``.
        min_depth / max_depth: depth outside (min, max) is marked invalid (0), as in evaluation.
    Lines whose ground truth or history frames are missing are skipped (the depth benchmark
    omits the first and last 5 frames of each drive); ``self.skipped`` counts them.
    Defaults: stride 2 at 10 fps.
    """

    def __init__(self, raw_root: str | Path, depth_root: str | Path, split_file: str | Path,
                 context: int = 4, horizon: int = 3, stride: int = 2, fps: float = 10.0,
                 min_depth: float = 1e-3, max_depth: float = 80.0,
                 size: tuple[int, int] | None = None):
        super().__init__(context, horizon, stride, fps, size)
        self.raw_root, self.depth_root = Path(raw_root), Path(depth_root)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.skipped = 0
        lines = Path(split_file).read_text().split("\n")
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3):
                raise ValueError(f"{split_file}: bad line {line!r}")
            drive, frame = parts[0].strip("/"), int(parts[1])
            cam = "image_03" if len(parts) == 3 and parts[2].lower() in ("r", "right") \
                else "image_02"
            gt = self._find_gt(Path(drive).name, cam, frame)
            first = frame + int(self.offsets()[0])
            item = (drive, cam, frame, gt)
            if gt is None or first < 0 or not self._frame_path(item, first).is_file():
                self.skipped += 1
                continue
            self.items.append(item)
        self._stamp_cache: dict = {}

    def _find_gt(self, drive_name: str, cam: str, frame: int) -> Path | None:
        rel = Path(drive_name) / "proj_depth" / "groundtruth" / cam / f"{frame:010d}.png"
        for sub in ("train", "val", ""):
            p = self.depth_root / sub / rel
            if p.is_file():
                return p
        return None

    def _frame_index(self, item) -> int:
        return item[2]

    def _frame_path(self, item, frame: int) -> Path:
        return self.raw_root / item[0] / item[1] / "data" / f"{frame:010d}.png"

    def _stamps(self, item, idx) -> np.ndarray:
        key = (item[0], item[1])
        if key not in self._stamp_cache:
            self._stamp_cache[key] = _kitti_timestamps(
                self.raw_root / item[0] / item[1] / "timestamps.txt")
        ts = self._stamp_cache[key]
        if ts is not None and max(idx) < len(ts):
            return ts[idx]
        return np.asarray(idx, np.float64) / self.fps

    def _labels(self, item):
        raw = _read_label(item[3])
        if raw.dtype != np.uint16:
            raise ValueError(f"{item[3]}: expected a uint16 depth png, got {raw.dtype}")
        depth = raw.astype(np.float32) / 256.0
        depth[(depth <= self.min_depth) | (depth >= self.max_depth)] = 0.0
        return None, depth

    def _name(self, item) -> str:
        return f"{item[0]} {item[2]:010d} {item[1]}"


def _kitti_timestamps(path: Path) -> np.ndarray | None:
    """KITTI raw ``timestamps.txt`` ("2011-09-26 13:02:25.964389445") -> seconds, or None."""
    if not path.is_file():
        return None
    out = []
    for line in path.read_text().split("\n"):
        line = line.strip()
        if not line:
            continue
        day, clock = line.split(" ")
        hms, _, frac = clock.partition(".")
        t = _dt.datetime.fromisoformat(f"{day} {hms}").replace(tzinfo=_dt.timezone.utc)
        out.append(t.timestamp() + float("0." + (frac or "0")))
    return np.asarray(out, np.float64)


class VSPWClips(_EvalClips):
    """VSPW clips: every annotated frame with enough history is a sample (``every`` thins them).

    Layout under ``root`` (the folder that contains ``data/`` and the split lists):
        {split}.txt                         one video name per line
        data/{video}/origin/{frame}.jpg     frames (sorted by name)
        data/{video}/mask/{frame}.png       class ids: 0 others, 1..124 classes, 255 void
    Masks map to 124 train ids (value - 1; 0 and 255 -> 255). Defaults: stride 3 at 15 fps.
    """
    class_names = VSPW_CLASSES

    def __init__(self, root: str | Path, split: str = "val", context: int = 4, horizon: int = 3,
                 stride: int = 3, fps: float = 15.0, every: int = 1,
                 size: tuple[int, int] | None = None):
        super().__init__(context, horizon, stride, fps, size)
        self.root = Path(root)
        lst = self.root / f"{split}.txt"
        if not lst.is_file():
            raise FileNotFoundError(f"VSPW split list not found: {lst}")
        self.videos: dict[str, list[str]] = {}
        need = (self.num_frames - 1) * stride
        for video in lst.read_text().split():
            origin = self.root / "data" / video / "origin"
            frames = sorted(p.stem for p in origin.glob("*.jpg"))
            if not frames:
                raise FileNotFoundError(f"no frames in {origin}")
            self.videos[video] = frames
            mask_dir = self.root / "data" / video / "mask"
            for i in range(need, len(frames), every):
                if (mask_dir / f"{frames[i]}.png").is_file():
                    self.items.append((video, i))

    def _frame_index(self, item) -> int:
        return item[1]

    def _frame_path(self, item, i: int) -> Path:
        return self.root / "data" / item[0] / "origin" / f"{self.videos[item[0]][i]}.jpg"

    def _labels(self, item):
        name = self.videos[item[0]][item[1]]
        mask = read_index_png(self.root / "data" / item[0] / "mask" / f"{name}.png")
        return VSPW_LUT[mask], None

    def _name(self, item) -> str:
        return f"{item[0]}/{self.videos[item[0]][item[1]]}"


def _png_palette(path: Path) -> np.ndarray | None:
    """The PLTE chunk of a PNG as uint8 [N, 3] RGB, or None (walks chunk headers only)."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            n, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"PLTE":
                return np.frombuffer(f.read(n), np.uint8).reshape(-1, 3)
            if kind in (b"IDAT", b"IEND"):
                return None
            f.seek(n + 4, 1)                         # skip data and CRC


def read_index_png(path: str | Path) -> np.ndarray:
    """Class-index PNG -> uint8 [H, W], for grey and palette ("P" mode) PNGs alike.

    OpenCV expands palette PNGs to colours, so indices are recovered by inverting the palette
    (the first palette entry wins for duplicate colours; unknown colours -> 255).
    """
    path = Path(path)
    img = _read_label(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 2:
        return img.astype(np.uint8)
    pal = _png_palette(path)
    rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB).astype(np.int64)
    if pal is None:                                  # grey stored as RGB
        return rgb[..., 0].astype(np.uint8)
    keys = (pal[:, 0].astype(np.int64) << 16) | (pal[:, 1].astype(np.int64) << 8) | pal[:, 2]
    uniq, first = np.unique(keys, return_index=True)
    k = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(uniq, k), 0, len(uniq) - 1)
    return np.where(uniq[pos] == k, first[pos], IGNORE).astype(np.uint8)


def collate_eval(batch: Sequence[dict]) -> dict:
    """Stack a list of eval items into tensors; ``semantic``/``depth`` stay None if absent."""
    out = dict(frames=torch.from_numpy(np.stack([b["frames"] for b in batch])),
               stamps=torch.from_numpy(np.stack([b["stamps"] for b in batch])),
               class_names=batch[0]["class_names"], name=[b["name"] for b in batch])
    for k in ("semantic", "depth"):
        vals = [b[k] for b in batch]
        out[k] = None if any(v is None for v in vals) else torch.from_numpy(np.stack(vals))
    return out
