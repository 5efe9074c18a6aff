"""Durable document store: log, group commit, replay, torn tail, snapshots, package changes (§8)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vespa_app.engine.schema import FieldType, load_schemas
from vespa_app.engine.store import HEADER, DocumentStore, Overloaded, StoreError, _encode_record
from vespa_app.engine.updates import parse_update

from .conftest import DOCS_PACKAGE


@pytest.fixture(scope="module")
def schemas() -> dict:
    return load_schemas(DOCS_PACKAGE)


def open_store(path: Path, schemas: dict, **kwargs) -> DocumentStore:
    return DocumentStore(path, schemas, **kwargs)


def product(i: int) -> dict:
    return {
        "title": f"t{i}",
        "price": float(np.float32(i / 10)),
        "embedding": np.full(4, i, dtype=np.float32),
    }


def crash(store: DocumentStore) -> None:
    """Stop like a killed process: no final snapshot, only the fsynced log survives."""
    store._queue.put(None)
    store._writer.join()
    fcntl.flock(store._lock_fd, fcntl.LOCK_UN)
    os.close(store._lock_fd)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def document_put(self, doc_type: str, local_id: str, fields: dict) -> None:
        self.events.append(("put", doc_type, local_id, fields.get("title")))

    def document_removed(self, doc_type: str, local_id: str) -> None:
        self.events.append(("removed", doc_type, local_id))


def test_writes_are_durable_and_replayed(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    futures = [store.put("product", f"P{i}", product(i)) for i in range(50)]
    for f in futures:
        f.result(10)
    store.remove("product", "P3").result(10)
    ops, _ = parse_update(schemas["product"], "product", {"price": {"increment": 1}}, False)
    store.update("product", "P4", ops, create=False).result(10)
    crash(store)
    assert not (tmp_path / "snapshot.bin").exists()

    again = open_store(tmp_path, schemas)
    assert again.count("product") == 49
    assert again.get("product", "P3") is None
    assert again.get("product", "P4")["price"] == float(np.float32(np.float32(0.4) + 1.0))
    np.testing.assert_array_equal(
        again.get("product", "P7")["embedding"], np.full(4, 7, dtype=np.float32)
    )
    assert again.get("product", "P7")["embedding"].dtype == np.float32
    again.close()


def test_get_many_reads_like_get_in_order(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    for i in range(5):
        store.put("product", f"P{i}", product(i)).result(10)
    keys = [("product", "P3"), ("product", "missing"), ("product", "P0"), ("nosuchtype", "P1")]
    got = store.get_many(keys)
    assert got == [store.get(t, i) for t, i in keys]
    assert [d["title"] if d else None for d in got] == ["t3", None, "t0", None]
    store.close()


def test_torn_last_record_is_truncated(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    for i in range(3):
        store.put("product", f"P{i}", product(i)).result(10)
    crash(store)
    segment = sorted((tmp_path / "log").glob("*.log"))[-1]
    whole = segment.stat().st_size
    partial = _encode_record(
        4, {"op": "put", "type": "product", "id": "P9", "fields": {"title": "x"}}
    )
    with open(segment, "ab") as f:
        f.write(partial[: len(partial) // 2])  # a write cut short by a crash

    again = open_store(tmp_path, schemas)
    assert again.count("product") == 3 and again.get("product", "P9") is None
    assert segment.stat().st_size == whole
    again.put("product", "P9", product(9)).result(10)  # appends after the truncation point
    again.close()
    third = open_store(tmp_path, schemas)
    assert third.count("product") == 4
    third.close()


def test_bad_checksum_before_the_end_stops_the_start(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas, snapshot_every=10**9)
    for i in range(3):
        store.put("product", f"P{i}", product(i)).result(10)
    crash(store)
    segment = sorted((tmp_path / "log").glob("*.log"))[-1]
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 5] ^= 0xFF  # flip a byte inside the first record's payload
    segment.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum mismatch"):
        open_store(tmp_path, schemas)


def test_snapshot_cuts_the_log(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas, snapshot_every=20)
    for i in range(45):
        store.put("product", f"P{i}", product(i)).result(10)
    store.snapshot()
    assert (tmp_path / "snapshot.bin").exists()
    assert not list((tmp_path / "log").glob("*.log"))
    store.put("product", "P100", product(100)).result(10)
    store.remove("product", "P0").result(10)
    store.close()
    again = open_store(tmp_path, schemas)
    assert again.count("product") == 45 and again.get("product", "P100")["title"] == "t100"
    again.close()


def test_listeners_run_in_order_before_the_ack(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    recorder = Recorder()
    store.add_listener(recorder)
    store.put("product", "A", {"title": "a"}).result(10)
    assert recorder.events == [
        ("put", "product", "A", "a")
    ]  # already applied when the future resolves
    store.put("product", "B", {"title": "b"})
    store.remove("product", "A")
    store.put("product", "A", {"title": "a2"}).result(10)
    assert recorder.events[1:] == [("put", "product", "B", "b"), ("removed", "product", "A"),
                                   ("put", "product", "A", "a2")]  # fmt: skip
    store.remove("product", "missing").result(10)  # no state change, no event
    assert len(recorder.events) == 4
    store.close()


def test_readers_see_documents_and_listener_index_agree(tmp_path: Path, schemas: dict) -> None:
    """Inside `reading()` the store and an index kept by a listener are always in the same state."""
    store = open_store(tmp_path, schemas)
    index: set[str] = set()

    class Index:
        def document_put(self, doc_type: str, local_id: str, fields: dict) -> None:
            index.add(local_id)

        def document_removed(self, doc_type: str, local_id: str) -> None:
            index.discard(local_id)

    store.add_listener(Index())
    stop = threading.Event()
    mismatches: list[tuple[int, int]] = []
    checks = [0]

    def reader() -> None:
        while not stop.is_set():
            with store.reading():
                stored = {i for i, _ in store.iter_documents("product")}
                if stored != index:
                    mismatches.append((len(stored), len(index)))
                checks[0] += 1
            time.sleep(0.0005)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    pending = []
    for i in range(150):
        pending.append(store.put("product", f"P{i}", {"views": i}))
        if i % 3 == 2:
            pending.append(store.remove("product", f"P{i - 1}"))
        if i % 10 == 9:  # several commit groups, so readers run between them
            for f in pending:
                f.result(10)
    for f in pending:
        f.result(10)
    stop.set()
    for t in threads:
        t.join()
    assert checks[0] > 0 and not mismatches
    assert index == {i for i, _ in store.iter_documents("product")} and len(index) == 100
    store.close()


def test_queue_bound_gives_overloaded(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas, max_pending=2)
    gate = threading.Event()

    class Slow:
        def document_put(self, *args) -> None:
            gate.wait(10)

        def document_removed(self, *args) -> None:
            pass

    store.add_listener(Slow())
    futures = [store.put("product", "A", {"title": "a"}), store.put("product", "B", {"title": "b"})]
    with pytest.raises(Overloaded):
        store.put("product", "C", {"title": "c"})
    gate.set()
    for f in futures:
        f.result(10)
    store.put("product", "C", {"title": "c"}).result(10)
    store.close()


def test_incompatible_package_change_needs_reset(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    store.put("product", "A", {"views": 3, "title": "a"}).result(10)
    store.put("user", "U", {"user_id": "U"}).result(10)
    store.close()

    product = schemas["product"]
    changed_fields = dict(product.fields)
    changed_fields["views"] = dataclasses.replace(product.fields["views"], type=FieldType("string"))
    changed = {**schemas, "product": dataclasses.replace(product, fields=changed_fields)}
    with pytest.raises(StoreError, match=r"field 'product\.views' changed type from int to string"):
        open_store(tmp_path, changed)
    with pytest.raises(StoreError, match="document type 'user' is no longer in the package"):
        open_store(tmp_path, {"product": product})

    removed_fields = {
        k: v for k, v in product.fields.items() if k != "title"
    }  # removing a field is fine
    trimmed = {**schemas, "product": dataclasses.replace(product, fields=removed_fields)}
    again = open_store(tmp_path, trimmed)
    assert again.get("product", "A") == {"views": 3}
    again.close()

    reset = open_store(tmp_path, changed, reset=True)
    assert reset.count("product") == 0 and reset.count("user") == 0
    reset.close()


def test_data_dir_is_locked(tmp_path: Path, schemas: dict) -> None:
    store = open_store(tmp_path, schemas)
    with pytest.raises(StoreError, match="in use"):
        open_store(tmp_path, schemas)
    store.close()
