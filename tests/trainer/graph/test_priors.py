"""Score priors: popularity for short histories, category affinity and freshness for new items,
and weights chosen on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import trainer.graph.priors as priors_module
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.splits import split_dataset
from trainer.graph.priors import PriorWeights, StagePriors, select_weights, validation_slices

T0 = pd.Timestamp("2024-03-01", tz="UTC")
# Known items first, the eventless ones last (highest rows), so "no prior" ranks them last.
PRODUCTS = {
    "k0": "home/kitchen",
    "k1": "home/kitchen",
    "k2": "home/kitchen",
    "g0": "home/garden",
    "g1": "home/garden",
    "g2": "home/garden",
    "k_new": "home/kitchen",
    "g_new": "home/garden",
    "k_old": "home/kitchen",  # listed 60 days before the first event, never touched
}


def market(rows: list[tuple[str, str]]) -> Marketplace:
    """Clicks one hour apart in the given order; leave-one-out split."""
    ids = list(PRODUCTS)
    created = [T0 - pd.Timedelta(days=60) if p == "k_old" else T0 for p in ids]
    times = [T0 + pd.Timedelta(hours=i) for i in range(len(rows))]
    users = sorted({user for user, _ in rows})
    tables = {
        "categories": pd.DataFrame(
            {
                "category_id": ["home", "home/kitchen", "home/garden"],
                "name": ["Home", "Kitchen", "Garden"],
                "parent_id": [None, "home", "home"],
            }
        ),
        "sellers": pd.DataFrame(
            {"seller_id": ["s1"], "name": ["Acme"], "rating": [4.0], "created_at": [T0]}
        ),
        "products": pd.DataFrame(
            {
                "product_id": ids,
                "title": ids,
                "description": [None] * len(ids),
                "category_id": list(PRODUCTS.values()),
                "seller_id": ["s1"] * len(ids),
                "price": [10.0] * len(ids),
                "margin": [0.2] * len(ids),
                "created_at": created,
                "in_stock": [True] * len(ids),
                "consumable": [False] * len(ids),
                "attributes": [{"brand": "x"}] * len(ids),
            }
        ),
        "users": pd.DataFrame(
            {"user_id": users, "created_at": [T0] * len(users), "location": ["es"] * len(users)}
        ),
        "events": pd.DataFrame(
            {
                "user_id": [user for user, _ in rows],
                "product_id": [product for _, product in rows],
                "event_type": ["click"] * len(rows),
                "timestamp": times,
                "hour": [t.hour for t in times],
                "device": ["mobile"] * len(rows),
                "location": ["es"] * len(rows),
                "split": [None] * len(rows),
            }
        ),
    }
    info = DatasetInfo(name="priors", source="tests", split="leave_one_out", timestamps="real")
    return Marketplace.from_frames(info, **tables)


def history_then(valid: dict[str, str], test: dict[str, str]):
    """Kitchen users u1, u2 and garden users u3, u4 with two clicks in their category each,
    then one validation and one test click per user; u5 first touches k2 and g2 (so only the
    ``*_new`` and ``k_old`` products are eventless before validation)."""
    rows = [("u5", "k2"), ("u5", "g2"), ("u5", "k0"), ("u5", "g0")]
    for user, first, second in (
        ("u1", "k0", "k1"),
        ("u2", "k1", "k0"),
        ("u3", "g0", "g1"),
        ("u4", "g1", "g0"),
    ):
        rows += [(user, first), (user, second), (user, valid[user]), (user, test[user])]
    return split_dataset(market(rows))


NEW_IN_VALID = history_then(
    valid={"u1": "k_new", "u2": "k_new", "u3": "g_new", "u4": "g_new"},
    test={"u1": "k2", "u2": "k2", "u3": "g2", "u4": "g2"},
)
NEW_IN_TEST = history_then(  # the same items with the roles of validation and test swapped
    valid={"u1": "k2", "u2": "k2", "u3": "g2", "u4": "g2"},
    test={"u1": "k_new", "u2": "k_new", "u3": "g_new", "u4": "g_new"},
)


def row(data, product: str) -> int:
    return int(data.items.to_idx([product])[0])


def user(data, user_id: str) -> int:
    return int(data.users.to_idx([user_id])[0])


def test_new_item_in_the_users_category_outranks_one_elsewhere_and_fresh_beats_old():
    data = NEW_IN_VALID
    priors = StagePriors.build(data, "valid", history_len=20, half_life_days=14.0)
    cold = set(priors.cold_items.tolist())
    assert cold == {row(data, p) for p in ("k_new", "g_new", "k_old")}
    kitchen_user, garden_user = user(data, "u1"), user(data, "u3")
    users = np.array([kitchen_user, garden_user])
    scores = priors.add_to(torch.zeros(2, data.num_items), users, PriorWeights(cold=1.0))
    k_new, g_new, k_old = row(data, "k_new"), row(data, "g_new"), row(data, "k_old")
    assert scores[0, k_new] > scores[0, g_new] and scores[1, g_new] > scores[1, k_new]
    assert scores[0, k_new] > scores[0, k_old] > 0
    # Listing age 60 days + the history's span; half-life 14 days.
    assert float(scores[0, k_old] / scores[0, k_new]) == pytest.approx(0.5 ** (60 / 14), rel=0.02)
    known = [row(data, p) for p in ("k0", "k1", "k2", "g0", "g1", "g2")]
    assert torch.equal(scores[:, known], torch.zeros(2, len(known)))  # the prior is for cold items


def test_affinity_is_the_smoothed_category_share_of_recent_history():
    data = NEW_IN_VALID
    priors = StagePriors.build(data, "valid", history_len=20, smoothing=1.0)
    kitchen_user = user(data, "u1")
    cold = priors.cold_items.tolist()
    affinity = priors.affinity(np.array([kitchen_user]))[0]
    # u1: 2 kitchen items of 2; globally half the positive events are in each category.
    expected_kitchen = (2 + 0.5) / (2 + 1)
    assert float(affinity[cold.index(row(data, "k_new"))]) == pytest.approx(expected_kitchen)
    assert float(affinity[cold.index(row(data, "g_new"))]) == pytest.approx(0.5 / 3)


def test_popularity_prior_fades_with_history_length():
    data = NEW_IN_VALID
    priors = StagePriors.build(data, "valid")
    users = np.arange(data.num_users)
    scores = priors.add_to(torch.zeros(len(users), data.num_items), users, PriorWeights(0.5))
    events = data.positives(data.history("valid"))
    counts = np.bincount(events["item_idx"].to_numpy(), minlength=data.num_items)
    pop = np.log1p(counts) / np.log1p(counts).max()
    expected = 0.5 / (1.0 + 2.0) * pop  # every user has two distinct history items
    np.testing.assert_allclose(scores.numpy(), np.tile(expected, (len(users), 1)), rtol=1e-6)


def no_prior_scores(data):
    """Scorer factory: ranks items by row (new items last) plus the priors of ``weights``."""
    priors = StagePriors.build(data, "valid")
    base = -1e-3 * torch.arange(data.num_items, dtype=torch.float32)

    def score_with(weights: PriorWeights):
        def score(users: np.ndarray) -> torch.Tensor:
            return priors.add_to(base.expand(len(users), -1).clone(), users, weights)

        return score

    return score_with


@pytest.mark.parametrize("tolerance", [0.0, 0.5])
@pytest.mark.parametrize(
    ("data", "expected"), [(NEW_IN_VALID, 1.0), (NEW_IN_TEST, 0.0)], ids=["valid", "test"]
)
def test_cold_weight_is_chosen_on_validation_only(data, expected, tolerance):
    """New items as validation targets turn the prior on; as test targets only, they do not."""
    chosen = select_weights(
        no_prior_scores(data),
        data,
        (0.0,),
        (0.0, 1.0),
        k=1,
        max_users=10,
        seed=0,
        name="t",
        cold_tolerance=tolerance,
    )
    assert chosen == PriorWeights(0.0, expected)


@pytest.mark.parametrize(
    "recall",
    [lambda beta: min(1.0, beta / 2), lambda beta: float(beta >= 1.5)],
    ids=["rising", "step-above-the-grid-point"],
)
def test_tolerance_buys_new_item_recall_within_a_bounded_ndcg_loss(monkeypatch, recall):
    """Validation NDCG falls and cold-item recall rises with beta (as on the medium
    marketplace): no tolerance keeps the prior off; a 10% one keeps the largest beta within it,
    found by bisection between the largest feasible grid value (1) and the next (4), also when
    every feasible grid value has the same recall."""

    def fake_slices(score_fn, data, k, max_users, seed):
        beta = score_fn.weights.cold
        return {f"NDCG@{k}": 0.2 - 0.01 * beta, f"new_Recall@{k}": recall(beta)}

    def score_with(weights):
        def score(users):
            raise AssertionError("scores come from the fake metric")

        score.weights = weights
        return score

    monkeypatch.setattr(priors_module, "validation_slices", fake_slices)

    def choose(tolerance):
        return select_weights(
            score_with,
            NEW_IN_VALID,
            (0.0,),
            (0.0, 1.0, 4.0),
            k=1,
            max_users=10,
            seed=0,
            name="t",
            cold_tolerance=tolerance,
            refine=2,
        )

    assert choose(0.0) == PriorWeights()
    # NDCG >= 0.18 allows beta <= 2; grid: 1 fits, 4 does not; bisection: 2.5 no, 1.75 yes.
    assert choose(0.1) == PriorWeights(0.0, 1.75)


def test_validation_slices_count_new_item_targets():
    score_with = no_prior_scores(NEW_IN_VALID)
    plain = validation_slices(score_with(PriorWeights()), NEW_IN_VALID, k=1)
    boosted = validation_slices(score_with(PriorWeights(cold=1.0)), NEW_IN_VALID, k=1)
    assert plain["new_users"] == boosted["new_users"] == 4
    assert plain["new_Recall@1"] == 0.0 and boosted["new_Recall@1"] == 1.0
    assert boosted["NDCG@1"] > plain["NDCG@1"]
    assert "new_Recall@1" not in validation_slices(score_with(PriorWeights()), NEW_IN_TEST, k=1)
