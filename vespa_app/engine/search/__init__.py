"""The /search/ side of the embedded engine (spec §4-§6).

`SearchEngine.search(url_params, body)` answers one query as `(status, json_body)`. It keeps a
`Segment` per document type current through the store's listener calls (made by the store's
single writer under its write lock) and executes each query under `store.reading()`, so a query
sees one consistent state of documents, attributes, text postings and HNSW graphs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vespa_app.engine.schema import PackageError, Schema
from vespa_app.engine.search.batch import Batch, per_hit
from vespa_app.engine.search.errors import QueryError, http_status, unsupported
from vespa_app.engine.search.executor import BATCH_ERRORS, Deadline, Hit, SchemaResult, execute
from vespa_app.engine.search.expression import ExpressionError
from vespa_app.engine.search.index import Segment
from vespa_app.engine.search.matching import Matcher, MatchSettings
from vespa_app.engine.search.params import Params
from vespa_app.engine.search.ranking import (
    CompiledProfile,
    Ctx,
    EvalError,
    OnnxRunner,
    QueryState,
    compile_profiles,
)
from vespa_app.engine.search.summaries import SummaryCache
from vespa_app.engine.search.tensors import Tensor, TensorError, parse_tensor_literal
from vespa_app.engine.search.yql import Query, Unsupported, YqlError, parse_yql
from vespa_app.engine.values import render_value

__all__ = ["SearchEngine"]

log = logging.getLogger(__name__)
SAVE_MIN_LABELS = 100_000

SECOND_RERANK = "ranking.secondPhase.rerankCount"
GLOBAL_RERANK = "ranking.globalPhase.rerankCount"


class SearchEngine:
    """Serves /search/ over the package's schemas and the document store."""

    def __init__(
        self,
        schemas: dict[str, Schema],
        store: Any,
        package_dir: Path,
        query_profile: dict[str, str],
    ):
        self.schemas = schemas
        self.store = store
        self.package_dir = Path(package_dir)
        self.query_profile = dict(query_profile)
        self.clusters = _content_clusters(self.package_dir, schemas)
        self.onnx = OnnxRunner()
        self.compiled: dict[str, dict[str, CompiledProfile]] = {}
        for name, schema in schemas.items():
            try:
                self.compiled[name] = compile_profiles(schema, self.onnx)
            except ExpressionError as e:
                raise PackageError(schema.path, _profile_line(schema, str(e)), str(e)) from None
        self.segments = {name: Segment(schema) for name, schema in schemas.items()}
        self.summaries = SummaryCache()
        self._stats_lock = threading.Lock()
        self.onnx_evaluations: dict[str, int] = {}
        data_dir = getattr(store, "data_dir", None)
        self.index_dir = None if data_dir is None else Path(data_dir) / "index"
        self._saved_labels: dict[tuple[str, str], int] = {}
        self._save_lock = threading.Lock()
        store.add_listener(self)
        with store.reading():
            for name, seg in self.segments.items():
                start = seg.n_rows
                seg.bulk_append(store.iter_documents(name))
                rows = np.arange(start, seg.n_rows)
                covered = self._load_graphs(name, seg)
                seg.build_graphs(rows, covered, threads=os.cpu_count())
                for field, vi in seg.hnsw.items():
                    vi.on_merged = self._merged_hook(name, field)
        # a graph built (or grown) at start-up is persisted in the background right away, so a
        # crash before the next save point does not cost the whole build again
        self._startup_saves = [
            threading.Thread(target=self._save_quietly, args=(name, field), daemon=True)
            for name, seg in self.segments.items()
            for field, vi in seg.hnsw.items()
            if self.index_dir is not None
            and vi.n_labels - self._saved_labels.get((name, field), 0) >= SAVE_MIN_LABELS
        ]
        for t in self._startup_saves:
            t.start()

    # -- graph persistence (spec §8) -------------------------------------------------------

    def _graph_prefix(self, doc_type: str, field: str) -> Path:
        assert self.index_dir is not None
        return self.index_dir / f"{doc_type}.{field}"

    def _load_graphs(self, doc_type: str, seg: Segment) -> dict[str, np.ndarray]:
        covered: dict[str, np.ndarray] = {}
        if self.index_dir is None:
            return covered

        def row_of(ids: list[str]) -> np.ndarray:
            return np.fromiter((seg.row_of.get(i, -1) for i in ids), np.int64, len(ids))

        for field, vi in seg.hnsw.items():
            rows = vi.load(self._graph_prefix(doc_type, field), self.store.sequence, row_of)
            if rows is not None:
                covered[field] = np.sort(rows)
                self._saved_labels[(doc_type, field)] = vi.n_labels
        return covered

    def _save_graph(self, doc_type: str, field: str) -> None:
        if self.index_dir is None:
            return
        seg = self.segments[doc_type]
        vi = seg.hnsw[field]

        def row_ids(rows: np.ndarray) -> list[str]:
            ids, alive = seg.ids, seg.alive
            return [ids[r] if r >= 0 and alive[r] else "" for r in rows.tolist()]

        with self._save_lock:
            seq = self.store.sequence
            vi.save(self._graph_prefix(doc_type, field), seq, row_ids)
            self._saved_labels[(doc_type, field)] = vi.n_labels

    def _save_quietly(self, doc_type: str, field: str) -> None:
        try:
            self._save_graph(doc_type, field)
        except OSError:
            log.exception("could not persist the HNSW graph of %s.%s", doc_type, field)

    def _merged_hook(self, doc_type: str, field: str):
        def hook(vi) -> None:
            # the merger just drained pending: persist when the graph grew by a quarter (and at
            # least SAVE_MIN_LABELS) since it was last written, so a restart after kill -9
            # inserts only a bounded tail instead of rebuilding the whole graph
            saved = self._saved_labels.get((doc_type, field), 0)
            if vi.n_labels - saved >= max(SAVE_MIN_LABELS, saved // 4):
                self._save_graph(doc_type, field)

        return hook

    def pending_vectors(self) -> int:
        """Acknowledged vectors not yet inserted into their HNSW graph."""
        return sum(vi.pending_count for seg in self.segments.values() for vi in seg.hnsw.values())

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Block until every pending vector is in its HNSW graph (benchmarks, tests)."""
        return all(
            vi.wait_merged(timeout) for seg in self.segments.values() for vi in seg.hnsw.values()
        )

    def close(self) -> None:
        """Stop the graph mergers and persist each graph (pending rows are the next tail)."""
        for t in self._startup_saves:
            t.join()
        for name, seg in self.segments.items():
            for field, vi in seg.hnsw.items():
                vi.stop()
                if vi.n_labels != self._saved_labels.get((name, field), 0):
                    try:
                        self._save_graph(name, field)
                    except OSError:
                        log.exception("could not persist the HNSW graph of %s.%s", name, field)

    # -- store listener --------------------------------------------------------------------

    def document_put(self, doc_type: str, local_id: str, fields: dict) -> None:
        seg = self.segments.get(doc_type)
        if seg is not None:
            seg.put(local_id, fields)

    def document_removed(self, doc_type: str, local_id: str) -> None:
        seg = self.segments.get(doc_type)
        if seg is not None:
            seg.remove(local_id)

    # -- queries ---------------------------------------------------------------------------

    def search(self, url_params: dict[str, str], body: dict | None) -> tuple[int, dict]:
        started = time.monotonic()
        try:
            params = Params(url_params, body, self.query_profile)
            return self._search(params, started)
        except QueryError as e:
            return http_status([e], 0), _error_body([e])

    def _search(self, params: Params, started: float) -> tuple[int, dict]:
        params.check_unsupported()
        yql_text = params.get("yql")
        if yql_text is None or not yql_text.strip():
            raise QueryError(4, "Could not create query from YQL: no 'yql' parameter given")
        try:
            query = parse_yql(yql_text)
        except YqlError as e:
            raise QueryError(4, f"Could not create query from YQL: {e}") from None
        except Unsupported as e:
            raise unsupported(str(e)) from None

        hits = params.int_of("hits", 10)
        offset = params.int_of("offset", 0)
        if query.limit is not None:
            offset = query.offset if query.offset is not None else offset
            hits = max(query.limit - offset, 0)
        elif query.offset is not None:
            offset = query.offset
        if hits > params.max_hits:
            raise QueryError(3, f"{hits} hits requested, configured limit: {params.max_hits}.")
        if offset > params.max_offset:
            raise QueryError(
                3, f"Offset of {offset} requested, configured limit: {params.max_offset}."
            )
        if hits < 0 or offset < 0:
            raise QueryError(4, "hits and offset must be non-negative")
        timeout = (
            query.timeout_ms / 1000 if query.timeout_ms is not None else params.timeout_seconds()
        )
        deadline = Deadline(timeout)

        schema_names = self._sources(query, params)
        profile_name = params.get("ranking.profile") or "default"
        errors: list[QueryError] = []
        results: list[SchemaResult] = []
        now = _now(params)
        trace_level = params.int_of("trace.level", 0)
        with self.store.reading():
            for name in schema_names:
                try:
                    results.append(
                        self._run_schema(
                            name, profile_name, query, params, hits, offset, now, deadline
                        )
                    )
                except QueryError as e:
                    if len(schema_names) > 1 and e.code in (3, 4) and e.source is None:
                        e.source = name
                    if e.code == 12 or len(schema_names) == 1:
                        raise
                    errors.append(e)
            search_done = time.monotonic()
            merged = self._merge(results, query, offset, hits)
            features = self._hit_features(results, merged)
            children = self._render_hits(results, merged, query, params, features)
        summary_done = time.monotonic()

        total = sum(r.total_count for r in results)
        root: dict[str, Any] = {"id": "toplevel", "relevance": 1.0, "fields": {"totalCount": total}}
        docs = sum(self.segments[n].live_count for n in schema_names)
        root["coverage"] = {
            "coverage": 100, "documents": docs, "full": True, "nodes": 1, "results": 1,
            "resultsFull": 1,
        }  # fmt: skip
        if errors:
            root["errors"] = [e.to_json() for e in errors]
        if children:
            root["children"] = children
        out: dict[str, Any] = {}
        if params.bool_of("presentation.timing"):
            out["timing"] = {
                "querytime": round(search_done - started, 6),
                "summaryfetchtime": round(summary_done - search_done, 6),
                "searchtime": round(summary_done - started, 6),
            }
        if trace_level >= 1:
            out["trace"] = {"children": self._trace(results, trace_level)}
        out["root"] = root
        with self._stats_lock:
            for r in results:
                for model, n in r.qs.onnx_runs.items():
                    self.onnx_evaluations[model] = self.onnx_evaluations.get(model, 0) + n
        if errors and not children:
            return http_status(errors, 0), out
        return 200, out

    def _sources(self, query: Query, params: Params) -> list[str]:
        names = list(self.schemas) if query.sources is None else list(query.sources)
        for n in names:
            if n not in self.schemas:
                valid = ", ".join(sorted(self.schemas))
                raise QueryError(
                    4, f"Could not resolve source ref '{n}'. Valid source refs are {valid}."
                )
        for key in ("model.restrict", "model.sources"):
            restrict = params.get(key)
            if restrict:
                wanted = [s.strip() for s in restrict.split(",") if s.strip()]
                for n in wanted:
                    if n not in self.schemas:
                        valid = ", ".join(sorted(self.schemas))
                        raise QueryError(
                            4, f"Could not resolve source ref '{n}'. Valid source refs are {valid}."
                        )
                names = [n for n in names if n in wanted]
        return names

    def _run_schema(
        self,
        name: str,
        profile_name: str,
        query: Query,
        params: Params,
        hits: int,
        offset: int,
        now: float,
        deadline: Deadline,
    ) -> SchemaResult:
        schema = self.schemas[name]
        compiled = self.compiled[name].get(profile_name)
        if compiled is None:
            if profile_name == "default" and profile_name in schema.rank_profiles:
                raise unsupported(f"rank profile 'default' of schema '{name}' (nativeRank)")
            raise QueryError(
                4, f"schema '{name}' does not contain requested rank profile '{profile_name}'"
            )
        segment = self.segments[name]
        inputs = _query_inputs(compiled, params)
        profile = compiled.profile
        settings = MatchSettings(
            approximate_threshold=_first(params.float_of("ranking.matching.approximateThreshold"),
                                         profile.approximate_threshold, 0.02),
            post_filter_threshold=_first(params.float_of("ranking.matching.postFilterThreshold"),
                                         profile.post_filter_threshold, 1.0),
            target_hits_max_adjustment_factor=_first(
                params.float_of("ranking.matching.targetHitsMaxAdjustmentFactor"),
                profile.target_hits_max_adjustment_factor, 20.0),
        )  # fmt: skip
        query_type = params.get("model.type") or "weakAnd"
        matcher = Matcher(
            schema, segment, params.values, params.get("model.queryString"), query_type,
            params.get("model.defaultIndex"), inputs, settings, profile_name,
        )  # fmt: skip
        match = matcher.match(query.where)
        qs = QueryState(segment=segment, inputs=inputs, now=now)
        second = params.get("ranking.secondPhase.rerankCount")
        glob = params.get("ranking.globalPhase.rerankCount")
        return execute(
            schema, segment, compiled, qs, match,
            offset=offset, hits=hits, order_by=query.order_by,
            drop_limit=params.float_of("ranking.rankScoreDropLimit"),
            second_rerank=None if second is None else params.int_of(SECOND_RERANK, 100),
            global_rerank=None if glob is None else params.int_of(GLOBAL_RERANK, 100),
            global_drop_limit=params.float_of("ranking.globalPhase.rankScoreDropLimit"),
            deadline=deadline,
        )  # fmt: skip

    @staticmethod
    def _merge(results: list[SchemaResult], query: Query, offset: int, hits: int) -> list[Hit]:
        all_hits = [h for r in results for h in r.hits]
        if len(results) > 1:
            if any(o != ("[relevance]", True) for o in query.order_by):
                all_hits.sort(key=lambda h: h.sort_key)
            else:
                all_hits.sort(key=lambda h: -h.relevance)
        return all_hits[offset : offset + hits]

    # -- rendering -------------------------------------------------------------------------

    def _hit_features(
        self, results: list[SchemaResult], merged: list[Hit]
    ) -> list[tuple[dict, dict] | None]:
        """Match and summary features of the returned hits, evaluated per schema in one batch
        (None for a hit whose features have to be evaluated per hit, at rendering)."""
        out: list[tuple[dict, dict] | None] = [None] * len(merged)
        for res in results:
            idx = [i for i, h in enumerate(merged) if h.schema == res.schema.name]
            mfb, sfb = res.compiled.match_features_batch, res.compiled.summary_features_batch
            if not idx or mfb is None or sfb is None or not (mfb or sfb):
                continue
            pos = np.array([merged[i].pos for i in idx], dtype=np.int64)
            batch = Batch(res.qs, Ctx(res.qs), pos, res.rows[pos])
            try:
                values = [(name, fn(batch)) for name, fn in mfb], [(n, f(batch)) for n, f in sfb]
            except BATCH_ERRORS:
                continue
            mfs, sfs = (_per_hit_dicts(part, len(idx)) for part in values)
            for i, mf, sf in zip(idx, mfs, sfs, strict=True):
                out[i] = (mf, sf)
        return out

    def _render_hits(
        self,
        results: list[SchemaResult],
        merged: list[Hit],
        query: Query,
        params: Params,
        features: list[tuple[dict, dict] | None],
    ) -> list[dict]:
        """The hits as Vespa renders them; per-schema work (summary plan, result, cluster) is
        done once, and the stored documents are read under one lock (the caller holds the
        store's read lock, so no write lands in between)."""
        by_schema = {r.schema.name: r for r in results}
        plans = {
            name: self._summary_plan(by_schema[name].schema, query, params)
            for name in dict.fromkeys(hit.schema for hit in merged)
        }
        local_ids = [by_schema[hit.schema].segment.ids[hit.row] for hit in merged]
        stored_docs = self.store.get_many(
            [(hit.schema, lid) for hit, lid in zip(merged, local_ids, strict=True)]
        )
        children = []
        # per schema, once: result, cluster, summary plan, id prefix, whether the hit id is the
        # document id, and the plan's cached renderings
        per_schema = {}
        for name, (wanted, docid, sdname) in plans.items():
            plain_id = docid and query.fields is None
            key = (name, tuple(n for n, _, _ in wanted), docid, sdname, plain_id)
            per_schema[name] = (
                by_schema[name], self.clusters[name], plans[name], f"id:{name}:{name}::",
                plain_id, self.summaries.plan(key),
            )  # fmt: skip
        for hit, local_id, stored, feats in zip(
            merged, local_ids, stored_docs, features, strict=True
        ):
            res, cluster, (wanted, with_docid, sddocname), prefix, plain_id, plan = per_schema[
                hit.schema
            ]
            found = None if stored is None else self.summaries.lookup(plan, local_id, stored)
            if found is None:
                doc_id = prefix + local_id
                rendered = _summary_fields(
                    hit.schema, doc_id, stored or {}, wanted, with_docid, sddocname
                )
                hit_id = doc_id if plain_id else _index_id(cluster, doc_id)
                if stored is not None:
                    self.summaries.remember(plan, local_id, stored, rendered, hit_id)
                fields = rendered
            else:
                fields, hit_id = found
            if feats is None:
                ctx = Ctx(res.qs).at(hit.pos, hit.row)
                mf = self._features(res.compiled.match_features, ctx)
                sf = self._features(res.compiled.summary_features, ctx)
            else:
                mf, sf = feats
            if mf:
                fields["matchfeatures"] = mf
            if res.compiled.summary_features:
                sf["vespa.summaryFeatures.cached"] = 0.0
                fields["summaryfeatures"] = sf
            children.append(
                {
                    "id": hit_id,
                    "relevance": _render_number(hit.relevance),
                    "source": cluster,
                    "fields": fields,
                }
            )
        return children

    @staticmethod
    def _summary_plan(
        schema: Schema, query: Query, params: Params
    ) -> tuple[list[tuple[str, Any, bool]], bool, bool]:
        """(fields to render with their type and whether the stored value renders as is,
        with documentid, with sddocname) for one schema and query."""
        summary_name = params.get("presentation.summary") or "default"
        if summary_name not in schema.document_summaries:
            raise QueryError(
                4,
                f"invalid presentation.summary={summary_name}: "
                f"unknown summary class in schema '{schema.name}'",
            )
        sddocname = False
        if query.fields is not None:
            names = [f for f in query.fields if f in schema.fields]
            with_docid = "documentid" in query.fields
        elif summary_name != "default":
            names = list(schema.document_summaries[summary_name].fields)
            with_docid = False
        else:
            names = list(schema.document_summaries["default"].fields)
            with_docid = sddocname = True
        wanted = []
        for name in names:
            ftype = schema.fields[name].type
            wanted.append((name, ftype, ftype.kind not in ("tensor", "array")))
        return wanted, with_docid, sddocname

    @staticmethod
    def _features(features: list, ctx: Ctx) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, fn in features:
            try:
                v = fn(ctx)
            except (EvalError, TensorError) as e:
                raise QueryError(18, f"Feature '{name}' failed: {e}") from None
            out[name] = _feature_json(v)
        return out

    def _trace(self, results: list[SchemaResult], level: int) -> list[dict]:
        out = []
        for r in results:
            runs = ", ".join(f"{m}={n}" for m, n in sorted(r.qs.onnx_runs.items())) or "none"
            out.append({"message": f"schema '{r.schema.name}' profile '{r.compiled.profile.name}': "
                                   f"matched {len(r.rows)}, onnx evaluations: {runs}"})  # fmt: skip
        return out


# -- helpers ------------------------------------------------------------------------------------


def _first(*values):
    return next(v for v in values if v is not None)


def _now(params: Params) -> float:
    v = params.get("ranking.freshness")
    if not v:
        return float(int(time.time()))
    v = v.strip()
    if v.startswith("now"):
        rest = v[3:].strip()
        try:
            delta = float(rest[1:]) if rest.startswith("-") else 0.0
        except ValueError:
            raise QueryError(4, f"Could not set 'ranking.freshness' to '{v}'") from None
        return float(int(time.time())) - delta
    try:
        return float(v)
    except ValueError:
        raise QueryError(4, f"Could not set 'ranking.freshness' to '{v}'") from None


def _query_inputs(compiled: CompiledProfile, params: Params) -> dict[str, float | Tensor]:
    """Declared inputs with their defaults, overridden by request values (§4.3)."""
    out: dict[str, float | Tensor] = {}
    declared = compiled.profile.inputs
    for name, inp in declared.items():
        if inp.default is not None:
            out[name] = _parse_input(name, inp.type, inp.default)
        elif inp.type is not None:
            out[name] = Tensor.zeros(inp.type)
        else:
            out[name] = 0.0
    for name, text in params.inputs().items():
        if name in declared:
            out[name] = _parse_input(name, declared[name].type, text)
        else:
            stripped = text.strip()
            if stripped[:1] in ("[", "{") or stripped.startswith("tensor"):
                raise QueryError(
                    3, f"Expected 'query({name})' to be a tensor, but it is the string '{text}'"
                )
            try:
                out[name] = float(stripped)
            except ValueError:
                if stripped.startswith("embed("):
                    raise unsupported("embed()") from None
                raise QueryError(
                    3, f"Could not set 'ranking.features.query({name})' to '{text}'"
                ) from None
    return out


def _parse_input(name: str, ttype, text: str) -> float | Tensor:
    stripped = text.strip()
    if stripped.startswith("embed("):
        raise unsupported("embed()")
    if ttype is None:
        try:
            return float(stripped)
        except ValueError:
            raise QueryError(
                3, f"Could not set 'ranking.features.query({name})' to '{text}': not a number"
            ) from None
    try:
        return parse_tensor_literal(stripped, ttype)
    except TensorError as e:
        raise QueryError(
            3, f"Could not set 'ranking.features.query({name})' to '{text}': {e}"
        ) from None


def _feature_column(value: object, n: int) -> list:
    """A batch feature value as one rendered JSON value per hit."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        column = value.astype(np.float64, copy=False)
        if np.isfinite(column).all():
            return column.tolist()
        return [_render_number(x) for x in column.tolist()]
    return [_feature_json(per_hit(value, j)) for j in range(n)]


def _summary_fields(
    schema_name: str,
    doc_id: str,
    stored: dict[str, Any],
    wanted: list[tuple[str, Any, bool]],
    with_docid: bool,
    sddocname: bool,
) -> dict[str, Any]:
    """A stored document's summary fields as Vespa renders them (no features)."""
    fields: dict[str, Any] = {}
    if sddocname:
        fields["sddocname"] = schema_name
    if with_docid:
        fields["documentid"] = doc_id
    for name, ftype, plain in wanted:
        value = stored.get(name)
        if value is None:
            continue
        if plain:  # numbers and bools as stored; an empty string is omitted
            if value != "" or ftype.kind != "string":
                fields[name] = value
            continue
        rendered = render_value(ftype, value)
        if rendered is not None:
            fields[name] = rendered
    return fields


def _per_hit_dicts(features: list[tuple[str, object]], n: int) -> list[dict[str, object]]:
    """Batch feature values (name, value over n hits) as one {name: rendered value} per hit."""
    if not features:
        return [{} for _ in range(n)]
    names = [name for name, _ in features]
    columns = [_feature_column(value, n) for _, value in features]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _feature_json(v: object) -> object:
    return v.to_json() if isinstance(v, Tensor) else _render_number(float(v))  # type: ignore[arg-type]


def _render_number(v: float) -> float | str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


@functools.lru_cache(maxsize=1 << 18)  # the same documents come back query after query
def _index_id(cluster: str, doc_id: str) -> str:
    """Vespa's hit id without a document id: index:<cluster>/0/<global id as 24 hex chars>."""
    return f"index:{cluster}/0/{hashlib.md5(doc_id.encode()).hexdigest()[:24]}"


def _error_body(errors: list[QueryError]) -> dict:
    return {
        "root": {
            "id": "toplevel",
            "relevance": 1.0,
            "fields": {"totalCount": 0},
            "errors": [e.to_json() for e in errors],
        }
    }


def _content_clusters(package_dir: Path, schemas: dict[str, Schema]) -> dict[str, str]:
    """Document type -> content cluster id (the hit `source`), from services.xml."""
    from vespa_app.engine import services

    try:
        types = services.load_services(package_dir).document_types
    except services.PackageError:
        types = {}
    return {name: types.get(name, "content") for name in schemas}


def _profile_line(schema: Schema, message: str) -> int:
    for p in schema.rank_profiles.values():
        if p.name in message:
            return p.line
    return 0
