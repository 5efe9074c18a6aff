"""Vectorised neighbour samplers for PyG's loaders, without pyg-lib or torch-sparse.

PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse, neither of which installs here
(anchors.md §7), so these samplers implement :class:`torch_geometric.sampler.BaseSampler` and are
passed to the standard :class:`~torch_geometric.loader.NodeLoader` /
:class:`~torch_geometric.loader.LinkLoader`:

- :class:`HeteroNeighborSampler`: uniform k-hop sampling over a heterogeneous graph with a fan-out
  per edge type and hop, optionally time-respecting (only edges strictly earlier than the seed's
  time). Edges are kept per edge type in CSC order (incoming edges of each destination, sorted by
  time), so a node's allowed edges are one contiguous slice found by ``searchsorted``.
- :class:`PinSAGESampler`: PinSAGE neighbourhoods (Ying et al., KDD 2018,
  https://arxiv.org/abs/1806.01973) from vectorised random walks with restart on the
  product-user-product graph; a product's neighbours are the T products its walks visit most, and
  the normalised visit counts are the importance weights (``edge_weight`` of :data:`WALK`).

Sampling is non-disjoint (one subgraph per batch, nodes shared between seeds), like PyG's default.
Output follows PyG's convention: an edge (src -> dst) is sampled for a destination in the frontier,
``row`` indexes ``node[src]`` and ``col`` indexes ``node[dst]``, and ``edge`` holds the original
edge ids (so ``edge_permutation`` is None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.graph import HeteroData, torch_geometric

sampler_module = torch_geometric.sampler
neighbor_module = torch_geometric.sampler.neighbor_sampler
EdgeType = tuple[str, str, str]
WALK: EdgeType = ("product", "walk", "product")
# Nodes with more allowed edges than this multiple of the fan-out are sampled with replacement and
# de-duplicated (near-uniform, at most k distinct); below it, exactly without replacement.
EXACT_DEGREE_FACTOR = 8


@dataclass
class _Incoming:
    """One edge type's edges grouped by destination: ``src[ptr[v]:ptr[v+1]]`` point at ``v``."""

    ptr: Tensor  # (num_dst + 1,)
    src: Tensor  # (E,) source node of each edge, CSC order
    edge_id: Tensor  # (E,) original edge id
    # Temporal only: key = dst * (R + 1) + rank(time), increasing in CSC order; R distinct times.
    key: Tensor | None = None
    times: Tensor | None = None  # (R,) sorted distinct edge times


def _incoming(edge_index: Tensor, num_dst: int, time: Tensor | None) -> _Incoming:
    dst = edge_index[1]
    if time is None:
        order = torch.argsort(dst, stable=True)
        key = times = None
    else:
        times, rank = torch.unique(time, return_inverse=True)
        composite = dst * (len(times) + 1) + rank
        order = torch.argsort(composite, stable=True)
        key = composite[order]
    ptr = torch.zeros(num_dst + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_dst), 0)
    return _Incoming(ptr=ptr, src=edge_index[0][order], edge_id=order, key=key, times=times)


def _segment_positions(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """For segments [start, start+count): (segment of each position, position), concatenated."""
    segment = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum())) - offsets[segment]
    return segment, starts[segment] + within


