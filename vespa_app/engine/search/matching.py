"""Evaluate a YQL where-tree over one segment: boolean masks, nearestNeighbor, query terms.

Spec §5, §5.1, §6.1, §6.2. The pre-filter of a nearestNeighbor is the whole tree with every
nearestNeighbor replaced by `true` and every `rank(...)` by its first operand.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

from vespa_app.engine.schema import Field, Schema
from vespa_app.engine.search.errors import QueryError, unsupported
from vespa_app.engine.search.index import Segment, attribute_key
from vespa_app.engine.search.tensors import Tensor
from vespa_app.engine.search.text import tokenize
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
    UserInput,
    UserQuery,
    WeakAnd,
    parse_param_list,
)

NEGATIVE_ONLY = "Can not search for only negative items"


def _check_simple_query(text: str) -> None:
    """Refuse query strings that Vespa's simple query language would read as more than words.

    Vespa's query tokenizer (container-search prelude/query/parser/Tokenizer) gives `+`, `-`,
    quotes, `:`, parentheses, brackets, `!`, `*`, `.`, `,`, `_` and others a meaning (required,
    excluded, phrase, field, weight, prefix, compound words), makes each symbol a word of its
    own and drops the rest as noise. The engine implements the plain subset: letters, digits
    and whitespace. Anything else is refused rather than silently read as words."""
    for c in text:
        if not (c.isspace() or unicodedata.category(c)[0] in "LNM"):
            raise unsupported(
                f"the character '{c}' in the query string (simple query language syntax: "
                "only words separated by spaces are supported)"
            )


MIN_EXPLORE = 100  # see ef_search


@dataclass
class MatchSettings:
    approximate_threshold: float = 0.02
    post_filter_threshold: float = 1.0
    target_hits_max_adjustment_factor: float = 20.0


@dataclass
class NNOperator:
    op: NearestNeighbor
    query: np.ndarray  # float64 query vector
    rows: np.ndarray  # matched rows (top-k), sorted
    exact: bool
    dist: np.ndarray | None = None  # exact distances of `rows`, reused by nn_features


@dataclass
class MatchResult:
    mask: np.ndarray  # bool over segment rows
    terms: dict[str, list[str]] = field(default_factory=dict)  # field -> query terms (bm25)
    nn: list[NNOperator] = field(default_factory=list)
    rows: np.ndarray | None = None  # the mask's rows when known without scanning it

    def matched_rows(self) -> np.ndarray:
        return np.flatnonzero(self.mask) if self.rows is None else self.rows


def distances(metric: str, vecs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact distance (double) of every row of `vecs` to `q` (spec §6.1)."""
    q = q.astype(np.float64)
    if metric in ("dotproduct", "prenormalized-angular"):
        # the cells are widened inside einsum's buffers: no double copy of the rows
        dots = np.einsum("ij,j->i", vecs, q, dtype=np.float64)
        if metric == "dotproduct":
            return -dots
        qn = float(q @ q)
        return 1.0 - dots / (qn if qn > 0 else 1.0)
    a = vecs.astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(np.sum((a - q) ** 2, axis=1))
    if metric == "angular":
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(q)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norms > 0, (a @ q) / np.where(norms > 0, norms, 1.0), 0.0)
        return np.arccos(np.clip(cos, -1.0, 1.0))
    if metric == "hamming":
        x = np.bitwise_xor(a.astype(np.int8).view(np.uint8), q.astype(np.int8).view(np.uint8))
        return np.unpackbits(x, axis=1).sum(axis=1).astype(np.float64)
    raise ValueError(metric)


def closeness_of(metric: str, dist: np.ndarray) -> np.ndarray:
    if metric == "dotproduct":
        return -dist
    return 1.0 / (1.0 + dist)


