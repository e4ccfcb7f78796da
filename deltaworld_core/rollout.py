"""One rollout of K futures, shared by the streaming forecaster, evaluation and the baselines.

For each of B context sequences, K noise queries per horizon step give K trajectories. Each
hypothesis is consistent over the horizon: its token at step h is predicted from the real context
plus its own earlier predicted tokens (their K/V are appended to its context), and decoded by the
DeltaTok decoder against its own previous (predicted) features. All B*K hypotheses of a step run
as one batch.

Noise: per step, ``world.sample_queries(K, 1, g)`` is drawn for each batch item in order (one
shared generator, or one generator per item so that an item's futures do not depend on what else
is in the batch). With B=1 this is exactly the draw order of ``Forecaster``'s streaming forecast.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .deltatok import DeltaTok
from .world import KV, DeltaWorld


# Best-of-K rule of the release's training and evaluation: Smooth-L1 with this beta, averaged.
BEST_OF_K_BETA = 0.1


def best_of_k(samples: torch.Tensor, truth: torch.Tensor, beta: float = BEST_OF_K_BETA
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample closest to the truth by mean Smooth-L1 (``beta``): samples [B, K, ...] and
    truth [B, ...] -> (scores [B, K], index of the best sample [B])."""
    target = truth[:, None].expand_as(samples)
    score = F.smooth_l1_loss(samples.float(), target.float(), beta=beta, reduction="none").flatten(2).mean(-1)
    return score, score.argmin(dim=1)


def _repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, ...] -> [B*K, ...] (item-major: rows b*K .. b*K+K-1 belong to item b)."""
    if k == 1:
        return x
    return x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:]).reshape(x.shape[0] * k, *x.shape[1:])


def sample_noise(world: DeltaWorld, batch: int, k: int,
                 generator: torch.Generator | Sequence[torch.Generator] | None, device, dtype) -> torch.Tensor:
    """Queries [batch*K, 1, D] for one horizon step."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.cat([world.sample_queries(k, 1, generator, device, dtype) for _ in range(batch)])
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for a batch of {batch}")
    return torch.cat([world.sample_queries(k, 1, g, device, dtype) for g in generator])


@torch.no_grad()
def rollout(tokenizer: DeltaTok, world: DeltaWorld, context_tokens: torch.Tensor, context_times: torch.Tensor,
            last_features: torch.Tensor, target_times: torch.Tensor, k: int,
            generator: torch.Generator | Sequence[torch.Generator] | None, grid: tuple[int, int], *,
            kv: KV | None = None, timings: dict[str, float] | None = None,
            tick: Callable[[], float] | None = None, spread: float = 1.0, mean_scale: float = 1.0,
            spread_reference: torch.Tensor | None = None) -> torch.Tensor:
    """K sampled futures of B sequences as VFM features [B, K, H, N, C]: hypothesis j of item b
    at step h is ``out[b, j, h]``. Arguments as :func:`rollout_residuals`."""
    residuals = rollout_residuals(tokenizer, world, context_tokens, context_times, last_features, target_times, k,
                                  generator, grid, kv=kv, timings=timings, tick=tick, spread=spread,
                                  mean_scale=mean_scale, spread_reference=spread_reference)
    return features_from_residuals(tokenizer, last_features, residuals, grid)


