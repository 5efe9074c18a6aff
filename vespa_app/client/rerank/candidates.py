"""What goes into the re-ranker (candidates, request context) and what comes out (ranked items)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class RerankInputError(ValueError):
    """A candidate or context field the re-ranker cannot use; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """One stage-2 hit. ``category_path`` lists the ancestors first, e.g.
    ("home", "home/kitchen", "home/kitchen/knives"); ``created_at`` is epoch seconds.
    Slots: a request builds hundreds, and a frozen dataclass without them is slower to make."""

    product_id: str
    seller_id: str
    category_path: tuple[str, ...]
    retrieval_score: float
    ranker_score: float | None = None
    created_at: int | None = None
    margin: float = 0.0
    price: float = 0.0
    in_stock: bool = True
    embedding: np.ndarray | None = None  # (D,), for MMR similarity and explanations
    source: str | None = None  # retrieval source: "ann", "walk", "ann+walk", "popularity", ...


@dataclasses.dataclass(frozen=True)
class HistoryItem:
    """One item of the user's history, newest first in `RequestContext.history`."""

    product_id: str
    category_path: tuple[str, ...]
    embedding: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class RequestContext:
    user_id: str | None
    now: int  # epoch seconds; freshness ages are measured from here
    k: int = 50
    history: tuple[HistoryItem, ...] = ()
    device: str | None = None
    hour: int | None = None
    location: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RankedItem:
    candidate: Candidate
    position: int  # 1-based slot
    base_score: float  # the normalised stage score the rules started from
    final_score: float  # after the score rules (placement rules move items, not scores)
    rules: tuple[dict[str, Any], ...]  # every rule that moved this item, in application order
    supported_by: dict[str, Any] | None  # the history item that most supports it

    def explanation(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "scores": {
                "retrieval": c.retrieval_score,
                "ranker": c.ranker_score,
                "base": self.base_score,
                "final": self.final_score,
            },
            "source": c.source,
            "rules": [dict(r) for r in self.rules],
            "supported_by": self.supported_by,
        }

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "position": self.position,
            "product_id": c.product_id,
            "seller_id": c.seller_id,
            "explanation": self.explanation(),
        }


@dataclasses.dataclass(frozen=True)
class RerankResult:
    items: tuple[RankedItem, ...]
    summary: dict[str, Any]

    @property
    def product_ids(self) -> list[str]:
        return [item.candidate.product_id for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {"items": [item.to_dict() for item in self.items], "summary": self.summary}
