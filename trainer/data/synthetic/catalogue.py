"""The supply side of the synthetic marketplace: taxonomy, sellers, products, latent traits.

Everything here is numpy arrays indexed by row (``*_idx``); strings are materialised only when a
table is written (:meth:`Catalogue.product_table` works on a slice so the large scale never holds
every title at once). The catalogue is drawn from its own random stream, so users and events can
be generated chunk by chunk against the same catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer.data.schema import CATEGORIES, PRODUCTS, SELLERS, TIMESTAMP
from trainer.data.synthetic.config import ScaleConfig
from trainer.data.synthetic.vocabulary import (
    COLOURS,
    REGIONS,
    SELLER_SUFFIXES,
    SYLLABLES,
    TAXONOMY,
)

DAY = 86_400
WORD_WIDTH = 8  # per-category word lists are cycled to this width so one index picks a word
MAX_APPEAL = 2_000.0  # cap on a product's popularity weight relative to the least popular


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream...), so each part is reproducible on its own."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _width(words: tuple[str, ...]) -> list[str]:
    return [words[i % len(words)] for i in range(WORD_WIDTH)]


def _display(slug: str) -> str:
    return slug.replace("-", " ").capitalize()


class SegmentSampler:
    """Draws items by weight within a segment, among items created at or before a given time.

    Items are sorted by (segment, created), so the items that exist at time ``t`` in segment ``s``
    are a contiguous run; a cumulative sum of weights over that order turns a weighted draw into
    one binary search. Fully vectorised over draws.
    """

    def __init__(self, segment: np.ndarray, created: np.ndarray, weight: np.ndarray, segments: int):
        self.order = np.lexsort((created, segment))
        self.t0 = int(created.min()) if len(created) else 0
        self.span = int(created.max()) - self.t0 + 2 if len(created) else 2
        seg_sorted = segment[self.order].astype(np.int64)
        self.key = seg_sorted * self.span + (created[self.order] - self.t0)
        self.cum = np.cumsum(weight[self.order].astype(np.float64))
        self.start = np.searchsorted(seg_sorted, np.arange(segments), side="left")

    def sample(self, segment: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item rows (or -1 where the segment has no item yet at time ``t``)."""
        rel = np.clip(np.asarray(t, dtype=np.int64) - self.t0, -1, self.span - 1)
        end = np.searchsorted(self.key, segment.astype(np.int64) * self.span + rel, side="right")
        start = self.start[segment]
        ok = end > start
        safe_end = np.maximum(end, 1)
        base = np.where(start > 0, self.cum[np.maximum(start - 1, 0)], 0.0)
        top = self.cum[safe_end - 1]
        pos = np.searchsorted(self.cum, base + u * (top - base), side="right")
        pos = np.clip(pos, start, np.maximum(end - 1, start))
        pos = np.minimum(pos, len(self.order) - 1)
        return np.where(ok, self.order[pos], -1)


@dataclass(frozen=True)
class Vocab:
    """Arrow arrays of the words in use; per-category lists are WORD_WIDTH wide, row-major."""

    adjectives: pa.Array  # (roots * WORD_WIDTH,)
    materials: pa.Array  # (subs * WORD_WIDTH,)
    uses: pa.Array  # (subs * WORD_WIDTH,)
    nouns: pa.Array  # (leaves,)
    colours: pa.Array


