"""Stage-3 re-ranking: diversity, freshness, margin, fairness and business rules from a TOML file.

    from vespa_app.client.rerank import Reranker, Candidate, RequestContext
    result = Reranker().rerank(candidates, RequestContext(user_id="u1", now=now), exposure)

Pure numpy; see docs/reranking.md for the rules, their order and the explanation format.
"""

from vespa_app.client.rerank.candidates import (
    Candidate,
    HistoryItem,
    RankedItem,
    RequestContext,
    RerankInputError,
    RerankResult,
)
from vespa_app.client.rerank.config import DEFAULT_RULES, RerankRules, RulesError, load_rules
from vespa_app.client.rerank.reranker import Reranker

__all__ = [
    "DEFAULT_RULES",
    "Candidate",
    "HistoryItem",
    "RankedItem",
    "RequestContext",
    "RerankInputError",
    "RerankResult",
    "RerankRules",
    "Reranker",
    "RulesError",
    "load_rules",
]
