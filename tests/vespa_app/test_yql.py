"""The YQL subset parser (spec §5), including the forms pyvespa's query builder emits."""

from __future__ import annotations

import pytest

from vespa_app.engine.search.yql import (
    And,
    Compare,
    Contains,
    In,
    NearestNeighbor,
    Not,
    Or,
    Range,
    Rank,
    TrueNode,
    Unsupported,
    UserInput,
    UserQuery,
    WeakAnd,
    YqlError,
    parse_param_list,
    parse_yql,
)


def test_select_from_where_order_limit():
    q = parse_yql(
        "select product_id, title from sources product where true "
        "order by price desc, [relevance] limit 31 offset 29 timeout 200;"
    )
    assert q.fields == ("product_id", "title") and q.sources == ("product",)
    assert q.where == TrueNode(True)
    assert q.order_by == [("price", True), ("[relevance]", False)]
    assert (q.limit, q.offset, q.timeout_ms) == (31, 29, 200)
    assert parse_yql("select * from sources * where false").sources is None
    assert parse_yql("SELECT * FROM product WHERE true").fields is None


def test_pyvespa_builder_forms():
    q = parse_yql(
        "select * from product where ({targetHits:100}nearestNeighbor(embedding, q_user)) "
        "and in_stock = True and !(seller_id in ('s1', \"s2\")) and range(price, 10, 20)"
    )
    nn, stock, neg, rng = q.where.children
    assert isinstance(nn, NearestNeighbor) and nn.target_hits == 100 and nn.query_input == "q_user"
    assert stock == Compare("in_stock", "=", True)
    assert isinstance(neg, Not) and neg.child == In("seller_id", ("s1", "s2"))
    assert rng == Range("price", 10.0, 20.0)
    legacy = parse_yql(
        "select * from product where "
        '[{"targetHits": 200, "approximate": false}]nearestNeighbor(embedding, q)'
    )
    assert legacy.where.annotations == {"targetHits": 200, "approximate": False}
    quoted = parse_yql(
        "select * from product where "
        '({"targetHits": 10, "label": "q"}nearestNeighbor(embedding, q))'
    )
    assert quoted.where.label == "q"


def test_precedence_and_binds_tighter_than_or():
    q = parse_yql("select * from p where a = 1 or b = 2 and c = 3")
    assert isinstance(q.where, Or)
    assert q.where.children[0] == Compare("a", "=", 1.0)
    assert isinstance(q.where.children[1], And)


def test_rank_contains_in_param_and_text_operators():
    q = parse_yql(
        "select * from product where rank(({targetHits:10}nearestNeighbor(embedding, q_user)), "
        'category_path contains "home") and !(product_id in (@seen))'
    )
    rank, neg = q.where.children
    assert isinstance(rank, Rank) and rank.children[1] == Contains("category_path", ("home",))
    assert neg.child == In("product_id", (), "seen")
    assert parse_param_list('P1, "P2",P3') == ["P1", "P2", "P3"]
    t = parse_yql(
        'select * from product where title contains phrase("face", "serum") or userQuery()'
    )
    assert t.where.children[0] == Contains("title", ("face", "serum"), phrase=True)
    assert isinstance(t.where.children[1], UserQuery)
    ui = parse_yql('select * from product where ({defaultIndex: "title"})userInput(@q)').where
    assert (
        isinstance(ui, UserInput)
        and ui.param == "q"
        and ui.annotations == {"defaultIndex": "title"}
    )
    wa = parse_yql(
        "select * from product where "
        '{targetHits: 5}weakAnd(title contains "a", description contains "b")'
    ).where
    assert isinstance(wa, WeakAnd) and len(wa.children) == 2


def test_numbers_long_suffix_and_infinity():
    q = parse_yql("select * from p where created_at > 1700000000L and range(price, -Infinity, 5.5)")
    assert q.where.children[0] == Compare("created_at", ">", 1700000000.0, True)
    assert q.where.children[1] == Range("price", float("-inf"), 5.5)
    with pytest.raises(YqlError, match="32-bit"):
        parse_yql("select * from p where created_at > 17000000000")


@pytest.mark.parametrize(
    "yql",
    [
        "select * from product where",
        "select * product",
        "select * from product where price >",
        "select * from product where title contains",
        "select * from product where (true",
        "select * from product where true order price",
    ],
)
def test_malformed(yql):
    with pytest.raises(YqlError):
        parse_yql(yql)


@pytest.mark.parametrize(
    ("yql", "construct"),
    [
        (
            "select * from product where true | all(group(seller_id) each(output(count())))",
            "grouping",
        ),
        ('select * from product where wand(title, {"a": 1})', "wand"),
        ('select * from product where dotProduct(tags, {"a": 1})', "dotProduct"),
        ('select * from product where title contains fuzzy("x")', "fuzzy"),
        ('select * from product where title contains sameElement("x")', "sameElement"),
        ("select * from product where a = 1 or !(b = 2)", "negation directly under 'or'"),
        ('select * from product where {ranked2: true}title contains "x"', "annotation 'ranked2'"),
    ],
)
def test_unsupported(yql, construct):
    with pytest.raises(Unsupported) as exc:
        parse_yql(yql)
    assert str(exc.value) == construct


def test_shared_lexer_tokens_and_error_positions():
    # YQL and ranking expressions share vespa_app.engine.search.lexer; each keeps its messages
    from vespa_app.engine.search.expression import ExpressionError, parse_expression

    with pytest.raises(YqlError, match=r"Unexpected character '#' at position 33"):
        parse_yql("select * from product where a =  #")
    with pytest.raises(ExpressionError, match=r"unexpected character '#' at position 14"):
        parse_expression("attribute(n) + # 1")
    assert parse_yql("select * from product where  price <= 5 ;").where == Compare("price", "<=", 5)
