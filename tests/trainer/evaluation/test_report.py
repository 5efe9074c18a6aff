"""evaluate() end to end on the hand-made dataset, cold-start slices, and format_table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.trainer.evaluation.hand import SCORES, FixedScores, hand_data
from trainer.evaluation import evaluate, format_table
from trainer.evaluation import metrics as m
from trainer.evaluation.report import accuracy_metrics, cold_start_slices

INV_LOG3 = 1 / math.log2(3)


@pytest.fixture(scope="module")
def data():
    return hand_data()


@pytest.fixture(scope="module")
def full(data):
    return evaluate(FixedScores(SCORES), data, ks=(1, 3))


def test_cold_start_slices_pick_the_right_users(data):
    slices = cold_start_slices(data, "test")
    # Positive history before test: u0 4, u1 2, u3 6 (u2 has no target).
    assert {name: users.tolist() for name, users in slices.items()} == {
        "cold_users": [1],
        "history_1": [],
        "history_2-4": [0, 1],
        "history_5-9": [3],
        "history_>=10": [],
    }
    assert cold_start_slices(data, "test", cold_max_history=4)["cold_users"].tolist() == [0, 1]


def test_full_accuracy_equals_hand_values(full):
    # Lists: u0 [p5 p4 p6] target p4 at rank 2; u1 [p0 p4 p3] target p7 missed;
    # u3 [p2 p4 p7] target p2 at rank 1.
    assert full["users"] == 3
    assert full["HR@1"] == pytest.approx(1 / 3)
    assert full["HR@3"] == pytest.approx(2 / 3)
    assert full["Recall@3"] == pytest.approx(2 / 3)
    assert full["Precision@3"] == pytest.approx(2 / 9)  # (1/3 + 0 + 1/3) / 3
    assert full["NDCG@3"] == pytest.approx((INV_LOG3 + 0 + 1) / 3)
    assert full["MRR@3"] == pytest.approx((0.5 + 0 + 1) / 3)


def test_full_beyond_accuracy_equals_hand_values(full):
    # Exposure: p4 three times, p0 p2 p3 p5 p6 p7 once, p1 never.
    assert full["Coverage@3"] == pytest.approx(7 / 8)
    assert full["Coverage@1"] == pytest.approx(3 / 8)  # p5, p0, p2
    # Personalization: only p4 is shared, by all three pairs: 1 - 3 / (3 * 3) = 2/3.
    assert full["Personalization@3"] == pytest.approx(2 / 3)
    # Categories c1 = p0-p3, c2 = p4-p7: [c2 c2 c2] 0; [c1 c2 c1] 2/3; [c1 c2 c2] 2/3.
    assert full["ILD-category@3"] == pytest.approx(4 / 9)
    # Sellers s1 = even rows, s2 = odd rows: each list holds both sellers, one of them twice.
    assert full["SellerDiversity@3"] == pytest.approx(1.0)  # 2 distinct / min(3, 2 sellers)
    assert full["SellerMaxShare@3"] == pytest.approx(2 / 3)
    assert full["ILD-seller@3"] == pytest.approx(2 / 3)
    # New items p4, p7: 1/3, 1/3, 2/3 of the slots.
    assert full["NewItemShare@3"] == pytest.approx(4 / 9)
    # Training popularity p0 2, p1 3, p2 3, p3 1, p4 0, p5 1, p6 1, p7 0 (11 events):
    # lists' mean popularity (1+0+1)/3, (2+0+1)/3, (3+0+0)/3 -> (2 + 3 + 3) / 9.
    assert full["AvgPopularity@3"] == pytest.approx(8 / 9)
    assert "ILD-embedding@3" not in full  # the model has no embeddings


def test_full_slices_equal_hand_values(full):
    assert full["cold_users/users"] == 1
    assert full["cold_users/HR@3"] == 0.0  # u1 misses
    assert full["history_2-4/users"] == 2
    assert full["history_2-4/HR@3"] == pytest.approx(0.5)  # u0 hits, u1 misses
    assert full["history_2-4/MRR@3"] == pytest.approx(0.25)
    assert full["history_5-9/HR@1"] == 1.0  # u3's repeat target first
    assert full["history_1/users"] == 0
    assert not any(key.startswith("history_1/") and key != "history_1/users" for key in full)
    # New-item targets: u0's p4 (rank 2) and u1's p7 (missed); u3's p2 is not new.
    assert full["new_items/users"] == 2
    assert full["new_items/HR@3"] == pytest.approx(0.5)
    assert full["new_items/NDCG@3"] == pytest.approx(INV_LOG3 / 2)


def test_metrics_needing_categories_sellers_or_embeddings_are_skipped_or_added():
    bare = hand_data(with_categories=False, with_sellers=False)
    results = evaluate(FixedScores(SCORES), bare, ks=(3,))
    assert not [key for key in results if "ILD" in key or "Seller" in key]
    embeddings = torch.tensor(np.random.default_rng(0).normal(size=(8, 4)), dtype=torch.float32)
    results = evaluate(FixedScores(SCORES, embeddings), bare, ks=(3,))
    lists = np.array([[5, 4, 6], [0, 4, 3], [2, 4, 7]])
    assert results["ILD-embedding@3"] == pytest.approx(m.embedding_ild(lists, embeddings), rel=1e-5)


def test_sampled_with_fixed_negatives_equals_hand_values(data):
    negatives = {0: np.array([5, 6, 7]), 1: np.array([0, 1, 7]), 3: np.array([4, 7, 0])}
    # Ranks (see test_sampled.py): u0 2, u1 3, u3 3.
    results = evaluate(
        FixedScores(SCORES), data, protocol="sampled", ks=(1, 3), negatives=negatives
    )
    assert results["users"] == 3
    assert results["HR@1"] == 0.0
    assert results["HR@3"] == pytest.approx(1.0)
    assert results["NDCG@3"] == pytest.approx((INV_LOG3 + 0.5 + 0.5) / 3)
    assert results["MRR@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert results["Precision@3"] == pytest.approx(1 / 3)
    assert results["new_items/MRR@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # u0's p4, u1's p7
    assert results["cold_users/MRR@3"] == pytest.approx(1 / 3)
    assert "Coverage@3" not in results  # no catalogue-wide lists in a sampled protocol


def test_sampled_with_drawn_negatives_runs(data):
    results = evaluate(FixedScores(SCORES), data, protocol="sampled", ks=(1,), num_negatives=2)
    assert results["users"] == 3 and results["candidates"] == 3
    assert 0.0 <= results["HR@1"] <= 1.0


def test_accuracy_metrics_average_cases_within_a_user_first():
    # User 7: two cases, hit at rank 1 and a miss; user 9: one hit at rank 1.
    hits = np.array([[True], [False], [True]])
    values = accuracy_metrics(hits, np.ones(3, dtype=int), [1], groups=np.array([7, 7, 9]))
    assert values["HR@1"] == pytest.approx((0.5 + 1.0) / 2)


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="unknown protocol 'partial'"):
        evaluate(FixedScores(SCORES), data, protocol="partial")
    with pytest.raises(ValueError, match="stage must be 'valid' or 'test'"):
        evaluate(FixedScores(SCORES), data, stage="train")
    with pytest.raises(ValueError, match=r"k=9 outside 1\.\.8"):
        evaluate(FixedScores(SCORES), data, ks=(9,))


def test_format_table_models_as_columns_and_rows():
    results = {
        "MostPop": {"users": 3.0, "HR@10": 0.25, "NDCG@10": 0.125},
        "BPR": {"users": 3.0, "HR@10": 0.5},
    }
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "MostPop", "BPR"]
    assert lines[2].split() == ["users", "3", "3"]
    assert lines[3].split() == ["HR@10", "0.2500", "0.5000"]
    assert lines[4].split() == ["NDCG@10", "0.1250", "-"]
    rows = format_table(results, models_as_rows=True).splitlines()
    assert rows[0].split() == ["model", "users", "HR@10", "NDCG@10"]
    assert rows[3].split() == ["BPR", "3", "0.5000", "-"]
    picked = format_table(results, keys=["HR@10"]).splitlines()
    assert len(picked) == 3 and picked[2].split() == ["HR@10", "0.2500", "0.5000"]
