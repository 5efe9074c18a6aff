"""Scales of the synthetic marketplace and the planted behaviour parameters.

A :class:`ScaleConfig` fixes the sizes (users, products, sellers, taxonomy width), the period and
the chunking; :class:`Behaviour` fixes the planted effects (funnel coefficients, shares of new and
light users, drift, seasonality...). Both are frozen dataclasses and both are recorded in the
dataset's ``dataset.json`` so a folder says how it was made.

``chunk_users`` is part of the data's definition: users are generated chunk by chunk, each chunk
from its own random stream, so the same seed and config give the same bytes whatever the memory
of the machine, and changing ``chunk_users`` changes the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Behaviour:
    """Planted effects. Logit coefficients are on the log-odds scale of the stage they name."""

    # Users
    new_user_share: float = 0.35  # signed up during the period (the rest existed before it)
    light_user_share: float = 0.2  # one short visit: 1-3 events
    max_favourites: int = 4  # favourite leaf categories per user (1..max)
    taste_share: float = 0.75  # share of sessions that follow the user's tastes
    emerging_interest_prob: float = 0.4  # drift: a new favourite that grows over the period
    emerging_interest_weight: float = 0.35  # its weight by the end of the period
    favourite_seller_prob: float = 0.6
    home_location_prob: float = 0.9  # events from the user's home region (else travelling)
    primary_device_prob: float = 0.6  # sessions on the user's usual device (else by hour)
    sessions_per_user: float = 6.0  # mean sessions of a regular user active the whole period
    impressions_per_session: float = 5.0  # mean impressions of a regular session
    # Where a session's impressions come from
    focus_share: float = 0.6  # the session's focus leaf
    other_taste_share: float = 0.25  # another of the user's tastes (the rest: global popularity)
    # Funnel logits
    click_base: float = -4.7
    click_taste: float = 1.2  # x the user's current weight on the product's leaf, scaled to [0, 1]
    click_in_focus: float = 0.5  # the product is in the category the user came for
    click_appeal: float = 0.25  # x z-scored log popularity of the product
    click_favourite_seller: float = 0.9
    click_quality: float = 0.3  # x (rating - 3.5)
    click_position: float = -0.12  # x slot in the session's list
    favourite_base: float = -2.9  # from a click
    favourite_taste: float = 1.0
    cart_base: float = -2.8  # from a click
    cart_quality: float = 0.6
    cart_taste: float = 0.8
    cart_price: float = -0.9  # x user price sensitivity x log(price / leaf median price)
    purchase_base: float = -1.5  # from a cart
    purchase_quality: float = 0.9
    purchase_price: float = -1.2
    # Context effects on the funnel, one per device in schema.DEVICES order
    device_click: tuple[float, ...] = (0.15, -0.1, 0.0, 0.25)
    device_conversion: tuple[float, ...] = (-0.35, 0.35, 0.0, 0.15)
    location_bias_sd: float = 0.7  # sd of a region's log-preference for each root category
    # Seasonality (per leaf, on the log weight of choosing a focus category) and repeats
    yearly_amplitude: float = 0.8
    weekly_amplitude: float = 0.4
    repeat_prob: float = 0.7  # chance a consumable is bought again after each purchase
    max_repeats: int = 4
    popularity_shape: float = 1.1  # Pareto shape of product appeal (smaller: heavier tail)
    in_stock_share: float = 0.95


@dataclass(frozen=True)
class ScaleConfig:
    name: str
    num_users: int
    num_products: int
    num_sellers: int
    num_roots: int = 8  # root categories taken from the vocabulary (at most 8)
    subs_per_root: int = 4  # at most 4
    leaves_per_sub: int = 5  # at most 5
    days: int = 180
    end: str = "2024-12-01T00:00:00+00:00"  # fixed, never "now", so output is reproducible
    catalogue_share_before: float = 0.7  # products listed before the period; the rest arrive in it
    chunk_users: int = 50_000
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        checks = {
            "num_users": self.num_users >= 1,
            "num_products": self.num_products >= 1,
            "num_sellers": 1 <= self.num_sellers <= self.num_products,
            "num_roots": 1 <= self.num_roots <= 8,
            "subs_per_root": 1 <= self.subs_per_root <= 4,
            "leaves_per_sub": 1 <= self.leaves_per_sub <= 5,
            "days": self.days >= 7,
            "chunk_users": self.chunk_users >= 1,
            "catalogue_share_before": 0.0 < self.catalogue_share_before <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"ScaleConfig {self.name!r}: invalid {name}={getattr(self, name)!r}"
                )

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, not tuples), so it survives dataset.json unchanged."""
        raw = asdict(self)
        raw["behaviour"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in raw["behaviour"].items()
        }
        return raw


SCALES: dict[str, ScaleConfig] = {
    "tiny": ScaleConfig(
        "tiny",
        num_users=200,
        num_products=300,
        num_sellers=20,
        num_roots=4,
        subs_per_root=2,
        leaves_per_sub=3,
        chunk_users=200,
    ),
    "small": ScaleConfig(
        "small",
        num_users=5_000,
        num_products=3_000,
        num_sellers=200,
        num_roots=8,
        subs_per_root=3,
        leaves_per_sub=4,
        chunk_users=5_000,
    ),
    "medium": ScaleConfig(
        "medium",
        num_users=50_000,
        num_products=20_000,
        num_sellers=1_000,
        chunk_users=25_000,
    ),
    "large": ScaleConfig(
        "large",
        num_users=1_000_000,
        num_products=1_000_000,
        num_sellers=50_000,
        chunk_users=50_000,
        # A little more activity than the smaller scales so the target of 20M events is met.
        behaviour=Behaviour(sessions_per_user=6.6),
    ),
}


def resolve_scale(scale: str | ScaleConfig, **overrides: Any) -> ScaleConfig:
    """A named scale (``tiny``, ``small``, ``medium``, ``large``) or a config, with overrides."""
    if isinstance(scale, ScaleConfig):
        config = scale
    elif scale in SCALES:
        config = SCALES[scale]
    else:
        raise ValueError(f"unknown scale {scale!r} (expected one of {', '.join(SCALES)})")
    return replace(config, **overrides) if overrides else config
