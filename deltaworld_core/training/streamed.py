"""Batches of the streaming reader (``data.feature_cache: false``) turned into stage batches on
the training device: the frozen VFM runs over the whole local batch at once (bf16 autocast on CUDA
when ``amp: bf16``), and for the world stage the frozen tokenizer encodes the clips' tokens. No
feature is written to disk.

The stage batches are what the cached path gives the stages (:mod:`.tokenizer`, :mod:`.world`):
``{"prev", "cur"}`` features ``[b, N, C]``, or ``{"tokens" [b, T, Dt], "times" [b, T], "noise"}``.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from ..config import ConfigError
from ..data.media import MediaError
from ..data.stream import ClipSpec, ClipStream, steps, stream_refs
from .config import TrainConfig
from .progress import duration

log = logging.getLogger("deltaworld_core.train")

STREAM_STAGES = ("tokenizer", "world")


def clip_spec(cfg: TrainConfig) -> ClipSpec:
    if cfg.stage not in STREAM_STAGES:
        raise ConfigError(f"data.feature_cache: false streams for stages {', '.join(STREAM_STAGES)}; stage "
                          f"{cfg.stage!r} trains on the feature cache (its data are the synthetic world's labels or "
                          f"cached windows)")
    return ClipSpec("pair", 2) if cfg.stage == "tokenizer" else ClipSpec("clip", cfg.data.clip_frames)


def recordings(cfg: TrainConfig) -> list:
    """The recordings a streaming run reads (:func:`~deltaworld_core.data.stream.stream_refs`). A
    config that lists registry sources which are not fetched, beside recordings of the user's own
    in ``data.videos.paths``, gets an error that names both ways out: fetch, or drop the sources."""
    try:
        return stream_refs(cfg.data)
    except ConfigError as err:
        if isinstance(err.__cause__, FileNotFoundError) and cfg.data.videos.paths and cfg.data.videos.sources:
            raise ConfigError(f"{err}; or, to train on data.videos.paths only, set data.videos.sources=[] "
                              "(train_bags_tokenizer.yaml and train_bags.yaml do)") from err
        raise


def sample_noise(cfg: TrainConfig, step: int, first: int, count: int, shape: tuple[int, ...], std: float,
                 device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Best-of-many noise of samples ``first .. first + count`` of the global batch of ``step``:
    each sample's from a generator of (seed, step, sample), so it does not depend on the number of
    ranks or on accumulation. Drawn on ``device`` (at the paper's size, K = 256, it is 1.4M values
    a sample: on the host it would cost the GPU step a fifth of its time); the same on one device
    type, not across CPU and CUDA. -> ``[count, *shape]``."""
    out = []
    for j in range(first, first + count):
        # mod 2**64: the generator's seed range (a no-op below 2**64, so no run's noise changes)
        g = torch.Generator(device=device).manual_seed(((cfg.seed * 1_000_003 + step) * 1_048_573 + j) % 2**64)
        out.append(torch.randn(shape, generator=g, device=device))
    return torch.stack(out) * std


