"""In-memory search structures of one document type, kept current by store listener calls.

A `Segment` holds attribute columns (numpy), inverted indexes for string attributes and text
fields, dense vectors, and one HNSW graph (faiss, see hnsw.py) per tensor field with `index`.
Rows are never reused: a put of an existing id tombstones the old row and appends a new one, so
the HNSW graph only ever grows, removed documents are excluded at query time through an
allow-list bitmap, and the graph is rebuilt when tombstones outnumber live vectors.
"""

from __future__ import annotations

import math

import numpy as np

from vespa_app.engine.schema import Field, Schema, TensorType
from vespa_app.engine.search.hnsw import VectorIndex
from vespa_app.engine.search.tensors import Tensor, cast_cells
from vespa_app.engine.search.text import TextIndex

INITIAL_CAPACITY = 1024


def attribute_key(field: Field, value: object) -> object:
    """Key under which a string/int attribute value is indexed (case folded unless cased)."""
    if isinstance(value, str):
        return value if field.match == "cased" else value.lower()
    return value


MAX_MAPPED_COLUMNS = 256  # beyond this many labels a mapped attribute is ranked per hit


class MappedColumns:
    """A one-dimension mapped tensor attribute as a (rows x labels) matrix with a presence
    mask, so a phase can read every hit's cells at once. Rows are never reused, so a removed
    row's cells can stay (removed rows never match). Past MAX_MAPPED_COLUMNS labels the
    columns are dropped (`usable` False) and ranking reads the per-row dicts."""

    def __init__(self, capacity: int, dtype: type = np.float32):
        self.labels: dict[str, int] = {}
        self.values = np.zeros((capacity, 0), dtype=dtype)
        self.present = np.zeros((capacity, 0), dtype=bool)
        self.usable = True

    def grow(self, cap: int) -> None:
        if not self.usable:
            return
        values = np.zeros((cap, self.values.shape[1]), dtype=self.values.dtype)
        present = np.zeros((cap, self.present.shape[1]), dtype=bool)
        values[: len(self.values)] = self.values
        present[: len(self.present)] = self.present
        self.values, self.present = values, present

    def _column(self, label: str) -> int:
        col = self.labels.get(label)
        if col is None:
            col = self.labels[label] = len(self.labels)
            if col >= self.values.shape[1]:
                width = max(4, 2 * self.values.shape[1])
                extra = width - self.values.shape[1]
                self.values = np.pad(self.values, ((0, 0), (0, extra)))
                self.present = np.pad(self.present, ((0, 0), (0, extra)))
        return col

    def set(self, row: int, cells: dict[str, float]) -> None:
        if not self.usable:
            return
        new = sum(1 for k in cells if k not in self.labels)
        if len(self.labels) + new > MAX_MAPPED_COLUMNS:
            self.usable = False
            self.values = self.values[:0]
            self.present = self.present[:0]
            return
        self.present[row] = False
        for label, v in cells.items():
            col = self._column(label)
            self.values[row, col] = v
            self.present[row, col] = True


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
        # one-dimension mapped attributes also as columns (label -> column), for batch ranking
        self.mapped_columns: dict[str, MappedColumns] = {}
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
                        self.hnsw[f.name] = VectorIndex(f, self._vector_reader(f.name))
                else:
                    self.mapped[f.name] = {}
                    if len(tt.dims) == 1:
                        dtype = np.float64 if tt.cell_type == "double" else np.float32
                        self.mapped_columns[f.name] = MappedColumns(self.capacity, dtype)

    def _vector_reader(self, name: str):
        # reads through self.dense at call time: the array is replaced when the segment grows
        return lambda rows: self.dense[name][rows]

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
        for mc in self.mapped_columns.values():
            mc.grow(cap)
        self.capacity = cap

    def put(self, local_id: str, fields: dict) -> None:
        self.remove(local_id)
        row = self._append(local_id, fields)
        for name, vi in self.hnsw.items():
            if self.has_dense[name][row]:
                vi.add_pending(row)

    def bulk_put(
        self,
        docs: list[tuple[str, dict]],
        graphs: dict[str, np.ndarray] | None = None,
        threads: int | None = None,
    ) -> None:
        """Initial load into an empty segment, then build the graphs synchronously.

        `graphs` is filled by `load_graphs` callers: rows already covered by a persisted graph
        per field (only the rest is inserted). faiss may use `threads` OpenMP threads.
        """
        start = self.n_rows
        self.bulk_append(docs)
        self.build_graphs(np.arange(start, self.n_rows), graphs, threads)

    def bulk_append(self, docs) -> None:
        """Append documents without touching the graphs (follow with `build_graphs`)."""
        for local_id, fields in docs:
            self.remove(local_id)
            self._append(local_id, fields)

    def build_graphs(
        self,
        rows: np.ndarray,
        covered: dict[str, np.ndarray] | None = None,
        threads: int | None = None,
    ) -> None:
        for name, vi in self.hnsw.items():
            sel = rows[self.alive[rows] & self.has_dense[name][rows]]
            vi.live += len(sel)
            if covered and name in covered:
                sel = np.setdiff1d(sel, covered[name], assume_unique=True)
            vi.build(sel, threads)

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
                mc = self.mapped_columns.get(name)
                if mc is not None:
                    mc.set(row, cells[row])
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
        for name, vi in self.hnsw.items():
            if self.has_dense[name][row]:
                vi.row_died()
                if vi.needs_rebuild():
                    live = self.live_rows()
                    vi.reset(live[self.has_dense[name][live]])

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
