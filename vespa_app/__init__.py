"""Vespa application package (package/) and the embedded engine serving it (engine/)."""
