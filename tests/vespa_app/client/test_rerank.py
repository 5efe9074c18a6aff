"""Stage-3 re-ranking: each rule pinned by hand-made cases, explanations, config errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from vespa_app.client.rerank import (
    Candidate,
    HistoryItem,
    RequestContext,
    Reranker,
    RerankInputError,
    RulesError,
    load_rules,
)
from vespa_app.client.rerank.config import rules_from_mapping

NOW = 1_700_000_000
DAY = 86_400
OFF = {  # every rule off; each test turns on what it checks
    "diversity": {"lambda": 1.0, "max_per_window": 0, "max_share": 1.0},
    "freshness": {"weight": 0.0},
    "margin": {"weight": 0.0, "tie_epsilon": 0.0},
    "fairness": {"min_share": 0.0, "boost": 0.0},
}


def rules(**sections):
    merged = {name: dict(values) for name, values in OFF.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return rules_from_mapping(merged, "test.toml")


def cand(pid, seller="s0", score=1.0, cat=("a", "a/b"), **fields):
    return Candidate(
        product_id=pid,
        seller_id=seller,
        category_path=tuple(cat),
        retrieval_score=fields.pop("retrieval", score),
        ranker_score=score,
        created_at=fields.pop("created_at", NOW - 30 * DAY),
        **fields,
    )


def ctx(k=50, history=()):
    return RequestContext(user_id="u1", now=NOW, k=k, history=tuple(history))


def ladder(n, sellers=("s0",)):
    """n candidates with scores n..1 (p0 best), sellers assigned round-robin."""
    return [cand(f"p{i}", sellers[i % len(sellers)], float(n - i)) for i in range(n)]


def rules_of(item):
    return [(r["rule"], r["effect"], r["from"], r["to"]) for r in item.rules]


def test_no_seller_exceeds_share_of_top_50():
    # Seller s0 owns the 100 best candidates; 9 other sellers share the next 100.
    candidates = [cand(f"a{i}", "s0", 1000.0 - i) for i in range(100)]
    candidates += [cand(f"b{i}", f"s{1 + i % 9}", 500.0 - i) for i in range(100)]
    result = Reranker(rules(diversity={"max_share": 0.2})).rerank(candidates, ctx())
    sellers = [item.candidate.seller_id for item in result.items]
    assert len(sellers) == 50
    assert max(sellers.count(s) for s in set(sellers)) == 10  # floor(0.2 * 50)
    assert sellers[:10] == ["s0"] * 10  # the cap binds only once reached
    assert result.summary["max_seller_count"] == 10


def test_products_without_a_seller_are_not_capped_as_one_seller():
    # A review dataset's products without a brand have seller_id "": each is its own seller.
    candidates = [cand(f"a{i}", "", 1000.0 - i) for i in range(60)]
    candidates += [cand(f"b{i}", "s1", 500.0 - i) for i in range(60)]
    result = Reranker(rules(diversity={"max_share": 0.2, "max_per_window": 2})).rerank(
        candidates, ctx()
    )
    # Lumped together they would get 10 of 50 slots, two per window; apart, no cap binds.
    assert [item.candidate.product_id for item in result.items] == [f"a{i}" for i in range(50)]


def test_window_cap_holds_in_every_window():
    candidates = [cand(f"a{i}", "s0", 1000.0 - i) for i in range(60)]
    candidates += [cand(f"b{i}", f"s{1 + i % 6}", 500.0 - i) for i in range(60)]
    result = Reranker(rules(diversity={"max_per_window": 2, "window": 10})).rerank(
        candidates, ctx()
    )
    sellers = [item.candidate.seller_id for item in result.items]
    assert len(sellers) == 50
    for start in range(len(sellers) - 9):
        window = sellers[start : start + 10]
        assert max(window.count(s) for s in set(window)) <= 2, (start, window)
    assert sellers.count("s0") == 10  # two per window of ten, every window


def test_default_rules_hold_caps_on_a_skewed_random_request():
    rng = np.random.default_rng(3)
    weights = 1.0 / np.arange(1, 41)
    seller = rng.choice(40, size=500, p=weights / weights.sum())
    candidates = [
        cand(
            f"p{i}",
            f"s{seller[i]}",
            float(rng.standard_normal()),
            cat=(f"c{i % 4}", f"c{i % 4}/{i % 3}"),
            created_at=int(NOW - rng.integers(0, 60 * DAY)),
            margin=float(rng.uniform(0, 0.4)),
            embedding=rng.standard_normal(16),
        )
        for i in range(500)
    ]
    exposure = {f"s{s}": float(weights[s] / weights.sum()) for s in range(40)}
    rules_ = load_rules()
    result = Reranker(rules_).rerank(candidates, ctx(), exposure)
    sellers = [item.candidate.seller_id for item in result.items]
    assert len(sellers) == 50
    assert max(sellers.count(s) for s in set(sellers)) <= int(rules_.diversity.max_share * 50)
    for start in range(len(sellers) - rules_.diversity.window + 1):
        window = sellers[start : start + rules_.diversity.window]
        assert max(window.count(s) for s in set(window)) <= rules_.diversity.max_per_window
    # Same request, candidates shuffled: the same page (deterministic, order-independent).
    shuffled = candidates[:]
    random.Random(0).shuffle(shuffled)
    again = Reranker(rules_).rerank(shuffled, ctx(), exposure)
    assert again.product_ids == result.product_ids


def test_blocked_things_never_appear_even_when_pinned_or_boosted():
    candidates = [
        cand("keep1", "s1", 9.0),
        cand("bad_product", "s1", 10.0),
        cand("from_bad_seller", "s_bad", 8.0),
        cand("in_bad_category", "s2", 7.0, cat=("toys", "toys/guns")),
        cand("keep2", "s2", 6.0, cat=("toys", "toys/blocks")),
        cand("no_stock", "s3", 5.0, in_stock=False),
    ]
    config = rules(
        business={
            "blocked_products": ["bad_product"],
            "blocked_sellers": ["s_bad"],
            "blocked_categories": ["toys/guns"],
            "pin": [{"position": 1, "product_id": "bad_product"}],
            "boost": [{"seller_id": "s_bad", "add": 5.0}],
        }
    )
    result = Reranker(config).rerank(candidates, ctx())
    assert result.product_ids == ["keep1", "keep2"]
    assert result.summary["removed"] == {
        "blocked_product": 1,
        "blocked_seller": 1,
        "blocked_category": 1,
        "out_of_stock": 1,
    }
    assert result.summary["pins"] == {"filled": [], "unfilled": [1]}


def test_pinned_items_sit_at_their_positions():
    candidates = ladder(12, sellers=("s0", "s1", "s2"))
    candidates.append(cand("shoe", "s9", 0.5, cat=("shoes", "shoes/boots")))
    config = rules(
        business={
            "pin": [
                {"position": 1, "product_id": "p9"},
                {"position": 4, "category": "shoes"},
                {"position": 6, "product_id": "not_a_candidate"},
            ]
        }
    )
    result = Reranker(config).rerank(candidates, ctx(k=8))
    ids = result.product_ids
    assert ids[0] == "p9" and ids[3] == "shoe"
    assert ids == ["p9", "p0", "p1", "shoe", "p2", "p3", "p4", "p5"]
    assert rules_of(result.items[0]) == [("pin", "pinned", 10, 1)]
    assert rules_of(result.items[3]) == [("pin", "pinned", 13, 4)]
    # The items the pins displaced are demoted by them, from the slot they lost.
    assert rules_of(result.items[1]) == [("pin", "demoted", 1, 2)]
    assert rules_of(result.items[4]) == [("pin", "demoted", 4, 5)]
    assert result.summary["pins"] == {"filled": [1, 4], "unfilled": [6]}


def test_additive_boost_moves_an_item_by_the_expected_amount():
    # Scores 10..1 normalise to (s - 1) / 9: p4 (0.556) + 0.3 = 0.856 lands between p1 (0.889)
    # and p2 (0.778): from rank 5 to rank 3.
    config = rules(business={"boost": [{"product_id": "p4", "add": 0.3}]})
    result = Reranker(config).rerank(ladder(10), ctx(k=10))
    assert result.product_ids[:5] == ["p0", "p1", "p4", "p2", "p3"]
    (entry,) = result.items[2].rules
    assert entry["rule"] == "boost" and entry["effect"] == "promoted"
    assert (entry["from"], entry["to"]) == (5, 3)
    assert entry["score_delta"] == pytest.approx(0.3)
    assert entry["targets"] == ["product_id=p4"]
    assert result.items[2].final_score == pytest.approx(5 / 9 + 0.3)
    # p2 and p3 moved down passively: no rule acted on them.
    assert result.items[3].rules == () and result.items[4].rules == ()


def test_multiplicative_category_boost():
    candidates = ladder(10)
    candidates[6] = cand("p6", "s0", 4.0, cat=("beauty", "beauty/skin"))  # 3/9 = 0.333
    config = rules(business={"boost": [{"category": "beauty", "multiply": 2.5}]})
    result = Reranker(config).rerank(candidates, ctx(k=10))
    # 0.333 * 2.5 = 0.833: above p2 (0.778), below p1 (0.889).
    assert result.product_ids.index("p6") == 2
    assert rules_of(result.items[2]) == [("boost", "promoted", 7, 3)]


def test_freshness_prefers_newer_at_equal_score():
    old = cand("a_old", "s0", 1.0, created_at=NOW - 60 * DAY)
    new = cand("b_new", "s1", 1.0, created_at=NOW - 1 * DAY)
    unknown = cand("c_undated", "s2", 1.0, created_at=None)
    config = rules(freshness={"weight": 0.1, "half_life_days": 7.0})
    result = Reranker(config).rerank([old, new, unknown], ctx())
    assert result.product_ids == ["b_new", "a_old", "c_undated"]
    assert result.items[0].final_score == pytest.approx(1.0 + 0.1 * 0.5 ** (1 / 7))
    assert rules_of(result.items[0]) == [("freshness", "promoted", 2, 1)]
    # a_old got a tiny boost too but still went down a place; c_undated got none.
    assert rules_of(result.items[1]) == [("freshness", "demoted", 1, 2)]
    assert result.items[2].rules == ()
    # Without freshness, equal scores fall back to product_id order.
    assert Reranker(rules()).rerank([old, new, unknown], ctx()).product_ids == [
        "a_old",
        "b_new",
        "c_undated",
    ]


def test_margin_breaks_ties_within_epsilon_only():
    candidates = [
        cand("p0", "s0", 1.0, margin=0.05),
        cand("p1", "s1", 0.999, margin=0.30),
        cand("p2", "s2", 0.9, margin=0.90),  # outside epsilon of everything above it
        cand("p3", "s3", 0.0, margin=0.0),
    ]
    config = rules(margin={"tie_epsilon": 0.01})
    result = Reranker(config).rerank(candidates, ctx())
    assert result.product_ids == ["p1", "p0", "p2", "p3"]
    assert rules_of(result.items[0]) == [("margin", "promoted", 2, 1)]
    assert rules_of(result.items[1]) == [("margin", "demoted", 1, 2)]
    assert result.items[2].rules == () and result.items[3].rules == ()


def test_fairness_gives_small_sellers_their_minimum_share():
    candidates = [cand(f"big{i}", f"B{i % 4}", 100.0 - i) for i in range(30)]
    candidates += [cand(f"small{i}", f"S{i}", 10.0 - i) for i in range(5)]
    exposure = {"B0": 0.2, "B1": 0.2, "B2": 0.2, "B3": 0.2}  # S* sellers have no exposure
    config = rules(fairness={"min_share": 0.2, "exposure_threshold": 0.01})
    result = Reranker(config).rerank(candidates, ctx(k=20), exposure)
    ids = result.product_ids
    small_slots = [i + 1 for i, pid in enumerate(ids) if pid.startswith("small")]
    assert small_slots == [5, 10, 15, 20]  # floor(0.2 * t) small items by slot t
    assert rules_of(result.items[4]) == [("fairness", "promoted", 31, 5)]
    assert ("fairness", "demoted", 5, 6) in rules_of(result.items[5])
    assert result.summary["fairness"] == {
        "active": True,
        "small_seller_candidates": 5,
        "small_seller_slots": 4,
        "required_slots": 4,
    }
    # Without exposure data the rule is off; without small candidates it cannot apply.
    assert not any(
        p.startswith("small") for p in Reranker(config).rerank(candidates, ctx(k=20)).product_ids
    )
    only_big = Reranker(config).rerank(candidates[:30], ctx(k=20), exposure)
    assert len(only_big.items) == 20 and only_big.summary["fairness"]["small_seller_slots"] == 0


def test_fairness_boost_is_a_score_rule():
    candidates = [*ladder(10), cand("small", "tiny", 2.0)]
    config = rules(fairness={"boost": 0.5, "exposure_threshold": 0.01})
    result = Reranker(config).rerank(candidates, ctx(k=5), {"s0": 0.5})
    # (2 - 1) / 9 + 0.5 = 0.611: between p3 (0.667) and p4 (0.556).
    assert result.product_ids == ["p0", "p1", "p2", "p3", "small"]
    assert rules_of(result.items[4]) == [("fairness", "promoted", 10, 5)]


def test_explanations_list_exactly_the_rules_that_moved_each_item():
    # Window of 3 with one item per seller: A can appear at most once in any 3 slots.
    candidates = [
        cand("a1", "A", 6.0),
        cand("a2", "A", 5.0),
        cand("a3", "A", 4.0),
        cand("b4", "B", 3.0),
        cand("b5", "C", 2.0),
        cand("c6", "D", 1.0),
        cand("d7", "E", 0.5),
    ]
    config = rules(diversity={"max_per_window": 1, "window": 3})
    result = Reranker(config).rerank(candidates, ctx(k=7))
    assert result.product_ids == ["a1", "b4", "b5", "a2", "c6", "d7", "a3"]
    moved = {item.candidate.product_id: rules_of(item) for item in result.items}
    assert moved == {
        "a1": [],
        "b4": [],
        "b5": [],
        "a2": [("seller_cap", "demoted", 2, 4)],
        "c6": [],
        "d7": [],
        # a3 is first denied at slot 5, the first slot it would have taken (a2 was ahead).
        "a3": [("seller_cap", "demoted", 5, 7)],
    }
    assert result.summary["rules_applied"] == ["seller_cap"]
    assert result.summary["items_moved"] == {"seller_cap": 2}


def test_window_cap_can_leave_the_list_short():
    candidates = [cand("a1", "A", 3.0), cand("a2", "A", 2.0), cand("b1", "B", 1.0)]
    config = rules(diversity={"max_per_window": 1, "window": 10})
    result = Reranker(config).rerank(candidates, ctx(k=3))
    assert result.product_ids == ["a1", "b1"]  # a2 can never satisfy the cap
    assert result.summary["returned"] == 2


def test_mmr_over_embeddings_promotes_a_dissimilar_item():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    candidates = [
        cand("a", "s0", 1.0, embedding=e1),
        cand("b", "s1", 0.95, embedding=e1 * 2),  # same direction as a
        cand("c", "s2", 0.9, embedding=e2),
        cand("d", "s3", 0.0, embedding=e2),
    ]
    result = Reranker(rules(diversity={"lambda": 0.5})).rerank(candidates, ctx())
    assert result.product_ids == ["a", "c", "b", "d"]
    moved = {item.candidate.product_id: rules_of(item) for item in result.items}
    assert moved == {
        "a": [],
        "c": [("mmr", "promoted", 3, 2)],
        "b": [("mmr", "demoted", 2, 3)],
        "d": [],
    }
    assert result.summary["similarity"] == "embedding"


def test_mmr_over_attributes_when_embeddings_are_missing():
    candidates = [
        cand("a", "s0", 1.0, cat=("x", "x/1")),
        cand("b", "s0", 0.95, cat=("x", "x/1")),  # same seller and leaf: similarity 1
        cand("c", "s1", 0.9, cat=("y", "y/1")),  # nothing shared: similarity 0
        cand("d", "s1", 0.0, cat=("y", "y/1")),
    ]
    result = Reranker(rules(diversity={"lambda": 0.5})).rerank(candidates, ctx())
    assert result.product_ids == ["a", "c", "b", "d"]
    assert result.summary["similarity"] == "attributes"


def test_attribute_similarity_counts_the_levels_shared_from_the_root():
    """category_weight * levels shared from the root / the deeper path's depth (at least 1) +
    seller_weight * same seller, whatever the paths: a level equal only below a difference does
    not count, nor does the same name at another depth."""
    from vespa_app.client.rerank.placement import PlacementInput, _Greedy
    from vespa_app.client.rerank.scoring import candidate_arrays

    paths = [
        ("a",), ("a", "a/b"), ("a", "a/b", "a/b/c"), ("c", "a/b"), ("a", "a/x", "a/b/c"), (),
        ("a", "a"), ("a", "a/b"), ("a/b",),
    ]  # fmt: skip
    kept = [cand(f"p{i}", f"s{i % 3}", float(len(paths) - i), cat=p) for i, p in enumerate(paths)]
    arrays = candidate_arrays(kept)
    data = PlacementInput(
        scores=arrays.ranker, seller=arrays.seller, margin=arrays.margin, small=None,
        embedding=None, path_index=arrays.path_index, paths=arrays.paths,
        path_len=arrays.path_len, product_pins={}, category_pins={},
    )  # fmt: skip
    weights = {"lambda": 0.5, "category_weight": 0.7, "seller_weight": 0.3}
    greedy = _Greedy(data, rules(diversity=weights), len(kept))
    for j, mine in enumerate(paths):
        expected = []
        for i, other in enumerate(paths):
            shared = 0
            for a, b in zip(other, mine, strict=False):
                if a != b:
                    break
                shared += 1
            same_seller = kept[i].seller_id == kept[j].seller_id
            expected.append(0.7 * shared / max(len(other), len(mine), 1) + 0.3 * same_seller)
        np.testing.assert_allclose(greedy.similarity(j), expected, rtol=0, atol=1e-12)


def test_out_of_stock_is_removed_and_counted_when_nothing_is_blocked():
    candidates = [cand("p0", score=3.0), cand("p1", score=2.0, in_stock=False), cand("p2")]
    result = Reranker(rules()).rerank(candidates, ctx())
    assert result.product_ids == ["p0", "p2"]
    assert result.summary["removed"]["out_of_stock"] == 1 and result.summary["eligible"] == 2
    kept = Reranker(rules(filter={"require_in_stock": False})).rerank(candidates, ctx())
    assert kept.product_ids == ["p0", "p1", "p2"]


def test_explanation_has_stage_scores_and_supporting_history_item():
    candidates = [
        cand("p1", "s0", 2.0, retrieval=0.7, cat=("home", "home/kitchen"), source="ann"),
        cand("p2", "s1", 1.0, retrieval=0.9, cat=("toys", "toys/lego"), source="graph_walk"),
        cand("p3", "s2", 0.5, cat=("garden", "garden/tools")),
    ]
    history = [
        HistoryItem("h_new", ("home", "home/bath")),  # newest: shares only "home"
        HistoryItem("h_kitchen", ("home", "home/kitchen")),
        HistoryItem("h_lego", ("toys", "toys/lego")),
        HistoryItem("h_lego_old", ("toys", "toys/lego")),
    ]
    result = Reranker(rules()).rerank(candidates, ctx(history=history))
    first = result.items[0].to_dict()
    assert first["product_id"] == "p1" and first["position"] == 1
    explanation = first["explanation"]
    assert explanation["scores"] == {"retrieval": 0.7, "ranker": 2.0, "base": 1.0, "final": 1.0}
    assert explanation["source"] == "ann" and explanation["rules"] == []
    assert explanation["supported_by"] == {
        "product_id": "h_kitchen",
        "reason": "same_category",
        "category": "home/kitchen",
    }
    assert result.items[1].supported_by["product_id"] == "h_lego"  # most recent of the two
    assert result.items[2].supported_by is None


def test_supporting_item_by_embedding_similarity():
    candidates = [cand("p1", "s0", 1.0, embedding=np.array([1.0, 0.1]))]
    history = [
        HistoryItem("h1", ("z",), embedding=np.array([0.0, 1.0])),
        HistoryItem("h2", ("z",), embedding=np.array([2.0, 0.0])),
    ]
    (item,) = Reranker(rules()).rerank(candidates, ctx(history=history)).items
    assert item.supported_by["product_id"] == "h2"
    assert item.supported_by["reason"] == "embedding_similarity"
    assert item.supported_by["similarity"] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)


def test_retrieval_order_when_the_ranker_failed():
    candidates = [
        cand("p0", "s0", 5.0, retrieval=0.1),
        cand("p1", "s1", 4.0, retrieval=0.9),
        Candidate("p2", "s2", ("a",), retrieval_score=0.5, ranker_score=None),
    ]
    result = Reranker(rules()).rerank(candidates, ctx())
    assert result.product_ids == ["p1", "p2", "p0"]
    assert result.summary["score_source"] == "retrieval"


def test_empty_and_short_candidate_lists():
    reranker = Reranker(load_rules())
    empty = reranker.rerank([], ctx())
    assert empty.items == () and empty.summary["returned"] == 0
    short = reranker.rerank(ladder(3, sellers=("s0", "s1", "s2")), ctx(k=50))
    assert short.product_ids == ["p0", "p1", "p2"]
    assert reranker.rerank(ladder(3), ctx(k=0)).items == ()


def test_bad_input_is_named():
    with pytest.raises(RerankInputError, match=r"candidate 1: product_id 'p0' duplicates"):
        Reranker(rules()).rerank([cand("p0"), cand("p0")], ctx())
    with pytest.raises(RerankInputError, match=r"'p1': retrieval_score must be finite"):
        Reranker(rules()).rerank([cand("p0"), cand("p1", retrieval=float("nan"))], ctx())
    with pytest.raises(RerankInputError, match=r"context\.k"):
        Reranker(rules()).rerank([cand("p0")], ctx(k=-1))


def test_default_rules_file_loads():
    config = load_rules()
    assert config.diversity.max_share == 0.2 and config.diversity.mmr_lambda == 0.85
    assert config.source.endswith("rules.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[diversity]\nlamda = 0.5\n", "unknown key 'diversity.lamda'"),
        ("[diversity]\nmmr_lambda = 0.5\n", "unknown key 'diversity.mmr_lambda'"),
        ("[novelty]\nweight = 1\n", "unknown key 'novelty'"),
        ("[freshness]\nweight = 'high'\n", "'freshness.weight' must be a number"),
        ("[diversity]\nlambda = 1.5\n", "'diversity.lambda' must be in [0, 1]"),
        ("[diversity]\nwindow = 0\n", "'diversity.window' must be >= 1"),
        ("[[business.pin]]\nproduct_id = 'p1'\n", "'business.pin[1].position' is required"),
        ("[[business.pin]]\nposition = 1\nslot = 2\n", "unknown key 'business.pin[1].slot'"),
        (
            "[[business.pin]]\nposition = 2\nproduct_id = 'a'\n"
            "[[business.pin]]\nposition = 2\ncategory = 'b'\n",
            "'business.pin[2].position' 2 is pinned twice",
        ),
        ("[[business.boost]]\nadd = 1.0\n", "'business.boost[1]' needs exactly one of"),
        ("[business]\nblocked_sellers = 's1'\n", "'business.blocked_sellers' must be a list"),
        ("[score\n", "rules.toml"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_missing_rules_file_is_named(tmp_path: Path):
    with pytest.raises(RulesError, match=r"nope\.toml"):
        load_rules(tmp_path / "nope.toml")
