"""Stage 3: from the ranked candidates to the page, under the rules in a TOML file.

Order of application (docs/reranking.md):
1. filters: blocked products, sellers and categories, out-of-stock items are removed;
2. base score: the ranker score (or retrieval score when the ranker failed), min-max normalised;
3. score rules: business boosts, freshness, margin weight, small-seller boost;
4. placement, slot by slot: pins, fairness minimum share, seller caps, MMR, margin tie-break;
5. explanations: stage scores, the rules that moved each item, the supporting history item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vespa_app.client.rerank.candidates import (
    Candidate,
    RankedItem,
    RequestContext,
    RerankInputError,
    RerankResult,
)
from vespa_app.client.rerank.config import RerankRules, load_rules
from vespa_app.client.rerank.explain import supporting_items
from vespa_app.client.rerank.placement import PlacementInput, place
from vespa_app.client.rerank.scoring import (
    apply_score_rules,
    base_scores,
    candidate_arrays,
    filter_candidates,
    ordering,
    small_seller_mask,
)

RULE_ORDER = ("boost", "freshness", "margin", "fairness", "pin", "seller_cap", "mmr")


class Reranker:
    """Re-ranks one request's candidates; holds only the (immutable) rules, so it is thread-safe."""

    def __init__(self, rules: RerankRules | None = None) -> None:
        self.rules = rules if rules is not None else load_rules()

    @classmethod
    def from_file(cls, path: Path | str) -> Reranker:
        return cls(load_rules(path))

    def rerank(
        self,
        candidates: Sequence[Candidate],
        context: RequestContext,
        seller_exposure: Mapping[str, float] | None = None,
    ) -> RerankResult:
        """The top ``context.k`` items with explanations, and a per-request summary.

        ``seller_exposure`` maps seller_id to its recent exposure share (sellers absent from it
        have none); without it the fairness rules are off for this request.
        """
        rules = self.rules
        if isinstance(context.k, bool) or not isinstance(context.k, int) or context.k < 0:
            raise RerankInputError(f"context.k must be a non-negative integer, got {context.k!r}")
        kept, removed = filter_candidates(candidates, rules)
        arrays = candidate_arrays(kept)
        base, score_source = base_scores(arrays, rules)
        small = small_seller_mask(arrays, rules, seller_exposure)
        final, steps = apply_score_rules(arrays, base, rules, context.now, small)

        order = ordering(final, arrays.id_rank)  # sorted position -> kept index
        position_of = np.empty_like(order)
        position_of[order] = np.arange(order.size)
        product_pins: dict[int, int] = {}
        category_pins: dict[int, np.ndarray] = {}
        index_of = {c.product_id: i for i, c in enumerate(kept)} if rules.business.pin else {}
        missing_pins: list[int] = []
        for pin in rules.business.pin:
            if pin.product_id is not None:
                if pin.product_id in index_of:
                    product_pins[pin.position - 1] = int(position_of[index_of[pin.product_id]])
                elif pin.position <= context.k:
                    missing_pins.append(pin.position)  # not a candidate, or filtered out
            else:
                mask = np.array([pin.category in c.category_path for c in kept], dtype=bool)
                category_pins[pin.position - 1] = mask[order]
        use_embedding = rules.diversity.similarity == "embedding" and arrays.embedding is not None
        placement = place(
            PlacementInput(
                scores=final[order],
                seller=arrays.seller[order],
                margin=arrays.margin[order],
                small=None if small is None else small[order],
                embedding=arrays.embedding[order] if use_embedding else None,
                path_index=arrays.path_index[order],
                paths=arrays.paths,
                path_len=arrays.path_len,
                product_pins=product_pins,
                category_pins=category_pins,
            ),
            rules,
            context.k,
        )

        chosen = [int(order[i]) for i in placement.selected]
        support = supporting_items([kept[i] for i in chosen], context.history)
        items = []
        for slot, (sorted_index, index) in enumerate(
            zip(placement.selected, chosen, strict=True), 1
        ):
            entries = [_score_entry(step, index) for step in steps]
            entries = [e for e in entries if e is not None]
            for entry in placement.moves.get(sorted_index, []):
                entries.append({**entry, "to": slot})
            items.append(
                RankedItem(
                    candidate=kept[index],
                    position=slot,
                    base_score=float(base[index]),
                    final_score=float(final[index]),
                    rules=tuple(entries),
                    supported_by=support[slot - 1],
                )
            )
        summary = self._summary(candidates, kept, items, removed, score_source, placement, small)
        summary["pins"]["unfilled"] = sorted(summary["pins"]["unfilled"] + missing_pins)
        summary["similarity"] = (
            ("embedding" if use_embedding else "attributes")
            if rules.diversity.mmr_lambda < 1.0
            else None
        )
        summary["context"] = {
            "user_id": context.user_id,
            "k": context.k,
            "device": context.device,
            "hour": context.hour,
            "location": context.location,
        }
        return RerankResult(items=tuple(items), summary=summary)

    def _summary(
        self,
        candidates: Sequence[Candidate],
        kept: list[Candidate],
        items: list[RankedItem],
        removed: dict[str, int],
        score_source: str,
        placement: Any,
        small: np.ndarray | None,
    ) -> dict[str, Any]:
        moved: dict[str, int] = {}
        for item in items:
            for rule in {entry["rule"] for entry in item.rules}:
                moved[rule] = moved.get(rule, 0) + 1
        per_seller: dict[str, int] = {}
        for item in items:
            per_seller[item.candidate.seller_id] = per_seller.get(item.candidate.seller_id, 0) + 1
        return {
            "rules_file": self.rules.source,
            "candidates": len(candidates),
            "eligible": len(kept),
            "returned": len(items),
            "removed": removed,
            "score_source": score_source,
            "rules_applied": [rule for rule in RULE_ORDER if rule in moved],
            "items_moved": {rule: moved[rule] for rule in RULE_ORDER if rule in moved},
            "pins": {"filled": placement.pins_filled, "unfilled": placement.pins_unfilled},
            "fairness": {
                "active": small is not None and self.rules.fairness.min_share > 0,
                "small_seller_candidates": int(small.sum()) if small is not None else 0,
                "small_seller_slots": placement.small_slots,
                "required_slots": placement.small_required,
            },
            "distinct_sellers": len(per_seller),
            "max_seller_count": max(per_seller.values(), default=0),
        }


def _score_entry(step, index: int) -> dict[str, Any] | None:
    delta = float(step.delta[index])
    before, after = int(step.rank_before[index]), int(step.rank_after[index])
    if delta == 0.0 or before == after:
        return None
    entry: dict[str, Any] = {
        "rule": step.rule,
        # The direction the item moved: a small boost can still demote it past bigger ones.
        "effect": "promoted" if after < before else "demoted",
        "score_delta": round(delta, 6),
        "from": before,
        "to": after,
    }
    if step.detail:
        entry["targets"] = [name.split(":", 1)[1] for name, m in step.detail.items() if m[index]]
    return entry