class Matcher:
    def __init__(
        self,
        schema: Schema,
        segment: Segment,
        params_raw: dict[str, str],
        query_string: str | None,
        query_type: str,
        default_index: str | None,
        inputs: dict[str, float | Tensor],
        settings: MatchSettings,
        profile_name: str,
    ):
        self.schema = schema
        self.seg = segment
        self.raw = params_raw
        self.query_string = query_string
        self.query_type = query_type
        self.default_index = default_index
        self.inputs = inputs
        self.settings = settings
        self.profile_name = profile_name
        self.n = segment.n_rows
        self.alive = segment.alive[: self.n].copy()
        self.terms: dict[str, list[str]] = {}
        self.nn_results: dict[int, NNOperator] = {}

    # -- entry -----------------------------------------------------------------------------

    def match(self, where: object) -> MatchResult:
        pruned = self._drop_empty_user_queries(where)
        if pruned is None:
            raise QueryError(3, "No query")
        where = pruned
        _check_negations(where)
        nn_ops = _collect_nn(where)
        if nn_ops:
            prefilter = self._eval(where, prefilter=True) & self.alive
            for op in nn_ops:
                self.nn_results[id(op)] = self._nearest(op, prefilter)
        self.terms = {}
        if isinstance(where, NearestNeighbor):
            # the whole tree is one nearestNeighbor (the common retrieval query): its rows are
            # the match, and a scan of a million-row mask per query is saved twice over
            rows = np.unique(self.nn_results[id(where)].rows)
            rows = rows[self.alive[rows]]
            mask = self._all(False)
            mask[rows] = True
            return MatchResult(mask, self.terms, list(self.nn_results.values()), rows=rows)
        mask = self._eval(where, prefilter=False) & self.alive
        return MatchResult(mask, self.terms, list(self.nn_results.values()))

    # -- user queries ----------------------------------------------------------------------

    def _user_text(self, node: UserQuery | UserInput) -> str | None:
        if isinstance(node, UserQuery):
            return self.query_string
        text = node.text if node.param is None else self.raw.get(node.param)
        if text is None:
            raise QueryError(3, f"No value for parameter '{node.param}' used by userInput()")
        return text

    def _drop_empty_user_queries(self, node: object) -> object | None:
        """The tree without user queries that yield no terms (no `query` parameter, or a string
        without words), or None when nothing is left.

        Vespa parses such a query string to a NullItem, and its QueryCanonicalizer removes
        null items from their parents, then parents left empty, and lifts a single child; a
        tree left empty is error 3 `No query` (container-search QueryCanonicalizer)."""
        if isinstance(node, (UserQuery, UserInput)):
            text = self._user_text(node)
            if text is None:
                return None
            _check_simple_query(text)
            return node if tokenize(text) else None
        if isinstance(node, (And, Or, Rank)):
            kids = [k for k in map(self._drop_empty_user_queries, node.children) if k is not None]
            if not kids:
                return None
            return kids[0] if len(kids) == 1 else type(node)(tuple(kids))
        if isinstance(node, Not):
            child = self._drop_empty_user_queries(node.child)
            return None if child is None else Not(child)
        return node

    # -- tree evaluation -------------------------------------------------------------------

    def _all(self, value: bool) -> np.ndarray:
        return np.full(self.n, value, dtype=bool)

    def _rows_mask(self, rows) -> np.ndarray:
        m = self._all(False)
        if len(rows):
            # an NN result is already an index array: iterating it in Python cost ~0.7 ms
            # per 10k rows
            idx = rows if isinstance(rows, np.ndarray) else np.fromiter(rows, np.int64, len(rows))
            m[idx] = True
        return m

    def _eval(self, node: object, prefilter: bool) -> np.ndarray:
        if isinstance(node, TrueNode):
            return self._all(node.value)
        if isinstance(node, And):
            pos = [c for c in node.children if not isinstance(c, Not)]
            neg = [c for c in node.children if isinstance(c, Not)]
            mask = self._all(True)
            for c in pos:
                mask &= self._eval(c, prefilter)
            for c in neg:
                mask &= ~self._eval(c.child, prefilter)
            return mask
        if isinstance(node, Or):
            mask = self._all(False)
            for c in node.children:
                mask |= self._eval(c, prefilter)
            return mask
        if isinstance(node, Not):
            raise QueryError(3, NEGATIVE_ONLY)
        if isinstance(node, Rank):
            first = self._eval(node.children[0], prefilter)
            if not prefilter:
                for c in node.children[1:]:
                    self._eval(c, prefilter)  # makes their terms/closeness available
            return first
        if isinstance(node, NearestNeighbor):
            if prefilter:
                return self._all(True)
            return self._rows_mask(self.nn_results[id(node)].rows)
        if isinstance(node, Compare):
            return self._compare(node)
        if isinstance(node, Range):
            col = self._numeric(node.field, "range")
            with np.errstate(invalid="ignore"):
                lo, hi = self._cast(node.field, node.low), self._cast(node.field, node.high)
                return (col >= lo) & (col <= hi)
        if isinstance(node, Contains):
            return self._contains(node)
        if isinstance(node, In):
            return self._in(node)
        if isinstance(node, (UserQuery, UserInput)):
            return self._user_query(node)
        if isinstance(node, WeakAnd):
            mask = self._all(False)
            for c in node.children:
                mask |= self._eval(c, prefilter)
            return mask
        raise unsupported(type(node).__name__)

    def _field(self, name: str) -> Field:
        f = self.schema.fields.get(name)
        if f is None:
            raise QueryError(4, f"Field '{name}' does not exist in schema '{self.schema.name}'")
        return f

    def _numeric(self, name: str, what: str) -> np.ndarray:
        f = self._field(name)
        col = self.seg.numeric.get(name)
        if col is None:
            raise QueryError(
                4,
                f"Could not create query from YQL: {what} on field '{name}' of type {f.type.spec}"
                f"{'' if f.is_attribute else ' that is not an attribute'}",
            )
        return col[: self.n]

    def _cast(self, name: str, value: float) -> float:
        """Query numbers meet float fields as float32, as the attribute compares them."""
        if self.schema.fields[name].type.kind == "float" and np.isfinite(value):
            return float(np.float32(value))
        return value

    def _compare(self, node: Compare) -> np.ndarray:
        f = self._field(node.field)
        col = self._numeric(node.field, f"'{node.op}'")
        if isinstance(node.value, bool):
            if f.type.kind != "bool":
                raise QueryError(
                    4, f"Could not create query from YQL: '{node.field}' is not a bool field"
                )
            return col == (1.0 if node.value else 0.0)
        v = self._cast(node.field, float(node.value))
        with np.errstate(invalid="ignore"):
            if node.op == "=":
                return col == v
            if node.op == "<":
                return col < v
            if node.op == "<=":
                return col <= v
            if node.op == ">":
                return col > v
            return col >= v

    def _contains(self, node: Contains) -> np.ndarray:
        fs = self.schema.fieldsets.get(node.field)
        names = (
            list(fs.fields)
            if fs is not None and node.field not in self.schema.fields
            else [node.field]
        )
        mask = self._all(False)
        for name in names:
            f = self._field(name)
            if f.is_text_index:
                tokens = [t for w in node.words for t in tokenize(w)]
                mask |= self._text_match(name, tokens)
            elif f.is_attribute and (
                f.type.kind == "string" or (f.type.element and f.type.element.kind == "string")
            ):
                if node.phrase and len(node.words) > 1:
                    raise unsupported("phrase on an attribute field")
                rows = self.seg.inverted[name].get(attribute_key(f, node.words[0]), set())
                mask |= self._rows_mask(rows)
            else:
                raise QueryError(
                    4,
                    "Could not create query from YQL: "
                    f"'contains' on field '{name}' of type {f.type.spec}",
                )
        return mask

    def _text_match(self, name: str, tokens: list[str]) -> np.ndarray:
        self.terms.setdefault(name, []).extend(tokens)
        ti = self.seg.text[name]
        if not tokens:
            return self._all(False)
        if len(tokens) == 1:
            return self._rows_mask(ti.rows_with(tokens[0]).keys())
        return self._rows_mask(ti.phrase_rows(tokens))

    def _in(self, node: In) -> np.ndarray:
        f = self._field(node.field)
        base = f.type.element.kind if f.type.kind == "array" and f.type.element else f.type.kind
        if base not in ("string", "int", "long") or not f.is_attribute:
            raise QueryError(
                4,
                "Could not create query from YQL: The in operator is only supported for "
                "integer and "
                f"string fields. The field {node.field} is not of these types",
            )
        values = list(node.values)
        if node.param is not None:
            values = parse_param_list(self.raw.get(node.param, ""))
        if base == "string":
            inv = self.seg.inverted[node.field]
            rows: set[int] = set()
            for v in values:
                rows |= inv.get(attribute_key(f, str(v)), set())
            return self._rows_mask(rows)
        try:
            ints = [int(v) for v in values]
        except ValueError:
            raise QueryError(
                4, f"Could not create query from YQL: non-integer value for '{node.field}'"
            ) from None
        if f.type.kind == "array":
            inv = self.seg.inverted[node.field]
            rows = set()
            for v in ints:
                rows |= inv.get(v, set())
            return self._rows_mask(rows)
        return np.isin(self.seg.numeric[node.field][: self.n], np.array(ints, dtype=np.float64))

    def _user_query(self, node: UserQuery | UserInput) -> np.ndarray:
        annots = node.annotations
        text = self._user_text(node) or ""
        if isinstance(node, UserQuery):
            grammar = self.query_type
        else:
            grammar = str(annots.get("grammar", "weakAnd"))
        grammar = {"weakand": "weakAnd", "all": "all", "any": "any"}.get(
            grammar.lower() if grammar else "", grammar
        )
        if grammar not in ("weakAnd", "all", "any"):
            raise unsupported(f"query type '{grammar}'")
        index = annots.get("defaultIndex") or self.default_index or "default"
        fs = self.schema.fieldsets.get(index)
        if fs is not None:
            names = list(fs.fields)
        elif index in self.schema.fields:
            names = [index]
        else:
            raise QueryError(4, f"Field '{index}' does not exist in schema '{self.schema.name}'")
        for name in names:
            if not self._field(name).is_text_index:
                raise unsupported(f"userQuery over the non-index field '{name}'")
        tokens = tokenize(text)
        if not tokens:
            return self._all(False)
        per_term = []
        for t in tokens:
            m = self._all(False)
            for name in names:
                m |= self._text_match(name, [t])
            per_term.append(m)
        if grammar == "all":
            out = self._all(True)
            for m in per_term:
                out &= m
            return out
        out = self._all(False)
        for m in per_term:
            out |= m
        return out

    # -- nearest neighbor ------------------------------------------------------------------

    def _scan(
        self, field: str, metric: str, candidates: np.ndarray, qv: np.ndarray, k: int
    ) -> np.ndarray:
        mat = self.seg.dense[field][: self.n]
        return scan_candidates(mat, metric, candidates, qv, k)

    def _nearest(self, op: NearestNeighbor, prefilter: np.ndarray) -> NNOperator:
        f = self._field(op.field)
        tt = f.type.tensor
        if (
            f.type.kind != "tensor"
            or tt is None
            or not f.is_attribute
            or len(tt.dims) != 1
            or tt.dims[0].size is None
        ):
            raise QueryError(
                4,
                "Could not create query from YQL: nearestNeighbor: "
                f"field '{op.field}' is not a tensor "
                "attribute with one indexed dimension",
            )
        for key in ("targetHits", "totalTargetHits"):
            if key in op.annotations and not isinstance(op.annotations[key], int):
                raise QueryError(4, f"Could not create query from YQL: {key} must be an integer")
        k = op.target_hits
        if k <= 0:
            raise QueryError(
                4,
                "Could not create query from YQL: nearestNeighbor item must have a positive "
                "'targetHits' annotation",
            )
        q = self.inputs.get(op.query_input)
        if not isinstance(q, Tensor) or q.type.dims != tt.dims:
            raise QueryError(
                4,
                "Could not create query from YQL: nearestNeighbor: query("
                + op.query_input
                + f") must be declared in rank profile '{self.profile_name}' with type {tt.spec}"
                + (
                    ""
                    if q is None
                    else f" (it has type {q.type.spec if isinstance(q, Tensor) else 'double'})"
                ),
            )
        qv = self.seg.query_vector(op.field, q).astype(np.float64)
        candidates = prefilter & self.seg.has_dense[op.field][: self.n]
        n_cand = int(np.count_nonzero(candidates))  # counting is ~10x cheaper than listing
        live = max(self.seg.live_count, 1)
        ratio = n_cand / live
        approximate = bool(op.annotations.get("approximate", True)) and op.field in self.seg.hnsw
        metric = f.distance_metric
        exact = not approximate or ratio < self.settings.approximate_threshold
        vi = self.seg.hnsw.get(op.field)
        explore = int(op.annotations.get("hnsw.exploreAdditionalHits", 0))
        scanned = None
        if not exact and f.hnsw is not None and metric in SCAN_METRICS:
            links = f.hnsw.max_links_per_node
            if ef_search(k, explore) * links >= n_cand:
                # The graph would visit about as many vectors as there are candidates: one
                # BLAS scan is far cheaper and returns the exact top k, which is what the
                # approximate search approximates (spec §6.2 compares them by recall).
                scanned = self._scan(op.field, metric, candidates, qv, k)
        if scanned is not None:
            rows, exact = scanned, True
        elif exact:
            if metric in SCAN_METRICS and n_cand > 4 * k:
                rows = self._scan(op.field, metric, candidates, qv, k)
            else:
                rows = np.flatnonzero(candidates)
        else:
            assert vi is not None
            if ratio > self.settings.post_filter_threshold:
                want = int(
                    min(k / max(ratio, 1e-9), k * self.settings.target_hits_max_adjustment_factor)
                )
                found = vi.search(qv, want, ef_search(want, explore), self.alive)
                rows = found[candidates[found]]
            else:
                ef = ef_search(k, explore)
                everything = n_cand == vi.live
                if not everything and ratio < 1.0:
                    # a restrictive allow-list leaves HNSW fewer usable paths: explore wider
                    ef = int(min(n_cand, ef / max(ratio, 0.05)))
                rows = vi.search(qv, k, ef, candidates, everything=everything)
        if len(rows) == 0:
            return NNOperator(op, qv, np.zeros(0, dtype=np.int64), exact)
        dist = distances(metric, self.seg.vectors(op.field, rows), qv)
        threshold = op.annotations.get("distanceThreshold")
        if threshold is not None:
            keep = dist <= float(threshold)
            rows, dist = rows[keep], dist[keep]
        if len(rows) > k:
            kth = np.partition(dist, k - 1)[k - 1]
            keep = dist <= kth  # ties at the boundary included
            rows, dist = rows[keep], dist[keep]
        order = np.argsort(rows)
        return NNOperator(op, qv, rows[order], exact, dist[order])


