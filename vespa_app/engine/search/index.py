"""In-memory search structures of one document type, kept current by store listener calls.

A `Segment` holds attribute columns (numpy), inverted indexes for string attributes and text
fields, dense vectors, and one HNSW graph (faiss) per tensor field with `index`. Rows are never
reused: a put of an existing id tombstones the old row and appends a new one, so the HNSW graph
only ever grows, removed documents are excluded at query time through an allow-list bitmap,
and the graph is rebuilt when tombstones outnumber live vectors.
"""

from __future__ import annotations

import math

import numpy as np

from vespa_app.engine.schema import Field, Schema, TensorType
from vespa_app.engine.search.tensors import Tensor, cast_cells
from vespa_app.engine.search.text import TextIndex

INITIAL_CAPACITY = 1024
REBUILD_MIN_DEAD = 1000


def attribute_key(field: Field, value: object) -> object:
    """Key under which a string/int attribute value is indexed (case folded unless cased)."""
    if isinstance(value, str):
        return value if field.match == "cased" else value.lower()
    return value


class VectorIndex:
    """HNSW graph (faiss IndexHNSWFlat) over one dense tensor field; labels are insertion order."""

    def __init__(self, field: Field):
        import faiss

        # One thread: OpenMP threads contend with request threads on small machines and made
        # builds several times slower in measurements on the 2-core CI machine type.
        faiss.omp_set_num_threads(1)
        assert field.type.tensor is not None and field.hnsw is not None
        self.field = field
        self.dim = field.type.tensor.dims[0].size or 0
        self.metric = field.distance_metric
        self._faiss = faiss
        self.label_to_row = np.zeros(0, dtype=np.int64)
        self._new_index()

    def _new_index(self) -> None:
        faiss = self._faiss
        metric = faiss.METRIC_L2 if self.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
        assert self.field.hnsw is not None
        self.index = faiss.IndexHNSWFlat(self.dim, self.field.hnsw.max_links_per_node, metric)
        self.index.hnsw.efConstruction = self.field.hnsw.neighbors_to_explore_at_insert
        self.label_to_row = np.zeros(0, dtype=np.int64)

    def _prepare(self, vecs: np.ndarray) -> np.ndarray:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.metric == "angular":
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.where(norms == 0, 1, norms)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def add(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.index.add(self._prepare(vecs))
        self.label_to_row = np.concatenate([self.label_to_row, np.asarray(rows, dtype=np.int64)])

    def search(
        self, query: np.ndarray, k: int, ef: int, allowed_rows: np.ndarray | None
    ) -> np.ndarray:
        """Candidate rows (approximate); `allowed_rows` is a boolean mask over segment rows."""
        faiss = self._faiss
        n = len(self.label_to_row)
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef, k)
        keep_alive = None
        if allowed_rows is not None:
            allowed_labels = allowed_rows[self.label_to_row]
            if not allowed_labels.any():
                return np.zeros(0, dtype=np.int64)
            keep_alive = np.packbits(allowed_labels, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(keep_alive), faiss.swig_ptr(keep_alive))
        q = self._prepare(query.reshape(1, -1))
        _, labels = self.index.search(q, min(k, n), params=params)
        del keep_alive
        labels = labels[0]
        labels = labels[labels >= 0]
        return self.label_to_row[labels]


