"""The demand side: users with planted tastes, their sessions and the event funnel.

Users are generated in chunks (rows ``lo:hi``), each chunk from its own random streams, fully
vectorised with numpy: a chunk of 50k users and ~1M events takes a few seconds and a few hundred
MB. A session is one visit: a time (day in the user's active window, hour from the activity
curve), a device (the user's usual one, else one typical of that hour), a location (home region,
else travelling) and a focus category (the user's current tastes, tilted by season; or the
region's background). Its impressions come from the focus category, another taste or the global
popularity, always among products listed by then. Each impression may be clicked; a click may be
favourited and carted; a cart may be purchased; a consumable purchase may be repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from trainer.data.schema import DEVICES, EVENT_TYPES, EVENTS, TIMESTAMP, USERS
from trainer.data.synthetic.catalogue import DAY, Catalogue, rng_for
from trainer.data.synthetic.vocabulary import REGIONS

IMPRESSION, CLICK, FAVORITE, CART, PURCHASE = range(len(EVENT_TYPES))
# Relative activity by hour of day: quiet at night, a lunch bump, an evening peak.
HOUR_ACTIVITY = np.array(
    [
        0.6,
        0.35,
        0.2,
        0.15,
        0.15,
        0.25,
        0.6,
        1.2,
        1.8,
        2.0,
        2.1,
        2.3,
        2.6,
        2.4,
        2.2,
        2.2,
        2.4,
        2.8,
        3.3,
        3.8,
        4.0,
        3.5,
        2.4,
        1.3,
    ]
)
DEVICE_SHARE = np.array([0.45, 0.25, 0.1, 0.2])  # users' usual device, in DEVICES order
REGION_SHARE = np.array([0.2, 0.18, 0.15, 0.15, 0.12, 0.1, 0.06, 0.04])


def _hour_device_cdf() -> np.ndarray:
    """(24, devices) cdf: desktops in working hours, tablets and the app in the evening."""
    hours = np.arange(24)
    work = (hours >= 9) & (hours <= 17)
    evening = (hours >= 19) & (hours <= 23)
    mix = np.stack(
        [
            np.full(24, 0.45),
            np.where(work, 0.45, 0.08),
            np.where(evening, 0.25, 0.05),
            np.where(evening, 0.35, 0.18),
        ],
        axis=1,
    )
    return np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)


HOUR_DEVICE_CDF = _hour_device_cdf()
# Seconds from an impression to the next funnel step (uniform ranges); a session plus its funnel
# stays under ~25 minutes so it fits before the period end.
CLICK_DELAY = (3, 60)
STEP_DELAY = (10, 300)  # click -> favourite, click -> cart
PURCHASE_DELAY = (30, 900)
SESSION_MINUTES = 30


def categorical_rows(cdf: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one category per sample from per-sample rows of a (K, C) cdf table, vectorised.

    Row k of the table is shifted by k so the flattened table is increasing; a single binary
    search then serves every row.
    """
    rows, width = cdf.shape
    flat = (cdf + np.arange(rows)[:, None]).ravel()
    pos = np.searchsorted(flat, row + u, side="right") - row * width
    return np.clip(pos, 0, width - 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class UserChunk:
    """Users lo:hi and their latent traits (the planted ground truth)."""

    lo: int
    created: np.ndarray  # (n,) epoch seconds
    location: np.ndarray  # (n,) region row
    light: np.ndarray  # (n,) bool: one short visit
    device: np.ndarray  # (n,) usual device row
    sensitivity: np.ndarray  # (n,) price sensitivity (multiplies relative log price)
    activity: np.ndarray  # (n,) relative visit rate
    fav_leaf: np.ndarray  # (n, F) leaf rows, -1 = empty slot; the last slot is the emerging one
    fav_start: np.ndarray  # (n, F) taste weights at the period start (rows sum to 1)
    fav_end: np.ndarray  # (n, F) taste weights at the period end
    fav_seller: np.ndarray  # (n,) seller row, -1 = none

    def __len__(self) -> int:
        return len(self.created)

    def weights(self, user: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """(m, F) taste weights of the given local users at period fractions tau (drift)."""
        return (1.0 - tau)[:, None] * self.fav_start[user] + tau[:, None] * self.fav_end[user]


def draw_users(cat: Catalogue, lo: int, hi: int) -> UserChunk:
    behaviour = cat.config.behaviour
    rng = rng_for(cat.seed, 2, lo)
    n = hi - lo
    new = rng.random(n) < behaviour.new_user_share
    joined = cat.start + (rng.random(n) * (cat.end - cat.start - 3 * DAY)).astype(np.int64)
    existed = cat.start - (rng.random(n) * 730 * DAY).astype(np.int64) - 1
    created = np.where(new, joined, existed)
    location = np.searchsorted(np.cumsum(REGION_SHARE), rng.random(n) * REGION_SHARE.sum())
    location = np.minimum(location, len(REGIONS) - 1)
    light = rng.random(n) < behaviour.light_user_share
    device = np.minimum(np.searchsorted(np.cumsum(DEVICE_SHARE), rng.random(n)), len(DEVICES) - 1)
    sensitivity = rng.lognormal(0.0, 0.5, n)
    activity = rng.lognormal(-0.32, 0.8, n)  # mean 1

    slots = behaviour.max_favourites + 1
    count = 1 + np.minimum(rng.poisson(1.0, n), behaviour.max_favourites - 1)
    # Favourites follow the home region's category preferences, so location and taste correlate.
    fav_leaf = categorical_rows(
        cat.region_leaf_cdf, np.repeat(location, slots), rng.random(n * slots)
    ).reshape(n, slots)
    used = np.arange(slots)[None, :] < count[:, None]
    start_w = rng.gamma(1.0, 1.0, (n, slots)) * used
    end_w = 0.5 * start_w / start_w.sum(axis=1, keepdims=True)
    fresh = rng.gamma(1.0, 1.0, (n, slots)) * used
    end_w += 0.5 * fresh / fresh.sum(axis=1, keepdims=True)
    # Drift: some users grow a new interest over the period (last slot: zero at start).
    emerging = rng.random(n) < behaviour.emerging_interest_prob
    share = behaviour.emerging_interest_weight
    end_w = np.where(emerging[:, None], end_w * (1.0 - share), end_w)
    end_w[:, -1] = np.where(emerging, share, 0.0)
    start_w[:, -1] = 0.0
    fav_leaf = np.where(used | (emerging[:, None] & (np.arange(slots) == slots - 1)), fav_leaf, -1)
    start_w /= start_w.sum(axis=1, keepdims=True)
    end_w /= end_w.sum(axis=1, keepdims=True)
    # A favourite seller: one selling popular items in the user's first favourite category.
    product = cat.leaf_sampler.sample(fav_leaf[:, 0], np.full(n, cat.end), rng.random(n))
    has_seller = (rng.random(n) < behaviour.favourite_seller_prob) & (product >= 0)
    fav_seller = np.where(has_seller, cat.product_seller[np.maximum(product, 0)], -1)
    return UserChunk(
        lo=lo,
        created=created,
        location=location,
        light=light,
        device=device,
        sensitivity=sensitivity,
        activity=activity,
        fav_leaf=fav_leaf,
        fav_start=start_w,
        fav_end=end_w,
        fav_seller=fav_seller,
    )


def _taste_leaf(users: UserChunk, user: np.ndarray, tau: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(users.weights(user, tau), axis=1)
    slot = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    return users.fav_leaf[user, np.minimum(slot, cdf.shape[1] - 1)]


@dataclass
class EventChunk:
    user: np.ndarray  # local user row
    product: np.ndarray
    event: np.ndarray  # int8 index into EVENT_TYPES
    time: np.ndarray  # epoch seconds
    device: np.ndarray
    location: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def _concat(parts: list[EventChunk]) -> EventChunk:
    return EventChunk(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in EventChunk.__dataclass_fields__)
    )


def draw_events(cat: Catalogue, users: UserChunk) -> EventChunk:
    """Sessions, impressions, funnel and repeat purchases of a user chunk, by user and time."""
    behaviour = cat.config.behaviour
    rng = rng_for(cat.seed, 3, users.lo)
    period = cat.end - cat.start

    # ---- sessions ----------------------------------------------------------------------------
    first_day = -(-np.maximum(users.created, cat.start) // DAY)  # next midnight on or after
    last_day = cat.end // DAY  # exclusive
    span = last_day - first_day
    frac = span / cat.config.days
    sessions = np.where(
        users.light,
        1,
        1 + rng.poisson(users.activity * (behaviour.sessions_per_user - 1.0) * frac),
    )
    s_user = np.repeat(np.arange(len(users)), sessions)
    m = len(s_user)
    hour_cdf = np.cumsum(HOUR_ACTIVITY) / HOUR_ACTIVITY.sum()
    hour = np.minimum(np.searchsorted(hour_cdf, rng.random(m)), 23)
    day = first_day[s_user] + (rng.random(m) * span[s_user]).astype(np.int64)
    s_time = day * DAY + hour * 3600 + (rng.random(m) * SESSION_MINUTES * 60).astype(np.int64)
    by_hour = categorical_rows(HOUR_DEVICE_CDF, hour, rng.random(m))
    s_device = np.where(
        rng.random(m) < behaviour.primary_device_prob, users.device[s_user], by_hour
    )
    travelling = rng.random(m) >= behaviour.home_location_prob
    s_location = np.where(travelling, rng.integers(0, len(REGIONS), m), users.location[s_user])
    tau = np.clip((s_time - cat.start) / period, 0.0, 1.0)
    # Focus category: tastes (or the region's background), thinned by seasonality.
    focus = np.full(m, -1)
    pending = np.arange(m)
    for round_ in range(6):
        k = len(pending)
        taste = rng.random(k) < behaviour.taste_share
        leaf = np.where(
            taste,
            _taste_leaf(users, s_user[pending], tau[pending], rng.random(k)),
            categorical_rows(cat.region_leaf_cdf, s_location[pending], rng.random(k)),
        )
        season = cat.season(leaf, s_time[pending]) - cat.season_max(leaf)
        accept = (rng.random(k) < np.exp(season)) | (round_ == 5)
        focus[pending[accept]] = leaf[accept]
        pending = pending[~accept]
        if not len(pending):
            break

    # ---- impressions -------------------------------------------------------------------------
    light_session = users.light[s_user]
    shown = np.where(
        light_session,
        1 + (rng.random(m) < 0.5),
        1 + rng.poisson(behaviour.impressions_per_session - 1.0, m),
    )
    i_session = np.repeat(np.arange(m), shown)
    n_imp = len(i_session)
    slot = np.arange(n_imp) - np.repeat(np.cumsum(shown) - shown, shown)
    i_user = s_user[i_session]
    i_time = s_time[i_session] + 3 * slot + rng.integers(0, 3, n_imp)
    source = rng.random(n_imp)
    other = _taste_leaf(users, i_user, tau[i_session], rng.random(n_imp))
    leaf = np.where(source < behaviour.focus_share, focus[i_session], other)
    from_global = source >= behaviour.focus_share + behaviour.other_taste_share
    product = cat.leaf_sampler.sample(np.maximum(leaf, 0), i_time, rng.random(n_imp))
    fallback = cat.global_sampler.sample(np.zeros(n_imp, np.int64), i_time, rng.random(n_imp))
    product = np.where(from_global | (product < 0) | (leaf < 0), fallback, product)
    # One impression per (session, product): a list never shows the same item twice.
    keep = product >= 0
    _, first = np.unique(i_session[keep] * len(cat.product_leaf) + product[keep], return_index=True)
    rows = np.flatnonzero(keep)[np.sort(first)]
    i_session, slot, i_user, i_time, product = (
        a[rows] for a in (i_session, slot, i_user, i_time, product)
    )
    i_tau = tau[i_session]
    i_device = s_device[i_session]
    p_leaf = cat.product_leaf[product]
    taste_weight = ((users.fav_leaf[i_user] == p_leaf[:, None]) * users.weights(i_user, i_tau)).sum(
        axis=1
    )
    taste = np.minimum(1.0, 2.0 * taste_weight)
    quality = cat.seller_rating[cat.product_seller[product]] - 3.5
    price_term = users.sensitivity[i_user] * cat.relative_log_price()[product]
    conversion_context = np.asarray(behaviour.device_conversion)[i_device]

    # ---- funnel ------------------------------------------------------------------------------
    b = behaviour
    click_logit = (
        b.click_base
        + b.click_taste * taste
        + b.click_in_focus * (p_leaf == focus[i_session])
        + b.click_appeal * cat.product_appeal[product]
        + b.click_favourite_seller * (cat.product_seller[product] == users.fav_seller[i_user])
        + b.click_quality * quality
        + b.click_position * slot
        + np.asarray(b.device_click)[i_device]
    )
    clicked = rng.random(len(product)) < _sigmoid(click_logit)
    favourited = clicked & (
        rng.random(len(product)) < _sigmoid(b.favourite_base + b.favourite_taste * taste)
    )
    cart_logit = (
        b.cart_base
        + b.cart_quality * quality
        + b.cart_taste * taste
        + b.cart_price * price_term
        + conversion_context
    )
    carted = (
        clicked & cat.product_in_stock[product] & (rng.random(len(product)) < _sigmoid(cart_logit))
    )
    purchase_logit = (
        b.purchase_base
        + b.purchase_quality * quality
        + b.purchase_price * price_term
        + conversion_context
    )
    bought = carted & (rng.random(len(product)) < _sigmoid(purchase_logit))
    n = len(product)
    click_time = i_time + rng.integers(*CLICK_DELAY, n)
    cart_time = click_time + rng.integers(*STEP_DELAY, n)
    buy_time = cart_time + rng.integers(*PURCHASE_DELAY, n)
    fav_time = click_time + rng.integers(*STEP_DELAY, n)
    i_location = s_location[i_session]

    def part(mask: np.ndarray, code: int, time: np.ndarray) -> EventChunk:
        return EventChunk(
            i_user[mask],
            product[mask],
            np.full(int(mask.sum()), code, np.int8),
            time[mask],
            i_device[mask],
            i_location[mask],
        )

    everything = np.ones(n, bool)
    parts = [
        part(everything, IMPRESSION, i_time),
        part(clicked, CLICK, click_time),
        part(favourited, FAVORITE, fav_time),
        part(carted, CART, cart_time),
        part(bought, PURCHASE, buy_time),
    ]
    parts.extend(_repeats(cat, users, rng, i_user[bought], product[bought], buy_time[bought]))
    events = _concat(parts)
    order = np.lexsort((events.event, events.time, events.user))
    return EventChunk(*(getattr(events, f)[order] for f in EventChunk.__dataclass_fields__))


def _repeats(
    cat: Catalogue,
    users: UserChunk,
    rng: np.random.Generator,
    user: np.ndarray,
    product: np.ndarray,
    time: np.ndarray,
) -> list[EventChunk]:
    """Consumables are bought again about every leaf's cycle ('buy again' impression + funnel)."""
    behaviour = cat.config.behaviour
    parts: list[EventChunk] = []
    alive = cat.leaf_consumable[cat.product_leaf[product]]
    user, product, time = user[alive], product[alive], time[alive]
    latest = cat.end - SESSION_MINUTES * 60
    for _ in range(behaviour.max_repeats):
        k = len(user)
        cycle = cat.leaf_cycle_days[cat.product_leaf[product]]
        gap = (cycle * rng.lognormal(0.0, 0.3, k) * DAY).astype(np.int64)
        again = time + gap
        go = (rng.random(k) < behaviour.repeat_prob) & (again < latest)
        user, product, again = user[go], product[go], again[go]
        k = len(user)
        device, location = users.device[user], users.location[user]
        click = again + rng.integers(*CLICK_DELAY, k)
        cart = click + rng.integers(*STEP_DELAY, k)
        buy = cart + rng.integers(*PURCHASE_DELAY, k)
        for code, at in ((IMPRESSION, again), (CLICK, click), (CART, cart), (PURCHASE, buy)):
            parts.append(EventChunk(user, product, np.full(k, code, np.int8), at, device, location))
        time = buy
        if not k:
            break
    return parts


# ---- Arrow tables ----------------------------------------------------------------------------
_EVENT_NAMES = pa.array(list(EVENT_TYPES), pa.string())
_DEVICE_NAMES = pa.array(list(DEVICES), pa.string())
_REGION_NAMES = pa.array(list(REGIONS), pa.string())


def user_ids(cat: Catalogue, lo: int, hi: int) -> pa.Array:
    width = len(str(max(cat.config.num_users - 1, 0)))
    return pa.array([f"u{i:0{width}d}" for i in range(lo, hi)], pa.string())


def users_table(cat: Catalogue, users: UserChunk, ids: pa.Array) -> pa.Table:
    return pa.Table.from_arrays(
        [
            ids,
            pa.array(users.created * 1000, TIMESTAMP),
            _REGION_NAMES.take(pa.array(users.location)),
        ],
        schema=USERS.arrow_schema,
    )


def events_table(cat: Catalogue, events: EventChunk, ids: pa.Array) -> pa.Table:
    hour = ((events.time // 3600) % 24).astype(np.int8)
    return pa.Table.from_arrays(
        [
            ids.take(pa.array(events.user)),
            cat.product_ids.take(pa.array(events.product)),
            _EVENT_NAMES.take(pa.array(events.event)),
            pa.array(events.time * 1000, TIMESTAMP),
            pa.array(hour, pa.int8()),
            _DEVICE_NAMES.take(pa.array(events.device)),
            _REGION_NAMES.take(pa.array(events.location)),
            pa.nulls(len(events), pa.string()),
        ],
        schema=EVENTS.arrow_schema,
    )