SCAN_METRICS = ("prenormalized-angular", "dotproduct", "angular", "euclidean")
SCAN_MARGIN = 1e-4  # relative slack over float32 rounding when picking scan candidates


def scan_candidates(
    mat: np.ndarray, metric: str, candidates: np.ndarray, q: np.ndarray, k: int
) -> np.ndarray:
    """Rows that hold the exact top `k` of the candidate rows of `mat` (plus a few more).

    Distances are ranked in float32 (one matrix-vector product), so every row whose float32
    distance lies within a margin of the k-th is kept; the caller recomputes them in double
    and keeps the exact top k, so the float32 rounding never changes which rows are returned.
    """
    q32 = q.astype(np.float32)
    with np.errstate(all="ignore"):
        dots = mat @ q32  # float32
        if metric == "euclidean":
            sq = np.einsum("ij,ij->i", mat, mat, dtype=np.float64)
            approx = sq - 2 * dots.astype(np.float64)
            scale = float(q @ q) + float(sq[candidates].max(initial=0.0))
        elif metric == "angular":
            norms = np.sqrt(np.einsum("ij,ij->i", mat, mat, dtype=np.float64))
            dots64 = dots.astype(np.float64)
            approx = -np.where(norms > 0, dots64 / np.where(norms > 0, norms, 1.0), 0.0)
            scale = 1.0
        else:  # prenormalized-angular and dotproduct both rank by -q.a, kept in float32
            approx = np.negative(dots, out=dots)
            # over every row, not just candidates: a larger scale only widens the margin
            scale = float(np.abs(approx).max(initial=0.0))
    approx[~candidates] = np.inf
    n_cand = int(np.count_nonzero(candidates))
    if n_cand <= k:
        return np.flatnonzero(candidates)
    kth = float(np.partition(approx, k - 1)[k - 1])
    margin = SCAN_MARGIN * (abs(kth) + scale + 1.0)
    # float32 rounding of kth + margin is ~1e-7 relative: far inside the 1e-4 margin
    return np.flatnonzero(approx <= kth + margin)


