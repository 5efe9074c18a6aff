"""Query parameters: body flattening, aliases, precedence and the known-but-unsupported set.

Spec §4.1/§4.2 (docs.vespa.ai/en/reference/api/query.html). Precedence, highest first: URL
parameters, body keys, query profile, defaults.
"""

from __future__ import annotations

import json
import re

from vespa_app.engine.search.errors import QueryError, unsupported

# alias (lower case) -> canonical name
ALIASES = {
    "count": "hits",
    "start": "offset",
    "ranking": "ranking.profile",
    "summary": "presentation.summary",
    "restrict": "model.restrict",
    "sources": "model.sources",
    "query": "model.queryString",
    "type": "model.type",
    "default-index": "model.defaultIndex",
    "sorting": "ranking.sorting",
    "ranking.rerankcount": "ranking.secondPhase.rerankCount",
    "ranking.secondphase.totalrerankcount": "ranking.secondPhase.rerankCount",
}
CANONICAL = [
    "yql", "hits", "offset", "timeout", "ranking.profile", "ranking.freshness",
    "ranking.rankScoreDropLimit", "ranking.secondPhase.rerankCount",
    "ranking.globalPhase.rerankCount",
    "ranking.globalPhase.rankScoreDropLimit", "ranking.matching.approximateThreshold",
    "ranking.matching.postFilterThreshold", "ranking.matching.targetHitsMaxAdjustmentFactor",
    "ranking.matching.filterFirstThreshold", "ranking.matching.filterFirstExploration",
    "ranking.matching.explorationSlack", "presentation.summary", "presentation.timing",
    "presentation.format", "presentation.format.tensors", "trace.level", "trace.explainLevel",
    "trace.profileDepth", "trace.timestamps", "model.restrict", "model.sources",
    "model.queryString",
    "model.type", "model.defaultIndex", "ranking.sorting",
]  # fmt: skip
_CANON_BY_LOWER = {c.lower(): c for c in CANONICAL}
UNSUPPORTED_EXACT = {
    "ranking.listfeatures", "ranking.sorting", "collapsefield", "collapsesize", "collapse.summary",
    "recall", "model.filter", "filter", "select", "ranking.queryCache".lower(), "grouping",
    "presentation.bolding", "ranking.location", "location", "pos.ll", "pos.radius", "nocache",
    "ranking.softtimeout.enable", "ranking.keeprankcount", "ranking.rankscoredroplimit.secondphase",
}  # fmt: skip
UNSUPPORTED_PREFIXES = (
    "ranking.properties.", "ranking.matchphase.", "grouping.", "select.", "streaming.",
    "rankproperty.", "ranking.diversity.", "collapse.", "ranking.secondphase.rankscoredroplimit",
)  # fmt: skip
_INPUT_RE = re.compile(r"^(?:input|ranking\.features|rankfeature)\.query\((\w+)\)$", re.I)


def flatten_body(body: dict) -> dict[str, str]:
    """Nested objects -> dotted names; numbers/bools -> text; arrays, `input.*` values -> JSON."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and not prefix.lower().startswith("input."):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        if isinstance(value, str):
            out[prefix] = value
        elif isinstance(value, bool):
            out[prefix] = "true" if value else "false"
        elif value is None:
            out[prefix] = ""
        elif isinstance(value, (int, float)):
            out[prefix] = json.dumps(value)
        else:
            out[prefix] = json.dumps(value, separators=(",", ":"))

    walk("", body)
    return out


def canonical_name(name: str) -> str:
    low = name.lower()
    m = _INPUT_RE.match(name)
    if m:
        return f"input.query({m.group(1)})"
    if low in ALIASES:
        return ALIASES[low]
    return _CANON_BY_LOWER.get(low, name)


class Params:
    """The merged request parameters, canonical names as keys."""

    def __init__(
        self, url_params: dict[str, str], body: dict | None, query_profile: dict[str, str]
    ):
        merged: dict[str, str] = {}
        layers = [query_profile, flatten_body(body) if body else {}, url_params]
        for layer in layers:
            for k, v in layer.items():
                merged[canonical_name(k)] = v if isinstance(v, str) else json.dumps(v)
        self.values = merged
        self.max_hits = self.int_of("maxHits", 400)
        self.max_offset = self.int_of("maxOffset", 1000)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def raw(self, name: str) -> str | None:
        """An inert property (e.g. `seen` for `@seen`), case-sensitive as written."""
        return self.values.get(name)

    def int_of(self, name: str, default: int) -> int:
        v = self.values.get(name)
        if v is None or v == "":
            return default
        try:
            return int(float(v)) if re.fullmatch(r"-?\d+(\.0*)?", v.strip()) else int(v)
        except ValueError:
            raise QueryError(
                4, f"Could not set '{name}' to '{v}': '{v}' is not a valid integer"
            ) from None

    def float_of(self, name: str) -> float | None:
        v = self.values.get(name)
        if v is None or v == "":
            return None
        try:
            return float(v)
        except ValueError:
            raise QueryError(
                4, f"Could not set '{name}' to '{v}': '{v}' is not a valid number"
            ) from None

    def bool_of(self, name: str) -> bool:
        v = (self.values.get(name) or "").strip().lower()
        return v in ("true", "1", "yes")

    def inputs(self) -> dict[str, str]:
        """query input name -> raw value text."""
        out = {}
        for k, v in self.values.items():
            m = _INPUT_RE.match(k)
            if m:
                out[m.group(1)] = v
        return out

    def check_unsupported(self) -> None:
        for k, v in self.values.items():
            low = k.lower()
            if low in UNSUPPORTED_EXACT or any(low.startswith(p) for p in UNSUPPORTED_PREFIXES):
                raise unsupported(k)
            if k == "presentation.format" and v.lower() not in ("json", ""):
                raise unsupported(f"presentation.format={v}")
            if k == "presentation.format.tensors" and v.lower() not in ("short", ""):
                raise unsupported(f"presentation.format.tensors={v}")
            if low.startswith("input.") and not _INPUT_RE.match(k):
                raise unsupported(k)

    def timeout_seconds(self) -> float:
        v = self.values.get("timeout")
        if v is None or v.strip() == "":
            return 0.5
        return parse_timeout(v)


def parse_timeout(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*", text)
    if not m:
        raise QueryError(
            4, f"Could not set 'timeout' to '{text}': Error parsing '{text}': Invalid number"
        )
    n = float(m.group(1))
    unit = m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n
