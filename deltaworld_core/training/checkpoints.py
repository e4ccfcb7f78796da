"""Checkpoints and metrics of a training run.

``<out>/checkpoints/<stage>/step_N/`` holds the trained part's weights (safetensors) and
``state.pt`` (optimizer, scheduler, RNG, step and the part's identity; read with
``weights_only=True``). A checkpoint is written into a temporary folder and renamed, then the
``latest`` pointer is replaced atomically, so a kill at any moment leaves the previous checkpoint
intact. What a killed write leaves (``.tmp_step_*`` folders, and the ``.NAME.XXXXXXXX.tmp`` files of
:func:`~deltaworld_core.checkpoint.atomic_write`: ``.latest.*.tmp`` here, ``.metrics_<stage>.csv.*.tmp``
or ``.<part>.safetensors.*.tmp`` in the run folder) is removed when a run starts or resumes and
before each save.
Resuming falls back from a damaged latest checkpoint to the newest intact one, with a warning.
Weights holding a NaN or an infinity are never written (:class:`NonFiniteError`) and a checkpoint
that holds them counts as damaged.

Metrics go to ``<out>/metrics_<stage>.csv`` (one row per logged step; rows past the resumed step
are dropped on resume, so a re-run step is never listed twice) and to TensorBoard event files
under ``<out>/tb/<stage>`` (``tensorboard --logdir <out>/tb``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import (CheckpointError, atomic_write, load_state_strict, read_state, remove_atomic_leftovers,
                          save_state)
from .config import TrainConfig

log = logging.getLogger("deltaworld_core.train")

METRIC_COLUMNS = ["step", "loss", "lr", "grad_norm", "steps_per_s", "time"]


class NonFiniteError(ValueError):
    """Training reached a NaN or infinite loss, gradient or weight; nothing non-finite is saved."""


def nonfinite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def require_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """:class:`NonFiniteError` naming ``what`` and how much of ``state`` is not finite, if any is."""
    bad = nonfinite(state)
    if bad:
        count = sum(int((~torch.isfinite(state[k])).sum()) for k in bad)
        total = sum(v.numel() for v in state.values() if v.is_floating_point())
        raise NonFiniteError(f"{what} refused: {count:,} of {total:,} weights are NaN or infinite "
                             f"({len(bad)} tensors, first {bad[0]})")


def identity(cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: stage and the trained part's architecture."""
    mc = cfg.model_config
    part = {"tokenizer": mc.tokenizer, "world": mc.world, "heads": mc.heads, "dense": cfg.dense}[cfg.stage]
    return json.dumps({"stage": cfg.stage, "vfm_dim": mc.vfm.embed_dim, "part": dataclasses.asdict(part)},
                      sort_keys=True)


def checkpoint_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out) / "checkpoints" / cfg.stage


def remove_leftovers(root: Path) -> list[Path]:
    """Deletes what killed writes left in ``root`` (a stage's checkpoint folder or the run folder):
    ``.tmp_step_*`` checkpoint folders and atomic_write's temporary files; returns them."""
    folders = [p for p in sorted(root.glob(".tmp_step_*")) if p.is_dir()] if root.is_dir() else []
    for tmp in folders:
        shutil.rmtree(tmp, ignore_errors=True)
    gone = folders + remove_atomic_leftovers(root)
    for tmp in gone:
        log.info("removed the leftover of an interrupted write: %s", tmp)
    return gone


def save_checkpoint(cfg: TrainConfig, net: nn.Module, opt, sched, step: int) -> Path:
    """``step_N/{model.safetensors,state.pt}`` written into a temp folder and renamed, then the
    ``latest`` pointer is replaced atomically; old checkpoints beyond ``keep_checkpoints`` go."""
    require_finite(net.state_dict(), f"the checkpoint of step {step}")
    root = checkpoint_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    remove_leftovers(root)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    tmp.mkdir()
    save_state(net.state_dict(), tmp / "model.safetensors")
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": {"torch": torch.get_rng_state(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
             "identity": identity(cfg)}
    atomic_write(tmp / "state.pt", lambda p: torch.save(state, p))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(root / "latest", lambda p: Path(p).write_text(final.name))
    for old in sorted(root.glob("step_*"))[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read_state(folder: Path) -> dict:
    state_path = folder / "state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint incomplete: {state_path} is missing") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"{state_path}: corrupt or unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "identity" not in state or "step" not in state:
        raise CheckpointError(f"{state_path}: not a training state written by deltaworld_core.train")
    return state


