"""Recommenders behind one contract (:mod:`trainer.models.base`) and their registry."""