class StreamedBatches:
    """Callable ``(step) -> stage batch`` (this rank's share, on ``device``), reading the stream in
    order. ``wait_s`` accumulates the time spent waiting for the reader; ``skipped`` counts
    recordings given up on (each named once in the log), ``frames_skipped`` frames/messages that
    failed to decode inside used recordings (the workers log the first few of each)."""

    def __init__(self, cfg: TrainConfig, refs, vfm, device: torch.device, rank: int, ranks: int, start_step: int,
                 tokenizer=None, world=None):
        self.cfg, self.vfm, self.device, self.tokenizer, self.world = cfg, vfm, device, tokenizer, world
        self.grid = tuple(vfm.grid)
        self.spec = clip_spec(cfg)
        self.rank, self.local = rank, cfg.batch_size // ranks
        stream = ClipStream(refs, self.spec, cfg.data, vfm.image_size, cfg.seed, cfg.batch_size, rank, ranks)
        s = cfg.data.stream
        self._it = steps(stream, start_step, s.workers, s.prefetch, on_skip=self._skipped)
        self._next_step = start_step
        self.wait_s = 0.0
        self.skipped = self.frames_skipped = 0
        self._named: set[str] = set()
        self.black = vfm.black_features(1)[0].float()

    def _skipped(self, items, frames: int) -> None:
        self.skipped += len(items)
        self.frames_skipped += frames
        for name, reason in items:
            if name not in self._named:
                self._named.add(name)
                log.warning("skipped %s: %s", name, reason)

    def close(self) -> None:
        self._it.close()  # ends the DataLoader's workers

    def amp(self):
        if self.cfg.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[M, h, w, 3]`` -> ``[M, N, C]`` float32 on the device, one VFM forward."""
        return self.vfm(frames).float()

    @torch.no_grad()
    def previous(self, frames: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
        """Features of the ``previous`` frames ``[b, h, w, 3]``: black's where ``black`` (no VFM run)."""
        out = self.black.to(self.device).expand(len(frames), -1, -1).clone()
        if bool((~black).any()):
            out[~black] = self.features(frames[~black])
        return out

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        if step != self._next_step:
            raise RuntimeError(f"the stream is at step {self._next_step}, asked for {step}")
        t0 = time.perf_counter()
        try:
            raw = next(self._it)
        except MediaError as err:  # from a worker, its message ends with the original one: keep that line
            raise MediaError(str(err).strip().splitlines()[-1]) from None
        self.wait_s += time.perf_counter() - t0
        self._next_step += 1
        frames, black = raw["frames"], raw["black"].to(self.device)
        if self.device.type == "cuda":
            frames = frames.pin_memory().to(self.device, non_blocking=True)
        b = frames.shape[0]
        prev = self.previous(frames[:, 0], black)
        if self.spec.kind == "pair":
            return {"prev": prev, "cur": self.features(frames[:, 1])}
        t = self.spec.frames
        cur = self.features(frames[:, 1:].flatten(0, 1)).unflatten(0, (b, t))  # [b, T, N, C]
        prevs = torch.cat([prev[:, None], cur[:, :-1]], 1)
        with self.amp():
            tokens = self.tokenizer.encode(prevs.flatten(0, 1), cur.flatten(0, 1), self.grid)
        tokens = tokens.float().unflatten(0, (b, t))
        batch = {"tokens": tokens, "times": raw["times"].to(self.device)}
        if not self.world.deterministic:
            shape = (t - 1, self.cfg.loss.bom_k, self.world.dim)
            batch["noise"] = sample_noise(self.cfg, step, self.rank * self.local, b, shape, self.world.noise_std,
                                          self.device)
        return batch


@torch.no_grad()
def pca_changes(cfg: TrainConfig, refs, vfm, tokenizer, chunk: int = 64) -> torch.Tensor:
    """``data.stream.pca_pairs`` feature changes (``linear_change`` of non-black pairs) from a
    stream of their own (seeded apart from training's), for the tokenizer's PCA init -> [M, n, C]."""
    want = cfg.data.stream.pca_pairs
    stream = ClipStream(refs, ClipSpec("pair", 2), cfg.data, vfm.image_size, cfg.seed + 0x9CA, cfg.batch_size)
    grid = tuple(vfm.grid)
    # minutes on a CPU before step 0 (decoding in this process, the VFM on 2 frames a pair): say so
    log.info("linear path: drawing %d frame pairs for its PCA init (decoding %d recordings a round, the VFM on "
             "each pair) before step 0", want, cfg.batch_size)
    changes, q, have, t0 = [], 0, 0, time.perf_counter()
    while have < want:
        item = stream.round(q)
        q += 1
        pairs = item["frames"].flatten(0, 1)[~item["black"].flatten()]
        pairs = pairs[: want - have]
        for a in range(0, len(pairs), chunk):
            p = pairs[a:a + chunk]
            changes.append(tokenizer.linear_change(vfm(p[:, 0]).float().cpu(), vfm(p[:, 1]).float().cpu(), grid))
        have += len(pairs)
        elapsed = time.perf_counter() - t0
        eta = elapsed / have * (want - have) if have else float("inf")
        log.info("linear path PCA init: %d/%d pairs after %d rounds, %.0f s (ETA %s)", have, want, q, elapsed,
                 duration(eta))
    return torch.cat(changes)