class IdentityMismatch(CheckpointError):
    """The checkpoint is intact but for another stage or architecture (never fallen back from)."""


def _restore(cfg: TrainConfig, folder: Path, net: nn.Module, opt, sched) -> int:
    state = _read_state(folder)
    if state["identity"] != identity(cfg):
        raise IdentityMismatch(f"{folder} was written for a different stage/model:\n  checkpoint {state['identity']}\n"
                               f"  config     {identity(cfg)}")
    weights = read_state(folder / "model.safetensors")
    if nonfinite(weights):
        raise CheckpointError(f"{folder}: holds NaN or infinite weights")
    saved_net = {k: v.clone() for k, v in net.state_dict().items()}
    saved_opt = opt.state_dict()
    try:
        load_state_strict(net, weights, source=str(folder / "model.safetensors"))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as err:
        net.load_state_dict(saved_net)  # a half-restored model must not leak into the fallback
        opt.load_state_dict(saved_opt)
        raise CheckpointError(f"{folder}: weights/optimizer/scheduler state do not match ({err})") from err
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


def load_checkpoint(cfg: TrainConfig, net: nn.Module, opt, sched) -> int:
    """Restores the newest intact checkpoint (``latest`` first); returns its step.

    A damaged ``latest`` (truncated file, missing part) falls back to the next newest checkpoint
    with a warning; :class:`CheckpointError` if none is intact or one is for another model."""
    root = checkpoint_dir(cfg)
    remove_leftovers(root)
    pointer = root / "latest"
    latest = root / pointer.read_text().strip() if pointer.is_file() else None
    candidates = ([latest] if latest is not None else []) + [
        p for p in sorted(root.glob("step_*"), reverse=True) if p != latest]
    errors = []
    for folder in candidates:
        try:
            step = _restore(cfg, folder, net, opt, sched)
        except IdentityMismatch:
            raise
        except CheckpointError as err:
            errors.append(str(err))
            log.warning("checkpoint %s is damaged (%s); trying an older one", folder.name, err)
            continue
        if errors:
            log.warning("resumed from the older intact checkpoint %s", folder.name)
        return step
    raise CheckpointError("no intact checkpoint in " + str(root) + (":\n  " + "\n  ".join(errors) if errors else ""))


class Metrics:
    """CSV (``metrics_<stage>.csv``) and TensorBoard event files (``tb/<stage>``) of one stage.

    Args:
        folder: the run folder.
        stage: the stage name.
        start_step: the step training starts from; CSV rows after it are dropped (a resumed run
            re-does those steps), a fresh run (0) starts a new file.
    """

    def __init__(self, folder: Path, stage: str, start_step: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        # rank 0 builds this once as a run starts or resumes, before it writes anything: the moment
        # to clear what a killed run left (a resume also clears its checkpoint folder when loading)
        remove_leftovers(folder)
        remove_leftovers(folder / "checkpoints" / stage)
        path = folder / f"metrics_{stage}.csv"
        rows = _read_rows(path) if start_step else []
        kept = [r for r in rows if _step(r) is not None and _step(r) <= start_step]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(METRIC_COLUMNS)
        writer.writerows(kept)
        atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
        self.file = open(path, "a", newline="")
        self.csv = csv.writer(self.file)
        self.tb_dir = folder / "tb" / stage
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

            self.tb = SummaryWriter(str(self.tb_dir), purge_step=start_step or None)
            log.info("metrics: %s; TensorBoard events: %s (tensorboard --logdir %s)", path, self.tb_dir,
                     folder / "tb")
        except ImportError as err:
            self.tb = None
            log.warning("metrics: %s; TensorBoard not written (%s)", path, err)

    def write(self, step: int, loss: float, lr: float, grad_norm: float, rate: float) -> None:
        self.csv.writerow([step, f"{loss:.6g}", f"{lr:.3g}", f"{grad_norm:.4g}", f"{rate:.4g}", f"{time.time():.3f}"])
        self.file.flush()
        if self.tb is not None:
            for k, v in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm), ("steps_per_s", rate)):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _read_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[1:] if rows and rows[0] == METRIC_COLUMNS else rows


def _step(row: list[str]) -> int | None:
    try:
        return int(row[0])
    except (ValueError, IndexError):
        return None
