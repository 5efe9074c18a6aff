"""Linear propagation over a symmetric normalised adjacency, fast on CPU, with an embedding cache.

LightGCN-style models repeat ``E_{k+1} = Â E_k`` with Â = D^{-1/2} A D^{-1/2} over the joint
user+item graph. Three things make that fast and reusable here:

- Â is built once as a torch sparse CSR matrix (:func:`normalized_adjacency`).
- :class:`SymmetricSpMM` is the product as a custom autograd function. Because Â is symmetric the
  gradient with respect to E is Â @ grad, the same sparse product again; torch's generic autograd
  through a CSR matmul transposes the matrix on every backward call and is several times slower.
- :class:`PropagationCache` keeps every layer's embeddings, and :meth:`PropagationCache.refresh`
  updates them after edges or ego embeddings change by recomputing only the rows that can have
  changed (the k-hop neighbourhood of the touched nodes), reading every other row from the cache.
  The result equals a full recomputation (up to float rounding), which the tests check.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, num_nodes: int
) -> sp.csr_matrix:
    """Symmetric D^{-1/2} A D^{-1/2} of the undirected graph with the given (row, col) edges.

    Each edge is given once; its mirror is added here. Duplicate edges are summed. Isolated nodes
    get an all-zero row (their degree is taken as 1 to avoid dividing by zero).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.asarray(weights, dtype=np.float64)
    adjacency = sp.coo_matrix(
        (
            np.concatenate([values, values]),
            (np.concatenate([rows, cols]), np.concatenate([cols, rows])),
        ),
        shape=(num_nodes, num_nodes),
    ).tocsr()
    adjacency.sum_duplicates()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0))
    scaled = sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)
    scaled = sp.csr_matrix(scaled, dtype=np.float32)
    scaled.sort_indices()
    return scaled


