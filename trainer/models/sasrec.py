"""SASRec: self-attentive sequential recommendation (Kang and McAuley, ICDM 2018).

https://arxiv.org/abs/1808.09781

A causal transformer reads the user's recent events; the hidden state at the newest event is the
user vector, and an item's score is its dot product with the (shared) item embedding. Training
predicts the next item at every position (all prefixes in one pass). Losses:

- ``bce``: the paper's loss, one uniformly drawn negative per positive, binary cross-entropy;
- ``ce``: full-softmax cross-entropy over the catalogue (SASRec+ in Klenitskiy and Vasilev,
  RecSys 2023; converges in far fewer epochs);
- ``sampled``: softmax over the target and ``negatives`` uniform negatives shared by the batch.

Block layouts (``layout``): ``post_ln`` (default), the BERT-style blocks of the S3-Rec code shared
with BERT4Rec (:mod:`trainer.models.sequence_encoder`); ``paper``, the blocks of the paper's own
code (github.com/kang205/SASRec, ``model.py`` and ``modules.py``): item embeddings scaled by
sqrt(dim), queries from a LayerNorm of the sequence attending over the unnormalised sequence, a
ReLU feed-forward of width dim, a final LayerNorm and Glorot initialisation. Three options remove
the remaining differences from that code: ``attention_output=False`` (no dense layer after
attention), ``batching="users"`` (its sampler: random users per batch) and
``negative_exclusion="history"`` (BCE negatives avoid all of the user's training items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.data.interactions import InteractionData
from trainer.models.attention import SelfAttention
from trainer.models.base import register
from trainer.models.sequence_encoder import QueryContext
from trainer.models.sequences import training_windows_with_users, user_item_keys
from trainer.models.sequential import (
    SequenceConfig,
    SequenceRecommender,
    build_encoder,
    length_groups,
)

LOSSES = ("bce", "ce", "sampled")
LAYOUTS = ("post_ln", "paper")
BATCHINGS = ("length", "users")
NEGATIVE_EXCLUSIONS = ("target", "history")
# Rejection rounds for BCE negatives that must avoid the user's training items; a draw still
# clashing after them (a user who has bought nearly the whole catalogue) keeps only the
# target rule.
REDRAW_ROUNDS = 50
# Rows per length group when a batch of random users is encoded (see SASRec.target_states).
GROUP_ROWS = 16


@dataclass(frozen=True)
class SASRecConfig(SequenceConfig):
    dropout: float = 0.5
    attention_dropout: float = 0.2
    loss: str = "ce"
    negatives: int = 256  # for loss = "sampled"
    layout: str = "post_ln"  # or "paper": the block layout of the SASRec paper's code
    # False: the paper code's attention, Q, K and V dense layers (each Glorot-initialised) and no
    # output dense layer (layout "paper" only).
    attention_output: bool = True
    # "length": all windows once per epoch, batches of similar length (fast); "users": the paper's
    # sampler, each batch batch_size users drawn uniformly with replacement (only each user's
    # newest window, i.e. the last max_len training events), users // batch_size batches per
    # epoch.
    batching: str = "length"
    # BCE negatives avoid the "target" only, or every training item of the user ("history", the
    # paper's random_neq over the user's item set).
    negative_exclusion: str = "target"


class PaperBlock(nn.Module):
    """One block of the paper's code: y = Q + Attn(Q, x), Q = LN(x); out = y' + FFN(y'),
    y' = LN(y); padding rows zeroed by the caller."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        attention_output: bool = True,
    ):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attention = SelfAttention(
            dim, heads, attention_dropout, output_projection=attention_output
        )
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        queries = self.attention_norm(x)  # (B, L, D)
        x = queries + self.attention(queries, valid, True, source=x)
        x = self.ffn_norm(x)
        return x + self.ffn(x)


