"""Ranking metrics as pure functions over top-K item lists and target sets.

Inputs are batched arrays (numpy, or torch tensors, which are converted):

- ``recs``: (U, K) int item rows, best first, no item twice in a row.
- ``targets``: the relevant items of each row, as a CSR matrix whose rows align with ``recs`` or
  a sequence of item arrays.
- ``hits``: (U, K) bool, ``hits[u, j]`` = the j-th recommendation of row u is a target
  (:func:`hit_matrix`).

Accuracy functions return one value per row so callers can average over any subset of users (the
cold-start slices reuse the same arrays). Beyond-accuracy functions return one float for the set
of lists they are given. Every definition follows ../shared/docs/anchors.md §4 and is restated in
docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

try:
    import torch
except ImportError:  # the metrics work on numpy alone
    torch = None


def as_numpy(values) -> np.ndarray:
    """A numpy view of a numpy array or (CPU copy of a) torch tensor."""
    if torch is not None and isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def target_csr(targets, num_items: int | None = None) -> sp.csr_matrix:
    """Binary (U, num_items) CSR matrix from a CSR matrix or a sequence of item arrays."""
    if sp.issparse(targets):
        matrix = sp.csr_matrix(targets, dtype=np.float32)
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix
    rows = [np.unique(as_numpy(t).astype(np.int64).ravel()) for t in targets]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    cols = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if num_items is None:
        num_items = int(cols.max()) + 1 if len(cols) else 1
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), cols, indptr), shape=(len(rows), num_items)
    )


def hit_matrix(recs, targets: sp.spmatrix | Sequence) -> np.ndarray:
    """(U, K) bool: whether each recommended item is one of its row's targets."""
    recs = as_numpy(recs).astype(np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recs must be (users, K), got shape {recs.shape}")
    width = max(int(recs.max(initial=0)) + 1, 1)
    matrix = target_csr(targets)
    if matrix.shape[0] != recs.shape[0]:
        raise ValueError(f"{recs.shape[0]} recommendation rows but {matrix.shape[0]} target rows")
    width = max(width, matrix.shape[1])
    coo = matrix.tocoo()
    # One integer key per (row, item) pair turns the set test into a single vectorised isin.
    target_keys = coo.row.astype(np.int64) * width + coo.col.astype(np.int64)
    rec_keys = np.arange(recs.shape[0], dtype=np.int64)[:, None] * width + recs
    return np.isin(rec_keys, target_keys)


def target_counts(targets, num_items: int | None = None) -> np.ndarray:
    """(U,) number of distinct targets per row."""
    return np.diff(target_csr(targets, num_items).indptr)


def _check_k(hits: np.ndarray, k: int) -> np.ndarray:
    hits = as_numpy(hits).astype(bool)
    if hits.ndim != 2:
        raise ValueError(f"hits must be (users, K), got shape {hits.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} outside 1..{hits.shape[1]} (the length of the ranked lists)")
    return hits[:, :k]


def _check_counts(num_targets, rows: int) -> np.ndarray:
    counts = as_numpy(num_targets).astype(np.int64)
    if counts.shape != (rows,):
        raise ValueError(f"num_targets must have shape ({rows},), got {counts.shape}")
    if (counts <= 0).any():
        raise ValueError(
            f"row {int(np.flatnonzero(counts <= 0)[0])} has no targets; evaluate only users with "
            "targets (recall and NDCG are undefined without them)"
        )
    return counts


def hit_rate_at_k(hits, k: int) -> np.ndarray:
    """(U,) 1.0 where at least one target is in the top k."""
    return _check_k(hits, k).any(axis=1).astype(np.float64)


def precision_at_k(hits, k: int) -> np.ndarray:
    """(U,) targets in the top k divided by k (always k, even if fewer targets exist)."""
    return _check_k(hits, k).sum(axis=1) / k


def recall_at_k(hits, num_targets, k: int) -> np.ndarray:
    """(U,) targets in the top k divided by the row's number of targets."""
    top = _check_k(hits, k)
    return top.sum(axis=1) / _check_counts(num_targets, len(top))


def ndcg_at_k(hits, num_targets, k: int) -> np.ndarray:
    """(U,) binary-relevance NDCG: DCG = sum 1/log2(rank+1) over hits, IDCG over min(|T|, k)."""
    top = _check_k(hits, k)
    counts = _check_counts(num_targets, len(top))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = top @ discounts
    ideal = np.cumsum(discounts)[np.minimum(counts, k) - 1]
    return dcg / ideal


def mrr_at_k(hits, k: int) -> np.ndarray:
    """(U,) reciprocal rank of the first target within the top k, 0 when none is there (MRR@K)."""
    top = _check_k(hits, k)
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


# Beyond accuracy --------------------------------------------------------------------------------


def _recs(recs) -> np.ndarray:
    recs = as_numpy(recs).astype(np.int64)
    if recs.ndim != 2 or recs.shape[0] == 0:
        raise ValueError(f"recs must be a non-empty (users, K) array, got shape {recs.shape}")
    return recs


def exposure_counts(recs, num_items: int) -> np.ndarray:
    """(num_items,) how many lists contain each item; items never recommended count 0."""
    recs = _recs(recs)
    if recs.max() >= num_items or recs.min() < 0:
        raise ValueError(f"recommended item rows must lie in 0..{num_items - 1}")
    return np.bincount(recs.ravel(), minlength=num_items)


def catalog_coverage(recs, num_items: int) -> float:
    """|union of the lists| / num_items over the whole catalogue, not only training items."""
    return float((exposure_counts(recs, num_items) > 0).sum() / num_items)


def distributional_coverage(recs, num_items: int) -> float:
    """Shannon entropy in bits of the exposure distribution q_i = c_i / sum_j c_j."""
    counts = exposure_counts(recs, num_items)
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log2(q)).sum()) + 0.0  # + 0.0 turns -0.0 (one item) into 0.0


