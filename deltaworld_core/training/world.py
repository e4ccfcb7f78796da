"""Stage ``world``: DeltaWorld with the paper's best-of-many objective, on delta tokens of the
frozen tokenizer.

A clip is ``data.clip_frames`` frames of one window, ``data.step_s`` apart. Its first token is the
whole-frame token (the first frame encoded against black) with probability
``data.black_first_prob``, else a true delta; the rest are true deltas. Per teacher-forced target,
``loss.bom_k`` noise queries run without gradients, each is scored against the true token with
Smooth-L1 (``loss.bom_beta``), the winner's query is re-run with gradients, and the loss is
Smooth-L1 in token space. A ``deterministic`` predictor (learned query) skips the selection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import Sampler
from ..deltatok import DeltaTok
from ..world import DeltaWorld, causal_mask
from .config import TrainConfig


def select_winners(world: DeltaWorld, tokens: torch.Tensor, times: torch.Tensor, noise: torch.Tensor,
                   beta: float, chunk: int = 32) -> torch.Tensor:
    """Best-of-many selection, no gradients. tokens [B, T, Dt], times [B, T], noise [B, T-1, K, D]
    (K candidate queries per target) -> winner index [B, T-1]: argmin over K of Smooth-L1 between
    the candidate's prediction and the true token."""
    t = tokens.shape[1]
    scores = []
    with torch.no_grad():
        kv = world.context_kv(tokens[:, :-1], times[:, :-1])
        # Candidates in chunks: the same result, but activations stay cache-sized on CPU.
        for part in noise.split(chunk, dim=2):
            k = part.shape[2]
            queries = part.flatten(1, 2)  # [B, (T-1)*k, D], target-major
            mask = causal_mask(t - 1, t - 1, tokens.device).repeat_interleave(k, dim=0)
            pred = world.predict(queries, times[:, 1:].repeat_interleave(k, dim=1), kv, mask).unflatten(1, (t - 1, k))
            target = tokens[:, 1:, None].expand_as(pred)
            scores.append(F.smooth_l1_loss(pred.float(), target.float(), beta=beta, reduction="none").mean(-1))
    return torch.cat(scores, dim=-1).argmin(dim=-1)


def best_of_many_loss(world: nn.Module, raw: DeltaWorld, tokens: torch.Tensor, times: torch.Tensor,
                      noise: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's world-model objective. ``world`` is what runs with gradients (maybe DDP-wrapped),
    ``raw`` the plain module for the selection pass. Only the winners' queries are re-run, so only
    they (and the weights) receive gradients. Returns (loss, winner index [B, T-1])."""
    win = select_winners(raw, tokens, times, noise, beta)
    winners = noise.gather(2, win[..., None, None].expand(-1, -1, 1, noise.shape[-1])).squeeze(2)  # [B, T-1, D]
    pred = world(tokens, times, queries=winners)
    return F.smooth_l1_loss(pred.float(), tokens[:, 1:].float(), beta=beta), win


class WorldStage:
    """Draws clips ``{"tokens": [T, Dt], "times": [T]}`` (+ ``noise`` [T-1, K, D] per batch)."""

    name = "world"

    def __init__(self, cfg: TrainConfig, sampler: Sampler, black: torch.Tensor, grid: tuple[int, int],
                 tokenizer: DeltaTok, world: DeltaWorld, device: torch.device):
        self.cfg, self.sampler, self.world = cfg, sampler, world
        self.tables = token_tables(sampler, black.half(), tokenizer.to(device), grid, cfg.data.clip_frames, device)

    def item(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        d = self.cfg.data
        t = d.clip_frames
        key, w = self.sampler.window(g)
        black_first = Sampler.uniform(g) < d.black_first_prob
        j0, s = self.sampler.clip(g, w, t, need_prev=not black_first)
        table = self.tables[key]
        tokens = table[s][j0 + s * torch.arange(t)]  # token j = encode(f[j - s], f[j])
        if black_first:
            tokens[0] = table["black"][j0]
        return {"tokens": tokens, "times": (s * torch.arange(t, dtype=torch.float64) / w.fps)}

    def finish(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        if not self.world.deterministic:
            b, t = batch["tokens"].shape[:2]
            # The same generator draws the noise for the whole global batch: rank-independent.
            batch["noise"] = torch.randn(b, t - 1, self.cfg.loss.bom_k, self.world.dim, generator=g) * self.world.noise_std
        return batch

    def loss(self, net: DeltaWorld, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        beta = self.cfg.loss.bom_beta
        if net.deterministic:  # learned query: nothing to select
            pred = net(batch["tokens"], batch["times"])
            return F.smooth_l1_loss(pred.float(), batch["tokens"][:, 1:].float(), beta=beta)
        return best_of_many_loss(net, net, batch["tokens"], batch["times"], batch["noise"], beta)[0]


@torch.no_grad()
def token_tables(sampler: Sampler, black: torch.Tensor, tokenizer: DeltaTok, grid, clip_frames: int,
                 device: torch.device) -> dict:
    """Per window and stride s: tokens[j] = encode(f[j-s], f[j]) (rows j < s unused), plus
    whole-frame tokens encode(black, f[j]). Precomputed once: the tokenizer is frozen."""
    tables = {}
    chunk = 32

    def enc(p, c):
        return torch.cat([tokenizer.encode(p[a:a + chunk], c[a:a + chunk], grid).cpu() for a in range(0, len(c), chunk)])

    for pool_name, pool in (("v", sampler.videos), ("s", sampler.synthetic)):
        for i, w in enumerate(pool):
            f = w.features.to(device).float()
            entry = {"black": enc(black.to(device).float().expand(len(f), -1, -1), f)}
            for s in sampler.strides(w, clip_frames):
                rows = torch.zeros(len(f), entry["black"].shape[-1])
                if s < len(f):
                    rows[s:] = enc(f[:-s], f[s:])
                entry[s] = rows
            tables[(pool_name, i)] = entry
    return tables