class PaperEncoder(nn.Module):
    """(B, L) item tokens [+ context codes] -> (B, L, dim), the paper code's layout.

    Positions count back from the newest token as in :class:`SequenceEncoder` (the paper's code
    left-pads to max_len, so its newest token always has the last position: the same thing).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        max_len: int,
        blocks: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        feature_sizes: dict[str, int],
        attention_output: bool = True,
    ):
        super().__init__()
        self.dim = dim
        self.item = nn.Embedding(num_tokens, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.features = nn.ModuleDict(
            {name: nn.Embedding(size, dim, padding_idx=0) for name, size in feature_sizes.items()}
        )
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            PaperBlock(dim, heads, dropout, attention_dropout, attention_output)
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-8)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.xavier_uniform_(module.weight)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        if not attention_output:
            # The paper's Q, K and V are separate (dim, dim) dense layers: Glorot bounds of a
            # square matrix, not of the fused (3 dim, dim) one (which would be 1/sqrt(2) smaller).
            for block in self.blocks:
                for part in block.attention.qkv.weight.data.split(dim):
                    nn.init.xavier_uniform_(part)

    def forward(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        extra: torch.Tensor | None = None,
        item_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``item_rows`` (B, L, D): the item table's rows for ``items``, when the caller looked
        them up itself (one lookup for several length groups: each lookup costs a dense gradient
        of the whole table in backward)."""
        length = items.shape[1]
        valid = items > 0  # (B, L)
        distance = (length - 1) - torch.arange(length, device=items.device)  # (L,)
        if item_rows is None:
            item_rows = self.item(items)
        x = item_rows * self.dim**0.5 + self.position(distance)[None]  # (B, L, D)
        for name, table in self.features.items():
            x = x + table((features or {})[name])
        if extra is not None:
            x = x + extra
        keep = valid[..., None].to(x.dtype)
        x = self.dropout(x) * keep
        for block in self.blocks:
            x = block(x, valid) * keep
        return self.norm(x) * keep


