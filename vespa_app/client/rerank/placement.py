"""Greedy slot-by-slot placement: pins, fairness minimum share, seller caps, MMR, margin ties.

Works on candidates sorted best-first by final score (index i = rank i + 1), so `argmax` picks
the better-ranked item among exact ties and the result is deterministic. Each slot costs a few
vector operations over the n candidates plus one similarity row (n × D for embeddings); the
seller caps are kept per candidate as they change (a seller reaching or leaving a cap flips its
candidates) instead of being recomputed for every slot, so 500 → 50 takes about a
millisecond.

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
        # Per-slot bookkeeping is scalar work: Python lists are faster at it than numpy.
        self.sellers: list[int] = data.seller.tolist()
        self.share_count = [0] * n_sellers
        self.window_count = [0] * n_sellers
        # live = the MMR relevance term, -inf once an item is placed or reserved by a pin;
        # objective = live - (1 - lambda) * max similarity to the placed items.
        self.live = self.lam * data.scores if self.lam < 1.0 else data.scores.copy()
        self.remaining = np.ones(n, dtype=bool)
        for index in self.product_pins.values():
            self.live[index] = NEG  # reserved for its slot
            self.remaining[index] = False
            self.share_count[self.sellers[index]] += 1  # pins count against the share up front
        self.max_sim = np.zeros(n)
        self.objective = self.live.copy()
        self.slot_seller: list[int] = []
        self.small_slots = 0
        # Caps kept current by take(): which sellers are capped now (pins still to come aside,
        # see choose) and, per candidate, 0 or -inf to add to the objective.
        self.capped = [False] * n_sellers
        self.cap_penalty = np.zeros(n)
        self.n_capped = 0
        self._members: dict[int, np.ndarray] = {}
        for seller in {self.sellers[i] for i in self.product_pins.values()}:
            self._update_cap(seller)
        # Attribute similarity (see similarity): per level, each candidate's category prefix
        # code, and the deeper path's depth per depth of the placed item; built when needed.
        self._levels: list[np.ndarray] | None = None
        self._depth = np.zeros(0, dtype=np.int64)
        self._longest: dict[int, np.ndarray] = {}

    def _update_cap(self, seller: int) -> None:
        capped = (self.share_max is not None and self.share_count[seller] >= self.share_max) or (
            self.window_cap is not None and self.window_count[seller] >= self.window_cap
        )
        if capped == self.capped[seller]:
            return
        self.capped[seller] = capped
        self.n_capped += 1 if capped else -1
        members = self._members.get(seller)
        if members is None:
            members = self._members[seller] = np.flatnonzero(self.data.seller == seller)
        self.cap_penalty[members] = NEG if capped else 0.0

    def blocked_sellers(self, t: int) -> np.ndarray | None:
        blocked = None
        if self.share_max is not None:
            blocked = np.array(self.share_count) >= self.share_max
        if self.window_cap is not None:
            counts = np.array(self.window_count)
            # Pins still to come inside a window containing t (conservative: span 2w - 1).
            ahead = [
                self.data.seller[i] for s, i in self.product_pins.items() if t < s < t + self.window
            ]
            if ahead:
                np.add.at(counts, ahead, 1)
            over = counts >= self.window_cap
            blocked = over if blocked is None else blocked | over
        if blocked is not None and not blocked.any():
            return None
        return blocked

    def choose(self, t: int) -> tuple[int | None, list[tuple[str, str, int]]]:
        """The item for slot t under the placement rules, and the decisions that shaped it."""
        objective = self.objective
        pins_ahead = (
            self.window_cap is not None
            and bool(self.product_pins)
            and any(t < s < t + self.window for s in self.product_pins)
        )
        # Per candidate, -inf where its seller is capped for slot t (None: no seller is).
        if pins_ahead:  # the window also counts pins still to come: the full check
            blocked = self.blocked_sellers(t)
            penalty = None if blocked is None else np.where(blocked[self.data.seller], NEG, 0.0)
        else:  # the caps as take() left them (equal to blocked_sellers(t) without pins ahead)
            penalty = self.cap_penalty if self.n_capped else None
        eligible_obj = objective if penalty is None else objective + penalty
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
        if penalty is not None:
            unconstrained = int(objective.argmax())
            if penalty[unconstrained] == NEG:
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
            near = (pooled >= pooled[best] - self.eps).nonzero()[0]
            if near.size > 1:
                chosen = int(near[np.argmax(self.data.margin[near])])
                if chosen != best:
                    decisions.append(("margin", "demoted", best))
                    decisions.append(("margin", "promoted", chosen))
        return chosen, decisions

    def take(self, t: int, chosen: int) -> None:
        seller = self.sellers[chosen]
        if t not in self.product_pins:
            self.share_count[seller] += 1
        self.slot_seller.append(seller)
        self.window_count[seller] += 1
        self._update_cap(seller)
        if t - self.window + 1 >= 0:
            left = self.slot_seller[t - self.window + 1]
            self.window_count[left] -= 1
            self._update_cap(left)
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
        """Similarity of every candidate to candidate j; negative cosines count as 0.

        Attributes: category_weight * (levels shared from the root / the deeper path's depth,
        at least 1) + seller_weight * same seller."""
        data = self.data
        if data.embedding is not None:
            return np.maximum(data.embedding @ data.embedding[j], 0.0)
        d = self.rules.diversity
        if self._levels is None:
            prefix = prefix_codes(data.paths)[data.path_index]  # (n, L)
            self._levels = [prefix[:, level].copy() for level in range(prefix.shape[1])]
            self._depth = data.path_len[data.path_index]
        depth = int(self._depth[j])
        # Equal prefix codes at a level mean equal paths down to it, so the equal levels are
        # the shared levels from the root.
        shared = np.zeros(data.seller.size, dtype=np.int64)
        for level in self._levels[:depth]:
            shared += level == level[j]
        longest = self._longest.get(depth)
        if longest is None:
            longest = self._longest[depth] = np.maximum(self._depth, max(depth, 1))
        return d.category_weight * (shared / longest) + d.seller_weight * (
            data.seller == data.seller[j]
        )


def prefix_codes(paths: np.ndarray) -> np.ndarray:
    """(P, L) codes of each path's prefixes: equal at level l iff the two paths are equal from
    the root down to level l; -1 past the path's end."""
    codes = np.full(paths.shape, -1, dtype=np.int64)
    above = np.zeros(paths.shape[0], dtype=np.int64)
    base = int(paths.max(initial=-1)) + 2
    for level in range(paths.shape[1]):
        _, above = np.unique(above * base + paths[:, level] + 1, return_inverse=True)
        above = above.reshape(-1)
        codes[:, level] = np.where(paths[:, level] >= 0, above, -1)
    return codes


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
