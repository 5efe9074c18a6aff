"""The canonical data model, its validation and storage, loaders, splits and the graph builder."""
