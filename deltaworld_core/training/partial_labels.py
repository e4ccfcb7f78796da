"""Cross-entropy with partial labels: a pixel's label is one class, "any class but k", or unknown.

Teachers on real video speak about one class only: the person teacher says where a person is and,
with confidence, where none is, but not whether a non-person pixel is road, wall or sky. Such a
pixel is labelled ``NOT_CLASS + k`` ("anything but class k") and its loss is ``-log(1 - p_k)``:
it pushes probability off class k without choosing among the others, which the synthetic world
keeps teaching. Label codes (uint8):

* ``0 .. C-1``: that class (the loss is the usual ``-log p_c``);
* ``NOT_CLASS + k`` (128 + k): any class but k;
* ``IGNORE`` (255): unknown, no loss.

With exact labels and ``IGNORE`` only, :func:`partial_cross_entropy` equals
``F.cross_entropy(logits, labels, ignore_index=255)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255
NOT_CLASS = 128


def not_class(k: int) -> int:
    """The code of "any class but ``k``"."""
    if not 0 <= k < IGNORE - NOT_CLASS:
        raise ValueError(f"class id {k} has no 'not' code (0 <= k < {IGNORE - NOT_CLASS})")
    return NOT_CLASS + k


def partial_cross_entropy(logits: torch.Tensor, codes: torch.Tensor,
                          class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, C, h, w], codes [B, h, w] (uint8 or long) -> the mean negative log-probability of
    each labelled pixel's allowed set (0 when no pixel is labelled). C must be < 128.

    ``class_weight`` [C]: a pixel labelled exactly class c weighs ``class_weight[c]`` in a weighted
    mean ("any class but k" pixels weigh 1), so a class that covers few pixels of the frames that
    teach it (a person on a real frame) is not drowned by the pixels around it."""
    classes = logits.shape[1]
    if classes >= NOT_CLASS:
        raise ValueError(f"{classes} classes: partial labels support at most {NOT_CLASS - 1}")
    codes = codes.long()
    exact = codes < classes
    negated = (codes >= NOT_CLASS) & (codes < NOT_CLASS + classes)
    labelled = exact | negated
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), dim=1)
    k = torch.where(exact, codes, codes - NOT_CLASS).clamp_(0, classes - 1)[:, None]  # [B, 1, h, w]
    own = logp.gather(1, k)[:, 0]
    others = logp.scatter(1, k, float("-inf")).logsumexp(dim=1)  # log(1 - p_k), computed stably
    nll = torch.where(exact, -own, -others)
    if class_weight is None:
        return nll[labelled].mean()
    weight = torch.where(exact, class_weight.to(nll)[k[:, 0]], torch.ones_like(nll))[labelled]
    return (nll[labelled] * weight).sum() / weight.sum()