def sample_slices(
    starts: Tensor, counts: Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Up to k uniform positions from each slice [start, start+count), without repetition.

    Returns (slice index, position) of every pick. ``k < 0`` takes whole slices.
    """
    if k < 0:
        return _segment_positions(starts, counts)
    small = counts <= k
    seg_all, pos_all = _segment_positions(starts[small], counts[small])
    picked_seg = [torch.nonzero(small).flatten()[seg_all]]
    picked_pos = [pos_all]
    # Exact: random keys over every allowed edge, keep the k smallest per slice.
    exact = torch.nonzero(~small & (counts <= EXACT_DEGREE_FACTOR * k)).flatten()
    if len(exact):
        seg, pos = _segment_positions(starts[exact], counts[exact])
        score = seg.to(torch.float64) + torch.rand(
            len(seg), generator=generator, dtype=torch.float64
        )
        order = torch.argsort(score)
        seg, pos = seg[order], pos[order]
        first = torch.cumsum(counts[exact], 0) - counts[exact]
        rank = torch.arange(len(seg)) - first[seg]
        keep = rank < k
        picked_seg.append(exact[seg[keep]])
        picked_pos.append(pos[keep])
    # Large slices: k draws with replacement, duplicates dropped.
    large = torch.nonzero(counts > EXACT_DEGREE_FACTOR * k).flatten()
    if len(large) and k > 0:
        seg = large.repeat_interleave(k)
        offset = (torch.rand(len(seg), generator=generator) * counts[seg]).long()
        offset = torch.minimum(offset, counts[seg] - 1)
        pair = torch.unique(torch.stack([seg, offset]), dim=1)
        picked_seg.append(pair[0])
        picked_pos.append(starts[pair[0]] + pair[1])
    return torch.cat(picked_seg), torch.cat(picked_pos)


def _normalise_fanouts(
    edge_types: Sequence[EdgeType], num_neighbors: Sequence[int] | Mapping[EdgeType, Sequence[int]]
) -> dict[EdgeType, list[int]]:
    if not isinstance(num_neighbors, Mapping):
        return {edge_type: list(num_neighbors) for edge_type in edge_types}
    unknown = [t for t in num_neighbors if tuple(t) not in edge_types]
    if unknown:
        raise ValueError(f"num_neighbors names an edge type the graph lacks: {unknown[0]}")
    hops = {len(v) for v in num_neighbors.values()}
    if len(hops) > 1:
        raise ValueError(f"every edge type needs the same number of hops, got {sorted(hops)}")
    depth = hops.pop() if hops else 0
    return {t: list(num_neighbors.get(t, [0] * depth)) for t in edge_types}


class _NodeSet:
    """The sampled nodes of one type in output order, with global -> local lookups."""

    def __init__(self, seeds: Tensor, times: Tensor | None):
        self.ids = seeds
        self.times = times

    def add(self, candidates: Tensor, times: Tensor | None) -> tuple[Tensor, Tensor]:
        """Local index of every candidate (new ones appended); returns (local, new ids)."""
        unique, inverse = torch.unique(candidates, return_inverse=True)
        ordered, order = torch.sort(self.ids, stable=True)
        slot = torch.searchsorted(ordered, unique).clamp(max=max(len(ordered) - 1, 0))
        found = (
            ordered[slot] == unique if len(ordered) else torch.zeros_like(unique, dtype=torch.bool)
        )
        local = torch.empty_like(unique)
        local[found] = order[slot[found]]
        new = unique[~found]
        local[~found] = len(self.ids) + torch.arange(len(new))
        self.ids = torch.cat([self.ids, new])
        if self.times is not None and times is not None:
            # A node reached along several paths keeps the earliest time: never later than any
            # seed it serves.
            earliest = torch.full((len(unique),), torch.iinfo(torch.long).max, dtype=torch.long)
            earliest.scatter_reduce_(0, inverse, times, reduce="amin")
            self.times = torch.cat([self.times, earliest[~found]])
        return local[inverse], new


class HeteroNeighborSampler(sampler_module.BaseSampler):
    """Uniform k-hop neighbour sampler over a ``HeteroData`` graph (vectorised, pure torch).

    ``num_neighbors``: one list of fan-outs per hop for every edge type, or a dict edge type ->
    list (edge types left out are not sampled); -1 takes every neighbour. ``time_attr``: edge
    attribute holding int64 times (e.g. ``"time"`` from :func:`trainer.data.graph.build_graph`);
    when set, seeds need times (``input_time`` of the loader) and only edges strictly earlier than
    the time of the node they lead to are sampled, the time passing from a seed to every node
    reached from it (the earliest time wins when paths meet).
    """

    def __init__(
        self,
        data: HeteroData,
        num_neighbors: Sequence[int] | Mapping[EdgeType, Sequence[int]],
        time_attr: str | None = None,
        seed: int | None = None,
    ):
        self.num_nodes = {t: data[t].num_nodes for t in data.node_types}
        self.fanouts = _normalise_fanouts(data.edge_types, num_neighbors)
        self.num_hops = max((len(v) for v in self.fanouts.values()), default=0)
        self.time_attr = time_attr
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.incoming: dict[EdgeType, _Incoming] = {}
        for edge_type, fanout in self.fanouts.items():
            if not any(k != 0 for k in fanout):
                continue
            store = data[edge_type]
            time = None
            if time_attr is not None:
                if time_attr not in store:
                    raise ValueError(f"edge type {edge_type} has no '{time_attr}' attribute")
                time = store[time_attr]
            self.incoming[edge_type] = _incoming(
                store.edge_index, self.num_nodes[edge_type[2]], time
            )

    # PyG entry points --------------------------------------------------------------------------
    def sample_from_nodes(self, index, **kwargs):
        if self.time_attr is not None and index.time is None:
            raise ValueError("a time-respecting sampler needs seed times (pass input_time)")
        return neighbor_module.node_sample(index, self._sample)

    def sample_from_edges(self, index, neg_sampling=None):
        if index.time is not None:
            raise ValueError(
                "time-respecting link sampling needs disjoint subgraphs, which this sampler does "
                "not build; sample seed nodes with NodeLoader and input_time instead"
            )
        if self.time_attr is not None:
            raise ValueError("a time-respecting sampler needs seed times; LinkLoader gives none")
        return neighbor_module.edge_sample(
            index, self._sample, self.num_nodes, disjoint=False, neg_sampling=neg_sampling
        )

    # Sampling ----------------------------------------------------------------------------------
    def _allowed(self, incoming: _Incoming, nodes: Tensor, times: Tensor | None) -> Tensor:
        """(len(nodes),) number of allowed incoming edges of each node (a prefix of its slice)."""
        if times is None or incoming.key is None:
            return incoming.ptr[nodes + 1] - incoming.ptr[nodes]
        rank = torch.searchsorted(incoming.times, times)  # distinct times strictly earlier
        query = nodes * (len(incoming.times) + 1) + rank
        return torch.searchsorted(incoming.key, query) - incoming.ptr[nodes]

    def _sample(self, seed: dict[str, Tensor], seed_time: dict[str, Tensor] | None = None):
        temporal = self.time_attr is not None
        if temporal and seed_time is None:
            raise ValueError("a time-respecting sampler needs seed times")
        sets = {
            t: _NodeSet(
                seed.get(t, torch.empty(0, dtype=torch.long)),
                (seed_time or {}).get(t, torch.empty(0, dtype=torch.long)) if temporal else None,
            )
            for t in self.num_nodes
        }
        frontier = {t: torch.arange(len(sets[t].ids)) for t in sets}  # local ids
        rows: dict[EdgeType, list[Tensor]] = {t: [] for t in self.incoming}
        cols: dict[EdgeType, list[Tensor]] = {t: [] for t in self.incoming}
        edges: dict[EdgeType, list[Tensor]] = {t: [] for t in self.incoming}
        num_nodes = {t: [len(sets[t].ids)] for t in sets}
        num_edges = {t: [] for t in self.incoming}
        for hop in range(self.num_hops):
            added: dict[str, list[Tensor]] = {t: [] for t in sets}
            for edge_type, incoming in self.incoming.items():
                src_type, _, dst_type = edge_type
                k = self.fanouts[edge_type][hop]
                dst_local = frontier[dst_type]
                if k == 0 or len(dst_local) == 0:
                    num_edges[edge_type].append(0)
                    continue
                dst_global = sets[dst_type].ids[dst_local]
                dst_time = sets[dst_type].times[dst_local] if temporal else None
                counts = self._allowed(incoming, dst_global, dst_time)
                which, position = sample_slices(incoming.ptr[dst_global], counts, k, self.generator)
                before = len(sets[src_type].ids)
                src_local, _ = sets[src_type].add(
                    incoming.src[position], dst_time[which] if temporal else None
                )
                added[src_type].append(torch.arange(before, len(sets[src_type].ids)))
                rows[edge_type].append(src_local)
                cols[edge_type].append(dst_local[which])
                edges[edge_type].append(incoming.edge_id[position])
                num_edges[edge_type].append(len(position))
            frontier = {
                t: torch.cat(v) if v else torch.empty(0, dtype=torch.long) for t, v in added.items()
            }
            for t in sets:
                num_nodes[t].append(len(frontier[t]))

        def joined(parts: list[Tensor]) -> Tensor:
            return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

        return sampler_module.HeteroSamplerOutput(
            node={t: s.ids for t, s in sets.items()},
            row={t: joined(v) for t, v in rows.items()},
            col={t: joined(v) for t, v in cols.items()},
            edge={t: joined(v) for t, v in edges.items()},
            num_sampled_nodes=num_nodes,
            num_sampled_edges=num_edges,
        )


def _csr(rows: Tensor, cols: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(rows, stable=True)
    ptr = torch.zeros(num_rows + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return ptr, cols[order]


def _random_step(
    ptr: Tensor, targets: Tensor, nodes: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One uniform step from each node: (next node, whether the node had any neighbour)."""
    degree = ptr[nodes + 1] - ptr[nodes]
    moved = degree > 0
    offset = (torch.rand(len(nodes), generator=generator) * degree).long()
    offset = torch.minimum(offset, (degree - 1).clamp(min=0))
    position = (ptr[nodes] + offset).clamp(max=max(len(targets) - 1, 0))
    following = targets[position] if len(targets) else torch.zeros_like(nodes)
    # A stuck walker reports node 0 (a valid row) and moved=False; callers mask it out.
    return torch.where(moved, following, torch.zeros_like(nodes)), moved


def with_walk_edges(data: HeteroData) -> HeteroData:
    """A shallow copy of ``data`` with an empty :data:`WALK` edge type for the walk samplers."""
    out = data.clone() if WALK in data.edge_types else data.__copy__()
    out[WALK].edge_index = torch.empty(2, 0, dtype=torch.long)
    return out


class PinSAGESampler(sampler_module.BaseSampler):
    """PinSAGE neighbourhoods of products from random walks with restart (vectorised).

    From each frontier product, ``num_walks`` walks of ``walk_length`` product->user->product
    steps run over the ``interaction_types`` edges; after each step a walk returns to its start
    with probability ``restart``. The ``top_k`` products visited most (the start excluded) become
    the neighbours, repeated for ``num_layers`` hops, and their visit counts normalised per
    destination are the importance weights (returned as the third ``metadata`` entry and set as
    ``edge_weight`` of :data:`WALK` by :class:`WalkNodeLoader`). Defaults follow DGL's PinSAGE
    sampler (anchors.md §7).
    """

    def __init__(
        self,
        data: HeteroData,
        interaction_types: Sequence[str] = ("click", "favorite", "cart", "purchase"),
        num_layers: int = 2,
        walk_length: int = 2,
        restart: float = 0.5,
        num_walks: int = 10,
        top_k: int = 3,
        seed: int | None = None,
    ):
        users, products = [], []
        for relation in interaction_types:
            edge_type = ("user", relation, "product")
            if edge_type not in data.edge_types:
                raise ValueError(f"the graph has no edge type {edge_type}")
            users.append(data[edge_type].edge_index[0])
            products.append(data[edge_type].edge_index[1])
        self.num_users = data["user"].num_nodes
        self.num_products = data["product"].num_nodes
        pairs = torch.unique(torch.stack([torch.cat(users), torch.cat(products)]), dim=1)
        self.product_ptr, self.product_users = _csr(pairs[1], pairs[0], self.num_products)
        self.user_ptr, self.user_products = _csr(pairs[0], pairs[1], self.num_users)
        self.num_layers = num_layers
        self.walk_length = walk_length
        self.restart = restart
        self.num_walks = num_walks
        self.top_k = top_k
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def neighbours(self, products: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(start position, neighbour product, normalised weight) of the top-k visited."""
        start = torch.arange(len(products)).repeat_interleave(self.num_walks)
        origin = products[start]
        current = origin
        visit_start, visit_product = [], []
        for _ in range(self.walk_length):
            user, moved_user = _random_step(
                self.product_ptr, self.product_users, current, self.generator
            )
            product, moved_product = _random_step(
                self.user_ptr, self.user_products, user, self.generator
            )
            moved = moved_user & moved_product & (product != origin)
            visit_start.append(start[moved])
            visit_product.append(product[moved])
            back = torch.rand(len(start), generator=self.generator) < self.restart
            current = torch.where(back | ~moved, origin, product)
        key = torch.cat(visit_start) * self.num_products + torch.cat(visit_product)
        pair, count = torch.unique(key, return_counts=True)
        owner, product = pair // self.num_products, pair % self.num_products
        # Most visited first within each start (ties: lower product id), then the top k.
        order = torch.argsort(owner * (count.max() + 1 if len(count) else 1) - count, stable=True)
        owner, product, count = owner[order], product[order], count[order]
        per_owner = torch.bincount(owner, minlength=len(products))
        rank = torch.arange(len(owner)) - (torch.cumsum(per_owner, 0) - per_owner)[owner]
        keep = rank < self.top_k
        owner, product, count = owner[keep], product[keep], count[keep].double()
        total = torch.zeros(len(products), dtype=torch.float64).index_add_(0, owner, count)
        return owner, product, (count / total[owner]).float()

    def sample_from_nodes(self, index, **kwargs):
        if index.input_type != "product":
            raise ValueError(f"PinSAGESampler samples from products, got {index.input_type!r}")
        nodes = _NodeSet(index.node, None)
        frontier = torch.arange(len(index.node))
        rows, cols, weights = [], [], []
        counts = [len(index.node)]
        edge_counts = []
        for _ in range(self.num_layers):
            owner, product, weight = self.neighbours(nodes.ids[frontier])
            before = len(nodes.ids)
            local, _ = nodes.add(product, None)
            rows.append(local)
            cols.append(frontier[owner])
            weights.append(weight)
            frontier = torch.arange(before, len(nodes.ids))
            counts.append(len(frontier))
            edge_counts.append(len(product))
        empty = torch.empty(0, dtype=torch.long)
        return sampler_module.HeteroSamplerOutput(
            node={"product": nodes.ids, "user": empty},
            row={WALK: torch.cat(rows)},
            col={WALK: torch.cat(cols)},
            edge={WALK: None},
            num_sampled_nodes={"product": counts},
            num_sampled_edges={WALK: edge_counts},
            metadata=(index.input_id, index.time, torch.cat(weights)),
        )

    def sample_from_edges(self, index, neg_sampling=None):
        raise NotImplementedError(
            "PinSAGESampler builds product neighbourhoods: drive it with WalkNodeLoader over "
            "product seeds (positives and hard negatives are products too)"
        )


class WalkNodeLoader(torch_geometric.loader.NodeLoader):
    """A ``NodeLoader`` over a walk sampler that also hands over the importance weights.

    It adds the :data:`WALK` edge type to the graph and sets ``batch[WALK].edge_weight``; a plain
    ``NodeLoader`` over :func:`with_walk_edges` works too but yields the topology only.
    """

    def __init__(self, data: HeteroData, node_sampler: PinSAGESampler, **kwargs):
        super().__init__(with_walk_edges(data), node_sampler, **kwargs)

    def filter_fn(self, out):
        batch = super().filter_fn(out)
        batch[WALK].edge_weight = out.metadata[2]
        return batch
