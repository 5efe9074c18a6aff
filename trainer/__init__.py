"""Training side: data model, datasets, graph and sequence models, evaluation."""
