"""Match and rank one schema for one query: first-phase, drop limit, second-phase with
rescaling, `order by`, and the container-side global-phase (spec §6.3,
docs.vespa.ai/en/ranking/phased-ranking.html)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vespa_app.engine.schema import Schema
from vespa_app.engine.search.batch import Batch, Fallback
from vespa_app.engine.search.batch import scores as batch_scores
from vespa_app.engine.search.errors import QueryError, unsupported
from vespa_app.engine.search.index import Segment
from vespa_app.engine.search.matching import MatchResult, nn_features
from vespa_app.engine.search.ranking import CompiledProfile, Ctx, EvalError, QueryState
from vespa_app.engine.search.tensors import TensorError, scalar_of

DEFAULT_RERANK = 100
KEEP_RANK_COUNT = 10000  # first-phase keep-rank-count default
CHECK_EVERY = 64
BATCH_CHUNK = 16384  # hits per batch evaluation


@dataclass
class Hit:
    schema: str
    row: int
    pos: int
    relevance: float
    sort_key: tuple = ()


@dataclass
class SchemaResult:
    schema: Schema
    segment: Segment
    compiled: CompiledProfile
    qs: QueryState
    rows: np.ndarray  # matched rows; positions index this
    hits: list[Hit]  # sorted, at most offset + hits
    total_count: int


class Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise QueryError(12, f"Timed out after {self.seconds * 1000:.0f} ms")


def _score(fn, ctx: Ctx) -> float:
    try:
        return scalar_of(fn(ctx))  # type: ignore[arg-type]
    except (EvalError, TensorError) as e:
        raise QueryError(18, f"Ranking expression failed: {e}") from None


# Anything the batch path cannot do for these values: the per-hit path gives the result or
# Vespa's error message.
BATCH_ERRORS = (Fallback, EvalError, TensorError, ValueError, IndexError, TypeError)


def _evaluate(
    fn,
    qs: QueryState,
    rows: np.ndarray,
    positions: np.ndarray,
    deadline: Deadline,
    batch_fn=None,
    window: bool = False,
) -> np.ndarray:
    """One score per position; `window` gives hit i the global-phase window index i."""
    if batch_fn is not None and len(positions):
        try:
            # hits are independent (normalizers never batch), so chunks bound the memory of
            # per-hit tensors over a large match set
            parts = []
            for start in range(0, len(positions), BATCH_CHUNK):
                pos = positions[start : start + BATCH_CHUNK]
                win = np.arange(start, start + len(pos)) if window else None
                batch = Batch(qs, Ctx(qs), pos, rows[pos], win)
                parts.append(batch_scores(batch_fn(batch), len(pos)))
                deadline.check()
            return np.concatenate(parts)
        except BATCH_ERRORS:
            pass
    ctx = Ctx(qs)
    out = np.empty(len(positions), dtype=np.float64)
    for i, pos in enumerate(positions):
        if i % CHECK_EVERY == 0:
            deadline.check()
        out[i] = _score(fn, ctx.at(int(pos), int(rows[pos]), i if window else 0))
    return out


def _rescale(scores: np.ndarray, top: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Shift the scores outside `top` so they stay below the rescored hits (§6.3 step 5)."""
    if len(top) == 0:
        return
    i_low, i_high = float(old.min()), float(old.max())
    n_low, n_high = float(new.min()), float(new.max())
    if i_low > n_low:
        scale = max(n_high - n_low, 1.0) / max(i_high - i_low, 1.0)
        mask = np.ones(len(scores), dtype=bool)
        mask[top] = False
        scores[mask] = scores[mask] * scale + (n_low - i_low * scale)
    scores[top] = new


