"""The durable event log of the API: SQLite in WAL mode (an embedded database, no server).

Every accepted ``POST /api/events`` is committed here before the user's Vespa document is
touched, so a Vespa outage loses no event (the history update can be replayed from this table).
``synchronous=FULL``: a commit is on disk when ``record`` returns, even after a power cut (with
NORMAL, WAL commits since the last checkpoint could be lost). The store also answers what the
pipeline asks of the log: a user's purchases (excluded from recommendations) and each seller's
recent share of impressions (fairness of exposure in the re-ranker).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_TYPES = ("impression", "click", "favorite", "cart", "purchase")  # trainer.data.schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    seller_id  TEXT,
    event_type TEXT NOT NULL CHECK (event_type IN
               ('impression', 'click', 'favorite', 'cart', 'purchase')),
    ts         INTEGER NOT NULL,           -- epoch seconds, server clock
    hour       INTEGER,
    device     TEXT,
    location   TEXT,
    context    TEXT                        -- the request's context object as JSON
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, event_type);
CREATE INDEX IF NOT EXISTS events_type_ts ON events (event_type, ts);
"""


@dataclass(frozen=True)
class Event:
    user_id: str
    product_id: str
    event_type: str
    seller_id: str | None = None
    ts: int | None = None
    hour: int | None = None
    device: str | None = None
    location: str | None = None
    context: Mapping[str, Any] | None = None


class EventStore:
    """One connection guarded by a lock: SQLite serialises writers anyway, and the reads are
    small indexed aggregates."""

    def __init__(self, path: Path | str, exposure_ttl_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._exposure_ttl = exposure_ttl_s
        self._exposure: tuple[float, dict[str, float]] | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, event: Event) -> int:
        """Commit one event; returns its id."""
        if event.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type: {event.event_type!r} is not one of {EVENT_TYPES}")
        ts = int(event.ts if event.ts is not None else time.time())
        context = json.dumps(dict(event.context)) if event.context is not None else None
        row = (
            event.user_id, event.product_id, event.seller_id, event.event_type, ts,
            event.hour, event.device, event.location, context,
        )  # fmt: skip
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (user_id, product_id, seller_id, event_type, ts, hour, "
                "device, location, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def events(self, user_id: str) -> list[dict[str, Any]]:
        """A user's events, oldest first."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT event_id, user_id, product_id, seller_id, event_type, ts, hour, device, "
                "location, context FROM events WHERE user_id = ? ORDER BY event_id",
                (user_id,),
            )
            names = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def purchased(self, user_id: str) -> list[str]:
        """The products ``user_id`` bought, each once, most recently bought first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT product_id FROM events WHERE user_id = ? AND event_type = 'purchase' "
                "GROUP BY product_id ORDER BY MAX(event_id) DESC",
                (user_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def seller_exposure(self, window_s: int = 7 * 24 * 3600) -> dict[str, float] | None:
        """seller_id -> share of the impressions logged in the last ``window_s`` seconds; None
        when there are none (the re-ranker then leaves fairness off). Cached for a few seconds:
        it is read on every recommendation request."""
        now = time.monotonic()
        if self._exposure is not None and now - self._exposure[0] < self._exposure_ttl:
            return self._exposure[1] or None
        since = int(time.time()) - window_s
        with self._lock:
            rows = self._db.execute(
                "SELECT seller_id, COUNT(*) FROM events WHERE event_type = 'impression' "
                "AND ts >= ? AND seller_id IS NOT NULL GROUP BY seller_id",
                (since,),
            ).fetchall()
        total = sum(n for _, n in rows)
        shares = {seller: n / total for seller, n in rows} if total else {}
        self._exposure = (now, shares)
        return shares or None
