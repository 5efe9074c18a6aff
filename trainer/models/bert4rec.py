"""BERT4Rec: sequential recommendation with a bidirectional transformer (Sun et al., CIKM 2019).

https://arxiv.org/abs/1904.06690

Training is the cloze task: a share ``mask_prob`` of the (positive) tokens of each training
sequence is replaced by a [MASK] token and predicted from both sides with a full-softmax
cross-entropy over the catalogue; a share ``last_item_prob`` of the sequences masks only the newest
token instead, which is exactly the prediction task at serving time. To recommend, [MASK] is
appended after the user's most recent ``max_len - 1`` events and its output, passed through the
BERT prediction head (dense, GELU, LayerNorm), is the user vector; scores are dot products with
the tied item embeddings (no output bias, so user and item vectors share one space).

Masked tokens also lose their context codes (set to "unknown"), because the appended [MASK] of a
real request has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data.interactions import InteractionData
from trainer.models.base import register
from trainer.models.sequence_encoder import QueryContext
from trainer.models.sequences import UNKNOWN, training_sequences
from trainer.models.sequential import SequenceConfig, SequenceRecommender, build_encoder


@dataclass(frozen=True)
class BERT4RecConfig(SequenceConfig):
    mask_prob: float = 0.6
    last_item_prob: float = 0.1
    lr: float = 1e-4


class BERT4RecNetwork(nn.Module):
    def __init__(
        self,
        config: BERT4RecConfig,
        num_items: int,
        feature_sizes: dict[str, int],
        query_sizes: dict[str, int] | None = None,
    ):
        super().__init__()
        self.num_items = num_items
        self.mask_token = num_items + 1
        self.encoder = build_encoder(config, num_items + 2, False, feature_sizes)
        self.head = nn.Sequential(
            nn.Linear(config.dim, config.dim), nn.GELU(), nn.LayerNorm(config.dim, eps=1e-12)
        )
        self.query = QueryContext(query_sizes or {}, config.dim)

    def forward(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor],
        query: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, L, D); ``query`` (B, L) codes: request context at the masked positions."""
        return self.head(self.encoder(items, features, self.query(query) if query else None))

    def user_vector(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor],
        query: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, D) from (B, L) history tokens: the output at an appended [MASK] that carries the
        request's context codes ``query`` (B,), if any."""
        column = torch.zeros_like(items[:, :1])  # (B, 1), keeps the batch size symbolic
        if query:
            history = torch.zeros_like(items)
            query = {k: torch.cat([history, v[:, None]], dim=1) for k, v in query.items()}
        items = torch.cat([items, column + self.mask_token], dim=1)
        features = {k: torch.cat([v, column + UNKNOWN], dim=1) for k, v in features.items()}
        return self(items, features, query)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        return self.encoder.item.weight[1 : self.num_items + 1]  # (N, D)


@register("bert4rec")
class BERT4Rec(SequenceRecommender):
    """BERT4Rec: bidirectional transformer over the history, trained with cloze masking."""

    config_class = BERT4RecConfig

    @classmethod
    def test_config(cls) -> BERT4RecConfig:
        return BERT4RecConfig(max_len=12, dim=16, epochs=3, batch_size=32, lr=1e-3, patience=0)

    def __init__(self, config: BERT4RecConfig, num_users: int, num_items: int):
        if not 0.0 < config.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {config.mask_prob}")
        super().__init__(config, num_users, num_items)

    @property
    def history_length(self) -> int:
        return self.config.max_len - 1  # room for the appended [MASK]

    def build_network(self) -> nn.Module:
        return BERT4RecNetwork(
            self.config, self.num_items, self.feature_sizes(), self.query_sizes()
        )

    def training_examples(self, data: InteractionData) -> dict[str, torch.Tensor]:
        tokens = training_sequences(data, self.config.max_len, self.config.history_events)
        events = torch.as_tensor(tokens.event) - 2
        positive = torch.isin(events, torch.as_tensor(data.positive_codes, dtype=torch.long))
        items = torch.as_tensor(tokens.items)
        maskable = (items > 0) & positive
        keep = maskable.any(1)
        examples = {"items": items, "maskable": maskable}
        examples.update({f"f_{k}": v for k, v in self.feature_tensors(tokens).items()})
        # A masked token's own context is the request context of predicting it.
        examples.update({f"q_{k}": v for k, v in self.query_tensors(tokens.features()).items()})
        return {k: v[keep] for k, v in examples.items()}

    def cloze(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) bool: which tokens to mask in this batch."""
        maskable = batch["maskable"]
        draw = torch.rand(maskable.shape, generator=self.generator).to(maskable.device)
        masked = maskable & (draw < self.config.mask_prob)
        # Rows with nothing drawn, and a share of rows chosen at random, mask only their newest
        # maskable token.
        positions = torch.arange(maskable.shape[1], device=maskable.device)
        last = torch.where(maskable, positions, -1).max(1).values  # (B,)
        only_last = (~masked.any(1)) | (
            torch.rand(len(maskable), generator=self.generator).to(maskable.device)
            < self.config.last_item_prob
        )
        last_mask = positions[None, :] == last[:, None]
        return torch.where(only_last[:, None], last_mask, masked)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        masked = self.cloze(batch)
        items = batch["items"].masked_fill(masked, self.network.mask_token)
        features = {
            k[2:]: v.masked_fill(masked, UNKNOWN) for k, v in batch.items() if k.startswith("f_")
        }
        # Only masked positions stand for a request; the others carry no request context.
        query = {k: v.masked_fill(~masked, 0) for k, v in self.drop_query(batch).items()}
        hidden = self.network(items, features, query)[masked]  # (P, D)
        logits = hidden @ self.network.item_vectors().T  # (P, N)
        return F.cross_entropy(logits, batch["items"][masked] - 1)
