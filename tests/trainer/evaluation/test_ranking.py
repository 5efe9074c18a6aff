"""Full ranking on the hand-made dataset of tests/trainer/evaluation/hand.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.trainer.evaluation.hand import SCORES, FixedScores, hand_data
from trainer.evaluation.ranking import evaluation_users, full_ranking, top_k


@pytest.fixture(scope="module")
def data():
    return hand_data()


def test_seen_items_are_excluded_but_targets_stay(data):
    ranking = full_ranking(FixedScores(SCORES), data, "test", k=3)
    assert ranking.users.tolist() == [0, 1, 3]  # u2 has no test target
    # u0: p0-p3 seen (scores 9, 8, 7, 6 would win) -> p5 7.5, p4 5, p6 4.
    # u1: p5, p6 seen; the impression of p0 is not positive history, so p0 (6) stays first.
    # u3: p2 is seen but is the test target, so it stays; p4 ties it at 7 and follows (row 4 > 2).
    assert ranking.items.tolist() == [[5, 4, 6], [0, 4, 3], [2, 4, 7]]
    assert ranking.scores.tolist() == [[7.5, 5.0, 4.0], [6.0, 4.0, 3.0], [7.0, 7.0, 3.0]]


def test_without_exclusion_seen_items_return(data):
    ranking = full_ranking(FixedScores(SCORES), data, "test", k=2, exclude_seen=False)
    assert ranking.items.tolist() == [[0, 1], [5, 6], [0, 1]]


def test_batching_gives_identical_results(data):
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.integers(0, 4, size=SCORES.shape).astype(np.float32))  # many ties
    model = FixedScores(scores)
    one = full_ranking(model, data, "test", k=4, batch_size=1024)
    assert model.calls == [3]
    model.calls.clear()
    single = full_ranking(model, data, "test", k=4, batch_size=1)
    assert model.calls == [1, 1, 1]
    assert (one.items == single.items).all() and (one.scores == single.scores).all()


def test_validation_stage_uses_training_history(data):
    ranking = full_ranking(FixedScores(SCORES), data, "valid", k=2)
    # Valid targets: u0 p3, u1 p6, u3 p5. Seen before valid: u0 p0-p2; u1 p5; u3 p2 p3 p0 p1 p6.
    # u0: p3 (target, 6) stays but p5 7.5 leads -> [p5, p3]; u1: p0 6, p6 8 -> [p6, p0];
    # u3: p5 6 (target), p4 7 -> [p4, p5].
    assert evaluation_users(data, "valid").tolist() == [0, 1, 3]
    assert ranking.items.tolist() == [[5, 3], [6, 0], [4, 5]]


def test_top_k_breaks_ties_by_lower_item_row_at_the_cut():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    values, items = top_k(scores, 2)
    assert items.tolist() == [[1, 2], [0, 1]]
    assert values.tolist() == [[3.0, 3.0], [2.0, 2.0]]


def test_top_k_exclude_and_keep_without_touching_input():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    original = scores.clone()
    exclude = sp.csr_matrix(np.array([[1, 1, 0, 0]]))
    keep = sp.csr_matrix(np.array([[0, 1, 0, 0]]))
    _, items = top_k(scores, 2, exclude, keep)
    assert items.tolist() == [[1, 2]]  # item 0 removed, item 1 kept although excluded
    assert torch.equal(scores, original)


def test_top_k_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"k=5 outside 1\.\.4"):
        top_k(torch.zeros(1, 4), 5)
    with pytest.raises(ValueError, match="NaN scores \\(batch row 1\\)"):
        top_k(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]), 1)


def test_wrong_score_shape_is_reported(data):
    with pytest.raises(ValueError, match=r"FixedScores.score returned shape \(3, 5\), expected"):
        full_ranking(FixedScores(SCORES[:, :5]), data, "test", k=2)
