"""Vehicle evidence from a box teacher, without claiming what a box does not say.

A detector's box around a car is weak supervision: its corners hold road, sky and the next car,
and outside every box the teacher has said nothing (a large close-up car it missed is still a
car). So only each confident box's **core** speaks: the box shrunk about its centre to ``core``
of its width and height, where a car box is almost all car. A cell of the label grid whose centre
lies in the core of a vehicle box scoring at least ``min_score`` is labelled ``car``; every other
cell is ``IGNORE`` (no loss), never "not car". The codes are those of
:mod:`deltaworld_core.training.partial_labels`, so :func:`partial_cross_entropy` is the loss.

Classes: COCO car, bus, truck and motorcycle are the project's ``car``. Bicycles teach nothing:
no class of the head fits them and their boxes are mostly background and rider. Where a vehicle
core overlaps the core of a confident person or bicycle box (a rider), the cell stays unknown.
"""

from __future__ import annotations

import torch

from ..teachers.centernet import COCO_RIDERS, COCO_VEHICLES
from .partial_labels import IGNORE

CAR = "car"


def core_mask(boxes: torch.Tensor, grid_hw: tuple[int, int], core: float = 0.5) -> torch.Tensor:
    """boxes [n, 4] (``x1, y1, x2, y2`` as fractions of the frame) -> bool [n, h, w]: the cells whose
    centre lies inside each box scaled about its centre to ``core`` of its width and height (below 1
    shrunk, above 1 grown)."""
    if not core > 0.0:
        raise ValueError(f"core must be > 0, got {core}")
    h, w = grid_hw
    boxes = boxes.float().reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half_w, half_h = (boxes[:, 2] - boxes[:, 0]).abs() * core / 2, (boxes[:, 3] - boxes[:, 1]).abs() * core / 2
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h  # cell centres as fractions
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    inside_y = (ys[None] - cy[:, None]).abs() <= half_h[:, None]  # [n, h]
    inside_x = (xs[None] - cx[:, None]).abs() <= half_w[:, None]  # [n, w]
    return inside_y[:, :, None] & inside_x[:, None, :]


def vehicle_cores(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, grid_hw: tuple[int, int],
                  min_score: float = 0.5, core: float = 0.5) -> torch.Tensor:
    """One frame's boxes -> bool [h, w]: cells in a confident vehicle core and in no confident rider core."""
    confident = scores >= min_score
    vehicle = confident & torch.isin(classes, torch.tensor(COCO_VEHICLES))
    rider = confident & torch.isin(classes, torch.tensor(COCO_RIDERS))
    cells = core_mask(boxes, grid_hw, core)
    inside = cells[vehicle].any(dim=0) if bool(vehicle.any()) else torch.zeros(grid_hw, dtype=torch.bool)
    if bool(rider.any()):
        inside &= ~cells[rider].any(dim=0)
    return inside


def box_codes(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, grid_hw: tuple[int, int],
              class_names: list[str], min_score: float = 0.5, core: float = 0.5) -> torch.Tensor:
    """One frame's boxes -> uint8 codes [h, w]: ``car`` in confident vehicle cores, ``IGNORE`` elsewhere."""
    if CAR not in class_names:
        raise ValueError(f"the heads have no {CAR!r} class (classes: {', '.join(class_names)})")
    codes = torch.full(grid_hw, IGNORE, dtype=torch.uint8)
    codes[vehicle_cores(boxes, scores, classes, grid_hw, min_score, core)] = class_names.index(CAR)
    return codes


def core_recall(called_car: torch.Tensor, cores: torch.Tensor) -> tuple[int, int]:
    """called_car bool [..., h, w] (the head's most likely class is car), cores bool [..., h, w] ->
    (core cells the head calls car, core cells)."""
    return int((called_car & cores).sum()), int(cores.sum())
