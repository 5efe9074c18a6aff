"""GAT: shapes, learning beyond MostPop, and attention weights that explain recommendations."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.models.inductive import recall_at
from tests.trainer.models.planted import planted_marketplace
from trainer.data.splits import split_dataset
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.gat import GAT, GATConfig

CONFIG = GATConfig(
    dim=16, heads=2, fanouts=(5, 5), batch_size=64, epochs=15, lr=0.01, patience=0, threads=1
)


@pytest.fixture(scope="module")
def planted():
    return split_dataset(planted_marketplace(num_users=80, num_items=40, events_per_user=8))


@pytest.fixture(scope="module")
def model(planted):
    model = GAT(CONFIG, planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    return model


def test_shapes(model, planted):
    assert model.score(planted, "valid", np.arange(6)).shape == (6, planted.num_items)
    assert model.item_embeddings().shape == (planted.num_items, CONFIG.dim)


def test_beats_mostpop_on_the_planted_marketplace(model, planted):
    popular = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    popular.fit(planted, progress=False)
    assert recall_at(model, planted) > recall_at(popular, planted) + 0.1


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_attention_sums_to_one_over_real_history(model, planted, stage):
    seen = planted.seen_matrix(stage)
    for user in range(0, planted.num_users, 7):
        item = int(model.recommend(planted, stage, np.array([user]), k=1)[0, 0])
        explanation = model.explain(planted, stage, user, item)
        items = [row for row, _ in explanation]
        weights = np.array([weight for _, weight in explanation])
        assert sorted(items) == sorted(seen[user].indices.tolist())  # exactly the history
        assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_explanations_point_into_the_users_cluster(model, planted):
    half = planted.num_items // 2
    agree = []
    for user in range(planted.num_users):
        item = int(model.recommend(planted, "test", np.array([user]), k=1)[0, 0])
        top_reason = model.explain(planted, "test", user, item)[0][0]
        agree.append((top_reason < half) == (item < half))
    assert np.mean(agree) >= 0.9


def test_config_is_checked():
    with pytest.raises(ValueError, match="multiple of heads"):
        GAT(GATConfig(dim=10, heads=4), 2, 2)
    with pytest.raises(ValueError, match="merge_events"):
        unmerged = GAT(GATConfig(merge_events=False), 2, 2)
        unmerged._items, unmerged.net = object(), object()  # past the "not trained" check
        unmerged.attention(None, "test", 0)
