"""Embedded Python engine serving the Vespa package through Vespa's HTTP API subset.

Spec: docs/vespa-subset.md. Transport and documents live here (server, documents,
store, values, selection, services); search (schema, YQL, ranking) lives in
schema.py and search/.
"""
