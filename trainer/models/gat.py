"""GAT: heterogeneous GATv2 over users, products, categories and sellers, with explanations.

Brody, Alon and Yahav, "How Attentive are Graph Attention Networks?", ICLR 2022
(https://arxiv.org/abs/2105.14491): GATv2's dynamic attention scores a neighbour j of node i as
a^T LeakyReLU(W [x_i || x_j]), so the weights depend on the receiving node, not only on j.

Same skeleton as GraphSAGE (:mod:`trainer.graph.hetero_gnn`), with one ``GATv2Conv`` per edge type
(residual, no self loops). Interactions are merged into one ``interacted`` relation by default so
that a user's attention is one distribution over their whole history: :meth:`GAT.explain` returns
those weights (they sum to 1) for the serving layer's "because you bought X".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.data.interactions import InteractionData, Stage
from trainer.graph import torch_geometric
from trainer.graph.features import MERGED
from trainer.graph.hetero_gnn import EdgeType, HeteroGNNConfig, HeteroGNNRecommender
from trainer.models.base import register


@dataclass(frozen=True)
class GATConfig(HeteroGNNConfig):
    heads: int = 2  # attention heads per layer (dim must be divisible by it)
    merge_events: bool = True  # explain() needs it: one attention distribution over the history
    attention_dropout: float = 0.0

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"{name}: dim ({self.dim}) must be a multiple of heads ({self.heads})")


@register("gat")
class GAT(HeteroGNNRecommender):
    """GAT with GATv2 layers (Brody et al. 2022); per-neighbour attention explains results."""

    config_class = GATConfig

    def __init__(self, config: GATConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        # (key, data, (edges, last-layer inputs)) of the latest explained stage
        self._explain_cache: tuple | None = None

    @classmethod
    def test_config(cls) -> GATConfig:
        return GATConfig(
            dim=16,
            heads=2,
            fanouts=(5, 5),
            batch_size=64,
            epochs=15,
            lr=0.01,
            patience=0,
            threads=1,
        )

    def make_conv(self, edge_type: EdgeType, dim: int) -> nn.Module:
        heads = self.config.heads
        return torch_geometric.nn.GATv2Conv(
            (dim, dim),
            dim // heads,
            heads=heads,
            add_self_loops=False,
            residual=True,
            dropout=self.config.attention_dropout,
        )

    @torch.no_grad()
    def attention(
        self, data: InteractionData, stage: Stage, user: int
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(history items, (E,) attention averaged over heads, (E, D) attended messages) of the
        last layer for ``user`` over the graph of ``data.history(stage)``."""
        net = self._require()
        if not self.config.merge_events:
            raise ValueError("gat: explanations need merge_events = true (one relation)")
        relation = ("product", f"rev_{MERGED}", "user")
        index, x = self._last_layer_inputs(data, stage)
        items = index[0, index[1] == user]  # (E,) the user's history products
        if len(items) == 0:
            empty = torch.empty(0)
            return np.empty(0, dtype=np.int64), empty, empty
        conv = net.convs[-1].convs[relation]
        local = torch.stack([torch.arange(len(items)), torch.zeros(len(items), dtype=torch.long)])
        _, (_, alpha) = conv(
            (x["product"][items], x["user"][[user]]), local, return_attention_weights=True
        )  # alpha: (E, heads), each head sums to 1 over the history
        heads = self.config.heads
        messages = conv.lin_l(x["product"][items]).view(len(items), heads, -1)  # (E, H, D/H)
        attended = (alpha[:, :, None] * messages).reshape(len(items), -1)  # (E, D)
        return items.numpy(), alpha.mean(dim=1), attended

    def _last_layer_inputs(
        self, data: InteractionData, stage: Stage
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(user <- product edges, node vectors entering the last layer), cached per stage."""
        key = (id(data), stage, id(self._items))
        cached = self._explain_cache
        if cached is not None and cached[0] == key and cached[1] is data:
            return cached[2]
        net = self._require()
        view, features = self.graph(data, stage)
        net.eval()
        n_id = {name: torch.arange(view[name].num_nodes) for name in view.node_types}
        edges = {t: view[t].edge_index for t in view.edge_types}
        x = net.propagate(net.inputs(features, n_id), edges, upto=len(net.convs) - 1)
        value = (view["product", f"rev_{MERGED}", "user"].edge_index, x)
        self._explain_cache = (key, data, value)
        return value

    def explain(
        self, data: InteractionData, stage: Stage, user: int, item: int
    ) -> list[tuple[int, float]]:
        """``[(history item_idx, attention weight)]`` for recommending ``item`` to ``user``.

        Weights are the user's last-layer attention over their history (averaged over heads;
        they sum to 1). The list is ordered by each history item's attention-weighted
        contribution to the score of ``item``, so the first entry is the best "because you
        bought X".
        """
        self._require()
        items, weights, attended = self.attention(data, stage, user)
        if len(items) == 0:
            return []
        contribution = attended @ self._items[item]  # (E,)
        order = torch.argsort(contribution, descending=True).numpy()
        return [(int(items[j]), float(weights[j])) for j in order]
