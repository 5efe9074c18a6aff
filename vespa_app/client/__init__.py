"""Client layer between Vespa (or the embedded engine) and the webapp: retrieve, rank, re-rank."""
