"""Streaming training clips: decoded as training goes, no pass over the data set before step 0.

Used when ``data.feature_cache: false``. :class:`ClipStream` is a ``torch`` ``IterableDataset``
whose items are *rounds*: the clips of ``data.stream.round_steps`` consecutive training steps of
one rank, as uint8 pixels at the VFM's input size (the frozen VFM runs on the training device,
batched over the whole batch, in the training process).

How a round is made (every choice seeded, nothing remembered between rounds):

* round ``q`` of the run has ``batch_size`` *reads* (the global batch size); read ``j`` is global
  read number ``n = q * batch_size + j``. Reads walk through the media in epochs: epoch
  ``n // len(refs)`` is a permutation of all :class:`~deltaworld_core.data.media.MediaRef` seeded by
  ``(seed, epoch)``, read ``n`` takes its entry ``n % len(refs)``. Rank ``r`` performs reads
  ``[r * B/ranks, (r + 1) * B/ranks)`` of each round, so ranks read disjoint recordings; DataLoader
  worker ``w`` of ``W`` makes rounds ``w, w + W, ...`` (a round is one item), so workers never share
  a read, and the DataLoader's in-order delivery hands the rounds over in step order.
* a read decodes its recording sequentially (:func:`~deltaworld_core.data.media.iter_frames`), or,
  when the recording is longer than ``data.stream.window_s`` (its length from
  :func:`~deltaworld_core.data.media.duration_s`, no decoding), a window of that length drawn
  uniformly inside it by ``(seed, n, attempt)`` (frames outside it are never decoded: an hour-long
  bag costs a window's decoding, not the hour's; the first and last ``window_s`` of a recording
  are covered by fewer windows than the middle). It splits
  it into runs where the node restarts its context (:func:`~deltaworld_core.data.media.run_starts`:
  stamps that go back, gaps over ``data.stream.max_gap_s``, a change of frame size), and
  keeps ``round_steps`` clips chosen uniformly over every valid clip position by reservoir sampling
  (memory: those clips and a few seconds of frames, whatever the recording's length); each kept
  clip gets its random-resized crop + flip (:mod:`.transforms`, the windows' rule) and is resized to
  the VFM size. The read's clips are shuffled over the round's steps: step ``t`` of the round gets
  the read's ``t``-th clip, so a step's batch has one clip from each of ``batch_size`` recordings.
* a tokenizer *pair* is a frame and one ``pair_gap_s`` seconds earlier (the nearest frame by
  stamp), or with probability ``black_pair_prob`` a frame against black; a world *clip* is
  ``clip_frames`` frames ``s`` frames apart (``s`` drawn among the strides whose step lies in
  ``step_s`` at the run's frame rate, as :func:`~deltaworld_core.data.windows.strides`), plus the
  frame before when its first token is a true delta (probability ``1 - black_first_prob``).
* a recording that fails to decode (or yields too few clips) is skipped, counted and named in the
  round's ``skipped`` list, and the read retries another recording chosen by ``(seed, n, attempt)``;
  after ``max_attempts`` failures in a row the stream raises :class:`MediaError` (never a hang).

So a round is a pure function of ``(seed, q, rank, ranks, batch_size, data)``: a resumed run
restarts at round ``step // round_steps`` and drops the steps already done (at most one round is
decoded twice), and the stream does not depend on the number of DataLoader workers. The number of
ranks does not change which clips make up a step's global batch either (only which rank holds them).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..config import ConfigError
from .recordings import duration_s, expand_media, iter_frames
from .refs import MediaError, MediaRef, no_valid_recording, skipped_counts
from .runs import run_starts
from .stream_config import StreamConfig, stride_options
from .transforms import apply_crop, sample_crop
from .windows import video_files

log = logging.getLogger(__name__)

__all__ = ["ClipStream", "MediaError", "StreamConfig", "expand_media", "stream_refs"]


def stream_refs(d) -> list:
    """The recordings a streaming run reads (``data.videos.paths`` and ``sources``), cheaply: no
    decoding. ``d`` is a ``DataConfig``. Raises :class:`ConfigError` naming what is wrong."""
    if d.motion.windows or d.synthetic.seeds[1] > d.synthetic.seeds[0]:
        raise ConfigError("data.feature_cache: false streams real recordings only: set data.motion.windows: 0 and "
                          "data.synthetic.seeds: [0, 0] (or use the feature cache)")
    if tuple(d.videos.segment) != (0.0, 1.0):
        raise ConfigError("data.feature_cache: false reads whole recordings (their length is not known before "
                          "reading): set data.videos.segment: [0, 1] and hold out whole recordings instead")
    topic = d.videos.topic
    entries = [str(p) for p in d.videos.paths]
    errors: list[str] = []  # each unusable recording: one line, and the run goes on with the others
    refs = list(expand_media(entries, topic=topic, errors=errors)) if entries else []
    if errors and not refs and not d.videos.sources:
        raise ConfigError(f"data.videos.paths: {no_valid_recording(errors)}")
    for line in errors:
        log.warning("data.videos.paths: refused %s", line)
    if d.videos.sources:
        refs += [MediaRef(f.name, str(f.path), "frames" if f.path.is_dir() else "video")
                 for f in video_files(_without_paths(d.videos), d.media_cache)]
    if not refs:
        raise ConfigError("no training data: data.feature_cache: false needs data.videos.paths or data.videos.sources")
    return refs


def _without_paths(videos):
    """``videos`` without ``paths`` (the streaming reader expands those itself)."""
    return dataclasses.replace(videos, paths=[])


@dataclass(frozen=True)
class ClipSpec:
    """What one sample is: ``"pair"`` (tokenizer) or ``"clip"`` (world: ``frames`` frames)."""

    kind: str
    frames: int = 2


class ClipStream(torch.utils.data.IterableDataset):
    """Rounds of training clips of one rank (see the module docstring).

    Args:
        refs: every recording of the run (the same list, in the same order, on every rank).
        spec: pairs or clips.
        d: the ``DataConfig`` (gaps, steps, crops, black probabilities, ``stream``).
        image_size: (h, w) the VFM input; clips are cropped and resized to it.
        seed: the run's seed.
        batch_size: global batch (reads per round); rank / ranks: this process's share.
        start_round: the first round to make (a resumed run starts where it stopped).

    Item: ``{"frames": uint8 [G, b, F, h, w, 3], "black": bool [G, b], "times": float64 [G, b, T],
    "round": int, "skipped": list of (name, reason) of recordings given up on, "frames_skipped": frames or messages
    that failed to decode inside recordings that were used (:func:`~deltaworld_core.data.media.skipped`)}``
    with G = round_steps, b = batch_size / ranks;
    F = 2 for pairs (previous, current; previous is black where ``black``), T + 1 for clips (the frame
    before the clip, black where ``black``, then the T clip frames); T = 2 for pairs (times 0 and the gap).
    """

    def __init__(self, refs: Sequence, spec: ClipSpec, d, image_size: tuple[int, int], seed: int,
                 batch_size: int, rank: int = 0, ranks: int = 1, start_round: int = 0):
        super().__init__()
        if batch_size % ranks:
            raise ConfigError(f"batch_size {batch_size} must be divisible by the {ranks} processes")
        if not refs:
            raise ConfigError("no recordings to stream")
        self.refs, self.spec, self.d = list(refs), spec, d
        self.s = d.stream
        self.size = tuple(int(v) for v in image_size)
        self.seed, self.batch_size, self.rank, self.ranks = int(seed), int(batch_size), int(rank), int(ranks)
        self.local = self.batch_size // self.ranks
        self.start_round = int(start_round)
        self.max_side = self.s.max_side or 2 * max(self.size)
        self._perm: tuple[int, np.ndarray] | None = None
        # the seconds a clip reaches back from its newest frame (+0.5 s: a ring that is never short)
        self.span_s = (d.pair_gap_s[1] if spec.kind == "pair" else spec.frames * d.step_s[1]) + 0.5
        if self.s.window_s is not None and self.s.window_s < 2 * self.span_s:
            raise ConfigError(f"data.stream.window_s {self.s.window_s} s is too short for a {spec.kind} spanning "
                              f"{self.span_s:.2f} s: set at least {2 * self.span_s:.2f} s (or null)")

    # ---- the item stream
    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        w, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:  # one decoder thread per worker: the workers are the parallelism
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        q = self.start_round + w
        while True:
            yield self.round(q)
            q += workers

    def round(self, q: int) -> dict:
        """Round ``q`` of this rank (see the class docstring for the layout)."""
        g, spec = self.s.round_steps, self.spec
        f = spec.frames + 1 if spec.kind == "clip" else 2
        t = spec.frames
        frames = np.zeros((g, self.local, f, *self.size, 3), np.uint8)
        black = np.zeros((g, self.local), bool)
        times = np.zeros((g, self.local, t), np.float64)
        skipped: list[tuple[str, str]] = []
        frame_skips = sum(skipped_counts().values())
        for i in range(self.local):
            n = q * self.batch_size + self.rank * self.local + i
            clips = self._read(n, skipped)
            for step, clip in enumerate(clips):
                frames[step, i], black[step, i], times[step, i] = clip
        return {"frames": torch.from_numpy(frames), "black": torch.from_numpy(black),
                "times": torch.from_numpy(times), "round": q, "skipped": skipped,
                "frames_skipped": sum(skipped_counts().values()) - frame_skips}

    def ref_of(self, n: int, attempt: int = 0):
        """The recording of global read ``n`` (its epoch's permutation), or of its retry ``attempt``."""
        count = len(self.refs)
        if attempt:
            return self.refs[int(np.random.default_rng([self.seed, 0xA77E, n, attempt]).integers(count))]
        epoch = n // count
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0xE90C, epoch]).permutation(count))
        return self.refs[int(self._perm[1][n % count])]

    def _read(self, n: int, skipped: list) -> list:
        need = self.s.round_steps
        clips: list = []
        for attempt in range(self.s.max_attempts):
            ref = self.ref_of(n, attempt)
            rng = np.random.default_rng([self.seed, 0x5EAD, n, attempt])
            try:
                window = self.window_of(ref, n, attempt)
                got = self._reservoir(ref, need - len(clips), rng, window)
            except (MediaError, OSError, ValueError, cv2.error) as err:
                skipped.append((ref.name, f"{type(err).__name__}: {err}"))
                continue
            if not got:
                where = "" if window is None else f" in the window [{window[0]:.3f}, {window[1]:.3f}) s (a gap?)"
                skipped.append((ref.name, f"no clip fits{where} (too short for the clip length)"))
            clips += got
            if len(clips) == need:
                return clips
        names = sorted({name for name, _ in skipped})
        listed = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise MediaError(f"read {n}: no usable clip after {self.s.max_attempts} recordings ({listed}): "
                         f"{skipped[-1][1] if skipped else ''}")

    def window_of(self, ref, n: int, attempt: int = 0) -> tuple[float, float] | None:
        """``(start_s, stop_s)`` of read ``n``'s (retry ``attempt``'s) window over ``ref``, on its
        window clock (:func:`~deltaworld_core.data.media.duration_s`), or None to read it whole
        (not longer than ``window_s``, or its length not cheaply known). Seeded by ``(seed, n,
        attempt)`` with a generator of its own, so reads of short recordings draw as before."""
        window = self.s.window_s
        if window is None:
            return None
        span = duration_s(ref)
        if span is None or span[1] - span[0] <= window:
            return None
        u = float(np.random.default_rng([self.seed, 0x3140, n, attempt]).random())
        start = span[0] + u * (span[1] - span[0] - window)
        return start, start + window

    # ---- one recording -> k clips, uniformly over its valid positions (of the window, if any)
    def _reservoir(self, ref, k: int, rng: np.random.Generator, window: tuple[float, float] | None = None) -> list:
        span_s = self.span_s
        start_s, stop_s = window if window is not None else (None, None)
        kept: list = [None] * k
        seen = 0
        ring: deque = deque()  # the last span_s seconds of the current run: all a clip can reach back to
        frames = iter_frames(ref, max_side=self.max_side, start_s=start_s, stop_s=stop_s)
        for frame, stamp, new_run in run_starts(frames, self.s.max_gap_s):
            if new_run is not None:
                ring.clear()
            ring.append((frame, float(stamp)))
            while ring[-1][1] - ring[0][1] > span_s:
                ring.popleft()
            cand = self._candidate(ring, rng)
            if cand is None:
                continue
            slot = seen if seen < k else int(rng.integers(seen + 1))
            seen += 1
            if slot < k:
                kept[slot] = self._finish(ring, cand, rng)
        clips = [c for c in kept if c is not None]
        return [clips[i] for i in rng.permutation(len(clips))]

    def _candidate(self, ring: deque, rng: np.random.Generator):
        """The clip ending at the newest frame of ``ring`` with freshly drawn gap/stride and black
        flag, as (ring indices, black), or None where it does not fit. Draws the same numbers
        whether or not it fits, so the stream is a function of the data alone."""
        d, last = self.d, len(ring) - 1
        if self.spec.kind == "pair":
            gap = float(rng.uniform(*d.pair_gap_s))
            black = bool(rng.random() < d.black_pair_prob)
            if black:
                return [last, last], True
            if last < 1:
                return None
            target = ring[-1][1] - gap
            stamps = np.fromiter((s for _, s in list(ring)[:-1]), np.float64, last)
            half = 0.5 * float(np.median(np.diff(stamps))) if last > 1 else 0.0
            if stamps[0] > target + half:
                return None  # the ring does not reach back that far
            return [int(np.argmin(np.abs(stamps - target))), last], False
        t = self.spec.frames
        black = bool(rng.random() < d.black_first_prob)
        pick = float(rng.random())
        if last < 1:
            return None
        stamps = np.fromiter((s for _, s in ring), np.float64, last + 1)
        options = stride_options(1.0 / float(np.median(np.diff(stamps))), d.step_s)
        s = options[min(int(pick * len(options)), len(options) - 1)]
        need = (t - 1) * s + 1 + (0 if black else s)
        if need > last + 1:
            return None
        first = last - (t - 1) * s
        return [first - (0 if black else s)] + [first + m * s for m in range(t)], black

    def _finish(self, ring: deque, cand, rng: np.random.Generator):
        """Crops (one random resized crop + flip for the whole clip) -> (frames, black, times)."""
        idx, black = cand
        d = self.d
        hw = ring[-1][0].shape[:2]
        crop = sample_crop(hw, hw, rng, d.crop_scale, d.crop_ratio, 0.5 if d.flip else 0.0)
        stack = np.stack([ring[i][0] for i in idx])
        if stack.shape[1:3] != hw:  # the frame size changed inside the clip: resized to the last frame's
            stack = np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for f in stack])
        frames = apply_crop(stack, crop, self.size)
        if black:
            frames[0] = 0
        stamps = np.array([ring[i][1] for i in idx], np.float64)
        times = stamps[1:] - stamps[1] if self.spec.kind == "clip" else stamps - stamps[0]
        return frames, black, times