class Segment:
    """Search-side state of one document type."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.capacity = INITIAL_CAPACITY
        self.n_rows = 0
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.alive = np.zeros(self.capacity, dtype=bool)
        self.numeric: dict[str, np.ndarray] = {}
        self.inverted: dict[str, dict[object, set[int]]] = {}
        self.row_values: dict[str, dict[int, tuple]] = {}
        self.dense: dict[str, np.ndarray] = {}
        self.has_dense: dict[str, np.ndarray] = {}
        self.mapped: dict[str, dict[int, dict[str, float]]] = {}
        self.text: dict[str, TextIndex] = {}
        self.hnsw: dict[str, VectorIndex] = {}
        for f in schema.fields.values():
            kind = f.type.kind
            if f.is_text_index:
                self.text[f.name] = TextIndex()
            if not f.is_attribute:
                continue
            if kind in ("int", "long", "float", "double", "bool"):
                self.numeric[f.name] = np.full(self.capacity, np.nan)
            elif kind in ("string", "array"):
                self.inverted[f.name] = {}
                self.row_values[f.name] = {}
            elif kind == "tensor":
                tt = f.type.tensor
                assert tt is not None
                if tt.is_dense:
                    size = math.prod(tt.shape)
                    dtype = np.float64 if tt.cell_type == "double" else np.float32
                    self.dense[f.name] = np.zeros((self.capacity, size), dtype=dtype)
                    self.has_dense[f.name] = np.zeros(self.capacity, dtype=bool)
                    if f.hnsw is not None:
                        self.hnsw[f.name] = VectorIndex(f)
                else:
                    self.mapped[f.name] = {}

    # -- writes ----------------------------------------------------------------------------

    @property
    def live_count(self) -> int:
        return len(self.row_of)

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2

        def grow(a: np.ndarray, fill) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.alive = grow(self.alive, False)
        for k in self.numeric:
            self.numeric[k] = grow(self.numeric[k], np.nan)
        for k in self.dense:
            self.dense[k] = grow(self.dense[k], 0)
            self.has_dense[k] = grow(self.has_dense[k], False)
        self.capacity = cap

    def put(self, local_id: str, fields: dict) -> None:
        self.remove(local_id)
        row = self._append(local_id, fields)
        for name, vi in self.hnsw.items():
            if self.has_dense[name][row]:
                vi.add(np.array([row]), self.dense[name][row : row + 1])

    def bulk_put(self, docs: list[tuple[str, dict]]) -> None:
        """Initial load: one faiss add per field (multi-threaded inside faiss)."""
        start = self.n_rows
        for local_id, fields in docs:
            self.remove(local_id)
            self._append(local_id, fields)
        rows = np.arange(start, self.n_rows)
        for name, vi in self.hnsw.items():
            sel = rows[self.alive[rows] & self.has_dense[name][rows]]
            vi.add(sel, self.dense[name][sel])

    def _append(self, local_id: str, fields: dict) -> int:
        row = self.n_rows
        self._grow(row + 1)
        self.n_rows += 1
        self.ids.append(local_id)
        self.row_of[local_id] = row
        self.alive[row] = True
        for name, col in self.numeric.items():
            v = fields.get(name)
            col[row] = np.nan if v is None else float(v)
        for name, inv in self.inverted.items():
            v = fields.get(name)
            if v is None:
                continue
            f = self.schema.fields[name]
            values = tuple(v) if isinstance(v, list) else (v,)
            keys = tuple({attribute_key(f, x) for x in values})
            self.row_values[name][row] = keys
            for k in keys:
                inv.setdefault(k, set()).add(row)
        for name, mat in self.dense.items():
            v = fields.get(name)
            if v is None:
                continue
            mat[row] = np.asarray(v).reshape(-1)
            self.has_dense[name][row] = True
        for name, cells in self.mapped.items():
            v = fields.get(name)
            if v is not None:
                cells[row] = dict(v)
        for name, ti in self.text.items():
            ti.add(row, fields.get(name))
        return row

    def remove(self, local_id: str) -> None:
        row = self.row_of.pop(local_id, None)
        if row is None:
            return
        self.alive[row] = False
        for name, inv in self.inverted.items():
            for k in self.row_values[name].pop(row, ()):
                s = inv.get(k)
                if s is not None:
                    s.discard(row)
                    if not s:
                        del inv[k]
        for cells in self.mapped.values():
            cells.pop(row, None)
        for ti in self.text.values():
            ti.remove(row)
        self._maybe_rebuild()

    def _maybe_rebuild(self) -> None:
        for name, vi in self.hnsw.items():
            labels = len(vi.label_to_row)
            live = int(self.alive[vi.label_to_row].sum()) if labels else 0
            if labels - live >= max(REBUILD_MIN_DEAD, live):
                rows = vi.label_to_row[self.alive[vi.label_to_row]]
                vi._new_index()
                vi.add(rows, self.dense[name][rows])

    # -- reads -----------------------------------------------------------------------------

    def tensor_type(self, name: str) -> TensorType:
        tt = self.schema.fields[name].type.tensor
        assert tt is not None
        return tt

    def tensor_value(self, name: str, row: int) -> Tensor:
        tt = self.tensor_type(name)
        if name in self.dense:
            if not self.has_dense[name][row]:
                return Tensor.zeros(tt)
            return Tensor(tt, dense=self.dense[name][row].reshape(tt.shape))
        cells = self.mapped[name].get(row, {})
        return Tensor.from_cells(tt, {(k,): v for k, v in cells.items()})

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.n_rows])

    def vectors(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.dense[name][rows]

    def query_vector(self, name: str, t: Tensor) -> np.ndarray:
        assert t.dense is not None
        return cast_cells(t.dense.reshape(-1), self.tensor_type(name).cell_type)
