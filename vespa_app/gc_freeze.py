"""Long-lived serving processes: keep what they loaded out of the garbage collector's scans."""

from __future__ import annotations

import gc


def freeze_loaded_objects() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    A served process holds millions of long-lived objects (the engine: every stored document
    as dicts and lists), and each full collection walks all of them: ~0.5 s with 100k
    products, a pause that every request in flight waits out. Frozen objects are never
    scanned; what requests allocate afterwards is collected as usual. Call once, after loading.
    """
    gc.collect()
    gc.freeze()