def loader(stream: ClipStream, workers: int, prefetch: int) -> torch.utils.data.DataLoader:
    """The DataLoader over rounds (one round per item, delivered in round order).

    Workers are spawned, not forked: a child forked from a process whose OpenMP/BLAS threads have
    already run can deadlock in its first torch/OpenCV call (it did here, in a test process that
    had trained before). A worker that hangs anyway fails the run after ``stream.timeout_s``."""
    kwargs = dict(num_workers=workers, batch_size=None)
    if workers:
        kwargs.update(prefetch_factor=prefetch, persistent_workers=False, multiprocessing_context="spawn",
                      timeout=stream.s.timeout_s)
    return torch.utils.data.DataLoader(stream, **kwargs)


def steps(stream: ClipStream, start_step: int, workers: int, prefetch: int, on_skip=None) -> Iterator[dict]:
    """Local batches from ``start_step`` on: ``{"frames" [b, F, h, w, 3], "black" [b], "times" [b, T]}``.
    ``on_skip(list of (name, reason), frames skipped)`` is told of each round's skips."""
    g = stream.s.round_steps
    stream.start_round = start_step // g
    drop = start_step % g
    for item in loader(stream, workers, prefetch):
        if (item["skipped"] or item["frames_skipped"]) and on_skip is not None:
            on_skip(item["skipped"], item["frames_skipped"])
        for t in range(drop, g):
            yield {"frames": item["frames"][t], "black": item["black"][t], "times": item["times"][t]}
        drop = 0
