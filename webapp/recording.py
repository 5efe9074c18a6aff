"""One path for every event, from the JSON API and the storefront's buttons alike.

The event is committed to the event store first (durable even if Vespa is down), then, except
for impressions, it goes first in the user's Vespa history with its type and request context
(the ranker's per-event codes), so the next request reflects it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vespa_app.client.pipeline import RecommendationPipeline
from vespa_app.client.vespa import VespaError
from webapp.events import Event, EventStore


@dataclass(frozen=True)
class Recorded:
    event_id: int
    product: dict[str, Any]  # the product document (title, seller, ...)
    history: dict[str, Any] | None  # the user's updated history fields; None when not applied
    history_error: str | None = None  # why Vespa did not take the history update


def record_event(
    store: EventStore,
    pipeline: RecommendationPipeline,
    user_id: str,
    product_id: str,
    event_type: str,
    hour: int | None = None,
    device: str | None = None,
    location: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Recorded:
    """Store the event, then update the user's history. An unknown product raises
    :class:`~vespa_app.client.pipeline.ProductNotFound` before anything is stored."""
    product = pipeline.product(product_id)
    now = int(time.time())
    event_id = store.record(
        Event(
            user_id,
            product_id,
            event_type,
            seller_id=product.get("seller_id"),
            ts=now,
            hour=hour,
            device=device,
            location=location,
            context=context or None,
        )
    )
    if event_type == "impression":
        return Recorded(event_id, product, None)
    try:
        history = pipeline.add_to_history(
            user_id, product_id, now, event_type, hour=hour, device=device, location=location
        )
    except VespaError as e:
        return Recorded(event_id, product, None, str(e))
    return Recorded(event_id, product, history)
