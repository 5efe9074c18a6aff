"""Finds every registered recommender by importing each module under :mod:`trainer.models`."""

from __future__ import annotations

import importlib
import pkgutil

import trainer.models as models_package
from trainer.models.base import MODELS, Recommender


def all_models() -> dict[str, type[Recommender]]:
    """Name -> class of every model that registers itself with ``@register``."""
    for module in pkgutil.walk_packages(models_package.__path__, prefix="trainer.models."):
        importlib.import_module(module.name)
    return dict(sorted(MODELS.items()))


def get_model_class(name: str) -> type[Recommender]:
    models = all_models()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(models)}")
    return models[name]
