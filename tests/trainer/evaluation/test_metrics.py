"""Every metric against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from trainer.evaluation import metrics as m

LOG3 = math.log2(3)  # discount of rank 2
LOG5 = math.log2(5)  # discount of rank 4

# Row 0: list [3, 1, 4, 2], targets {1, 2, 9}: hits at ranks 2 and 4 (9 is never recommended).
# Row 1: list [5, 6, 7, 8], targets {5}: hit at rank 1.
# Row 2: list [0, 1, 2, 3], targets {8}: no hit.
RECS = np.array([[3, 1, 4, 2], [5, 6, 7, 8], [0, 1, 2, 3]])
TARGETS = [np.array([1, 2, 9]), np.array([5]), np.array([8])]


def hits_and_counts():
    return m.hit_matrix(RECS, TARGETS), m.target_counts(TARGETS)


def test_hit_matrix_marks_recommended_targets():
    hits, counts = hits_and_counts()
    assert hits.tolist() == [
        [False, True, False, True],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert counts.tolist() == [3, 1, 1]


def test_hit_matrix_accepts_csr_and_torch():
    csr = sp.csr_matrix((np.ones(5), ([0, 0, 0, 1, 2], [1, 2, 9, 5, 8])), shape=(3, 10))
    assert (m.hit_matrix(torch.as_tensor(RECS), csr) == hits_and_counts()[0]).all()


def test_hit_matrix_rejects_misaligned_rows():
    with pytest.raises(ValueError, match="3 recommendation rows but 2 target rows"):
        m.hit_matrix(RECS, TARGETS[:2])


def test_precision():
    hits, _ = hits_and_counts()
    # @4: 2/4, 1/4, 0   @2: 1/2, 1/2, 0   @1: 0, 1, 0
    assert m.precision_at_k(hits, 4) == pytest.approx([0.5, 0.25, 0.0])
    assert m.precision_at_k(hits, 2) == pytest.approx([0.5, 0.5, 0.0])
    assert m.precision_at_k(hits, 1) == pytest.approx([0.0, 1.0, 0.0])


def test_recall():
    hits, counts = hits_and_counts()
    # @4: 2 of 3 targets, 1 of 1, 0 of 1   @2: 1 of 3, 1 of 1, 0
    assert m.recall_at_k(hits, counts, 4) == pytest.approx([2 / 3, 1.0, 0.0])
    assert m.recall_at_k(hits, counts, 2) == pytest.approx([1 / 3, 1.0, 0.0])


def test_hit_rate():
    hits, _ = hits_and_counts()
    assert m.hit_rate_at_k(hits, 4) == pytest.approx([1.0, 1.0, 0.0])
    assert m.hit_rate_at_k(hits, 1) == pytest.approx([0.0, 1.0, 0.0])


def test_ndcg_binary_relevance_with_idcg_over_min_targets_k():
    hits, counts = hits_and_counts()
    # Row 0 @4: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161;
    #   IDCG over min(3, 4) = 3 slots = 1 + 1/log2(3) + 1/log2(4) = 2.13093 -> 0.49819.
    # Row 0 @2: DCG = 0.63093; IDCG over min(3, 2) = 2 = 1 + 0.63093 -> 0.38685.
    # Row 1: hit at rank 1 with one target -> 1.0 at every k. Row 2: 0.
    row0_at4 = (1 / LOG3 + 1 / LOG5) / (1 + 1 / LOG3 + 0.5)
    row0_at2 = (1 / LOG3) / (1 + 1 / LOG3)
    assert row0_at4 == pytest.approx(0.49819, abs=1e-5)
    assert m.ndcg_at_k(hits, counts, 4) == pytest.approx([row0_at4, 1.0, 0.0])
    assert m.ndcg_at_k(hits, counts, 2) == pytest.approx([row0_at2, 1.0, 0.0])


def test_mrr_is_reciprocal_rank_of_first_hit_within_k():
    hits, _ = hits_and_counts()
    # Row 0: first hit at rank 2 -> 0.5; row 1: rank 1 -> 1; row 2: none -> 0. @1: row 0 -> 0.
    assert m.mrr_at_k(hits, 4) == pytest.approx([0.5, 1.0, 0.0])
    assert m.mrr_at_k(hits, 1) == pytest.approx([0.0, 1.0, 0.0])


def test_accuracy_errors_name_the_problem():
    hits, _ = hits_and_counts()
    with pytest.raises(ValueError, match=r"k=5 outside 1\.\.4"):
        m.precision_at_k(hits, 5)
    with pytest.raises(ValueError, match="row 1 has no targets"):
        m.recall_at_k(hits, np.array([3, 0, 1]), 2)


# Beyond accuracy. Catalogue of 4 items; lists [0, 1] and [0, 2]: exposure counts 2, 1, 1, 0.
LISTS = np.array([[0, 1], [0, 2]])


def test_catalog_coverage_counts_the_whole_catalogue():
    # Items 0, 1, 2 of 4 recommended -> 0.75; item 3 (never recommended) counts in the denominator.
    assert m.catalog_coverage(LISTS, 4) == pytest.approx(0.75)


def test_distributional_coverage_entropy_bits():
    # q = 2/4, 1/4, 1/4 -> -(0.5 log2 0.5 + 2 * 0.25 log2 0.25) = 0.5 + 1.0 = 1.5 bits.
    assert m.distributional_coverage(LISTS, 4) == pytest.approx(1.5)
    # One item only: entropy 0 (positive zero).
    assert str(m.distributional_coverage(np.array([[3]]), 4)) == "0.0"


def test_gini_counts_unexposed_items_as_zero():
    # Sorted counts 0, 1, 1, 2 with n = 4: weights 2j - n - 1 = -3, -1, 1, 3.
    # sum = 0*-3 + 1*-1 + 1*1 + 2*3 = 6; n * sum(c) = 4 * 4 = 16 -> 0.375.
    assert m.gini_index(LISTS, 4) == pytest.approx(0.375)
    # Equal exposure of every item -> 0.
    assert m.gini_index(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)


def test_ild_by_category_equality():
    categories = np.array([0, 0, 1, 1, -1, -1])
    # [0, 1, 2]: pairs (0,1) same, (0,2) differ, (1,2) differ -> 2/3.
    # [0, 4, 2]: only (0, 2) has both categories known, and it differs -> 1.
    # [4, 5]: no pair with known categories -> left out of the mean.
    assert m.intra_list_diversity(np.array([[0, 1, 2]]), categories) == pytest.approx(2 / 3)
    assert m.intra_list_diversity(np.array([[0, 1, 2], [0, 4, 2]]), categories) == pytest.approx(
        (2 / 3 + 1) / 2
    )
    assert math.isnan(m.intra_list_diversity(np.array([[4, 5]]), categories))
    assert math.isnan(m.intra_list_diversity(np.array([[0], [1]]), categories))


def test_ild_by_embedding_cosine():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    # [0, 1, 2]: cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt(2); mean sim = 2/(3 sqrt 2) = 0.47140
    # -> ILD = 0.52860. [0, 3]: a zero vector has cosine 0 -> ILD 1.
    one = 1 - 2 / (3 * math.sqrt(2))
    assert m.embedding_ild(np.array([[0, 1, 2]]), embeddings) == pytest.approx(one)
    assert m.embedding_ild(np.array([[0, 3], [1, 2]]), embeddings, chunk=1) == pytest.approx(
        (1.0 + (1 - 1 / math.sqrt(2))) / 2
    )


def test_seller_diversity_and_largest_share():
    sellers = np.array([0, 0, 1, 2, -1])  # item 4 has no known seller
    lists = np.array([[0, 1, 2], [2, 3, 4], [4, 3, 2]])
    # Sellers per list: {0, 0, 1} -> 2 distinct, largest share 2/3; {1, 2, ?} -> 2, 1/3;
    # {?, 2, 1} -> 2, 1/3.
    # 3 sellers, K = 3: min(K, #sellers) = 3 -> (2 + 2 + 2) / 9 = 0.6667; share (2+1+1)/9 = 0.4444.
    assert m.seller_diversity(lists, sellers, 3) == pytest.approx(2 / 3)
    assert m.max_seller_share(lists, sellers) == pytest.approx(4 / 9)
    # Only 2 sellers in the catalogue: denominator min(3, 2) = 2 -> (2 + 2 + 2) / 6 = 1.
    assert m.seller_diversity(lists, sellers, 2) == pytest.approx(1.0)


def test_seller_ild_uses_equality():
    sellers = np.array([0, 0, 1, 2, -1])
    # [0, 1, 2]: sellers 0, 0, 1 -> pairs same, differ, differ -> 2/3.
    assert m.intra_list_diversity(np.array([[0, 1, 2]]), sellers) == pytest.approx(2 / 3)


POPULARITY = np.array([3, 1, 0, 4])  # 8 training events


def test_novelty_uses_training_popularity():
    # p = 3/8, 1/8, max(0,1)/8 = 1/8, 4/8 -> -log2 p = 1.41504, 3, 3, 1.
    # Lists [0, 1], [2, 3]: mean over the 4 slots = (1.41504 + 3 + 3 + 1) / 4 = 2.10376.
    value = m.novelty(np.array([[0, 1], [2, 3]]), POPULARITY)
    assert value == pytest.approx((-math.log2(3 / 8) + 3 + 3 + 1) / 4)
    assert value == pytest.approx(2.10376, abs=1e-5)


def test_average_popularity():
    # [0, 1] -> (3 + 1) / 2 = 2 and [2, 3] -> (0 + 4) / 2 = 2: mean 2.
    assert m.average_popularity(np.array([[0, 1], [2, 3]]), POPULARITY) == pytest.approx(2.0)
    # [3, 0] -> (4 + 3) / 2 = 3.5 and [1, 2] -> (1 + 0) / 2 = 0.5: mean 2.0.
    assert m.average_popularity(np.array([[3, 0], [1, 2]]), POPULARITY) == pytest.approx(2.0)
    assert m.average_popularity(np.array([[3, 0]]), POPULARITY) == pytest.approx(3.5)


def test_tail_items_least_popular_share_with_row_tiebreak():
    popularity = np.array([5, 0, 3, 0, 9, 1, 2, 8, 7, 6])  # 10 items
    # ratio 0.1 -> max(int(10 * 0.1), 1) = 1 item: counts 0 tie between rows 1 and 3 -> row 1.
    assert np.flatnonzero(m.tail_items(popularity, 0.1)).tolist() == [1]
    # ratio 0.2 -> 2 items: rows 1 and 3.
    assert np.flatnonzero(m.tail_items(popularity, 0.2)).tolist() == [1, 3]
    # ratio 2 (> 1) -> a count threshold: items with <= 2 events: rows 1, 3, 5, 6.
    assert np.flatnonzero(m.tail_items(popularity, 2)).tolist() == [1, 3, 5, 6]
    lists = np.array([[1, 0], [3, 5]])
    # T = {1, 3}: [1, 0] -> 1/2, [3, 5] -> 1/2 -> 0.5.  T = {1}: 1/2 and 0 -> 0.25.
    assert m.tail_share(lists, popularity, 0.2) == pytest.approx(0.5)
    assert m.tail_share(lists, popularity, 0.1) == pytest.approx(0.25)


def test_personalization_exact_over_all_pairs():
    # K = 2; lists A = [0, 1], B = [0, 2], C = [3, 4].
    # cos(A,B) = |{0}| / 2 = 0.5, cos(A,C) = cos(B,C) = 0 -> mean 1/6 -> 1 - 1/6 = 0.83333.
    lists = np.array([[0, 1], [0, 2], [3, 4]])
    assert m.personalization(lists) == pytest.approx(5 / 6)
    # Identical lists -> 0.
    assert m.personalization(np.array([[0, 1], [1, 0]])) == pytest.approx(0.0)
    assert math.isnan(m.personalization(np.array([[0, 1]])))


def test_personalization_matches_pairwise_definition_on_random_lists():
    rng = np.random.default_rng(0)
    lists = np.stack([rng.choice(30, size=5, replace=False) for _ in range(40)])
    vectors = np.zeros((40, 30))
    np.put_along_axis(vectors, lists, 1.0, axis=1)
    cos = vectors @ vectors.T / 5  # every vector has norm sqrt(5)
    upper = cos[np.triu_indices(40, 1)]
    assert m.personalization(lists) == pytest.approx(1 - upper.mean())


def test_personalization_rejects_repeated_items():
    with pytest.raises(ValueError, match="without repeated items"):
        m.personalization(np.array([[0, 0], [1, 2]]))


def test_item_share_counts_listed_items_in_mask():
    new = np.array([False, True, False, True])
    # [1, 0] -> 1/2, [3, 1] -> 1 -> mean 0.75.
    assert m.item_share(np.array([[1, 0], [3, 1]]), new) == pytest.approx(0.75)


def test_exposure_rejects_rows_outside_catalogue():
    with pytest.raises(ValueError, match=r"must lie in 0\.\.3"):
        m.catalog_coverage(np.array([[0, 4]]), 4)
