"""Evaluation: ranking metrics, the full-ranking and sampled protocols, and result tables.

Definitions of every protocol and metric: docs/evaluation.md.
"""

from trainer.evaluation.report import evaluate, format_table

__all__ = ["evaluate", "format_table"]