class SASRecNetwork(nn.Module):
    def __init__(
        self,
        config: SASRecConfig,
        num_items: int,
        feature_sizes: dict[str, int],
        query_sizes: dict[str, int] | None = None,
    ):
        super().__init__()
        self.num_items = num_items
        if config.layout == "paper":
            self.encoder: nn.Module = PaperEncoder(
                num_items + 1,
                config.dim,
                config.max_len,
                config.blocks,
                config.heads,
                config.dropout,
                config.attention_dropout,
                feature_sizes,
                config.attention_output,
            )
        else:
            self.encoder = build_encoder(config, num_items + 1, True, feature_sizes)
        self.query = QueryContext(query_sizes or {}, config.dim)

    def forward(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor],
        query: dict[str, torch.Tensor] | None = None,
        item_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, D); ``query`` (B, L) codes: the context of the request each position answers;
        ``item_rows`` (B, L, D) the items' embeddings if already looked up (paper layout only)."""
        extra = self.query(query) if query else None
        if item_rows is not None:
            return self.encoder(items, features, extra, item_rows)
        return self.encoder(items, features, extra)

    def user_vector(
        self,
        items: torch.Tensor,
        features: dict[str, torch.Tensor],
        query: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, D) state after the newest event; ``query`` (B,) codes of the request, if any."""
        if query:
            before = torch.zeros_like(items[:, 1:])  # (B, L - 1): no request there
            query = {k: torch.cat([before, v[:, None]], dim=1) for k, v in query.items()}
        return self(items, features, query)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        return self.encoder.item.weight[1 : self.num_items + 1]  # (N, D)


@register("sasrec")
class SASRec(SequenceRecommender):
    """SASRec: causal self-attention over the recent history, next-item prediction."""

    config_class = SASRecConfig

    @classmethod
    def test_config(cls) -> SASRecConfig:
        return SASRecConfig(max_len=10, dim=16, epochs=3, batch_size=32, patience=0)

    def __init__(self, config: SASRecConfig, num_users: int, num_items: int):
        if config.loss not in LOSSES:
            raise ValueError(f"loss {config.loss!r} unknown ({', '.join(LOSSES)})")
        if config.layout not in LAYOUTS:
            raise ValueError(f"layout {config.layout!r} unknown ({', '.join(LAYOUTS)})")
        if config.layout == "paper" and config.attention != "full":
            raise ValueError("layout 'paper' supports attention 'full' only")
        if not config.attention_output and config.layout != "paper":
            raise ValueError("attention_output=false needs layout 'paper'")
        if config.batching not in BATCHINGS:
            raise ValueError(f"batching {config.batching!r} unknown ({', '.join(BATCHINGS)})")
        if config.negative_exclusion not in NEGATIVE_EXCLUSIONS:
            raise ValueError(
                f"negative_exclusion {config.negative_exclusion!r} unknown "
                f"({', '.join(NEGATIVE_EXCLUSIONS)})"
            )
        super().__init__(config, num_users, num_items)
        # Sorted (user, item) keys of the training events, for BCE negatives avoiding them.
        self._user_items: torch.Tensor | None = None

    def build_network(self) -> nn.Module:
        return SASRecNetwork(self.config, self.num_items, self.feature_sizes(), self.query_sizes())

    def training_examples(self, data: InteractionData) -> dict[str, torch.Tensor]:
        cfg = self.config
        tokens, following, users = training_windows_with_users(
            data, cfg.max_len, cfg.history_events
        )
        if cfg.batching == "users":
            # The paper trains on each user's most recent max_len events only: keep the newest
            # window (windows are grouped by user, newest first).
            newest = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
            tokens, following, users = tokens.take(newest), following.take(newest), users[newest]
        if cfg.loss == "bce" and cfg.negative_exclusion == "history":
            keys = user_item_keys(data, self.num_items, cfg.history_events)
            self._user_items = torch.as_tensor(keys)
        return {
            "items": torch.as_tensor(tokens.items),
            "targets": torch.as_tensor(following.items),
            "user": torch.as_tensor(users),
            **{f"f_{k}": v for k, v in self.feature_tensors(tokens).items()},
            **{f"q_{k}": v for k, v in self.query_tensors(following.features()).items()},
        }

    def epoch_batches(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        if self.config.batching == "length":
            return super().epoch_batches(lengths)
        # The paper's sampler: every batch draws users uniformly with replacement.
        size = self.config.batch_size
        return [
            torch.randint(len(lengths), (size,), generator=self.generator)
            for _ in range(max(len(lengths) // size, 1))
        ]

    def target_states(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(P, D) hidden states at the positions with a next item, their (P,) target tokens and,
        if the batch has them, the (P,) users.

        A batch of random users (``batching="users"``) mixes short and long histories, so it is
        encoded in groups of similar length, each trimmed to its longest sequence: every sequence
        is encoded on its own, so this changes nothing but the padding computed (a fifth of the
        token work on video_sasrec, median history 3, longest 50)."""
        users_drawn = self.config.batching == "users"
        groups = length_groups(batch, GROUP_ROWS) if users_drawn else [batch]
        rows: list[torch.Tensor | None] = [None] * len(groups)
        if len(groups) > 1 and self.config.layout == "paper":
            # All groups' item rows in one lookup, so backward fills one dense table gradient.
            looked_up = self.network.encoder.item(
                torch.cat([g["items"].reshape(-1) for g in groups])
            )
            parts = looked_up.split([g["items"].numel() for g in groups])
            rows = [r.view(*g["items"].shape, -1) for r, g in zip(parts, groups, strict=True)]
        states, targets, users = [], [], []
        for part, item_rows in zip(groups, rows, strict=True):
            features = {k[2:]: v for k, v in part.items() if k.startswith("f_")}
            # Each position sees the context of the request that asks for its next item.
            hidden = self.network(
                part["items"], features, self.drop_query(part), item_rows
            )  # (b, L, D)
            where = part["targets"] > 0
            states.append(hidden[where])
            targets.append(part["targets"][where])
            if "user" in part:
                users.append(part["user"][:, None].expand_as(part["targets"])[where])
        user = torch.cat(users) if users else None
        return torch.cat(states), torch.cat(targets), user

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, target, user = self.target_states(batch)  # (P, D), (P,), (P,) or None
        table = self.network.encoder.item.weight  # (N + 1, D), row 0 = padding
        if self.config.loss == "ce":
            logits = h @ table[1 : self.num_items + 1].T  # (P, N)
            return F.cross_entropy(logits, target - 1)
        # Positives and negatives are read from the table in one lookup: every lookup costs a
        # dense (N + 1, D) gradient to fill and add in backward, the largest cost of a CPU step.
        if self.config.loss == "bce":
            negative = self._uniform(target.shape).to(h.device)
            if self._user_items is not None and user is not None:
                negative = self.avoid_user_items(user, negative)
            # Redraw the rare negative that equals the positive.
            clash = negative == target
            negative[clash] = negative[clash] % self.num_items + 1
            pos, neg = (h[None] * table[torch.stack([target, negative])]).sum(-1)  # (2, P)
            return F.binary_cross_entropy_with_logits(
                pos, torch.ones_like(pos)
            ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        negative = self._uniform((self.config.negatives,)).to(h.device)  # (K,) shared by the batch
        rows = table[torch.cat([target, negative])]  # (P + K, D)
        pos = (h * rows[: len(h)]).sum(-1, keepdim=True)  # (P, 1)
        neg = h @ rows[len(h) :].T  # (P, K)
        neg = neg.masked_fill(negative[None, :] == target[:, None], -torch.inf)
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long, device=h.device))

    def avoid_user_items(self, user: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """``negative`` (P,) item tokens with those among ``user``'s (P,) training items redrawn
        uniformly until none is (rejection sampling, as the paper's random_neq, but batched)."""
        keys = self._user_items.to(negative.device)
        if len(keys) == 0:
            return negative
        negative = negative.clone()
        base = user * (self.num_items + 1)
        todo = torch.arange(len(negative), device=negative.device)
        for _ in range(REDRAW_ROUNDS):
            query = base[todo] + negative[todo]
            at = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
            todo = todo[keys[at] == query]
            if len(todo) == 0:
                break
            negative[todo] = self._uniform((len(todo),)).to(negative.device)
        return negative

    def _uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(1, self.num_items + 1, shape, generator=self.generator)