@torch.no_grad()
def rollout_residuals(tokenizer: DeltaTok, world: DeltaWorld, context_tokens: torch.Tensor,
                      context_times: torch.Tensor, last_features: torch.Tensor, target_times: torch.Tensor, k: int,
                      generator: torch.Generator | Sequence[torch.Generator] | None, grid: tuple[int, int], *,
                      kv: KV | None = None, timings: dict[str, float] | None = None,
                      tick: Callable[[], float] | None = None, spread: float = 1.0,
                      mean_scale: float = 1.0, spread_reference: torch.Tensor | None = None) -> torch.Tensor:
    """K sampled futures of B sequences in the decoder's residual form: the future features are
    ``features_from_residuals(tokenizer, last_features, residuals, grid)``. Each step's decode
    works at the decoder's pooled grid only (its pooled input is carried from step to step by
    :meth:`DeltaTok.residual_carry`), so nothing of full resolution is touched here.

    Args:
        context_tokens: [B, S, Dt] delta tokens of the context frames.
        context_times: [B, S] their times in seconds (any origin, the same as ``target_times``).
        last_features: [B, N, C] VFM features of the newest context frame.
        target_times: [B, H] times of the target frames.
        k: hypotheses per sequence.
        generator: one ``torch.Generator`` for the whole batch, or a sequence of B generators
            (one per item), or None (global RNG).
        grid: (gh, gw) of the feature grid, gh*gw = N.
        kv: the world's ``context_kv(context_tokens, context_times)`` when already cached
            (e.g. the streaming forecaster's); computed here when None.
        timings: if given, ``predict``/``decode`` milliseconds are added to it (``tick`` is the
            clock, e.g. one that synchronises the GPU; default ``time.perf_counter``).
        spread: the K hypotheses' features at each step become ``mean + spread * (each - mean)``
            (1 = as sampled): a calibration of the spread. Features are affine in the residuals,
            so it is applied to the residuals; the sampled tokens and their contexts are untouched.
        mean_scale: the K hypotheses' mean change from the last frame is scaled by this (1 = as
            predicted; below 1 pulls the forecast toward persistence, as far as the predictor's
            skill on unseen video warrants: ``python -m deltaworld_core.calibrate`` fits it).
        spread_reference: [B] or None. When given (``forecast.spread_from: last_change``), each
            item's deviations are rescaled so that their first-step RMS is ``spread`` times this
            (the RMS of the last observed change, :func:`last_change_rms`); later steps keep the
            predictor's own growth. The spread then follows how much the scene is changing.
    Returns:
        residuals [B, K, H, n, C] on ``tokenizer.decode_grid(grid)``.
    """
    if context_tokens.ndim != 3 or context_times.shape != context_tokens.shape[:2]:
        raise ValueError(f"context_tokens [B, S, Dt] and context_times [B, S] expected, got "
                         f"{tuple(context_tokens.shape)} and {tuple(context_times.shape)}")
    b = context_tokens.shape[0]
    if last_features.ndim != 3 or last_features.shape[0] != b:
        raise ValueError(f"last_features must be [B={b}, N, C], got {tuple(last_features.shape)}")
    if target_times.ndim != 2 or target_times.shape[0] != b or target_times.shape[1] < 1:
        raise ValueError(f"target_times must be [B={b}, H>=1], got {tuple(target_times.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if tick is None:
        tick = time.perf_counter
    horizon = target_times.shape[1]
    device, dtype = last_features.device, last_features.dtype
    if kv is None:
        kv = world.context_kv(context_tokens, context_times)
    kv = [(_repeat(key, k), _repeat(val, k)) for key, val in kv]
    coarse = _repeat(tokenizer.pool_for_decode(last_features, grid), k)  # [B*K, n, C]
    carry = tokenizer.residual_carry(grid, device, dtype)  # [n, n]
    times_all = _repeat(target_times, k)  # [B*K, H]
    # The tokens of all steps first: a step's prediction needs the earlier tokens only, never
    # their decoding, so the decoder's linear path reads its basis once for all H x B*K tokens.
    t0 = tick()
    tokens = []
    for h in range(horizon):
        times = times_all[:, h:h + 1]
        queries = sample_noise(world, b, k, generator, device, dtype)
        token = world.predict(queries, times, kv)[:, 0]  # [B*K, Dt]
        tokens.append(token)
        if h + 1 < horizon:  # the hypothesis' own token joins its context for the next step
            kv = [(torch.cat((key, nk), 2), torch.cat((val, nv), 2))
                  for (key, val), (nk, nv) in zip(kv, world.context_kv(token[:, None], times))]
    t1 = tick()
    linear = tokenizer.linear_residual(torch.cat(tokens))  # None without a linear path
    linear = [None] * horizon if linear is None else linear.chunk(horizon)
    residuals = []
    for h, token in enumerate(tokens):
        residual = tokenizer.decode_residual(token, coarse, grid, linear=linear[h])  # [B*K, n, C]
        residuals.append(residual)
        if h + 1 < horizon:  # the pooled view of this step's features, decoded against next
            coarse = coarse + torch.matmul(carry, residual)
    predict_ms, decode_ms = (t1 - t0) * 1e3, (tick() - t1) * 1e3
    if timings is not None:
        timings["predict"] = timings.get("predict", 0.0) + predict_ms
        timings["decode"] = timings.get("decode", 0.0) + decode_ms
    out = torch.stack(residuals, dim=1).unflatten(0, (b, k))  # [B, K, H, n, C]
    if (spread == 1.0 or k == 1) and mean_scale == 1.0 and spread_reference is None:
        return out
    return scale_spread_(out, spread, mean_scale, spread_reference)  # out is this function's own


def scale_spread(samples: torch.Tensor, spread: float, mean_scale: float = 1.0,
                 reference: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K, H, ...] -> ``mean_scale`` times the mean over K plus each one's deviation from it
    times ``spread`` (or, with ``reference`` [B], times the factor that makes the step-0
    deviations' RMS, unbiased over K, equal ``spread * reference``). On residuals (changes from
    the last frame) ``mean_scale`` shrinks the forecast's mean change toward persistence."""
    return scale_spread_(samples.clone(), spread, mean_scale, reference)


def scale_spread_(samples: torch.Tensor, spread: float, mean_scale: float = 1.0,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`scale_spread` in place (no temporaries of the samples' size: a streaming step's
    allocations of that size cost more than the arithmetic)."""
    mean = samples.mean(dim=1, keepdim=True)
    deviation = samples.sub_(mean)
    if reference is not None and samples.shape[1] > 1:
        first = deviation[:, :, 0].flatten(1).float()  # [B, K * ...]
        rms = (first.square().sum(1) / (first.shape[1] / samples.shape[1] * (samples.shape[1] - 1))).sqrt()
        factor = (spread * reference.float() / rms.clamp_min(1e-12)).to(samples.dtype)
        deviation.mul_(factor.view(-1, *([1] * (samples.ndim - 1))))
    elif spread != 1.0:
        deviation.mul_(spread)
    return deviation.add_(mean, alpha=mean_scale)


def last_change_rms(previous: torch.Tensor, last: torch.Tensor, interval_s: torch.Tensor,
                    step_s: torch.Tensor | float, growth: float = 0.5) -> torch.Tensor:
    """The reference of ``forecast.spread_from: last_change``: RMS over tokens and channels of the
    change between the two newest frames' features [B, N, C], brought to one forecast step as the
    change grows with the gap (x (step / interval) ** growth; 0.5 = a random walk,
    ``forecast.change_growth``) -> [B]."""
    rms = (last.float() - previous.float()).square().mean(dim=(1, 2)).sqrt()
    if not isinstance(interval_s, torch.Tensor) and not isinstance(step_s, torch.Tensor):
        # Host numbers (the streaming forecaster's): formed on the host, so nothing is copied to
        # the device inside a step.
        return rms * float((float(step_s) / max(float(interval_s), 1e-6)) ** growth)
    interval = torch.as_tensor(interval_s, dtype=torch.float64, device=rms.device).clamp_min(1e-6)
    ratio = (torch.as_tensor(step_s, dtype=torch.float64, device=rms.device) / interval) ** growth
    return rms * ratio.to(rms.dtype)


def spread_reference(forecast, previous: torch.Tensor | None, last: torch.Tensor, interval_s, step_s
                     ) -> torch.Tensor | None:
    """What ``forecast`` (a ForecastConfig) asks the rollout to scale the spread to: with
    ``spread_from: last_change`` and a previous frame, :func:`last_change_rms` of previous/last
    [B, N, C] over ``interval_s`` brought to ``step_s`` by ``change_growth``; otherwise None."""
    if forecast.spread_from != "last_change" or previous is None:
        return None
    return last_change_rms(previous, last, interval_s, step_s, forecast.change_growth)


def features_from_residuals(tokenizer: DeltaTok, last_features: torch.Tensor, residuals: torch.Tensor,
                            grid: tuple[int, int]) -> torch.Tensor:
    """last_features [B, N, C] and residuals [B, K, H, n, C] -> features [B, K, H, N, C]: step h
    is the last features plus the upsampled residuals of steps 0..h."""
    b, k, horizon = residuals.shape[:3]
    up = tokenizer.upsample_residual(residuals.flatten(0, 2), grid).unflatten(0, (b, k, horizon))
    return last_features[:, None, None] + up.cumsum(dim=2)


@torch.no_grad()
def reconstruct(tokenizer: DeltaTok, tokens: torch.Tensor, last_features: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
    """The codec's own autoregressive reconstruction: true tokens [B, H, Dt] decoded one after
    another, each against the previous reconstruction, from ``last_features`` [B, N, C].
    Returns [B, H, N, C]."""
    prev, out = last_features, []
    for h in range(tokens.shape[1]):
        prev = tokenizer.decode(tokens[:, h], prev, grid)
        out.append(prev)
    return torch.stack(out, dim=1)


@torch.no_grad()
def reconstruct_closed_loop(tokenizer: DeltaTok, truth: torch.Tensor, last_features: torch.Tensor,
                            grid: tuple[int, int]) -> torch.Tensor:
    """The codec's reconstruction as the release's evaluation code computes it: each true frame
    truth [B, H, N, C] encoded against the previous *reconstruction* (the true ``last_features``
    [B, N, C] for the first) and decoded against it. Step 1 equals :func:`reconstruct` of the
    true-pair tokens; later steps let the codec correct its own drift. Returns [B, H, N, C]."""
    prev, out = last_features, []
    for h in range(truth.shape[1]):
        prev = tokenizer.decode(tokenizer.encode(prev, truth[:, h], grid), prev, grid)
        out.append(prev)
    return torch.stack(out, dim=1)