def gini_index(recs, num_items: int) -> float:
    """Gini of exposure over all num_items items: sum_j (2j - n - 1) c_(j) / (n sum_j c_(j))."""
    counts = np.sort(exposure_counts(recs, num_items)).astype(np.float64)
    n = num_items
    j = np.arange(1, n + 1)
    return float(((2 * j - n - 1) * counts).sum() / (n * counts.sum()))


def _pair_mask(k: int) -> np.ndarray:
    return np.triu(np.ones((k, k), dtype=bool), 1)


def intra_list_diversity(recs, labels) -> float:
    """ILD with equality similarity on ``labels`` (item -> category or seller code, -1 unknown).

    Per list: the share of pairs a < b with different labels, among pairs where both labels are
    known; the mean over lists with at least one such pair (NaN when there is none, or K < 2).
    With every label known this is 2/(K(K-1)) sum_{a<b} (1 - [l_a == l_b]).
    """
    recs = _recs(recs)
    if recs.shape[1] < 2:
        return float("nan")
    codes = as_numpy(labels)[recs]  # (U, K)
    known = codes >= 0
    pairs = _pair_mask(recs.shape[1])
    valid = known[:, :, None] & known[:, None, :] & pairs  # (U, K, K)
    different = valid & (codes[:, :, None] != codes[:, None, :])
    n_valid = valid.sum(axis=(1, 2))
    keep = n_valid > 0
    if not keep.any():
        return float("nan")
    return float((different.sum(axis=(1, 2))[keep] / n_valid[keep]).mean())


def embedding_ild(recs, embeddings, chunk: int = 4096) -> float:
    """ILD with cosine similarity: mean over lists of 2/(K(K-1)) sum_{a<b} (1 - cos(e_a, e_b)).

    A zero vector has cosine 0 with everything.
    """
    recs = _recs(recs)
    k = recs.shape[1]
    if k < 2:
        return float("nan")
    vectors = as_numpy(embeddings).astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    total = 0.0
    for start in range(0, len(recs), chunk):
        block = unit[recs[start : start + chunk]]  # (C, K, D)
        gram = block @ block.transpose(0, 2, 1)  # (C, K, K)
        off_diagonal = gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)
        similarity = off_diagonal / (k * (k - 1))  # mean over ordered pairs = over a<b
        total += float((1.0 - similarity).sum())
    return total / len(recs)


