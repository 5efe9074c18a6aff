"""What the ranker reads besides item ids: the request-context vector and candidate features.

Both are written here once, as numpy, because a serving client builds the same vectors: the
``ctx`` query tensor (``query(ctx)``, 16 floats) and the optional extra columns of the ``cand``
vector that follow the 128-d product embedding. docs/ranker.md restates the layouts.

``ctx`` layout (:data:`CONTEXT_DIM` = 16):

====== ============================================================================
0      1 if the request's hour of day is known, else 0
1, 2   sin, cos of 2 pi hour / 24 (0, 0 when unknown)
3..6   device one-hot in :data:`trainer.data.schema.DEVICES` order (all 0 if unknown)
7      log1p(seconds since the user's previous event) / log1p(one year), clipped to
       [0, 1]; 0 when unknown (no history)
8..15  location one-hot over ``location_code % 8`` (codes of ``InteractionData.locations``)
====== ============================================================================

Candidate feature columns (in the order named by ``RankerConfig.cand_features``):

- ``price``: log10(1 + price), 0 when unknown;
- ``margin``: the margin fraction, 0 when unknown;
- ``popularity``: log10(1 + positive events of the item) (the retrieval profile's ``pop``):
  training events when training and evaluating offline; at serving time Vespa's
  ``attribute(popularity)``, which the feeder writes as the count of positive events of the whole
  log (``popularity=`` gives those counts to compare with the engine);
- ``freshness``: Vespa's ``freshness(created_at)`` with ``maxAge`` 30 days: max(0, 1 - age /
  maxAge) at the request time, 0 when unknown.

Candidate code columns (``RankerConfig.cand_codes``, after the feature columns): ``seller`` and
``category`` as the index of the product's seller / leaf category in the training data's sorted
ids (:func:`code_vocabularies`), -1 when unknown. They travel as float cells (exact below 2**24)
and the scorer looks them up in learned tables (index + 1; 0 is reserved for unknown ids and for
indices outside the training map). At serving time they are the product's ``seller_idx`` and
``category_idx`` attributes, written by the feeder from the export manifest's id lists.
"""

from __future__ import annotations

import numpy as np

from trainer.data.interactions import InteractionData
from trainer.data.schema import DEVICES

CONTEXT_DIM = 16
LOCATION_SLOTS = 8
YEAR_SECONDS = 365 * 24 * 3600
FRESHNESS_MAX_AGE = 2_592_000  # rank-properties freshness(created_at).maxAge in product.sd
CAND_FEATURES = ("price", "margin", "popularity", "freshness")
CAND_CODES = ("seller", "category")
# cand code -> (products column, table whose sorted ids form the training map)
CODE_SOURCES = {"seller": ("seller_id", "sellers"), "category": ("category_id", "categories")}


