"""One HNSW graph (faiss IndexHNSWFlat) per indexed dense tensor field, fed in batches.

Why batches: a faiss insert costs ~0.5 ms at M=16, efConstruction=200 and is the bulk of the
write path, so the store's writer only appends the new row to a *pending* list (O(1)) and a
background merger thread inserts pending rows into the graph in chunks. Queries search the graph
and exact-search the pending rows, then the caller ranks the union by exact distance, so every
acknowledged put is visible to the next query with no loss of recall.

Labels (faiss ids) are insertion order; `label_to_row` maps them to segment rows, -1 for a label
whose document is gone since the graph was persisted. Rows are never reused: a replaced or
removed document leaves a dead label, excluded through the allow-list bitmap, and the graph is
rebuilt (reset and re-merged) when dead labels outnumber live ones.

Concurrency (spec §8: never rely on a library's thread-safety without a test):
- the store's single writer calls `add_pending`, `row_died` and `reset` (under the store's
  write lock, so no query runs then);
- queries call `search` (under the store's read lock) and share `_graph` for reading;
- the merger holds `_merge` while it inserts one chunk and `_graph` for writing only around
  `index.add`, so faiss never sees an insert concurrent with a search;
- `_pending_lock` guards the pending array, which the writer appends to and the merger reads.

Persistence (spec §8): `save` writes the graph, the document id of every label and a meta file
tagged with the store's sequence number; `load` maps labels back to rows by document id and
accepts a label only when the stored vector equals the document's current one, so a graph older
than the log is safe: changed documents become dead labels and the tail goes to pending.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vespa_app.engine.schema import Field

log = logging.getLogger(__name__)

CHUNK = 512  # rows per graph insert: bounds how long an insert holds queries off the graph
MAX_PENDING_CELLS = 4_000_000  # beyond this many pending floats the writer merges inline
REBUILD_MIN_DEAD = 1000
FORMAT_VERSION = 1


class _RWLock:
    """Many readers or one writer; writers preferred so a merge is not starved by queries."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writing or self._waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()


