"""A synthetic marketplace with planted structure, deterministic by seed, ``tiny`` to ``large``.

It produces the canonical data model (:mod:`trainer.data.schema`): categories, sellers, products,
users and events. The same scale and seed give byte-identical Parquet files. Scales
(:data:`SCALES`, or any :class:`ScaleConfig`): ``tiny`` (200 users, tests), ``small`` (5k users),
``medium`` (50k users, 20k products, ~1M events, benchmarks) and ``large`` (1M users, 1M products,
50k sellers, >20M events, written in chunks of users within a few GiB).

Planted structure (what models can learn and metrics can see; parameters in
:class:`Behaviour`, details in docs/synthetic-marketplace.md):

- **Taxonomy**: up to 8 roots x 4 sub-categories x 5 leaves with path-like ids
  (``home/kitchen/knives``); every product sits in a leaf.
- **Text**: titles and descriptions are built from per-category vocabularies (root adjectives,
  sub-category materials and uses, the leaf's noun) plus the seller's brands, so text predicts
  category; attributes hold brand, colour and material.
- **Tastes**: each user has 1-4 favourite leaves (a sparse Dirichlet, drawn from the home region's
  category preferences) that drive most sessions and raise click rates; 60% of users have a
  favourite seller.
- **Popularity**: product appeal is Pareto (power law); impressions are drawn by appeal within a
  category, and appeal also raises the click rate.
- **Seller quality**: ratings (1-5) raise click, cart and purchase rates.
- **Price**: log-normal prices around a per-leaf median; users' price sensitivity lowers cart and
  purchase rates of products priced above their category's median; margins per product.
- **Funnel**: impression -> click (CTR a few %) -> cart (~10-20% of clicks, in-stock only) ->
  purchase (~30-50% of carts); favourites from a share of clicks. Rates depend on taste match,
  popularity, quality, price sensitivity, list position and device.
- **Repeats**: purchases of consumables (``consumable`` flag) are repeated about every 10-45 days
  (per leaf); durables are rarely bought twice.
- **Time**: 180 days ending 2024-12-01 (fixed); yearly and weekly cycles per category shift what
  sessions are about; tastes drift (weights move, and 40% of users grow a new interest); 30% of
  products are listed during the period and 35% of users sign up during it; no event precedes its
  product's listing or its user's sign-up.
- **Light users**: 20% of users make a single short visit (1-3 events).
- **Context**: the activity curve over the hour of day; the device mix depends on the hour
  (desktop in working hours, tablet/app in the evening) and changes conversion; the event
  location (mostly the home region) tilts category choice.

Public API: :func:`generate` (in memory, up to ``medium``), :func:`write_marketplace` (chunked,
any scale) and :func:`planted_tastes` (the ground truth of users' tastes, for tests and analysis).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.synthetic.config import SCALES, Behaviour, ScaleConfig, resolve_scale
from trainer.data.synthetic.vocabulary import REGIONS
from trainer.data.synthetic.writer import generate, iter_users, write_marketplace


def planted_tastes(scale: str | ScaleConfig, seed: int = 0) -> pd.DataFrame:
    """Each user's planted traits: favourite leaf categories with start/end weights, seller...

    Columns: user_id, favourite_categories (list of leaf ids), weights_start, weights_end
    (parallel lists), favourite_seller (seller id or None), price_sensitivity, location, light.
    """
    frames = []
    for cat, users, ids in iter_users(scale, seed):
        seller_ids = np.array(cat.seller_ids, dtype=object)
        fav, start, end = [], [], []
        for leaves, w0, w1 in zip(users.fav_leaf, users.fav_start, users.fav_end, strict=True):
            used = leaves >= 0
            fav.append(cat.leaf_ids[leaves[used]].tolist())
            start.append(w0[used].tolist())
            end.append(w1[used].tolist())
        frames.append(
            pd.DataFrame(
                {
                    "user_id": ids.to_pylist(),
                    "favourite_categories": fav,
                    "weights_start": start,
                    "weights_end": end,
                    "favourite_seller": np.where(
                        users.fav_seller >= 0, seller_ids[np.maximum(users.fav_seller, 0)], None
                    ),
                    "price_sensitivity": users.sensitivity,
                    "location": np.array(REGIONS, dtype=object)[users.location],
                    "light": users.light,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "SCALES",
    "Behaviour",
    "ScaleConfig",
    "generate",
    "planted_tastes",
    "resolve_scale",
    "write_marketplace",
]