def code_vocabularies(market, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The training id maps of the cand codes: each code's sorted ids of its table (the sellers
    and categories of the dataset); index in the tuple = the code value."""
    unknown = [name for name in names if name not in CAND_CODES]
    if unknown:
        raise ValueError(f"cand_codes: unknown code {unknown[0]!r} ({CAND_CODES})")
    out = {}
    for name in names:
        column, table = CODE_SOURCES[name]
        ids = getattr(market, table)[column].dropna().astype(str)
        out[name] = tuple(sorted(set(ids)))
    return out


def code_indices(values, vocabulary: tuple[str, ...]) -> np.ndarray:
    """(N,) int64 index of each value in ``vocabulary``; -1 for a missing or unknown id."""
    position = {v: i for i, v in enumerate(vocabulary)}
    return np.array(
        [position.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int64
    )


def context_vectors(
    hour: np.ndarray, device: np.ndarray, location: np.ndarray, gap_seconds: np.ndarray
) -> np.ndarray:
    """(N, 16) float32 ``ctx`` rows; -1 marks an unknown hour, device, location or gap."""
    hour = np.asarray(hour, dtype=np.int64)
    device = np.asarray(device, dtype=np.int64)
    location = np.asarray(location, dtype=np.int64)
    gap = np.asarray(gap_seconds, dtype=np.float64)
    n = len(hour)
    out = np.zeros((n, CONTEXT_DIM), dtype=np.float32)
    known = hour >= 0
    angle = 2 * np.pi * hour / 24.0
    out[:, 0] = known
    out[:, 1] = np.where(known, np.sin(angle), 0.0)
    out[:, 2] = np.where(known, np.cos(angle), 0.0)
    rows = np.flatnonzero((device >= 0) & (device < len(DEVICES)))
    out[rows, 3 + device[rows]] = 1.0
    with np.errstate(invalid="ignore"):
        scaled = np.log1p(np.maximum(gap, 0.0)) / np.log1p(YEAR_SECONDS)
    out[:, 7] = np.where(gap >= 0, np.clip(scaled, 0.0, 1.0), 0.0)
    rows = np.flatnonzero(location >= 0)
    out[rows, 8 + location[rows] % LOCATION_SLOTS] = 1.0
    return out


class CandidateFeatures:
    """Per-item feature columns of one dataset; freshness depends on the request time."""

    def __init__(
        self,
        data: InteractionData,
        names: tuple[str, ...],
        popularity: np.ndarray | None = None,
        codes: dict[str, tuple[str, ...]] | None = None,
    ):
        """``popularity``: (num_items,) positive-event counts to use instead of the training
        events' (e.g. the feeder's, which count the whole log). ``codes``: cand code name ->
        its training id map (:func:`code_vocabularies`), columns after the features."""
        unknown = [name for name in names if name not in CAND_FEATURES]
        if unknown:
            raise ValueError(f"cand_features: unknown feature {unknown[0]!r} ({CAND_FEATURES})")
        self.names = names
        products = data.market.products
        price = products["price"].to_numpy(dtype=np.float64, na_value=np.nan)
        margin = products["margin"].to_numpy(dtype=np.float64, na_value=np.nan)
        created = products["created_at"]
        self.created = np.where(
            created.isna().to_numpy(),
            np.nan,
            created.to_numpy(dtype="datetime64[s]").astype(np.int64).astype(np.float64),
        )
        if popularity is None:
            popularity = data.item_popularity()
        popularity = np.asarray(popularity, dtype=np.float64)
        if popularity.shape != (data.num_items,):
            raise ValueError(
                f"cand_features: popularity has shape {popularity.shape}, "
                f"the data {data.num_items} items"
            )
        self.codes = {}
        for name, vocabulary in (codes or {}).items():
            column = CODE_SOURCES[name][0]
            values = products[column].astype(object).where(products[column].notna(), None)
            self.codes[name] = code_indices(values.tolist(), vocabulary).astype(np.float64)
        self.static = {
            "price": np.nan_to_num(np.log10(1.0 + np.maximum(price, 0.0)), nan=0.0),
            "margin": np.nan_to_num(margin, nan=0.0),
            "popularity": np.log10(1.0 + np.maximum(popularity, 0.0)),
        }

    @property
    def width(self) -> int:
        return len(self.names) + len(self.codes)

    def __call__(self, items: np.ndarray, now: np.ndarray) -> np.ndarray:
        """(*items.shape, F) float32 features; ``now`` (items.shape[0],) request epoch seconds."""
        items = np.asarray(items, dtype=np.int64)
        columns = []
        for name in self.names:
            if name == "freshness":
                shape = (-1,) + (1,) * (items.ndim - 1)
                age = np.asarray(now, dtype=np.float64).reshape(shape) - self.created[items]
                fresh = np.clip(1.0 - age / FRESHNESS_MAX_AGE, 0.0, 1.0)
                columns.append(np.nan_to_num(fresh, nan=0.0))
            else:
                columns.append(self.static[name][items])
        columns.extend(table[items] for table in self.codes.values())
        if not columns:
            return np.zeros((*items.shape, 0), dtype=np.float32)
        return np.stack(columns, axis=-1).astype(np.float32)
