"""Inputs of the middle-stage ranker: request-context vectors, candidate features, samples."""
