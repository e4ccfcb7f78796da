"""The training loop shared by every stage (:mod:`.tokenizer`, :mod:`.world`, :mod:`.heads`,
:mod:`.dense`): data from :mod:`deltaworld_core.data` through the frozen-VFM feature cache,
seeded global batches split across ranks, AdamW with warm-up, gradient clipping, optional bf16
autocast and ``torch.compile``, atomic checkpoints (:mod:`.checkpoints`), SIGINT/SIGTERM saving at
a step boundary, and the export of ``<out>/<part>.safetensors`` + ``model.yaml``.

``torchrun --nproc_per_node=N -m deltaworld_core.train ...`` runs DistributedDataParallel (NCCL on
CUDA, gloo on CPU). With the feature cache (``data.feature_cache: true``) rank 0 fills it, the others
read it, and every rank draws the same global batch and keeps its slice; streaming
(``data.feature_cache: false``, :mod:`.streamed`) each rank reads its own recordings in DataLoader
workers and the frozen VFM runs on each batch on the training device. Either way the global batch of
a step depends neither on restarts nor on the number of processes. ``optim.accumulate`` cuts each
rank's share into micro-batches (one gradient synchronisation a step). ``init``/``freeze``
(:mod:`.init`) fine-tune from a run folder or the authors' release.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn

from ..checkpoint import CheckpointError, atomic_write, load_state_strict, read_state, save_state
from ..config import ConfigError
from ..data.sampling import Sampler
from ..data.windows import build_windows
from ..dense import DenseForesight, save_dense
from ..features import FeatureCache
from ..forecaster import WEIGHT_FILES, build_models
from ..vfm import build_vfm, default_cache_dir
from .checkpoints import Metrics, NonFiniteError, checkpoint_dir, load_checkpoint, require_finite, save_checkpoint
from .config import TrainConfig
from .init import freeze, is_released_file, load_part
from .dense import DenseStage
from .progress import Progress
from .streamed import StreamedBatches, clip_spec, pca_changes, recordings
from .heads import HeadsStage
from .real_labels import real_windows
from .vehicle_labels import vehicle_windows
from .tokenizer import TokenizerStage
from .world import WorldStage

log = logging.getLogger("deltaworld_core.train")


class StageModel(nn.Module):
    """Wraps the trained part so one ``forward(batch) -> loss`` runs inside DDP."""

    def __init__(self, stage, net: nn.Module):
        super().__init__()
        self.stage, self.net = stage, net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.stage.loss(self.net, batch)


class Batches:
    """The global batch of step ``s`` (drawn from the sampler's generator for ``s``), sliced to this rank."""

    def __init__(self, stage, sampler: Sampler, batch_size: int, rank: int, world_size: int):
        self.stage, self.sampler, self.batch_size = stage, sampler, batch_size
        self.rank, self.local = rank, batch_size // world_size

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        g = self.sampler.generator(step)
        items = [self.stage.item(g) for _ in range(self.batch_size)]
        batch = self.stage.finish({k: torch.stack([it[k] for it in items]) for k in items[0]}, g)
        lo = self.rank * self.local
        return {k: v[lo:lo + self.local] for k, v in batch.items()}


def _micro_batches(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """This rank's batch cut into ``parts`` equal micro-batches along dim 0 (gradient accumulation)."""
    n = next(iter(batch.values())).shape[0]
    size = n // parts
    return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def streamed_pca(cfg: TrainConfig, net: nn.Module) -> bool:
    """A streaming tokenizer run whose linear path wants its PCA init from the stream."""
    return not cfg.data.feature_cache and cfg.stage == "tokenizer" and getattr(net, "linear_grid", None) is not None


def stop_if_diverged(cfg: TrainConfig, net: nn.Module, loss: torch.Tensor, grad_norm: torch.Tensor, step: int,
                     distributed: bool) -> None:
    """Before the update of step ``step + 1``: the loss, the gradient norm and the weights (as the
    previous update left them) are finite on every rank, else :class:`NonFiniteError` on every
    rank. One host sync; the weights' check is their largest magnitude, which cannot overflow."""
    weights = torch.nn.utils.get_total_norm([p.detach() for p in net.parameters()], norm_type=math.inf)
    values = torch.stack([loss.detach().float(), grad_norm.detach().float().to(loss.device),
                          weights.float().to(loss.device)])
    bad = (~torch.isfinite(values)).float()
    if distributed:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bool(bad.any()):
        what = [name for name, b in zip(("the loss", "the gradient norm", "the weights"), bad.tolist()) if b]
        said = " and ".join([", ".join(what[:-1]), what[-1]] if len(what) > 1 else what)
        raise NonFiniteError(f"{cfg.stage} diverged at step {step + 1}: {said} "
                             f"{'is' if len(what) == 1 else 'are'} NaN or infinite; stopped before the update, nothing "
                             f"exported, the checkpoints kept as they were: lower optim.lr, raise optim.warmup_steps or "
                             f"set optim.grad_clip")


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on Linear/Conv weight matrices only (not biases, norms, LayerScale, embeddings)."""
    decay = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    params = [p for p in net.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _load_frozen(cfg: TrainConfig, part: str, module: nn.Module) -> nn.Module:
    source = Path(cfg.pretrained or cfg.out)
    if is_released_file(source):  # the authors' DeltaTok file
        load_part(part, module, source)
        return module.eval().requires_grad_(False)
    path = source / WEIGHT_FILES[part]
    if not path.is_file():
        raise CheckpointError(f"stage {cfg.stage!r} needs a trained {part}: {path} not found "
                              f"(run stage {part} first, or set pretrained=FOLDER or a released DeltaTok file)")
    load_state_strict(module, read_state(path), source=str(path))
    return module.eval().requires_grad_(False)


def run(cfg: TrainConfig, resume: bool = False) -> Path:
    """Trains ``cfg.stage`` and exports ``<out>/<part>.safetensors``; returns the export path.
    Distributed when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    accumulate = cfg.optim.accumulate
    if cfg.batch_size % (world_size * accumulate):
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {world_size} processes x "
                          f"optim.accumulate {accumulate}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mc = cfg.model_config
    out = Path(cfg.out)
    main = rank == 0

    # ---- models (seeded here, so the initial weights depend on the seed only)
    torch.manual_seed(cfg.seed)
    tokenizer, world, heads = build_models(mc)
    after_models = torch.get_rng_state()  # building the VFM below must not move the training RNG

    streamed = None
    if not cfg.data.feature_cache:
        # ---- data: recordings streamed by DataLoader workers, the VFM per batch on this device
        spec_error = clip_spec(cfg)  # noqa: F841 - raises for stages that cannot stream
        refs = recordings(cfg)
        on_gpu_bf16 = device.type == "cuda" and cfg.amp == "bf16"
        vfm = build_vfm(mc.vfm, device=device, autocast=torch.bfloat16 if on_gpu_bf16 else None)
        grid = tuple(vfm.grid)
        black = vfm.black_features(1)[0].float().cpu()
        if main:
            log.info("data: streaming %d recordings (%d DataLoader workers per rank, %d steps per round), "
                     "VFM on %s, no feature cache", len(refs), cfg.data.stream.workers, cfg.data.stream.round_steps,
                     device)
        if cfg.stage == "tokenizer":
            net: nn.Module = tokenizer
            stage = TokenizerStage(cfg, None, black, grid)
        else:
            net = world
            frozen = _load_frozen(cfg, "tokenizer", tokenizer).to(device)
            stage = WorldStage.__new__(WorldStage)  # no token tables: tokens are encoded per batch
            stage.cfg, stage.sampler, stage.world, stage.tables = cfg, None, world, None
    else:
        # ---- data: VFM features through the cache (rank 0 fills it, the others then read it)
        # Features are computed on the training device (a GPU extracts them many times faster than the
        # host); the cache stores them on disk for every later run and rank either way.
        vfm = build_vfm(mc.vfm, device=device)
        cache = FeatureCache(cfg.data.cache_dir or default_cache_dir() / "features", vfm, mc.vfm)
        grid = tuple(vfm.grid)
        windows = None
        for turn in ((0, 1) if distributed else (0,)):
            if (rank == 0) == (turn == 0):
                label_size = cfg.data.label_size or mc.forecast.output_size or mc.vfm.image_size
                windows = build_windows(cfg.data, mc.vfm.image_size, label_size, cache, labels=cfg.stage == "heads")
            if distributed:
                dist.barrier()
        black = cache.black()
        del vfm
        videos, synthetic = windows
        if cfg.stage == "heads" and not synthetic:
            raise ConfigError("stage heads needs labelled data: set data.synthetic.seeds")
        sampler = Sampler(cfg.seed, videos, synthetic, cfg.data.synthetic_fraction, cfg.data.step_s)
        if main:
            motion = sum(w.name.startswith("motion") for w in videos)
            log.info("data: %d real-video windows (%d of them camera motion), %d synthetic windows, cache %s "
                     "(%d hits, %d computed)", len(videos), motion, len(synthetic), cache.root, cache.hits,
                     cache.misses)
        t0 = time.perf_counter()
        if cfg.stage == "tokenizer":
            net = tokenizer
            stage = TokenizerStage(cfg, sampler, black, grid)
        elif cfg.stage == "world":
            net = world
            stage = WorldStage(cfg, sampler, black, grid, _load_frozen(cfg, "tokenizer", tokenizer), world, device)
            if main:
                log.info("token tables of the frozen tokenizer: %.1f s", time.perf_counter() - t0)
        elif cfg.stage == "heads":
            net = heads
            stage = HeadsStage(cfg, sampler, grid, real_windows(cfg.real_labels, cache, tuple(label_size),
                                                            mc.heads.class_names, cfg.data.media_cache)
                               + vehicle_windows(cfg.real_labels, cache, tuple(label_size), mc.heads.class_names,
                                                 cfg.data.media_cache))
        else:
            net = DenseForesight(mc.vfm.embed_dim, cfg.dense)
            stage = DenseStage(cfg, sampler, grid)
    torch.set_rng_state(after_models)
    net = net.to(device).train()
    stage_model = StageModel(stage, net).to(device)
    opt = torch.optim.AdamW(_param_groups(net, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=cfg.optim.betas)
    warmup = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)

    step = 0
    if resume and (checkpoint_dir(cfg) / "latest").is_file():
        step = load_checkpoint(cfg, net, opt, sched)
        if main:
            log.info("resumed %s from step %d", cfg.stage, step)
    elif not resume and (checkpoint_dir(cfg) / "latest").is_file():
        raise CheckpointError(f"{checkpoint_dir(cfg)} already holds checkpoints: pass --resume to continue, "
                              f"or choose another out= folder")
    if cfg.init is not None and step == 0:
        # fine-tuning: the start is the given weights (a linear path keeps its trained PCA code)
        if main:
            log.info("%s starts from %s", cfg.stage, load_part(cfg.stage, net, cfg.init))
        else:
            load_part(cfg.stage, net, cfg.init)
        if hasattr(stage, "freeze"):
            stage.freeze(net)
    elif hasattr(stage, "prepare"):  # e.g. the tokenizer's PCA init (same on every rank)
        if step == 0 and streamed_pca(cfg, net):
            info = net.init_linear_path(pca_changes(cfg, refs, vfm, net))
            stage.freeze(net)
        else:
            info = stage.prepare(net) if step == 0 else stage.freeze(net)
        if info and main:
            log.info("linear path initialised by PCA: %s", info)
    if cfg.data.feature_cache:
        batches = Batches(stage, sampler, cfg.batch_size, rank, world_size)
    else:
        streamed = batches = StreamedBatches(cfg, refs, vfm, device, rank, world_size, step,
                                             tokenizer=frozen if cfg.stage == "world" else None, world=world)
    if cfg.freeze:
        fixed = freeze(net, cfg.freeze)
        if main:
            log.info("frozen: %s (%d of %d values)", ", ".join(cfg.freeze), fixed,
                     sum(p.numel() for p in net.parameters()))
    model: nn.Module = stage_model
    ddp = None
    if distributed:
        model = ddp = nn.parallel.DistributedDataParallel(stage_model,
                                                          device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else contextlib.nullcontext()

    # ---- signals: the handler only sets a flag; the loop saves and leaves at a step boundary
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)

    metrics = Metrics(out, cfg.stage, start_step=step) if main else None
    bar = None
    if main:
        try:
            from tqdm import tqdm  # optional: a progress bar where it is installed, the log lines anyway

            bar = tqdm(total=cfg.steps, initial=step, desc=cfg.stage, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass
    interrupted = False
    progress = Progress(cfg, step)
    try:
        while step < cfg.steps:
            t_wait = time.perf_counter()
            local = batches(step)
            waited = time.perf_counter() - t_wait if streamed is None else None
            local = {k: v.to(device) for k, v in local.items()}
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            for m, micro in enumerate(_micro_batches(local, accumulate)):
                # DDP averages gradients over ranks; the 1/accumulate makes the sum over micro-batches
                # a mean too, so the step sees the gradient of the mean loss over the global batch.
                sync = ddp is None or m == accumulate - 1
                with (contextlib.nullcontext() if sync else ddp.no_sync()), amp():
                    loss = model(micro) / accumulate
                loss.backward()
                total += loss.detach().float()
            params = [p for p in net.parameters() if p.grad is not None]
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip) if cfg.optim.grad_clip
                         else torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            stop_if_diverged(cfg, net, total, grad_norm, step, distributed)
            opt.step()
            sched.step()
            step += 1
            log_now = step % cfg.log_every == 0 or step == cfg.steps
            if log_now and distributed:  # the logged loss is the global batch's mean (as one process logs)
                dist.all_reduce(total)
                total /= world_size
            progress.step(waited if streamed is None else None)
            if main and log_now:
                wait = streamed.wait_s if streamed is not None else None
                rate = progress.report(step, total.item(), wait,
                                       (streamed.skipped, streamed.frames_skipped) if streamed is not None else (0, 0))
                metrics.write(step, total.item(), sched.get_last_lr()[0], float(grad_norm), rate["steps_per_s"])
                if metrics.tb is not None:
                    metrics.tb.add_scalar("samples_per_s", rate["samples_per_s"], step)
                    metrics.tb.add_scalar("data_wait_share", rate["data_wait_share"], step)
                if bar is not None:
                    bar.set_postfix(loss=f"{total.item():.4g}", lr=f"{sched.get_last_lr()[0]:.2g}")
            if bar is not None:
                bar.update(1)
            flag = torch.tensor([1.0 if stop["signal"] is not None else 0.0])
            if distributed:  # every rank stops at the same step
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0:
                interrupted = True
            if main and (step % cfg.checkpoint_every == 0 or interrupted):
                save_checkpoint(cfg, net, opt, sched, step)
            if interrupted:
                break
    finally:
        if streamed is not None:
            streamed.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()

    part = cfg.stage
    export = out / f"{part}.safetensors"
    if interrupted:
        if main:
            log.warning("interrupted at step %d: checkpoint saved; continue with --resume", step)
    elif main:
        if step % cfg.checkpoint_every:
            save_checkpoint(cfg, net, opt, sched, step)
        dtype = torch.float16 if cfg.export_dtype == "float16" else None
        require_finite(net.state_dict(), f"the export {export}")
        meta = {"stage": part, "steps": str(step), "config": json.dumps(cfg.to_dict(), default=str)}
        if part == "dense":
            save_dense(net.cpu(), export, dtype=dtype)
        else:
            save_state(net.state_dict(), export, metadata=meta, dtype=dtype)
        model_yaml = mc.to_dict()
        model_yaml["weights"] = "."
        atomic_write(out / "model.yaml", lambda p: Path(p).write_text(yaml.safe_dump(_plain(model_yaml), sort_keys=False)))
        atomic_write(out / f"train_{part}.yaml", lambda p: Path(p).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)))
        log.info("exported %s (step %d)", export, step)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return export


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