def ef_search(target_hits: int, explore_additional: int) -> int:
    """HNSW exploration (faiss efSearch) for an unfiltered search of `target_hits` neighbours.

    Vespa explores targetHits + hnsw.exploreAdditionalHits. The engine does the same but never
    below MIN_EXPLORE: faiss' graph at M=16 needs about 100 candidates for recall@10 >= 0.95
    (benchmarks/results/vespa_scale.json), and exploring 100 costs well under a millisecond.
    """
    return max(target_hits + explore_additional, MIN_EXPLORE)


def _collect_nn(node: object) -> list[NearestNeighbor]:
    out: list[NearestNeighbor] = []

    def walk(n: object) -> None:
        if isinstance(n, NearestNeighbor):
            out.append(n)
        for attr in ("children",):
            for c in getattr(n, attr, ()):
                walk(c)
        if isinstance(n, Not):
            walk(n.child)

    walk(node)
    return out


def _check_negations(node: object) -> None:
    """A where (or an and) made only of negations cannot be searched (error 3)."""
    if isinstance(node, Not):
        raise QueryError(3, NEGATIVE_ONLY)
    if isinstance(node, And):
        if all(isinstance(c, Not) for c in node.children):
            raise QueryError(3, NEGATIVE_ONLY)
        for c in node.children:
            _check_negations(c.child if isinstance(c, Not) else c)
        return
    for c in getattr(node, "children", ()):
        _check_negations(c)


