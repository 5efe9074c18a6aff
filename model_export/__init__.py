"""Stage 2 of the pipeline: trainer checkpoint -> ONNX + embeddings + manifest.json, checked
against the Vespa application package and fed to Vespa (see docs/model-export.md)."""
