"""The synthetic marketplace: determinism, validity, and each planted effect measurable in data.

Structural checks use ``tiny``; statistical ones use ``small`` (5k users, ~95k events, well under a
second), generated once per module.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from trainer.data import synthetic
from trainer.data.marketplace import load_marketplace, save_marketplace
from trainer.data.schema import PRODUCTS
from trainer.data.splits import split_dataset
from trainer.data.synthetic import SCALES, ScaleConfig, generate, planted_tastes, write_marketplace
from trainer.data.synthetic import writer as synthetic_writer
from trainer.data.validation import DataValidationError


@pytest.fixture(scope="module")
def small():
    return generate("small", seed=0)


@pytest.fixture(scope="module")
def small_events(small):
    products = small.products.set_index("product_id")
    events = small.events.copy()
    events["category_id"] = products["category_id"].reindex(events["product_id"]).to_numpy()
    return events


def _counts(market) -> pd.Series:
    return market.events["event_type"].value_counts()


def test_tiny_generates_fast_with_the_declared_info():
    started = time.perf_counter()
    market = generate("tiny", seed=3)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"tiny took {elapsed:.2f}s"
    assert len(market.users) == 200 and len(market.products) == 300 and len(market.sellers) == 20
    assert 1_000 <= len(market.events) <= 10_000
    info = market.info
    assert (info.name, info.source, info.timestamps, info.split) == (
        "marketplace-tiny",
        "synthetic",
        "real",
        "temporal",
    )
    assert info.positive_events == ("click", "favorite", "cart", "purchase")
    assert info.extra["scale"] == "tiny" and info.extra["seed"] == 3
    assert info.extra["config"]["behaviour"]["click_base"] == SCALES["tiny"].behaviour.click_base
    assert info.extra["event_counts"] == {k: int(v) for k, v in _counts(market).items()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = write_marketplace("tiny", 7, tmp_path / "a", progress=False)
    second = write_marketplace("tiny", 7, tmp_path / "b", progress=False)
    other = write_marketplace("tiny", 8, tmp_path / "c", progress=False)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(
        [
            "categories.parquet",
            "sellers.parquet",
            "products.parquet",
            "users.parquet",
            "events.parquet",
            "dataset.json",
        ]
    )
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "events.parquet").read_bytes() != (other / "events.parquet").read_bytes()
    assert (first / "products.parquet").read_bytes() != (other / "products.parquet").read_bytes()


def test_written_folder_loads_equal_to_generate_and_round_trips(tmp_path):
    # Several user chunks, so the chunked writer is exercised against the in-memory path.
    config = replace(SCALES["tiny"], chunk_users=64)
    written = load_marketplace(write_marketplace(config, 1, tmp_path / "w", progress=False))
    market = generate(config, 1)
    assert written.info == market.info
    for name in ("categories", "sellers", "products", "users", "events"):
        pd.testing.assert_frame_equal(written.table(name), market.table(name), check_like=False)
    again = load_marketplace(save_marketplace(market, tmp_path / "saved"))
    assert again.info == market.info
    pd.testing.assert_frame_equal(again.events, market.events)
    pd.testing.assert_frame_equal(again.products, market.products)


def test_product_table_does_not_depend_on_the_write_chunk(monkeypatch):
    whole = generate("tiny", 2).products
    monkeypatch.setattr(synthetic_writer, "PRODUCT_CHUNK", 70)
    chunked = generate("tiny", 2).products
    pd.testing.assert_frame_equal(whole, chunked)


def test_chunk_problems_name_file_and_row_of_the_whole_file():
    table = synthetic_writer.build_catalogue(SCALES["tiny"], 0).product_table(0, 10)
    price = table.column("price").to_numpy().copy()
    price[4] = -1.0
    bad = table.set_column(table.schema.get_field_index("price"), "price", pa.array(price))
    with pytest.raises(DataValidationError) as error:
        synthetic_writer._checked(PRODUCTS, bad, "out/products.parquet", 1_000)
    assert "out/products.parquet, row 1004, field 'price'" in str(error.value)


def test_unknown_scale_and_bad_config_are_named():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        generate("huge")
    with pytest.raises(ValueError, match="num_sellers"):
        ScaleConfig("odd", num_users=10, num_products=5, num_sellers=6)


def test_large_scale_meets_the_required_sizes():
    large = SCALES["large"]
    assert large.num_users >= 1_000_000 and large.num_products >= 1_000_000
    assert large.num_sellers >= 50_000 and large.chunk_users < large.num_users


def test_taxonomy_is_a_path_like_tree_and_products_sit_in_leaves(small):
    categories = small.categories.set_index("category_id")
    for category_id, parent in categories["parent_id"].items():
        if parent is None or pd.isna(parent):
            assert "/" not in category_id
        else:
            assert category_id.rsplit("/", 1)[0] == parent
    depth = categories.index.str.count("/")
    assert set(depth) == {0, 1, 2}
    leaves = set(categories.index[depth == 2])
    assert set(small.products["category_id"]) <= leaves


def test_titles_carry_category_vocabulary(small):
    products = small.products
    nouns = {
        f"{root.slug}/{sub.slug}/{leaf.slug}": leaf.noun
        for root in synthetic.vocabulary.TAXONOMY
        for sub in root.subs
        for leaf in sub.leaves
    }
    has_noun = [
        nouns[c] in t for c, t in zip(products["category_id"], products["title"], strict=True)
    ]
    assert all(has_noun)
    brands = products["attributes"].map(lambda a: a["brand"])
    assert all(b in t for b, t in zip(brands, products["title"], strict=True))
    assert (
        products.groupby("seller_id")["attributes"]
        .apply(lambda a: len({x["brand"] for x in a}))
        .max()
        <= 3
    )


def test_funnel_is_ordered_with_realistic_rates(small):
    counts = _counts(small)
    assert counts["impression"] > counts["click"] > counts["cart"] > counts["purchase"]
    assert counts["favorite"] < counts["click"]
    assert 0.02 <= counts["click"] / counts["impression"] <= 0.12
    assert 0.08 <= counts["cart"] / counts["click"] <= 0.3
    assert 0.25 <= counts["purchase"] / counts["cart"] <= 0.6


def test_popularity_is_heavy_tailed(small):
    clicks = small.events.loc[small.events["event_type"] == "click", "product_id"].value_counts()
    top = clicks.iloc[: len(small.products) // 10].sum() / clicks.sum()
    assert top > 0.5, f"top 10% of products get only {top:.0%} of clicks"


def test_clicks_concentrate_on_planted_categories(small_events):
    tastes = planted_tastes("small", 0).set_index("user_id")["favourite_categories"]
    clicks = small_events[small_events["event_type"] == "click"]
    favourites = tastes.reindex(clicks["user_id"]).to_numpy()
    hit = np.mean([c in f for c, f in zip(clicks["category_id"], favourites, strict=True)])
    shuffled = np.random.default_rng(0).permutation(favourites)
    chance = np.mean([c in f for c, f in zip(clicks["category_id"], shuffled, strict=True)])
    assert hit > 0.6 and hit > 5 * chance, (hit, chance)


def test_no_event_before_its_product_or_user_exists(small):
    events = small.events
    product_created = small.products.set_index("product_id")["created_at"]
    user_created = small.users.set_index("user_id")["created_at"]
    ts = events["timestamp"].to_numpy()
    assert (ts >= product_created.reindex(events["product_id"]).to_numpy()).all()
    assert (ts >= user_created.reindex(events["user_id"]).to_numpy()).all()
    period_start = pd.Timestamp(small.info.extra["period"]["start"])
    period_end = pd.Timestamp(small.info.extra["period"]["end"])
    assert events["timestamp"].min() >= period_start and events["timestamp"].max() < period_end


def test_new_products_arrive_during_the_period_and_get_events(small):
    start = pd.Timestamp(small.info.extra["period"]["start"])
    new = small.products.loc[small.products["created_at"] > start, "product_id"]
    assert 0.15 < len(new) / len(small.products) < 0.45
    assert small.events["product_id"].isin(set(new)).sum() > 100


def test_consumables_are_bought_again_and_durables_rarely(small):
    purchases = small.events[small.events["event_type"] == "purchase"]
    per_pair = purchases.groupby(["user_id", "product_id"]).size().rename("n").reset_index()
    consumable = small.products.set_index("product_id")["consumable"]
    per_pair["consumable"] = consumable.reindex(per_pair["product_id"]).to_numpy()
    repeat = per_pair.groupby("consumable")["n"].apply(lambda n: (n > 1).mean())
    assert repeat[True] > 0.3 and repeat[False] < 0.08, repeat.to_dict()


def test_new_users_sign_up_during_the_period_with_few_events(small):
    per_user = small.events.groupby("user_id").size().reindex(small.users["user_id"], fill_value=0)
    assert (per_user == 0).sum() == 0
    assert 0.1 < ((per_user >= 1) & (per_user <= 3)).mean() < 0.5
    start = pd.Timestamp(small.info.extra["period"]["start"])
    joined = (small.users["created_at"] > start).to_numpy()
    assert 0.2 < joined.mean() < 0.5
    assert per_user.to_numpy()[joined].mean() < 0.8 * per_user.to_numpy()[~joined].mean()


def test_device_mix_depends_on_the_hour(small):
    events = small.events
    work = events["hour"].between(9, 17)
    night = events["hour"].between(0, 6)
    desktop_work = (events.loc[work, "device"] == "desktop").mean()
    desktop_night = (events.loc[night, "device"] == "desktop").mean()
    assert desktop_work > desktop_night + 0.08, (desktop_work, desktop_night)
    by_hour = events["hour"].value_counts(normalize=True)
    assert by_hour.loc[20] > 5 * by_hour.loc[3]
    assert events[["hour", "device", "location"]].notna().all().all()


def test_location_tilts_categories(small_events):
    roots = small_events["category_id"].str.split("/").str[0]
    share = pd.crosstab(small_events["location"], roots, normalize="index")
    # The same category's share differs across regions far beyond sampling noise.
    assert (share.max() - share.min()).max() > 0.1


def test_conversion_rises_with_seller_quality(small):
    events = small.events
    products = small.products.set_index("product_id")
    rating = small.sellers.set_index("seller_id")["rating"]
    seller_rating = rating.reindex(products["seller_id"]).to_numpy()
    good = set(products.index[seller_rating >= 4.2])
    bad = set(products.index[seller_rating < 3.5])

    def rate(ids: set[str]) -> float:
        rows = events[events["product_id"].isin(ids)]["event_type"].value_counts()
        return rows.get("purchase", 0) / rows["click"]

    assert rate(good) > 1.3 * rate(bad)


def test_tastes_drift_over_the_period():
    tastes = planted_tastes("small", 0)
    moved = [
        np.abs(np.subtract(s, e)).sum()
        for s, e in zip(tastes["weights_start"], tastes["weights_end"], strict=True)
    ]
    assert np.mean(moved) > 0.2
    grew = tastes["weights_start"].map(lambda w: w[-1] == 0) & tastes["weights_end"].map(
        lambda w: w[-1] > 0.2
    )
    assert 0.2 < grew.mean() < 0.6


def test_temporal_split_works_on_the_output(small):
    data = split_dataset(small)
    assert len(data.valid) > 0 and len(data.test) > 0


def test_category_demand_follows_the_planted_seasons(small_events):
    cat = synthetic_writer.build_catalogue(SCALES["small"], 0)
    month = small_events["timestamp"].dt.month
    observed = pd.crosstab(small_events["category_id"], month, normalize="columns")
    mid_month = pd.to_datetime([f"2024-{m:02d}-15" for m in observed.columns], utc=True)
    day_of_year = mid_month.day_of_year.to_numpy()
    correlations = []
    for leaf, row in enumerate(cat.leaf_ids):
        if cat.leaf_season_amp[leaf] < 0.4 or row not in observed.index:
            continue
        planted = np.cos(2 * np.pi * (day_of_year - cat.leaf_season_phase[leaf]) / 365.25)
        correlations.append(np.corrcoef(planted, observed.loc[row].to_numpy())[0, 1])
    # Under no seasonality the mean correlation would be about 0.
    assert len(correlations) > 10 and np.mean(correlations) > 0.3, np.mean(correlations)
