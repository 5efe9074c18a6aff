"""Full ranking, the primary protocol: every user with targets ranks the whole catalogue.

For a batch of users the model's scores over all items are taken, the items the user already has
positive history with (``data.seen_matrix(stage)``) are set to -inf unless they are that user's
targets in this stage, and the top K items are kept. Ties are broken by the lower item row, so the
result does not depend on the batch size or on torch's top-k internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from trainer.data.interactions import InteractionData, Stage, interaction_matrix
from trainer.models.base import Recommender


@dataclass(frozen=True)
class Ranking:
    """Top-K lists of a set of users."""

    users: np.ndarray  # (U,) user_idx
    items: np.ndarray  # (U, K) item_idx, best first
    scores: np.ndarray  # (U, K) float32 model scores of those items


def target_matrix(data: InteractionData, stage: Stage) -> sp.csr_matrix:
    """(num_users, num_items) binary matrix of the stage's target (user, item) pairs."""
    return interaction_matrix(data.targets(stage), data.num_users, data.num_items)


def evaluation_users(data: InteractionData, stage: Stage) -> np.ndarray:
    """Sorted user rows that have at least one target in ``stage``."""
    return np.unique(data.targets(stage)["user_idx"].to_numpy()).astype(np.int64)


def top_k(
    scores: torch.Tensor,
    k: int,
    exclude: sp.spmatrix | None = None,
    keep: sp.spmatrix | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k (values, item rows) per row of ``scores`` (B, N), ties to the lower item row.

    ``exclude`` (B, N) marks items to remove (set to -inf) unless ``keep`` marks them too. The
    input tensor is not modified.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, items), got shape {tuple(scores.shape)}")
    work = scores.detach().to(device="cpu", dtype=torch.float32, copy=True)
    return _top_k_in_place(work, k, exclude, keep)


def _top_k_in_place(
    work: torch.Tensor, k: int, exclude: sp.spmatrix | None, keep: sp.spmatrix | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_k` on a float32 CPU tensor it may overwrite (no copy: memory bound)."""
    if not 1 <= k <= work.shape[1]:
        raise ValueError(f"k={k} outside 1..{work.shape[1]} (the number of items)")
    # A row sum is NaN if the row holds a NaN (or both infinities): a cheap screen before the
    # exact check, which then only looks at the flagged rows.
    flagged = torch.isnan(work.sum(dim=1)).nonzero().flatten()
    if len(flagged):
        nan_rows = flagged[torch.isnan(work[flagged]).any(dim=1)]
        if len(nan_rows):
            raise ValueError(f"the model returned NaN scores (batch row {int(nan_rows[0])})")
    if exclude is not None:
        kept = None
        if keep is not None:
            keep = keep.tocoo()
            kept = work[keep.row, keep.col].clone()
        drop = exclude.tocoo()
        work[drop.row, drop.col] = -torch.inf
        if kept is not None:
            work[keep.row, keep.col] = kept
    # One extra item tells whether the k-th value is shared by an item left outside the list;
    # only such rows need the lower-row rule applied by hand (rare with continuous scores).
    extra = min(k + 1, work.shape[1])
    values, items = torch.topk(work, extra, dim=1)
    tied = (values[:, k - 1] == values[:, -1]).nonzero().flatten().tolist() if extra > k else []
    values, items = values[:, :k].contiguous(), items[:, :k].contiguous()
    for row in tied:
        line = work[row]
        kth = values[row, -1]
        above = (line > kth).nonzero().flatten()
        equal = (line == kth).nonzero().flatten()[: k - len(above)]
        items[row] = torch.cat([above, equal])
        values[row] = line[items[row]]
    # Order within the list: score descending, then item row ascending.
    order = torch.from_numpy(np.lexsort((items.numpy(), -values.numpy()), axis=1))
    return values.gather(1, order), items.gather(1, order)


def score_batch(model: Recommender, data: InteractionData, stage: Stage, users: np.ndarray):
    """The model's (len(users), num_items) scores, checked against the contract."""
    scores = model.score(data, stage, users)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(
            f"{type(model).__name__}.score returned {type(scores).__name__}, not a tensor"
        )
    if tuple(scores.shape) != (len(users), data.num_items):
        raise ValueError(
            f"{type(model).__name__}.score returned shape {tuple(scores.shape)}, expected "
            f"({len(users)}, {data.num_items})"
        )
    return scores


def full_ranking(
    model: Recommender,
    data: InteractionData,
    stage: Stage,
    k: int,
    users: np.ndarray | None = None,
    batch_size: int = 1024,
    exclude_seen: bool = True,
    progress: bool = False,
) -> Ranking:
    """Top-k lists over the whole catalogue for ``users`` (default: every user with targets).

    Seen items are excluded, but a user's own targets stay candidates even if seen before (a
    repeat purchase can be a correct recommendation).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    users = evaluation_users(data, stage) if users is None else np.asarray(users, dtype=np.int64)
    seen = data.seen_matrix(stage) if exclude_seen else None
    targets = target_matrix(data, stage) if exclude_seen else None
    all_items = np.empty((len(users), k), dtype=np.int64)
    all_scores = np.empty((len(users), k), dtype=np.float32)
    starts = range(0, len(users), batch_size)
    # One reused buffer: the model's scores are copied (never modified in place, the model may
    # hold them) without allocating and page-faulting a fresh (batch, items) block each time.
    buffer = torch.empty(0)
    with torch.no_grad():
        for start in tqdm(
            starts, desc=f"full ranking ({stage})", unit="batch", disable=not progress
        ):
            batch = users[start : start + batch_size]
            scores = score_batch(model, data, stage, batch)
            if buffer.numel() < scores.numel():
                buffer = torch.empty(scores.numel(), dtype=torch.float32)
            work = buffer[: scores.numel()].view(scores.shape)
            work.copy_(scores.detach())
            exclude = seen[batch] if seen is not None else None
            keep = targets[batch] if targets is not None else None
            values, items = _top_k_in_place(work, k, exclude, keep)
            all_items[start : start + len(batch)] = items.numpy()
            all_scores[start : start + len(batch)] = values.numpy()
    return Ranking(users=users, items=all_items, scores=all_scores)
