"""BERT4Rec: bidirectional attention, cloze masking, the appended [MASK] read-out, padding
invariance, and learning a planted next-item rule better than popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.models.sequence_data import cycle_marketplace
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.bert4rec import BERT4Rec, BERT4RecConfig
from trainer.models.sequences import UNKNOWN


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return split_dataset(cycle_marketplace(num_users=150, num_items=24, noise=0.05, seed=0))


def make(num_items=40, **overrides):
    return BERT4Rec(BERT4RecConfig(max_len=16, dim=16, **overrides), 10, num_items)


def test_attention_is_bidirectional():
    model = make()
    model.network.eval()
    items = torch.randint(1, 41, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = items.clone()
    changed[:, -1] = changed[:, -1] % 40 + 1
    with torch.no_grad():
        before, after = model.network(items, {}), model.network(changed, {})
    assert not torch.allclose(before[:, 0], after[:, 0]), "a later token must reach earlier ones"


def test_user_vector_reads_an_appended_mask_token():
    model = make(features=("hour",))
    model.network.eval()
    items = torch.tensor([[0, 0, 3, 7, 9]])
    hours = torch.tensor([[0, 0, 5, 6, 7]])
    with torch.no_grad():
        got = model.network.user_vector(items, {"hour": hours})
        manual = model.network(
            torch.tensor([[0, 0, 3, 7, 9, 41]]), {"hour": torch.tensor([[0, 0, 5, 6, 7, UNKNOWN]])}
        )[:, -1]
    torch.testing.assert_close(got, manual)
    assert model.history_length == 15


def test_left_padding_does_not_change_the_user_vector():
    model = make(features=("hour", "device"))
    model.network.eval()
    items = torch.tensor([[0, 0, 0, 0, 0, 4, 8, 15, 16, 23]])
    feats = {"hour": (items > 0) * 5, "device": (items > 0) * 3}
    with torch.no_grad():
        long = model.network.user_vector(items, feats)
        short = model.network.user_vector(items[:, 5:], {k: v[:, 5:] for k, v in feats.items()})
    torch.testing.assert_close(long, short, rtol=0, atol=1e-5)


def test_cloze_masks_only_maskable_tokens_and_at_least_one_per_row():
    model = make(mask_prob=0.3, last_item_prob=0.0)
    g = torch.Generator().manual_seed(1)
    maskable = torch.rand(400, 16, generator=g) < 0.7
    maskable[:, -1] = True
    maskable[0] = False
    maskable[0, 4] = True  # a row with a single maskable token
    masked = model.cloze({"maskable": maskable})
    assert not (masked & ~maskable).any()
    assert masked.any(1).all()
    assert masked[0].nonzero().flatten().tolist() == [4]
    share = masked.sum() / maskable.sum()
    assert 0.25 < share < 0.36, share


def test_last_item_only_rows_mask_the_newest_token():
    model = make(mask_prob=0.5, last_item_prob=1.0)
    maskable = torch.ones(5, 16, dtype=torch.bool)
    maskable[:, 12:] = False  # newest maskable token at column 11
    masked = model.cloze({"maskable": maskable})
    assert masked.sum(1).tolist() == [1] * 5 and masked[:, 11].all()


def test_masked_tokens_lose_their_context_in_training(monkeypatch):
    model = make(features=("hour",), mask_prob=1.0)
    seen = {}

    def spy(items, features, query=None):
        seen["items"], seen["hour"] = items.clone(), features["hour"].clone()
        return torch.zeros(*items.shape, 16, requires_grad=True)

    monkeypatch.setattr(model.network, "forward", spy)
    items = torch.tensor([[0, 5, 6, 7]])
    batch = {"items": items, "maskable": items > 0, "f_hour": torch.tensor([[0, 3, 4, 5]])}
    model.loss(batch)
    assert seen["items"].tolist() == [[0, 41, 41, 41]]
    assert seen["hour"].tolist() == [[0, UNKNOWN, UNKNOWN, UNKNOWN]]


def test_learns_a_planted_next_item_rule_better_than_mostpop(data):
    config = BERT4RecConfig(
        max_len=12,
        dim=32,
        epochs=30,
        batch_size=32,
        lr=5e-3,
        mask_prob=0.4,
        patience=0,
        eval_every=30,
    )
    model = BERT4Rec(config, data.num_users, data.num_items)
    report = model.fit(data, progress=False)
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    pop = MostPop(MostPopConfig(), data.num_users, data.num_items)
    pop.fit(data, progress=False)
    ours = evaluate(model, data, "test", ks=(1, 10))
    base = evaluate(pop, data, "test", ks=(1, 10))
    assert ours["NDCG@10"] > base["NDCG@10"] + 0.3, (ours["NDCG@10"], base["NDCG@10"])


def test_embeddings_give_the_scores(data):
    model = BERT4Rec(BERT4RecConfig(max_len=8, dim=8), data.num_users, data.num_items)
    users = np.arange(10)
    torch.testing.assert_close(
        model.user_embeddings(data, "test")[users] @ model.item_embeddings().T,
        model.score(data, "test", users),
    )


def test_bad_mask_prob_is_rejected():
    with pytest.raises(ValueError, match="mask_prob"):
        BERT4Rec(BERT4RecConfig(mask_prob=0.0), 2, 3)


def test_request_context_rides_on_the_appended_mask_token():
    data = split_dataset(cycle_marketplace(num_users=150, num_items=24, device_step=True, seed=2))
    # Every sequence masks only its newest token: the serving task, where the request context
    # matters (inside a sequence both neighbours already pin the item down).
    base = dict(max_len=12, dim=32, epochs=60, batch_size=32, lr=5e-3, last_item_prob=1.0)
    scores = {}
    for query in ((), ("device",)):
        config = BERT4RecConfig(**base, query_features=query, patience=0, eval_every=60)
        model = BERT4Rec(config, data.num_users, data.num_items)
        model.fit(data, progress=False)
        scores[query] = evaluate(model, data, "test", ks=(1,))["HR@1"]
    assert scores[("device",)] > scores[()] + 0.12, scores