def _order(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices sorted by score descending; ties by row (document order)."""
    return np.lexsort((rows, -scores))


def _top_order(scores: np.ndarray, rows: np.ndarray, m: int) -> np.ndarray:
    """The first `m` indices of `_order` (all of them when m covers most hits): only the hits
    scoring at least the m-th best score are sorted, ties at the boundary included."""
    n = len(scores)
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    if m * 4 >= n or np.isnan(scores).any():
        return _order(scores, rows)[:m]
    kth = np.partition(-scores, m - 1)[m - 1]
    cand = np.flatnonzero(-scores <= kth)
    return cand[_order(scores[cand], rows[cand])][:m]


def execute(
    schema: Schema,
    segment: Segment,
    compiled: CompiledProfile,
    qs: QueryState,
    match: MatchResult,
    *,
    offset: int,
    hits: int,
    order_by: list[tuple[str, bool]],
    drop_limit: float | None,
    second_rerank: int | None,
    global_rerank: int | None,
    global_drop_limit: float | None,
    deadline: Deadline,
) -> SchemaResult:
    profile = compiled.profile
    rows = match.matched_rows()
    qs.closeness, qs.distance = nn_features(match, schema, segment, rows)
    n_docs = segment.live_count
    for fname in compiled.uses_bm25:
        terms = match.terms.get(fname)
        if terms:
            qs.bm25[fname] = segment.text[fname].bm25(rows, terms, n_docs)
    if compiled.first_phase is None:
        raise unsupported(f"rank profile '{profile.name}' without first-phase (nativeRank)")
    sorting = [o for o in order_by if o != ("[relevance]", True)]
    has_global = compiled.global_phase is not None
    R = (
        global_rerank
        if global_rerank is not None
        else (profile.global_phase.rerank_count or DEFAULT_RERANK)
    )
    if sorting and has_global and R > 0:
        raise QueryError(3, "Sorting is not supported with global phase")
    if sorting and compiled.second_phase is not None:
        raise unsupported("order by with a second-phase rank profile")
    positions = np.arange(len(rows))
    deadline.check()
    first = _evaluate(
        compiled.first_phase, qs, rows, positions, deadline, compiled.first_phase_batch
    )
    qs.first_phase = first
    limit = drop_limit if drop_limit is not None else profile.first_phase.rank_score_drop_limit
    keep = positions if limit is None else positions[first > limit]
    total = len(keep)
    scores = first.copy()

    if compiled.second_phase is not None and not sorting:
        order = keep[_order(scores[keep], rows[keep])]
        count = (
            second_rerank
            if second_rerank is not None
            else (profile.second_phase.rerank_count or DEFAULT_RERANK)
        )
        top = order[:count]
        second = np.full(len(rows), np.nan)
        qs.second_phase = second
        if len(top):
            new = _evaluate(
                compiled.second_phase, qs, rows, top, deadline, compiled.second_phase_batch
            )
            second[top] = new
            old = scores[top].copy()
            sub = scores[keep]
            idx_in_keep = np.searchsorted(keep, top)
            _rescale(sub, idx_in_keep, old, new)
            scores[keep] = sub
            limit2 = profile.second_phase.rank_score_drop_limit
            if limit2 is not None:
                # As proton's hit collector: only the hits it keeps scores for (the best
                # max(offset + hits, rerank-count, keep-rank-count) by first phase) survive a
                # second-phase drop limit, judged on their final score (second-phase, or
                # rescaled first-phase); totalCount counts the survivors.
                array = max(
                    offset + hits, count, profile.first_phase.keep_rank_count or KEEP_RANK_COUNT
                )
                kept = order[:array]
                keep = np.sort(kept[scores[kept] > limit2])
                total = len(keep)
    else:
        qs.second_phase = first

    want = offset + hits
    if sorting:
        keys = []
        for name, desc in reversed(sorting):
            if name == "[relevance]":
                col = scores[keep]
            else:
                f = schema.fields.get(name)
                if f is None or name not in segment.numeric:
                    if f is not None and f.type.kind in ("string", "array"):
                        raise unsupported(f"order by the string field '{name}'")
                    raise QueryError(4, f"Could not create query from YQL: cannot sort on '{name}'")
                col = segment.numeric[name][rows[keep]]
            col = np.where(np.isnan(col), np.inf, -col if desc else col)
            keys.append(col)
        keys.insert(0, rows[keep])
        order = keep[np.lexsort(keys)]
        chosen = order[:want]
        out = [
            Hit(
                schema.name,
                int(rows[p]),
                int(p),
                float(first[p]),
                _sort_key(segment, sorting, rows[p], first[p]),
            )
            for p in chosen
        ]
        return SchemaResult(schema, segment, compiled, qs, rows, out, total)

    needed = max(want, R) if has_global and R > 0 else want
    order = keep[_top_order(scores[keep], rows[keep], needed)]
    if has_global and R > 0:
        window = order[: max(want, R)]
        top = window[:R]
        deadline.check()
        _normalize(compiled, qs, rows, top, deadline)
        old = scores[top].copy()
        new = _evaluate(
            compiled.global_phase, qs, rows, top, deadline, compiled.global_phase_batch, window=True
        )
        win_scores = scores[window].copy()
        _rescale(win_scores, np.arange(len(top)), old, new)
        glimit = (
            global_drop_limit
            if global_drop_limit is not None
            else profile.global_phase.rank_score_drop_limit
        )
        if glimit is not None:
            kept = win_scores > glimit
            total -= int((~kept).sum())
            window, win_scores = window[kept], win_scores[kept]
        resort = np.lexsort((rows[window], -win_scores))
        window, win_scores = window[resort], win_scores[resort]
        return SchemaResult(
            schema, segment, compiled, qs, rows, _hits(schema.name, rows, window, win_scores, want),
            total,
        )  # fmt: skip

    picked = order[:want]
    return SchemaResult(
        schema, segment, compiled, qs, rows, _hits(schema.name, rows, picked, scores[picked], want),
        total,
    )  # fmt: skip


def _hits(
    schema_name: str, rows: np.ndarray, positions: np.ndarray, scores: np.ndarray, want: int
) -> list[Hit]:
    """Hit objects for the first ``want`` positions (numpy values converted in one pass each:
    per-element int()/float() cost ~1 ms per 500 hits)."""
    positions = positions[:want]
    return [
        Hit(schema_name, row, pos, score)
        for row, pos, score in zip(
            rows[positions].tolist(), positions.tolist(), scores[:want].tolist(), strict=True
        )
    ]


def _sort_key(segment: Segment, sorting, row: int, relevance: float) -> tuple:
    key = []
    for name, desc in sorting:
        v = relevance if name == "[relevance]" else float(segment.numeric[name][row])
        v = np.inf if np.isnan(v) else (-v if desc else v)
        key.append(v)
    return tuple(key)


def _normalize(
    compiled: CompiledProfile, qs: QueryState, rows: np.ndarray, top: np.ndarray, deadline: Deadline
) -> None:
    """Global-phase normalizers over the R rescored hits (§6.3 step 3)."""
    ctx = Ctx(qs)
    for norm in compiled.normalizers:
        vals = np.empty(len(top))
        for i, p in enumerate(top):
            vals[i] = _score(norm.arg, ctx.at(int(p), int(rows[p]), i))
        if norm.kind == "normalize_linear":
            lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 0.0)
            qs.normalized[norm.slot] = (vals - lo) / (hi - lo) if hi > lo else np.zeros(len(vals))
        else:
            ranks = np.empty(len(vals))
            ranks[np.lexsort((np.arange(len(vals)), -vals))] = np.arange(1, len(vals) + 1)
            qs.normalized[norm.slot] = 1.0 / (norm.k + ranks)
        deadline.check()