class VectorIndex:
    """HNSW graph plus exact-searched pending rows over one dense tensor field."""

    def __init__(self, field: Field, vectors: Callable[[np.ndarray], np.ndarray]):
        """`vectors(rows)` returns the stored vectors of segment rows (never mutated later)."""
        import faiss

        # One OpenMP thread while serving: faiss threads contend with request threads on small
        # machines (bulk builds at start-up raise it temporarily, see `build`).
        faiss.omp_set_num_threads(1)
        assert field.type.tensor is not None and field.hnsw is not None
        self.field = field
        self.dim = field.type.tensor.dims[0].size or 0
        self.metric = field.distance_metric
        self._faiss = faiss
        self._vectors = vectors
        self._graph = _RWLock()
        self._merge = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending = np.zeros(1024, dtype=np.int64)
        self._head = 0  # pending[head:tail] are rows not yet in the graph
        self._tail = 0
        self._l2r = np.zeros(1024, dtype=np.int64)
        self.n_labels = 0
        self.identity = True  # label i is row i for every label: bitmaps need no remapping
        self.dead = 0  # labels (or pending rows) whose document is gone
        self.live = 0  # rows with a vector whose document is alive
        self.max_pending = max(CHUNK, MAX_PENDING_CELLS // max(self.dim, 1))
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.on_merged: Callable[[VectorIndex], None] | None = None  # persistence hook
        self._new_index()

    # -- construction ----------------------------------------------------------------------

    def _new_index(self) -> None:
        faiss = self._faiss
        metric = faiss.METRIC_L2 if self.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
        assert self.field.hnsw is not None
        self.index = faiss.IndexHNSWFlat(self.dim, self.field.hnsw.max_links_per_node, metric)
        self.index.hnsw.efConstruction = self.field.hnsw.neighbors_to_explore_at_insert
        self.n_labels = 0
        self.identity = True

    def _prepare(self, vecs: np.ndarray) -> np.ndarray:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.metric == "angular":
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.where(norms == 0, 1, norms)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    @property
    def label_to_row(self) -> np.ndarray:
        return self._l2r[: self.n_labels]

    @property
    def pending_count(self) -> int:
        return self._tail - self._head

    def _append_labels(self, rows: np.ndarray) -> None:
        need = self.n_labels + len(rows)
        if need > len(self._l2r):
            grown = np.zeros(max(need, 2 * len(self._l2r)), dtype=np.int64)
            grown[: self.n_labels] = self._l2r[: self.n_labels]
            self._l2r = grown
        if self.identity and not (
            len(rows) == 0 or (rows[0] == self.n_labels and np.all(np.diff(rows) == 1))
        ):
            self.identity = False
        self._l2r[self.n_labels : need] = rows
        self.n_labels = need

    def build(self, rows: np.ndarray, threads: int | None = None) -> None:
        """Insert `rows` now (start-up): faiss may use `threads` OpenMP threads meanwhile."""
        if len(rows) == 0:
            return
        faiss = self._faiss
        if threads:
            faiss.omp_set_num_threads(threads)
        try:
            with self._merge:
                for start in range(0, len(rows), 65536):
                    part = rows[start : start + 65536]
                    vecs = self._prepare(self._vectors(part))
                    self._graph.acquire_write()
                    try:
                        self.index.add(vecs)
                        self._append_labels(part)
                    finally:
                        self._graph.release_write()
        finally:
            faiss.omp_set_num_threads(1)

    # -- writer side -----------------------------------------------------------------------

    def add_pending(self, row: int) -> None:
        """A new row with a vector (writer thread): visible to the next search at once."""
        with self._pending_lock:
            if self._tail == len(self._pending):
                live = self._pending[self._head : self._tail]
                grown = np.zeros(max(1024, 2 * len(live) + 1), dtype=np.int64)
                grown[: len(live)] = live
                self._pending, self._tail, self._head = grown, len(live), 0
            self._pending[self._tail] = row
            self._tail += 1
        self.live += 1
        if self.pending_count > self.max_pending:
            # feeding outruns the merger: merge here so pending (exact-searched by every query)
            # stays bounded; this paces the feed at the graph's insert rate.
            self.merge_some(CHUNK)
        else:
            self._start_merger()

    def row_died(self) -> None:
        """A row with a vector lost its document (writer thread)."""
        self.live -= 1
        self.dead += 1

    def needs_rebuild(self) -> bool:
        return self.dead >= max(REBUILD_MIN_DEAD, self.live)

    def reset(self, live_rows: np.ndarray) -> None:
        """Drop the graph and queue `live_rows` for insertion (writer thread; tombstone purge)."""
        with self._merge:
            self._graph.acquire_write()
            try:
                with self._pending_lock:
                    self._new_index()
                    self._pending = np.array(live_rows, dtype=np.int64)
                    self._head, self._tail = 0, len(live_rows)
                self.dead = 0
                self.live = len(live_rows)
            finally:
                self._graph.release_write()
        self._start_merger()

    # -- merger ----------------------------------------------------------------------------

    def _start_merger(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run_merger, name=f"hnsw-merge-{self.field.name}", daemon=True
            )
            self._thread.start()
        with self._wake:
            self._wake.notify()

    def _run_merger(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and self.pending_count == 0:
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                merged = self.merge_some(CHUNK)
                if merged and self.pending_count == 0 and self.on_merged is not None:
                    self.on_merged(self)
            except Exception:  # keep serving: pending rows stay exact-searched
                log.exception("merging into the HNSW graph of '%s' failed", self.field.name)
                with self._wake:
                    self._wake.wait(1.0)

    def merge_some(self, limit: int) -> int:
        """Insert up to `limit` pending rows into the graph; returns how many."""
        with self._merge:
            with self._pending_lock:
                rows = self._pending[self._head : min(self._tail, self._head + limit)].copy()
            if len(rows) == 0:
                return 0
            vecs = self._prepare(self._vectors(rows))
            self._graph.acquire_write()
            try:
                self.index.add(vecs)
                self._append_labels(rows)
                with self._pending_lock:
                    self._head += len(rows)
            finally:
                self._graph.release_write()
            return len(rows)

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending (benchmarks, tests); False on timeout."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self.pending_count:
            if end is not None and time.monotonic() > end:
                return False
            self._start_merger()
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()

    # -- queries ---------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        k: int,
        ef: int,
        allowed_rows: np.ndarray | None,
        *,
        everything: bool = False,
    ) -> np.ndarray:
        """Candidate rows: the graph's approximate top `k` plus the exact top `k` of pending.

        `allowed_rows` is a boolean mask over segment rows (it must exclude removed rows);
        `everything` says it allows every live row with a vector, so the graph needs no
        selector when it has no dead labels.
        """
        faiss = self._faiss
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        q = self._prepare(query.reshape(1, -1))
        self._graph.acquire_read()
        try:
            with self._pending_lock:
                pending = self._pending[self._head : self._tail].copy()
            n = self.n_labels
            found = np.zeros(0, dtype=np.int64)
            if n:
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(ef, k)
                keep_alive = None
                usable = True
                if allowed_rows is not None and not (everything and self.dead == 0):
                    if self.identity:
                        labels_ok = allowed_rows[:n]
                    else:
                        l2r = self._l2r[:n]
                        labels_ok = np.where(l2r >= 0, allowed_rows[np.maximum(l2r, 0)], False)
                    usable = bool(labels_ok.any())
                    keep_alive = np.packbits(labels_ok, bitorder="little")
                    params.sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(keep_alive))
                if usable:
                    _, labels = self.index.search(q, min(k, n), params=params)
                    labels = labels[0]
                    found = self._l2r[labels[labels >= 0]]
                del keep_alive
        finally:
            self._graph.release_read()
        if len(pending):
            if allowed_rows is not None:
                pending = pending[allowed_rows[pending]]
            if len(pending) > k:
                vecs = self._prepare(self._vectors(pending))
                scores = vecs @ q[0]
                if self.metric == "euclidean":
                    scores = 2 * scores - np.einsum("ij,ij->i", vecs, vecs)
                pending = pending[np.argpartition(-scores, k - 1)[:k]]
            found = np.concatenate([found, pending])
        return found

    # -- persistence -----------------------------------------------------------------------

    def _meta(self) -> dict:
        assert self.field.hnsw is not None
        return {
            "version": FORMAT_VERSION,
            "field": self.field.name,
            "dim": self.dim,
            "metric": self.metric,
            "max_links_per_node": self.field.hnsw.max_links_per_node,
            "neighbors_to_explore_at_insert": self.field.hnsw.neighbors_to_explore_at_insert,
        }

    def save(self, prefix: Path, seq: int, row_ids: Callable[[np.ndarray], list[str]]) -> None:
        """Write the graph, label ids ("" for dead) and meta tagged with `seq` (atomic renames).

        Holds the graph for reading: queries go on, inserts wait until the file is written.
        """
        faiss = self._faiss
        prefix.parent.mkdir(parents=True, exist_ok=True)
        graph_tmp = prefix.with_name(prefix.name + ".faiss.tmp")
        ids_tmp = prefix.with_name(prefix.name + ".ids.tmp")
        self._graph.acquire_read()
        try:
            n = self.n_labels
            ids = row_ids(self._l2r[:n])
            faiss.write_index(self.index, str(graph_tmp))
        finally:
            self._graph.release_read()
        ids_tmp.write_text("\n".join(ids))
        meta = dict(self._meta(), seq=seq, labels=n)
        meta_tmp = prefix.with_name(prefix.name + ".meta.tmp")
        meta_tmp.write_text(json.dumps(meta))
        # meta goes last: a crash between renames leaves an old meta whose label count or ids
        # disagree with the files, and `load` then rebuilds instead of trusting them.
        os.replace(graph_tmp, prefix.with_name(prefix.name + ".faiss"))
        os.replace(ids_tmp, prefix.with_name(prefix.name + ".ids"))
        os.replace(meta_tmp, prefix.with_name(prefix.name + ".meta"))

    def load(
        self, prefix: Path, max_seq: int, row_of: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray | None:
        """Adopt a persisted graph; returns the labelled rows, or None when unusable.

        `row_of(ids)` gives the current row of each id (-1 when absent). A label is kept only
        when its stored vector equals the current document's vector.
        """
        faiss = self._faiss
        try:
            meta = json.loads(prefix.with_name(prefix.name + ".meta").read_text())
            if meta.get("seq", 1 << 62) > max_seq or any(
                meta.get(k) != v for k, v in self._meta().items()
            ):
                log.info("%s: persisted graph does not match; rebuilding", prefix)
                return None
            ids_text = prefix.with_name(prefix.name + ".ids").read_text()
            ids = ids_text.split("\n") if meta["labels"] else []
            index = faiss.read_index(str(prefix.with_name(prefix.name + ".faiss")))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            log.info("%s: no usable persisted graph (%s); rebuilding", prefix, e)
            return None
        if len(ids) != meta["labels"] or index.ntotal != len(ids) or index.d != self.dim:
            log.warning("%s: persisted graph is inconsistent; rebuilding", prefix)
            return None
        rows = row_of(ids)
        storage = faiss.downcast_index(index.storage)
        stored = faiss.rev_swig_ptr(storage.get_xb(), index.ntotal * self.dim)
        stored = np.asarray(stored).reshape(index.ntotal, self.dim)
        ok = rows >= 0
        if ok.any():
            current = self._prepare(self._vectors(rows[ok]))
            same = np.all(current == stored[ok], axis=1)
            idx = np.flatnonzero(ok)
            ok[idx[~same]] = False
        rows = np.where(ok, rows, -1)
        self.index = index
        self.n_labels = 0
        self.identity = True
        self._append_labels(rows)
        self.identity = bool(ok.all()) and self.identity
        self.dead = int((~ok).sum())
        return rows[ok]
