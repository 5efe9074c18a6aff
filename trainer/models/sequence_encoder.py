"""The transformer encoder shared by SASRec and BERT4Rec: they differ only in the attention
direction (causal or bidirectional), the training objective and how a user vector is read out.

Input tokens: item tokens (item_idx + 1, 0 = padding; BERT4Rec adds a [MASK] token) plus optional
context codes per token (:mod:`trainer.models.sequences`), each embedded and summed with the item
and a learned position embedding. Positions count back from the newest token, so a left-padded
history gives the same output whatever its padded length (up to ``max_len``).

Blocks follow the post-LayerNorm BERT layout used by the S3-Rec code, whose SASRec numbers are the
project's anchors (anchors §3.2): x = LN(x + Dropout(Attention(x))); x = LN(x + Dropout(FFN(x))),
with a GELU feed-forward of width 4 * dim.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.attention import SelfAttention


class Block(nn.Module):
    def __init__(
        self, dim: int, heads: int, dropout: float, attention_dropout: float, kind: str, block: int
    ):
        super().__init__()
        self.attention = SelfAttention(dim, heads, attention_dropout, kind, block)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, valid, causal)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class SequenceEncoder(nn.Module):
    """(B, L) item tokens [+ (B, L) context codes] -> (B, L, dim) hidden states."""

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        max_len: int,
        blocks: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        causal: bool,
        feature_sizes: dict[str, int] | None = None,
        attention: str = "full",
        block_size: int = 64,
    ):
        super().__init__()
        self.causal = causal
        self.max_len = max_len
        self.item = nn.Embedding(num_tokens, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.features = nn.ModuleDict(
            {
                name: nn.Embedding(size, dim, padding_idx=0)
                for name, size in (feature_sizes or {}).items()
            }
        )
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, heads, dropout, attention_dropout, attention, block_size)
            for _ in range(blocks)
        )
        self.apply(_init_weights)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.features.keys())

    def forward(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``extra`` (B, L, D), if given, is added to the input embeddings (request context)."""
        length = items.shape[1]
        valid = items > 0  # (B, L)
        # Distance from the newest token: the newest always gets position 0.
        distance = (length - 1) - torch.arange(length, device=items.device)  # (L,)
        x = self.item(items) + self.position(distance)[None]  # (B, L, D)
        for name, table in self.features.items():
            x = x + table(features[name])
        if extra is not None:
            x = x + extra
        x = self.dropout(self.norm(x))
        keep = valid[..., None].to(x.dtype)
        for block in self.blocks:
            x = block(x, valid, self.causal) * keep  # padding rows stay zero
        return x


class QueryContext(nn.Module):
    """Embeds request-context codes (gap, hour, device, location of a request) per position.

    The sum enters the encoder's input at the position whose output answers that request (the
    newest event for SASRec, the appended [MASK] for BERT4Rec), so the context interacts with the
    history through attention. This lets the same model act as the session model of the ranking
    stage: the request's device, hour, location and time since the last event shift the user
    vector.
    """

    def __init__(self, sizes: dict[str, int], dim: int):
        super().__init__()
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(size, dim, padding_idx=0) for name, size in sizes.items()}
        )
        self.apply(_init_weights)

    def forward(self, codes: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, L, D) sum of the embedded (B, L) codes (0 = none), or None without features."""
        total = None
        for name, table in self.tables.items():
            total = table(codes[name]) if total is None else total + table(codes[name])
        return total


def _init_weights(module: nn.Module) -> None:
    # BERT / S3-Rec initialisation: N(0, 0.02) weights, zero biases.
    if isinstance(module, nn.Linear | nn.Embedding):
        module.weight.data.normal_(0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        module.weight.data[module.padding_idx].zero_()
