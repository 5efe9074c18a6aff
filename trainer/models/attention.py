"""Multi-head self-attention for the sequence models: full, or local plus compressed global.

Both variants call :func:`torch.nn.functional.scaled_dot_product_attention`, so they export to ONNX
with the dynamo exporter. The mask is built from ``arange`` comparisons (the exportable form; see
anchors §7) rather than ``is_causal=True``, because ``is_causal`` cannot be combined with the
key-padding mask that makes a user's output independent of how much left padding precedes the
history. Every query may attend to itself, so no row of the mask is empty (no NaN for padding).

``local`` attention serves long histories (100 to 500 events): the sequence is cut into blocks of
``block_size`` tokens aligned on the newest event; a query attends exactly to its own block and the
block before it (and, when bidirectional, the block after it), and to one mean-pooled key/value
summary of every other block it may see (only earlier blocks when causal). Memory and time grow as
L * (2 * block_size + L / block_size) instead of L^2. With at most two blocks it is exactly full
attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_KINDS = ("full", "local")


def full_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) boolean mask: True where query i may attend to key j."""
    positions = torch.arange(valid.shape[1], device=valid.device)
    allowed = valid[:, None, :]  # (B, 1, L) keys
    if causal:
        allowed = allowed & (positions[:, None] >= positions[None, :])[None]  # (B, L, L)
    allowed = allowed | (positions[:, None] == positions[None, :])[None]
    return allowed[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention over a left-padded sequence; ``valid`` marks real tokens.

    ``output_projection=False`` returns the heads' concatenated outputs without the final dense
    layer, as the SASRec paper's code does (its attention has Q, K and V dense layers only).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        kind: str = "full",
        block_size: int = 64,
        output_projection: bool = True,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention {kind!r} unknown ({', '.join(ATTENTION_KINDS)})")
        self.heads = heads
        self.kind = kind
        self.block_size = block_size
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out: nn.Module = nn.Linear(dim, dim) if output_projection else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        causal: bool,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, D) attention of the queries ``x`` over the keys and values of ``source`` (the
        same positions; default ``x``). The SASRec paper's blocks take queries from a normalised
        copy of the sequence and keys and values from the sequence itself."""
        batch, length, dim = x.shape
        if source is None:
            qkv = self.qkv(x)
        else:
            q_part = F.linear(x, self.qkv.weight[:dim], self.qkv.bias[:dim])
            kv_part = F.linear(source, self.qkv.weight[dim:], self.qkv.bias[dim:])
            qkv = torch.cat([q_part, kv_part], dim=-1)  # (B, L, 3D)
        q, k, v = qkv.view(batch, length, 3, self.heads, dim // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d)
        dropout = self.dropout if self.training else 0.0
        if self.kind == "full":
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=full_mask(valid, causal), dropout_p=dropout
            )
        else:
            y = local_global_attention(q, k, v, valid, causal, self.block_size, dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


def local_global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    causal: bool,
    block_size: int,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Block-local attention plus one pooled summary per distant block; q, k, v (B, H, L, d)."""
    batch, heads, length, d = q.shape
    w = block_size
    pad = (w - length % w) % w  # left padding so blocks end on the newest token
    q, k, v = (F.pad(t, (0, 0, pad, 0)) for t in (q, k, v))
    valid = F.pad(valid, (pad, 0), value=False)
    blocks = (length + pad) // w
    qb, kb, vb = (t.reshape(batch, heads, blocks, w, d) for t in (q, k, v))  # (B, H, n, w, d)
    vmask = valid.reshape(batch, 1, blocks, w)  # (B, 1, n, w)

    # Pooled summary of every block: mean of its real tokens' keys and values.
    weight = vmask.to(q.dtype)[..., None]  # (B, 1, n, w, 1)
    count = weight.sum(3)  # (B, 1, n, 1)
    k_sum = (kb * weight).sum(3) / count.clamp(min=1.0)  # (B, H, n, d)
    v_sum = (vb * weight).sum(3) / count.clamp(min=1.0)
    sum_valid = count[..., 0] > 0  # (B, 1, n)

    def shifted(t: torch.Tensor, step: int) -> torch.Tensor:
        """Block b holds block b - step (zeros / False outside the sequence)."""
        if step > 0:
            return F.pad(t, [0, 0] * (t.dim() - 3) + [step, 0])[:, :, :blocks]
        return F.pad(t, [0, 0] * (t.dim() - 3) + [0, -step])[:, :, -step:]

    neighbours = [1, 0] if causal else [1, 0, -1]
    keys = [shifted(kb, s) for s in neighbours] + [k_sum[:, :, None].expand(-1, -1, blocks, -1, -1)]
    values = [shifted(vb, s) for s in neighbours] + [
        v_sum[:, :, None].expand(-1, -1, blocks, -1, -1)
    ]
    keys_all = torch.cat(keys, dim=3)  # (B, H, n, len(neighbours) * w + n, d)
    values_all = torch.cat(values, dim=3)

    pos = torch.arange(w, device=q.device)
    block = torch.arange(blocks, device=q.device)
    masks = []
    for s in neighbours:
        key_valid = shifted(vmask, s)[:, :, :, None, :]  # (B, 1, n, 1, w)
        if s == 0:
            order = (
                (pos[:, None] >= pos[None, :])
                if causal
                else torch.ones_like(pos[:, None] == pos[None, :])
            )
            same = pos[:, None] == pos[None, :]
            masks.append((key_valid & order) | same)  # (B, 1, n, w, w)
        else:
            masks.append(key_valid.expand(-1, -1, -1, w, -1))
    # Summary of block s is visible from block b when s is outside b's local window.
    if causal:
        far = block[None, :] < block[:, None] - 1  # (n, n): [b, s]
    else:
        far = (block[None, :] - block[:, None]).abs() > 1
    summary = far[None, None, :, None, :] & sum_valid[:, :, None, None, :]  # (B, 1, n, 1, n)
    masks.append(summary.expand(-1, -1, -1, w, -1))
    mask = torch.cat(masks, dim=4)  # (B, 1, n, w, keys)

    # Blocks go into the batch dimension: the ONNX exporter takes 4-D attention inputs only.
    def fold(t: torch.Tensor) -> torch.Tensor:  # (B, X, n, r, c) -> (B * n, X, r, c)
        return t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[3], t.shape[4])

    y = F.scaled_dot_product_attention(
        fold(qb), fold(keys_all), fold(values_all), attn_mask=fold(mask), dropout_p=dropout
    )  # (B * n, H, w, d)
    y = y.reshape(batch, blocks, heads, w, d).transpose(1, 2)  # (B, H, n, w, d)
    return y.reshape(batch, heads, blocks * w, d)[:, :, pad:]
