"""The shared contract every registered recommender must honour (one parametrized test set).

A model gets a tiny fast config from its ``test_config()`` classmethod (the config defaults
unless the model overrides it), is fitted on a small planted marketplace, and is checked for:
score shape and finiteness, seen items excluded from recommendations, an exact checkpoint round
trip, and a rebuild from the checkpoint file alone.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tests.trainer.models.planted import planted_marketplace
from trainer.data.splits import split_dataset
from trainer.models.base import Recommender, load_checkpoint, save_checkpoint
from trainer.models.registry import all_models

MODELS = all_models()


def tiny_config(cls: type[Recommender]):
    return cls.test_config()


@pytest.fixture(scope="module")
def data():
    return split_dataset(planted_marketplace(num_users=40, num_items=30, events_per_user=6))


@pytest.fixture(scope="module")
def fitted(data):
    """name -> fitted model, built lazily so each model trains once per module."""
    cache: dict[str, Recommender] = {}

    def get(name: str) -> Recommender:
        if name not in cache:
            cls = MODELS[name]
            model = cls(tiny_config(cls), data.num_users, data.num_items)
            report = model.fit(data, progress=False)
            assert report.epochs >= 1
            cache[name] = model
        return cache[name]

    return get


@pytest.fixture(params=sorted(MODELS))
def name(request) -> str:
    return request.param


def test_registered_with_config(name):
    cls = MODELS[name]
    assert cls.name == name
    doc = cls.__doc__ or sys.modules[cls.__module__].__doc__
    assert doc, f"{name} needs a class or module docstring (list-models shows its first line)"
    config = tiny_config(cls)
    assert isinstance(config, cls.config_class)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_scores_have_catalogue_shape_and_are_finite(name, fitted, data, stage):
    users = np.unique(data.targets(stage)["user_idx"].to_numpy())[:7]
    scores = fitted(name).score(data, stage, users)
    assert isinstance(scores, torch.Tensor)
    assert scores.shape == (len(users), data.num_items)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_recommend_excludes_seen_items(name, fitted, data, stage):
    users = np.arange(data.num_users)
    top = fitted(name).recommend(data, stage, users, k=5).numpy()
    seen = data.seen_matrix(stage)
    assert top.shape == (len(users), 5)
    for row, user in enumerate(users):
        assert not set(top[row]) & set(seen[user].indices), f"user {user} got a seen item back"
        assert len(set(top[row])) == 5


def test_checkpoint_round_trip_gives_identical_scores(name, fitted, data, tmp_path):
    model = fitted(name)
    users = np.arange(data.num_users)
    path = save_checkpoint(model, data, tmp_path / "model.pt", note="contract")
    cls = MODELS[name]
    clone = cls(tiny_config(cls), data.num_users, data.num_items)
    clone.load_state_dict(torch.load(path, weights_only=False)["state"])
    for stage in ("valid", "test"):
        assert torch.equal(model.score(data, stage, users), clone.score(data, stage, users))


def test_load_checkpoint_rebuilds_from_the_file_alone(name, fitted, data, tmp_path):
    model = fitted(name)
    path = save_checkpoint(model, data, tmp_path / "model.pt", note="contract")
    restored = load_checkpoint(path)
    assert restored.model.name == name
    assert restored.model.config == model.config
    assert restored.item_ids == data.items.ids.tolist()
    assert restored.extra == {"note": "contract"}
    users = np.arange(data.num_users)
    assert torch.equal(restored.model.score(data, "test", users), model.score(data, "test", users))


def test_embeddings_reproduce_scores_when_the_model_has_them(name, fitted, data):
    model = fitted(name)
    items = model.item_embeddings()
    users_table = model.user_embeddings(data, "test")
    assert (items is None) == (users_table is None), "both embedding tables or neither"
    if items is None:
        return  # no embedding space (e.g. MostPop, ItemKNN): nothing to reproduce
    users = np.arange(data.num_users)
    assert items.shape[0] == data.num_items and users_table.shape[0] == data.num_users
    torch.testing.assert_close(users_table[users] @ items.T, model.score(data, "test", users))