@dataclass
class Catalogue:
    config: ScaleConfig
    seed: int
    vocab: Vocab
    start: int  # period start, epoch seconds
    end: int  # period end, epoch seconds
    # taxonomy (categories table rows, then the leaves every product belongs to)
    category_ids: list[str]
    category_names: list[str]
    category_parents: list[str | None]
    leaf_ids: np.ndarray  # (L,) object
    leaf_root: np.ndarray  # (L,) root row in TAXONOMY order (among the roots in use)
    leaf_sub: np.ndarray  # (L,) global sub row
    leaf_consumable: np.ndarray  # (L,) bool
    leaf_log_price: np.ndarray  # (L,) log median price
    leaf_prior: np.ndarray  # (L,) global category popularity (sums to 1)
    region_leaf_cdf: np.ndarray  # (G, L) background category choice per region (row cdfs)
    leaf_season_amp: np.ndarray  # (L,) yearly amplitude
    leaf_season_phase: np.ndarray  # (L,) day of year of the yearly peak
    root_weekly: np.ndarray  # (R, 7) weekly log-effect per root category
    leaf_cycle_days: np.ndarray  # (L,) typical days between repeat purchases
    # sellers
    seller_names: list[str]
    seller_brands: np.ndarray  # (S, 3) object
    seller_brand_count: np.ndarray  # (S,)
    seller_rating: np.ndarray  # (S,)
    seller_created: np.ndarray  # (S,) epoch seconds
    # products
    product_leaf: np.ndarray
    product_seller: np.ndarray
    product_price: np.ndarray
    product_margin: np.ndarray
    product_created: np.ndarray  # epoch seconds
    product_in_stock: np.ndarray
    product_weight: np.ndarray  # popularity weight (Pareto)
    product_appeal: np.ndarray  # z-scored log weight: the popularity term of the click logit
    product_words: np.ndarray  # (P, 5) brand slot, adjective, material, use, colour
    product_model: np.ndarray  # (P,) model number in titles
    leaf_sampler: SegmentSampler
    global_sampler: SegmentSampler

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_ids)

    @cached_property
    def product_ids(self) -> pa.Array:
        width = len(str(max(len(self.product_leaf) - 1, 0)))
        return pa.array([f"p{i:0{width}d}" for i in range(len(self.product_leaf))], pa.string())

    @property
    def seller_ids(self) -> list[str]:
        width = len(str(max(len(self.seller_rating) - 1, 0)))
        return [f"s{i:0{width}d}" for i in range(len(self.seller_rating))]

    def relative_log_price(self) -> np.ndarray:
        return np.log(self.product_price) - self.leaf_log_price[self.product_leaf]

    def season(self, leaf: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Log seasonal factor of choosing each leaf at time t: yearly plus weekly cycle."""
        day = t // DAY
        day_of_year = (t - self._year_start(t)) / DAY
        yearly = self.leaf_season_amp[leaf] * np.cos(
            2 * np.pi * (day_of_year - self.leaf_season_phase[leaf]) / 365.25
        )
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        return yearly + self.root_weekly[self.leaf_root[leaf], weekday]

    def season_max(self, leaf: np.ndarray) -> np.ndarray:
        return self.leaf_season_amp[leaf] + self.root_weekly.max(axis=1)[self.leaf_root[leaf]]

    @staticmethod
    def _year_start(t: np.ndarray) -> np.ndarray:
        years = t.astype("datetime64[s]").astype("datetime64[Y]")
        return years.astype("datetime64[s]").astype(np.int64)

    # ---- tables ------------------------------------------------------------------------------
    def categories_table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array(self.category_ids, pa.string()),
                pa.array(self.category_names, pa.string()),
                pa.array(self.category_parents, pa.string()),
            ],
            schema=CATEGORIES.arrow_schema,
        )

    def sellers_table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array(self.seller_ids, pa.string()),
                pa.array(self.seller_names, pa.string()),
                pa.array(self.seller_rating, pa.float64()),
                pa.array(self.seller_created * 1000, TIMESTAMP),
            ],
            schema=SELLERS.arrow_schema,
        )

    def product_table(self, lo: int, hi: int) -> pa.Table:
        """Rows lo:hi of the products table, titles and descriptions from the vocabularies."""
        rows = np.arange(lo, hi)
        leaf = self.product_leaf[rows]
        seller = self.product_seller[rows]
        words = self.product_words[rows]
        vocab = self.vocab
        brand = pa.array(self.seller_brands[seller, words[:, 0]], pa.string())
        adjective = pc.take(
            vocab.adjectives, pa.array(self.leaf_root[leaf] * WORD_WIDTH + words[:, 1])
        )
        material = pc.take(
            vocab.materials, pa.array(self.leaf_sub[leaf] * WORD_WIDTH + words[:, 2])
        )
        use = pc.take(vocab.uses, pa.array(self.leaf_sub[leaf] * WORD_WIDTH + words[:, 3]))
        colour = pc.take(vocab.colours, pa.array(words[:, 4]))
        noun = pc.take(vocab.nouns, pa.array(leaf))
        model = pc.cast(pa.array(self.product_model[rows]), pa.string())
        title = pc.binary_join_element_wise(brand, adjective, material, noun, model, " ")
        description = pc.binary_join_element_wise(
            adjective,
            noun,
            "in",
            material,
            "by",
            brand,
            "- made for",
            pc.binary_join_element_wise(use, ". Colour: ", colour, ".", ""),
            " ",
        )
        n = len(rows)
        items = pc.take(
            pa.concat_arrays([brand, colour, material]),
            pa.array((np.arange(3)[None, :] * n + np.arange(n)[:, None]).ravel()),
        )
        keys = pa.array(np.tile(np.array(["brand", "colour", "material"], dtype=object), n))
        attributes = pa.MapArray.from_arrays(
            pa.array(np.arange(n + 1) * 3, pa.int32()), keys, items
        )
        return pa.Table.from_arrays(
            [
                self.product_ids.slice(lo, hi - lo),
                title,
                description,
                pc.take(pa.array(self.leaf_ids, pa.string()), pa.array(leaf)),
                self.seller_ids_array.take(pa.array(seller)),
                pa.array(self.product_price[rows], pa.float64()),
                pa.array(self.product_margin[rows], pa.float64()),
                pa.array(self.product_created[rows] * 1000, TIMESTAMP),
                pa.array(self.product_in_stock[rows], pa.bool_()),
                pa.array(self.leaf_consumable[leaf], pa.bool_()),
                attributes,
            ],
            schema=PRODUCTS.arrow_schema,
        )

    @cached_property
    def seller_ids_array(self) -> pa.Array:
        return pa.array(self.seller_ids, pa.string())


def _pareto(rng: np.random.Generator, shape: float, size: int) -> np.ndarray:
    return np.minimum((1.0 - rng.random(size)) ** (-1.0 / shape), MAX_APPEAL)


def _syllable_names(rng: np.random.Generator, count: int, syllables: int) -> list[str]:
    picks = rng.integers(0, len(SYLLABLES), size=(count, syllables))
    table = np.array(SYLLABLES, dtype=object)
    joined = table[picks[:, 0]]
    for k in range(1, syllables):
        joined = joined + table[picks[:, k]]
    return [name.capitalize() for name in joined]


def build_catalogue(config: ScaleConfig, seed: int) -> Catalogue:
    """Draw the taxonomy, sellers and products of a scale (deterministic in config and seed)."""
    behaviour = config.behaviour
    rng = rng_for(seed, 1)
    end = int(datetime.fromisoformat(config.end).timestamp())
    start = end - config.days * DAY

    # ---- taxonomy ----------------------------------------------------------------------------
    category_ids: list[str] = []
    names: list[str] = []
    parents: list[str | None] = []
    leaf_ids, leaf_nouns, leaf_root, leaf_sub, leaf_consumable, leaf_price = [], [], [], [], [], []
    sub_row = 0
    for r, root in enumerate(TAXONOMY[: config.num_roots]):
        category_ids.append(root.slug)
        names.append(_display(root.slug))
        parents.append(None)
        for sub in root.subs[: config.subs_per_root]:
            sub_id = f"{root.slug}/{sub.slug}"
            category_ids.append(sub_id)
            names.append(_display(sub.slug))
            parents.append(root.slug)
            for leaf in sub.leaves[: config.leaves_per_sub]:
                leaf_id = f"{sub_id}/{leaf.slug}"
                category_ids.append(leaf_id)
                names.append(_display(leaf.slug))
                parents.append(sub_id)
                leaf_ids.append(leaf_id)
                leaf_nouns.append(leaf.noun)
                leaf_root.append(r)
                leaf_sub.append(sub_row)
                leaf_consumable.append(leaf.consumable)
                leaf_price.append(root.price)
            sub_row += 1
    num_leaves = len(leaf_ids)
    leaf_root_a = np.array(leaf_root)
    leaf_log_price = np.log(np.array(leaf_price)) + rng.normal(0.0, 0.45, num_leaves)
    leaf_prior = rng.lognormal(0.0, 0.7, num_leaves)
    leaf_prior /= leaf_prior.sum()
    region_bias = rng.normal(0.0, behaviour.location_bias_sd, (len(REGIONS), config.num_roots))
    region_weight = leaf_prior[None, :] * np.exp(region_bias[:, leaf_root_a])
    region_leaf_cdf = np.cumsum(region_weight / region_weight.sum(axis=1, keepdims=True), axis=1)
    region_leaf_cdf[:, -1] = 1.0
    leaf_season_amp = rng.uniform(0.0, behaviour.yearly_amplitude, num_leaves)
    leaf_season_phase = rng.uniform(0.0, 365.25, num_leaves)
    root_weekly = behaviour.weekly_amplitude * rng.normal(0.0, 0.6, (config.num_roots, 7))
    leaf_cycle_days = rng.uniform(10.0, 45.0, num_leaves)

    # ---- sellers -----------------------------------------------------------------------------
    num_sellers = config.num_sellers
    seller_names = [
        f"{name} {SELLER_SUFFIXES[i]}"
        for name, i in zip(
            _syllable_names(rng, num_sellers, 2),
            rng.integers(0, len(SELLER_SUFFIXES), num_sellers),
            strict=True,
        )
    ]
    seller_brands = np.array(_syllable_names(rng, num_sellers * 3, 3), dtype=object).reshape(-1, 3)
    seller_brand_count = rng.integers(1, 4, num_sellers)
    seller_rating = np.round(1.0 + 4.0 * rng.beta(5.0, 1.8, num_sellers), 2)
    seller_created = start - rng.integers(30 * DAY, 3 * 365 * DAY, num_sellers)
    seller_size = _pareto(rng, 1.3, num_sellers)
    # Each seller specialises: a primary leaf (round-robin over a shuffled list, so every leaf
    # has a seller when there are enough sellers) and up to two more leaves of the same root.
    primary = rng.permutation(num_leaves)[np.arange(num_sellers) % num_leaves]
    same_root = [np.flatnonzero(leaf_root_a == leaf_root_a[leaf]) for leaf in range(num_leaves)]
    extra_count = rng.integers(0, 3, num_sellers)
    pair_seller = [np.arange(num_sellers)]
    pair_leaf = [primary]
    pair_weight = [seller_size]
    for k in range(2):
        has = extra_count > k
        sellers = np.flatnonzero(has)
        pick = rng.random(len(sellers))
        leaves = np.array(
            [
                same_root[primary[s]][int(p * len(same_root[primary[s]]))]
                for s, p in zip(sellers, pick, strict=True)
            ],
            dtype=np.int64,
        )
        pair_seller.append(sellers)
        pair_leaf.append(leaves)
        pair_weight.append(0.3 * seller_size[sellers])
    pair_seller_a = np.concatenate(pair_seller)
    pair_leaf_a = np.concatenate(pair_leaf).astype(np.int64)
    seller_sampler = SegmentSampler(
        pair_leaf_a, np.zeros(len(pair_leaf_a), np.int64), np.concatenate(pair_weight), num_leaves
    )
    leaf_has_seller = np.bincount(pair_leaf_a, minlength=num_leaves) > 0

    # ---- products ----------------------------------------------------------------------------
    num_products = config.num_products
    leaf_share = (0.5 * leaf_prior + 0.5 / num_leaves) * leaf_has_seller
    product_leaf = np.searchsorted(
        np.cumsum(leaf_share / leaf_share.sum()), rng.random(num_products)
    )
    product_leaf = np.minimum(product_leaf, num_leaves - 1)
    # A guaranteed product per leaf (where the catalogue is big enough) keeps every category alive.
    seeded = np.flatnonzero(leaf_has_seller)[:num_products]
    product_leaf[: len(seeded)] = seeded
    product_seller = pair_seller_a[
        seller_sampler.sample(
            product_leaf, np.zeros(num_products, np.int64), rng.random(num_products)
        )
    ]
    product_weight = _pareto(rng, behaviour.popularity_shape, num_products)
    log_weight = np.log(product_weight)
    product_appeal = (log_weight - log_weight.mean()) / max(log_weight.std(), 1e-9)
    raw_price = np.exp(leaf_log_price[product_leaf] + rng.normal(0.0, 0.55, num_products))
    product_price = np.where(raw_price >= 2.0, np.floor(raw_price) + 0.99, np.round(raw_price, 2))
    product_price = np.maximum(product_price, 0.49)
    consumable = np.array(leaf_consumable)[product_leaf]
    product_margin = np.round(rng.beta(2.5, 6.0, num_products) * np.where(consumable, 0.7, 1.0), 3)
    # Most of the catalogue exists before the period; the rest arrives during it.
    before = rng.random(num_products) < config.catalogue_share_before
    since = seller_created[product_seller]
    listed_before = since + (rng.random(num_products) * (start - since)).astype(np.int64)
    listed_during = start + (rng.random(num_products) * (end - start - 2 * DAY)).astype(np.int64)
    product_created = np.where(before, listed_before, listed_during)
    product_in_stock = rng.random(num_products) < behaviour.in_stock_share
    words = np.stack(
        [
            (rng.random(num_products) * seller_brand_count[product_seller]).astype(np.int64),
            rng.integers(0, WORD_WIDTH, num_products),
            rng.integers(0, WORD_WIDTH, num_products),
            rng.integers(0, WORD_WIDTH, num_products),
            rng.integers(0, len(COLOURS), num_products),
        ],
        axis=1,
    )
    product_model = rng.integers(100, 1000, num_products)

    roots = TAXONOMY[: config.num_roots]
    subs = [sub for root in roots for sub in root.subs[: config.subs_per_root]]
    vocab = Vocab(
        adjectives=pa.array([w.capitalize() for r in roots for w in _width(r.adjectives)]),
        materials=pa.array([w for s in subs for w in _width(s.materials)]),
        uses=pa.array([w for s in subs for w in _width(s.uses)]),
        nouns=pa.array(leaf_nouns),
        colours=pa.array(list(COLOURS)),
    )
    return Catalogue(
        config=config,
        seed=seed,
        vocab=vocab,
        start=start,
        end=end,
        category_ids=category_ids,
        category_names=names,
        category_parents=parents,
        leaf_ids=np.array(leaf_ids, dtype=object),
        leaf_root=leaf_root_a,
        leaf_sub=np.array(leaf_sub),
        leaf_consumable=np.array(leaf_consumable),
        leaf_log_price=leaf_log_price,
        leaf_prior=leaf_prior,
        region_leaf_cdf=region_leaf_cdf,
        leaf_season_amp=leaf_season_amp,
        leaf_season_phase=leaf_season_phase,
        root_weekly=root_weekly,
        leaf_cycle_days=leaf_cycle_days,
        seller_names=seller_names,
        seller_brands=seller_brands,
        seller_brand_count=seller_brand_count,
        seller_rating=seller_rating,
        seller_created=seller_created,
        product_leaf=product_leaf,
        product_seller=product_seller,
        product_price=product_price,
        product_margin=product_margin,
        product_created=product_created,
        product_in_stock=product_in_stock,
        product_weight=product_weight,
        product_appeal=product_appeal,
        product_words=words,
        product_model=product_model,
        leaf_sampler=SegmentSampler(product_leaf, product_created, product_weight, num_leaves),
        global_sampler=SegmentSampler(
            np.zeros(num_products, np.int64), product_created, product_weight, 1
        ),
    )


__all__ = ["REGIONS", "Catalogue", "SegmentSampler", "build_catalogue", "rng_for"]
