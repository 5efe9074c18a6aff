"""The epoch loop every trained recommender shares: progress, validation-based selection, budgets.

A model hands in what differs (one epoch of steps, refreshing its tables, scoring for validation,
saving and restoring its parameters); this loop does what the Recommender contract asks of every
``fit``: one log line per epoch, the epoch kept by validation NDCG@k (never test), early stopping
on patience, a wall-clock budget, and torch's thread count set for the duration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.data.interactions import InteractionData
from trainer.models.base import TrainReport
from trainer.models.baselines.common import is_better, validation_metrics

log = logging.getLogger(__name__)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (0: leave torch's setting), then restore it."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class EpochHooks:
    """What a model plugs into :func:`train_epochs`."""

    run_epoch: Callable[[int], dict[str, float]]  # epoch -> {"loss": ..., other stats}
    refresh: Callable[[], None]  # recompute the tables score() reads
    score_users: Callable[[np.ndarray], torch.Tensor]  # validation-stage scores of users
    snapshot: Callable[[], Any]  # copy of the parameters
    restore: Callable[[Any], None]
    on_epoch: Callable[[dict[str, float]], None] | None = None


def train_epochs(name: str, config: Any, data: InteractionData, hooks: EpochHooks) -> TrainReport:
    """Run epochs until ``config.epochs``, patience or ``config.time_budget``; keep the best.

    ``config`` needs ``epochs``, ``eval_every``, ``patience``, ``valid_k``, ``valid_users``,
    ``time_budget`` (seconds of training, 0 for none) and ``seed``.
    """
    start = time.perf_counter()
    history: list[dict[str, float]] = []
    best_value: float | None = None
    best_epoch: int | None = None
    best_state: Any = None
    stale = 0
    epoch = 0
    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch, **hooks.run_epoch(epoch)}
        row["seconds"] = time.perf_counter() - epoch_start
        train_seconds += row["seconds"]
        row["train_seconds"] = train_seconds
        hooks.refresh()
        if config.eval_every > 0 and epoch % config.eval_every == 0:
            with torch.no_grad():
                metrics = validation_metrics(
                    hooks.score_users,
                    data,
                    k=config.valid_k,
                    max_users=config.valid_users,
                    seed=config.seed,
                )
            if metrics is not None:
                row.update({f"valid_{key}": value for key, value in metrics.items()})
                value = metrics[f"NDCG@{config.valid_k}"]
                if is_better(value, best_value):
                    best_value, best_epoch, stale = value, epoch, 0
                    best_state = hooks.snapshot()
                else:
                    stale += 1
        history.append(row)
        if hooks.on_epoch is not None:
            hooks.on_epoch(row)
        extra = "".join(
            f" {key} {value:.4f}"
            for key, value in row.items()
            if key not in ("epoch", "loss", "seconds", "train_seconds")
        )
        log.info(
            "%s epoch %d/%d loss %.4f%s (%.1fs)",
            name,
            epoch,
            config.epochs,
            row["loss"],
            extra,
            row["seconds"],
        )
        if config.patience > 0 and stale >= config.patience:
            log.info("%s: no validation gain for %d checks, stopping", name, stale)
            break
        if config.time_budget > 0 and train_seconds >= config.time_budget:
            log.info("%s: time budget of %.0fs spent, stopping", name, config.time_budget)
            break
    if best_state is not None and best_epoch != epoch:
        hooks.restore(best_state)
        hooks.refresh()
    if best_epoch is not None:
        log.info(
            "%s: keeping epoch %d (valid NDCG@%d %.4f)",
            name,
            best_epoch,
            config.valid_k,
            best_value,
        )
    return TrainReport(
        epochs=epoch, seconds=time.perf_counter() - start, history=history, best_epoch=best_epoch
    )


def epoch_summary(row: dict[str, float]) -> str:
    """One epoch's figures as ``key=value`` pairs, floats to four decimals."""
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
