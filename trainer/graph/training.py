"""Losses shared by the inductive graph models (the epoch loop is trainer.models.training)."""

from __future__ import annotations

import torch


def softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over cosine logits: row b's positive is ``candidates[target[b]]``.

    ``queries`` (B, D) and ``candidates`` (C, D) are L2-normalised here; ``mask`` (B, C) marks
    candidates that must not count as negatives (another copy of the row's positive).
    """
    logits = (
        torch.nn.functional.normalize(queries, dim=1)
        @ torch.nn.functional.normalize(candidates, dim=1).T
    ) / temperature  # (B, C)
    if mask is not None:
        keep = torch.zeros_like(mask)
        keep[torch.arange(len(target)), target] = True
        logits = logits.masked_fill(mask & ~keep, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, target)
