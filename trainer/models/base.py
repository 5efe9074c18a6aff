"""The one contract every recommender implements, its registry, and checkpoints.

A model is built from its frozen ``<Model>Config`` dataclass and the sizes of the data
(``num_users``, ``num_items``), trained by :meth:`Recommender.fit` on an
:class:`~trainer.data.interactions.InteractionData`, and asked for scores over the whole catalogue
for a batch of users by :meth:`Recommender.score`. Evaluation, export and serving only use this
surface, so baselines, graph models and sequence models are interchangeable.

Checkpoints carry the model name, the resolved config, the dataset description and the id maps, so
a model can be rebuilt from the checkpoint alone (:func:`load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from trainer.data.interactions import InteractionData, Stage

MODELS: dict[str, type[Recommender]] = {}


def register(name: str) -> Callable[[type[Recommender]], type[Recommender]]:
    """Class decorator adding a recommender to :data:`MODELS` under ``name``."""

    def decorate(cls: type[Recommender]) -> type[Recommender]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return decorate


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """What fit() did: per-epoch log lines and the validation metric it selected on."""

    epochs: int
    seconds: float
    history: list[dict[str, float]]
    best_epoch: int | None = None


class Recommender(ABC):
    """Scores every item for a user. Higher is better; seen items are masked by the caller."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, num_users: int, num_items: int):
        self.config = config
        self.num_users = num_users
        self.num_items = num_items

    @classmethod
    def test_config(cls) -> Any:
        """A small, fast config for the shared contract tests; the defaults unless overridden."""
        return cls.config_class()

    @abstractmethod
    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        """Train on ``data.train``; may select an epoch on ``data.valid``, never on test."""

    @abstractmethod
    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        """(len(users), num_items) float scores, using only ``data.history(stage)`` as input."""

    def item_embeddings(self) -> torch.Tensor | None:
        """(num_items, D) item vectors in the space of :meth:`user_embeddings`, if any."""
        return None

    def user_embeddings(self, data: InteractionData, stage: Stage) -> torch.Tensor | None:
        """(num_users, D) user vectors such that score = user @ item.T, if the model has one."""
        return None

    def recommend(
        self,
        data: InteractionData,
        stage: Stage,
        users: np.ndarray,
        k: int,
        exclude_seen: bool = True,
    ) -> torch.Tensor:
        """(len(users), k) item rows, best first, seen items excluded."""
        scores = self.score(data, stage, users).clone()
        if exclude_seen:
            seen = data.seen_matrix(stage)[users]
            rows, cols = seen.nonzero()
            scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
        return torch.topk(scores, k=min(k, self.num_items), dim=1).indices

    # Persistence: subclasses add tensors/arrays to the state; the base stores the rest.
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything learned, as tensors or numpy arrays."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def save_checkpoint(model: Recommender, data: InteractionData, path: Path, **extra: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.name,
            "config": dataclasses.asdict(model.config),
            "num_users": model.num_users,
            "num_items": model.num_items,
            "dataset": dataclasses.asdict(data.info),
            "protocol": data.protocol,
            "user_ids": data.users.ids.tolist(),
            "item_ids": data.items.ids.tolist(),
            "state": model.state_dict(),
            "extra": extra,
        },
        path,
    )
    return path


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    model: Recommender
    dataset: dict[str, Any]
    protocol: str
    user_ids: list[str]
    item_ids: list[str]
    extra: dict[str, Any]


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild a model from a checkpoint file alone."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=False)
    cls = MODELS.get(raw["model"])
    if cls is None:
        raise ValueError(f"{path}: unknown model {raw['model']!r} (known: {', '.join(MODELS)})")
    config = cls.config_class(**raw["config"])
    model = cls(config, raw["num_users"], raw["num_items"])
    model.load_state_dict(raw["state"])
    return Checkpoint(
        model=model,
        dataset=raw["dataset"],
        protocol=raw["protocol"],
        user_ids=raw["user_ids"],
        item_ids=raw["item_ids"],
        extra=raw.get("extra", {}),
    )
