"""Greedy slot-by-slot placement: pins, fairness minimum share, seller caps, MMR, margin ties.

Works on candidates sorted best-first by final score (index i = rank i + 1), so `argmax` picks
the better-ranked item among exact ties and the result is deterministic. Each slot costs a few
vector operations over the n candidates plus one similarity row (n × D for embeddings), so
500 → 50 stays around a millisecond.

Attribution: when a rule overrides the item that would otherwise take slot t, that item is
recorded as "demoted" by the rule (from slot t), and the item the rule put there instead as
"promoted" (from its rank entering placement to slot t). Pins record "pinned".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vespa_app.client.rerank.config import RerankRules

NEG = -np.inf


@dataclasses.dataclass
class PlacementInput:
    scores: np.ndarray  # (n,) final scores, sorted descending
    seller: np.ndarray  # (n,) seller codes
    margin: np.ndarray  # (n,)
    small: np.ndarray | None  # (n,) small-seller mask, None = fairness off for this request
    embedding: np.ndarray | None  # (n, D) unit rows; None = attribute similarity
    path_index: np.ndarray  # (n,) row in `paths`
    paths: np.ndarray  # (P, L) category level codes, -1 padded
    path_len: np.ndarray  # (P,)
    product_pins: dict[int, int]  # slot (0-based) -> candidate index
    category_pins: dict[int, np.ndarray]  # slot (0-based) -> candidate mask


@dataclasses.dataclass
class Placement:
    selected: list[int]
    moves: dict[int, list[dict[str, Any]]]  # candidate index -> rule entries ("to" filled later)
    pins_filled: list[int]  # 1-based positions
    pins_unfilled: list[int]
    small_slots: int
    small_required: int


class _Greedy:
    """State of one placement run; `choose` is side-effect free, `take` commits a slot."""

    def __init__(self, data: PlacementInput, rules: RerankRules, k: int) -> None:
        n = data.scores.size
        d = rules.diversity
        self.data, self.rules, self.k = data, rules, k
        self.lam = d.mmr_lambda
        self.eps = rules.margin.tie_epsilon
        self.window = d.window
        self.window_cap = d.max_per_window or None
        self.share_max = max(1, math.floor(d.max_share * k)) if d.max_share < 1.0 else None
        self.min_share = rules.fairness.min_share if data.small is not None else 0.0
        self.small = data.small if data.small is not None else np.zeros(n, dtype=bool)
        self.product_pins = {s: i for s, i in data.product_pins.items() if s < k}
        n_sellers = int(data.seller.max()) + 1 if n else 0
        self.share_count = np.zeros(n_sellers, dtype=np.int64)
        self.window_count = np.zeros(n_sellers, dtype=np.int64)
        # live = the MMR relevance term, -inf once an item is placed or reserved by a pin;
        # objective = live - (1 - lambda) * max similarity to the placed items.
        self.live = self.lam * data.scores if self.lam < 1.0 else data.scores.copy()
        self.remaining = np.ones(n, dtype=bool)
        for index in self.product_pins.values():
            self.live[index] = NEG  # reserved for its slot
            self.remaining[index] = False
            self.share_count[data.seller[index]] += 1  # pins count against the share up front
        self.max_sim = np.zeros(n)
        self.objective = self.live.copy()
        self.slot_seller: list[int] = []
        self.small_slots = 0

    def blocked_sellers(self, t: int) -> np.ndarray | None:
        blocked = None
        if self.share_max is not None:
            blocked = self.share_count >= self.share_max
        if self.window_cap is not None:
            counts = self.window_count
            # Pins still to come inside a window containing t (conservative: span 2w - 1).
            ahead = [
                self.data.seller[i] for s, i in self.product_pins.items() if t < s < t + self.window
            ]
            if ahead:
                counts = counts.copy()
                np.add.at(counts, ahead, 1)
            over = counts >= self.window_cap
            blocked = over if blocked is None else blocked | over
        if blocked is not None and not blocked.any():
            return None
        return blocked

    def choose(self, t: int) -> tuple[int | None, list[tuple[str, str, int]]]:
        """The item for slot t under the placement rules, and the decisions that shaped it."""
        objective = self.objective
        blocked = self.blocked_sellers(t)
        eligible_obj = (
            objective if blocked is None else np.where(blocked[self.data.seller], NEG, objective)
        )
        decisions: list[tuple[str, str, int]] = []
        pooled = eligible_obj
        forced = False
        if self.min_share > 0 and self.small_slots < math.floor(self.min_share * (t + 1)):
            small_obj = np.where(self.small, eligible_obj, NEG)
            if small_obj.max(initial=NEG) > NEG:
                pooled, forced = small_obj, True
        best = int(pooled.argmax()) if pooled.size else 0
        if not pooled.size or pooled[best] == NEG:
            return None, []
        if blocked is not None:
            unconstrained = int(objective.argmax())
            if blocked[self.data.seller[unconstrained]]:
                decisions.append(("seller_cap", "demoted", unconstrained))
        if forced:
            free = int(eligible_obj.argmax())
            if free != best:
                decisions.append(("fairness", "demoted", free))
                decisions.append(("fairness", "promoted", best))
        if self.lam < 1.0:
            by_score = int((pooled > NEG).argmax())  # first pooled index = best final score
            if by_score != best:
                decisions.append(("mmr", "demoted", by_score))
                decisions.append(("mmr", "promoted", best))
        chosen = best
        if self.eps > 0:
            close = pooled >= pooled[best] - self.eps
            if np.count_nonzero(close) > 1:
                near = np.flatnonzero(close)
                chosen = int(near[np.argmax(self.data.margin[near])])
                if chosen != best:
                    decisions.append(("margin", "demoted", best))
                    decisions.append(("margin", "promoted", chosen))
        return chosen, decisions

    def take(self, t: int, chosen: int) -> None:
        seller = self.data.seller[chosen]
        if t not in self.product_pins:
            self.share_count[seller] += 1
        self.slot_seller.append(seller)
        self.window_count[seller] += 1
        if t - self.window + 1 >= 0:
            self.window_count[self.slot_seller[t - self.window + 1]] -= 1
        self.small_slots += int(self.small[chosen])
        self.remaining[chosen] = False
        self.live[chosen] = NEG
        if self.lam < 1.0:
            np.maximum(self.max_sim, self.similarity(chosen), out=self.max_sim)
            np.multiply(self.max_sim, -(1.0 - self.lam), out=self.objective)
            self.objective += self.live
        else:
            self.objective[chosen] = NEG

    def similarity(self, j: int) -> np.ndarray:
        """Similarity of every candidate to candidate j; negative cosines count as 0."""
        data = self.data
        if data.embedding is not None:
            return np.maximum(data.embedding @ data.embedding[j], 0.0)
        d = self.rules.diversity
        # Category similarity per distinct path (few), then gathered per candidate.
        row = data.paths[data.path_index[j]]
        equal = (data.paths == row) & (row >= 0)
        shared = np.cumprod(equal, axis=1).sum(axis=1)
        longest = np.maximum(np.maximum(data.path_len, data.path_len[data.path_index[j]]), 1)
        by_path = d.category_weight * (shared / longest)
        return by_path[data.path_index] + d.seller_weight * (data.seller == data.seller[j])


def place(data: PlacementInput, rules: RerankRules, k: int) -> Placement:
    """Fill up to k slots greedily; stops early when no candidate is eligible for a slot."""
    k = min(k, data.scores.size)
    state = _Greedy(data, rules, k)
    selected: list[int] = []
    moves: dict[int, list[dict[str, Any]]] = {}
    demoted: set[tuple[int, str]] = set()
    pins_filled: list[int] = []
    pins_unfilled: list[int] = []

    def demote(index: int, rule: str, slot: int) -> None:
        if (index, rule) not in demoted:  # the first slot the rule denied it
            demoted.add((index, rule))
            moves.setdefault(index, []).append({"rule": rule, "effect": "demoted", "from": slot})

    def promote(index: int, rule: str, slot: int, effect: str = "promoted") -> None:
        if index + 1 != slot:
            entry = {"rule": rule, "effect": effect, "from": index + 1}
            moves.setdefault(index, []).append(entry)

    for t in range(k):
        slot = t + 1
        chosen: int | None = None
        if t in state.product_pins or t in data.category_pins:
            if t in state.product_pins:
                pinned: int | None = state.product_pins[t]
            else:
                matches = np.flatnonzero(state.remaining & data.category_pins[t])
                pinned = int(matches[0]) if matches.size else None
            if pinned is None:
                pins_unfilled.append(slot)
            else:
                would_be, _ = state.choose(t)
                if would_be is not None and would_be != pinned:
                    demote(would_be, "pin", slot)
                promote(pinned, "pin", slot, effect="pinned")
                pins_filled.append(slot)
                chosen = pinned
        if chosen is None:
            chosen, decisions = state.choose(t)
            if chosen is None:
                break
            for rule, effect, index in decisions:
                if effect == "demoted":
                    demote(index, rule, slot)
                else:
                    promote(index, rule, slot)
        state.take(t, chosen)
        selected.append(chosen)
    required = math.floor(state.min_share * len(selected)) if state.min_share > 0 else 0
    return Placement(selected, moves, pins_filled, pins_unfilled, state.small_slots, required)