def to_torch_csr(matrix: sp.spmatrix, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A torch sparse CSR tensor holding the same matrix (int64 indices, ``dtype`` values)."""
    matrix = matrix.tocsr()
    with warnings.catch_warnings():
        # torch labels sparse CSR "beta" on first use; the suite turns warnings into errors.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data).to(dtype),
            size=matrix.shape,
            check_invariants=False,
        )


class SymmetricSpMM(torch.autograd.Function):
    """Â @ X for a symmetric sparse Â, whose backward is Â @ grad (Âᵀ = Â)."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


def propagate_layers(adjacency: torch.Tensor, ego: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """[E_0, ..., E_layers] with E_0 = ego and E_{k+1} = Â E_k (differentiable in ``ego``)."""
    out = [ego]
    for _ in range(layers):
        out.append(SymmetricSpMM.apply(adjacency, out[-1]))
    return out


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """LightGCN's readout: the uniform mean of the layer embeddings (α_k = 1 / (K + 1))."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


class MeanPropagation(torch.autograd.Function):
    """mean(E_0, Â E_0, ..., Â^K E_0) in one autograd node, for a symmetric Â.

    The map is linear with a symmetric operator, so its backward is the same polynomial in Â
    applied to the incoming gradient, evaluated Horner-style: K sparse products, and no layer
    kept alive for the backward pass (the per-layer graph of :func:`propagate_layers` keeps K
    tensors of (N, D) and adds K+1 autograd nodes).
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, ego: torch.Tensor, layers: int) -> torch.Tensor:
        ctx.adjacency = adjacency
        ctx.layers = layers
        total = ego.clone()
        current = ego
        for _ in range(layers):
            current = adjacency @ current
            total += current
        return total / (layers + 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        grad = grad.contiguous()
        acc = grad
        for _ in range(ctx.layers):
            acc = ctx.adjacency @ acc
            acc += grad
        return None, acc / (ctx.layers + 1), None


def propagate_mean(adjacency: torch.Tensor, ego: torch.Tensor, layers: int) -> torch.Tensor:
    """(N, D) LightGCN final embeddings: the mean of layers 0..K, differentiable in ``ego``."""
    return MeanPropagation.apply(adjacency, ego, layers)


def _neighbours(adjacency: sp.csr_matrix, nodes: np.ndarray) -> np.ndarray:
    if len(nodes) == 0:
        return nodes
    return np.unique(adjacency[nodes].indices).astype(np.int64)


def _pad_rows(matrix: sp.csr_matrix, num_nodes: int) -> sp.csr_matrix:
    if matrix.shape[0] == num_nodes:
        return matrix
    return sp.csr_matrix(
        (
            matrix.data,
            matrix.indices,
            np.concatenate(
                [matrix.indptr, np.full(num_nodes - matrix.shape[0], matrix.indptr[-1])]
            ),
        ),
        shape=(num_nodes, num_nodes),
    )


class PropagationCache:
    """Every layer's embeddings over one adjacency, refreshable after local changes.

    ``adjacency`` is the normalised Â (scipy CSR, symmetric), ``ego`` the (N, D) layer-0
    embeddings. The cache owns copies; :meth:`final` is the layer mean.
    """

    def __init__(self, adjacency: sp.csr_matrix, ego: torch.Tensor, layers: int):
        self.adjacency = adjacency.tocsr()
        self.num_layers = layers
        with torch.no_grad():
            self.layers = propagate_layers(
                to_torch_csr(self.adjacency), ego.detach().clone(), layers
            )

    @property
    def num_nodes(self) -> int:
        return self.adjacency.shape[0]

    def final(self) -> torch.Tensor:
        return layer_mean(self.layers)

    def refresh(
        self,
        adjacency: sp.csr_matrix,
        touched: np.ndarray | None = None,
        ego: torch.Tensor | None = None,
        changed_ego: np.ndarray | None = None,
    ) -> np.ndarray:
        """Bring the cache to the new ``adjacency`` (and ``ego``), recomputing only what changed.

        ``touched``: nodes whose incident edges changed (endpoints of added, removed or reweighted
        edges): their degree changed, so their row of Â and the entries of their neighbours' rows
        that point at them changed. ``changed_ego``: nodes whose layer-0 embedding changed; rows
        of ``ego`` for nodes beyond the old size are new nodes and count as changed. With
        ``touched=None`` the changed rows of Â are found by comparing the two matrices (exact,
        at the cost of one sparse subtraction). The adjacency
        may grow (new nodes get the next rows) but not shrink.

        Exactness: E_k[v] = Σ_n Â[v, n] E_{k-1}[n] can only change when row v of Â changed or a
        neighbour n had E_{k-1}[n] changed, so recomputing those rows from the cached E_{k-1}
        reproduces the full recomputation. Returns the sorted rows that were recomputed in any
        layer.
        """
        new = adjacency.tocsr()
        num_nodes = new.shape[0]
        if num_nodes < self.num_nodes:
            raise ValueError(f"the adjacency shrank from {self.num_nodes} to {num_nodes} nodes")
        old = _pad_rows(self.adjacency, num_nodes)
        old = sp.csr_matrix((old.data, old.indices, old.indptr), shape=(num_nodes, num_nodes))
        added = np.arange(self.num_nodes, num_nodes, dtype=np.int64)
        if len(added) and ego is None:
            raise ValueError("new nodes need their ego embeddings (pass ego)")
        if touched is None:
            difference = (new - old).tocsr()
            difference.eliminate_zeros()
            # Exactly the rows of Â that differ: no neighbourhood expansion needed.
            rows_changed = np.union1d(np.flatnonzero(np.diff(difference.indptr)), added)
            touched = rows_changed
        else:
            touched = np.union1d(np.asarray(touched, dtype=np.int64), added)
            rows_changed = None
        changed = np.asarray(changed_ego if changed_ego is not None else [], dtype=np.int64)
        changed = np.union1d(changed, added)
        if len(touched) and int(touched.max()) >= num_nodes:
            raise ValueError(f"touched node {int(touched.max())} outside 0..{num_nodes - 1}")

        dim = self.layers[0].shape[1]
        grow = num_nodes - self.num_nodes
        layers = [
            torch.cat([layer, layer.new_zeros(grow, dim)]) if grow else layer.clone()
            for layer in self.layers
        ]
        if len(changed):
            if ego is None:
                raise ValueError("changed_ego given without ego")
            layers[0][torch.from_numpy(changed)] = ego.detach()[torch.from_numpy(changed)]

        if rows_changed is None:
            rows_changed = np.union1d(
                touched, np.union1d(_neighbours(new, touched), _neighbours(old, touched))
            )
        recomputed = changed
        previous = changed
        for k in range(1, self.num_layers + 1):
            rows = np.union1d(rows_changed, _neighbours(new, previous))
            if len(rows):
                block = to_torch_csr(new[rows])  # (R, N)
                layers[k][torch.from_numpy(rows)] = block @ layers[k - 1]
            recomputed = np.union1d(recomputed, rows)
            previous = rows
        self.adjacency = new
        self.layers = layers
        return recomputed
