"""Graph machinery shared by the graph models: samplers, embedding caches, adjacency helpers.

Importing this package imports PyTorch Geometric once with one known warning silenced: PyG 2.8
calls ``torch.jit.script`` at import time, which torch 2.13 deprecates, and the test suite turns
warnings into errors. Project modules take PyG names from here (``from trainer.graph import
HeteroData``) or import this package before any ``torch_geometric`` import.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.(script|trace)", category=DeprecationWarning
    )
    import torch_geometric
    import torch_geometric.nn
    from torch_geometric.data import HeteroData

__all__ = ["HeteroData", "torch_geometric"]