def nn_features(result: MatchResult, schema: Schema, segment: Segment, rows: np.ndarray):
    """closeness/distance arrays over `rows` for every field and label with a nearestNeighbor."""
    closeness: dict[tuple[str, str], np.ndarray] = {}
    dist_out: dict[tuple[str, str], np.ndarray] = {}
    for nn in result.nn:
        f = schema.fields[nn.op.field]
        has = segment.has_dense[nn.op.field][rows]
        d = np.full(len(rows), np.inf)
        todo = has
        if nn.dist is not None and len(nn.rows):
            # the operator's own matches already have their exact distance
            at = np.minimum(np.searchsorted(nn.rows, rows), len(nn.rows) - 1)
            known = has & (nn.rows[at] == rows)
            d[known] = nn.dist[at[known]]
            todo = has & ~known
        if todo.any():
            d[todo] = distances(
                f.distance_metric, segment.vectors(nn.op.field, rows[todo]), nn.query
            )
        c = np.zeros(len(rows))
        c[has] = closeness_of(f.distance_metric, d[has])
        d = np.where(has, d, 1.7976931348623157e308)
        keys = [("field", nn.op.field)]
        if nn.op.label:
            keys.append(("label", nn.op.label))
        for key in keys:
            if key in closeness:
                better = c > closeness[key]
                closeness[key] = np.where(better, c, closeness[key])
                dist_out[key] = np.where(better, d, dist_out[key])
            else:
                closeness[key], dist_out[key] = c, d
    return closeness, dist_out