def _label_counts(codes: np.ndarray) -> np.ndarray:
    """(U, K) how often each slot's label occurs in its list; 0 for unknown labels."""
    known = codes >= 0
    same = (codes[:, :, None] == codes[:, None, :]) & known[:, None, :]
    return np.where(known, same.sum(axis=2), 0)


def seller_diversity(recs, sellers, num_sellers: int) -> float:
    """Mean over lists of (distinct known sellers in the list) / min(K, num_sellers)."""
    recs = _recs(recs)
    if num_sellers <= 0:
        raise ValueError("num_sellers must be positive")
    counts = _label_counts(as_numpy(sellers)[recs])
    # Each distinct seller contributes 1/count from each of its count slots: sum = distinct sellers.
    distinct = np.divide(1.0, counts, out=np.zeros(counts.shape), where=counts > 0).sum(axis=1)
    return float((distinct / min(recs.shape[1], num_sellers)).mean())


def max_seller_share(recs, sellers) -> float:
    """Mean over lists of the largest number of slots held by one (known) seller, divided by K."""
    recs = _recs(recs)
    counts = _label_counts(as_numpy(sellers)[recs])
    return float((counts.max(axis=1) / recs.shape[1]).mean())


def novelty(recs, popularity) -> float:
    """Mean over recommended slots of -log2 p(i), p(i) = max(c_i, 1) / sum_j c_j.

    c_i is the item's training popularity (positive training events). Items without training
    events are treated as seen once, so their novelty is finite (the rarest observed value).
    """
    recs = _recs(recs)
    counts = as_numpy(popularity).astype(np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("novelty needs at least one training event")
    p = np.maximum(counts, 1.0) / total
    return float((-np.log2(p[recs])).mean())


def average_popularity(recs, popularity) -> float:
    """Mean over lists of the mean training popularity (event count) of the listed items."""
    recs = _recs(recs)
    return float(as_numpy(popularity).astype(np.float64)[recs].mean(axis=1).mean())


def tail_items(popularity, tail_ratio: float = 0.1) -> np.ndarray:
    """(num_items,) bool mask of the long tail T.

    tail_ratio <= 1: the max(int(n * ratio), 1) least popular items of the whole catalogue, ties
    in popularity broken by lower item row (RecBole's rule). tail_ratio > 1: items with at most
    that many training events.
    """
    counts = as_numpy(popularity)
    mask = np.zeros(len(counts), dtype=bool)
    if tail_ratio <= 0:
        raise ValueError("tail_ratio must be positive")
    if tail_ratio > 1:
        mask[counts <= tail_ratio] = True
        return mask
    cut = max(int(len(counts) * tail_ratio), 1)
    order = np.lexsort((np.arange(len(counts)), counts))
    mask[order[:cut]] = True
    return mask


def item_share(recs, mask) -> float:
    """Mean over lists of the share of listed items inside ``mask`` (e.g. tail or new items)."""
    recs = _recs(recs)
    return float(as_numpy(mask).astype(bool)[recs].mean(axis=1).mean())


def tail_share(recs, popularity, tail_ratio: float = 0.1) -> float:
    """Mean over lists of |R_u ∩ T| / |R_u| with T from :func:`tail_items`."""
    return item_share(recs, tail_items(popularity, tail_ratio))


def personalization(recs) -> float:
    """1 - mean cosine similarity of the binary top-K vectors over all pairs of distinct lists.

    Every list has K distinct items, so cos(u, v) = |R_u ∩ R_v| / K, and the sum of overlaps over
    all pairs equals sum_i C(c_i, 2) with c_i the item's exposure count: exact over all users,
    in O(U K), no sampling. NaN for fewer than two lists.
    """
    recs = _recs(recs)
    users, k = recs.shape
    if users < 2:
        return float("nan")
    ordered = np.sort(recs, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise ValueError("personalization needs lists without repeated items")
    counts = np.bincount(recs.ravel()).astype(np.float64)
    overlap = (counts * (counts - 1) / 2).sum()
    pairs = users * (users - 1) / 2
    return float(1.0 - overlap / (k * pairs))
