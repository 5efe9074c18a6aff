"""Re-ranking rules as frozen dataclasses read from TOML (weights live in the file, not in code).

Every key is checked: an unknown key, a wrong type or an out-of-range value raises `RulesError`
naming the file and the dotted key, so a typo in a merchandising change cannot silently fall back
to a default. `load_rules()` with no argument reads the default `rules.toml` beside this module.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_RULES = Path(__file__).resolve().parent / "rules.toml"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class ScoreRules:
    # "ranker": the stage-2 score, falling back to retrieval for the whole request when any
    # candidate lacks it (the ranker failed); "retrieval": always the stage-1 score.
    source: str = "ranker"


@dataclasses.dataclass(frozen=True)
class FilterRules:
    require_in_stock: bool = True


@dataclasses.dataclass(frozen=True)
class DiversityRules:
    # MMR: objective = lambda * score - (1 - lambda) * max similarity to the items already placed.
    mmr_lambda: float = 1.0
    similarity: str = "embedding"  # "embedding" (cosine) or "attributes" (seller/category)
    seller_weight: float = 0.5
    category_weight: float = 0.5
    # Hard caps: at most max_per_window items of one seller in any `window` consecutive slots
    # (0 = off), and at most floor(max_share * k) (at least 1) in the whole list (1.0 = off).
    max_per_window: int = 0
    window: int = 10
    max_share: float = 1.0


@dataclasses.dataclass(frozen=True)
class FreshnessRules:
    # score += weight * 0.5 ** (age_days / half_life_days)
    weight: float = 0.0
    half_life_days: float = 14.0


@dataclasses.dataclass(frozen=True)
class MarginRules:
    weight: float = 0.0  # score += weight * margin
    tie_epsilon: float = 0.0  # within epsilon of the best objective, the higher margin wins


@dataclasses.dataclass(frozen=True)
class FairnessRules:
    # A seller is small when its exposure share is below the threshold (sellers absent from the
    # exposure map have none). min_share: at least floor(min_share * t) of the first t slots go
    # to small sellers while eligible ones remain; boost: added to their score.
    exposure_threshold: float = 0.0
    min_share: float = 0.0
    boost: float = 0.0


@dataclasses.dataclass(frozen=True)
class Pin:
    position: int  # 1-based slot
    product_id: str | None = None
    category: str | None = None  # the best remaining candidate in this category takes the slot


@dataclasses.dataclass(frozen=True)
class Boost:
    product_id: str | None = None
    seller_id: str | None = None
    category: str | None = None
    multiply: float = 1.0
    add: float = 0.0

    @property
    def target(self) -> str:
        for kind in ("product_id", "seller_id", "category"):
            value = getattr(self, kind)
            if value is not None:
                return f"{kind}={value}"
        return ""


@dataclasses.dataclass(frozen=True)
class BusinessRules:
    blocked_products: tuple[str, ...] = ()
    blocked_sellers: tuple[str, ...] = ()
    blocked_categories: tuple[str, ...] = ()
    pin: tuple[Pin, ...] = ()
    boost: tuple[Boost, ...] = ()


@dataclasses.dataclass(frozen=True)
class RerankRules:
    score: ScoreRules = ScoreRules()
    filter: FilterRules = FilterRules()
    diversity: DiversityRules = DiversityRules()
    freshness: FreshnessRules = FreshnessRules()
    margin: MarginRules = MarginRules()
    fairness: FairnessRules = FairnessRules()
    business: BusinessRules = BusinessRules()
    source: str = "<defaults>"  # where the rules came from, for messages and explanations


_SECTIONS: dict[str, type] = {
    "score": ScoreRules,
    "filter": FilterRules,
    "diversity": DiversityRules,
    "freshness": FreshnessRules,
    "margin": MarginRules,
    "fairness": FairnessRules,
    "business": BusinessRules,
}
# TOML spells MMR's lambda as `lambda`; `lambda` is a Python keyword, hence the field name.
_ALIASES = {("diversity", "lambda"): "mmr_lambda"}


def load_rules(path: Path | str | None = None) -> RerankRules:
    """Rules from a TOML file (default: rules.toml beside this module)."""
    path = Path(path) if path is not None else DEFAULT_RULES
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{path}: {error}") from error
    except OSError as error:
        raise RulesError(f"{path}: cannot read rules file ({error.strerror})") from error
    return rules_from_mapping(raw, str(path))


def rules_from_mapping(raw: Mapping[str, Any], where: str = "<mapping>") -> RerankRules:
    """Rules from an already-parsed TOML document; ``where`` names it in error messages."""
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            known = ", ".join(sorted(_SECTIONS))
            raise RulesError(f"{where}: unknown key '{name}' (known sections: {known})")
        if not isinstance(value, Mapping):
            raise RulesError(f"{where}: '{name}' must be a table")
        if name == "business":
            sections[name] = _business(value, where)
        else:
            sections[name] = _fill(_SECTIONS[name], value, where, name)
    rules = RerankRules(**sections, source=where)
    _check(rules, where)
    return rules


def _fill(cls: type, table: Mapping[str, Any], where: str, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = _ALIASES.get((prefix, key), key)
        dotted = f"{prefix}.{key}"
        aliased = {f for (section, _), f in _ALIASES.items() if section == prefix}
        if name not in fields or key in aliased:
            known = ", ".join(sorted(_toml_name(prefix, f) for f in fields))
            raise RulesError(f"{where}: unknown key '{dotted}' (known: {known})")
        values[name] = _coerce(fields[name].type, value, where, dotted)
    return cls(**values)


def _toml_name(prefix: str, field: str) -> str:
    for (section, key), name in _ALIASES.items():
        if section == prefix and name == field:
            return key
    return field


def _coerce(hint: str, value: Any, where: str, dotted: str) -> Any:
    # Field annotations are strings (postponed evaluation); the set used here is small and fixed.
    base = hint.replace(" | None", "")
    if value is None and base != hint:
        return None
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RulesError(f"{where}: '{dotted}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise RulesError(f"{where}: '{dotted}' must be finite, got {value!r}")
        return float(value)
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RulesError(f"{where}: '{dotted}' must be an integer, got {value!r}")
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise RulesError(f"{where}: '{dotted}' must be true or false, got {value!r}")
        return value
    if base == "str":
        if not isinstance(value, str):
            raise RulesError(f"{where}: '{dotted}' must be a string, got {value!r}")
        return value
    if base == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RulesError(f"{where}: '{dotted}' must be a list of strings, got {value!r}")
        return tuple(value)
    raise RulesError(f"{where}: '{dotted}' has an unsupported type {hint}")  # pragma: no cover


def _business(table: Mapping[str, Any], where: str) -> BusinessRules:
    lists = {k: v for k, v in table.items() if k not in ("pin", "boost")}
    base = _fill(BusinessRules, lists, where, "business")
    pins = tuple(_entries(Pin, table.get("pin", []), where, "business.pin"))
    boosts = tuple(_entries(Boost, table.get("boost", []), where, "business.boost"))
    return dataclasses.replace(base, pin=pins, boost=boosts)


def _entries(cls: type, items: Any, where: str, prefix: str) -> list[Any]:
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise RulesError(f"{where}: '{prefix}' must be an array of tables ([[{prefix}]])")
    out = []
    for number, item in enumerate(items, 1):
        label = f"{prefix}[{number}]"
        if cls is Pin and "position" not in item:
            raise RulesError(f"{where}: '{label}.position' is required")
        out.append(_fill(cls, item, where, label))
    return out


def _check(rules: RerankRules, where: str) -> None:
    def fail(key: str, message: str) -> None:
        raise RulesError(f"{where}: '{key}' {message}")

    if rules.score.source not in ("ranker", "retrieval"):
        fail("score.source", f"must be 'ranker' or 'retrieval', got {rules.score.source!r}")
    d = rules.diversity
    if not 0.0 <= d.mmr_lambda <= 1.0:
        fail("diversity.lambda", f"must be in [0, 1], got {d.mmr_lambda}")
    if d.similarity not in ("embedding", "attributes"):
        fail("diversity.similarity", f"must be 'embedding' or 'attributes', got {d.similarity!r}")
    for key in ("seller_weight", "category_weight"):
        if getattr(d, key) < 0:
            fail(f"diversity.{key}", "must be >= 0")
    if d.max_per_window < 0:
        fail("diversity.max_per_window", "must be >= 0 (0 = no window cap)")
    if d.window < 1:
        fail("diversity.window", f"must be >= 1, got {d.window}")
    if not 0.0 < d.max_share <= 1.0:
        fail("diversity.max_share", f"must be in (0, 1], got {d.max_share}")
    if rules.freshness.half_life_days <= 0:
        fail("freshness.half_life_days", "must be > 0")
    if rules.margin.tie_epsilon < 0:
        fail("margin.tie_epsilon", "must be >= 0")
    if not 0.0 <= rules.fairness.min_share <= 1.0:
        fail("fairness.min_share", f"must be in [0, 1], got {rules.fairness.min_share}")
    seen_positions: set[int] = set()
    for number, pin in enumerate(rules.business.pin, 1):
        label = f"business.pin[{number}]"
        if pin.position < 1:
            fail(f"{label}.position", f"must be >= 1, got {pin.position}")
        if pin.position in seen_positions:
            fail(f"{label}.position", f"{pin.position} is pinned twice")
        seen_positions.add(pin.position)
        if (pin.product_id is None) == (pin.category is None):
            fail(label, "needs exactly one of product_id or category")
    for number, boost in enumerate(rules.business.boost, 1):
        label = f"business.boost[{number}]"
        targets = [boost.product_id, boost.seller_id, boost.category]
        if sum(t is not None for t in targets) != 1:
            fail(label, "needs exactly one of product_id, seller_id or category")
        if boost.multiply < 0:
            fail(f"{label}.multiply", "must be >= 0")
