"""Embedded Python engine serving the Vespa package through Vespa's HTTP API subset.

Spec: docs/vespa-subset.md. Transport and documents live here (server, documents,
store, values, selection, services); search (schema, YQL, ranking) lives in
schema.py and search/.

Ranking evaluates each phase over all its hits at once (search/batch.py: numpy, one
onnxruntime call per phase for models with a batch axis), with the per-hit closures of
search/ranking.py as reference and fallback; large-targetHits nearestNeighbor scans exactly
(search/matching.py). docs/serving-latency.md has the measurements.
"""
