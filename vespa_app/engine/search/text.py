"""Tokenizer and BM25 for lexical search (spec §5.1, docs.vespa.ai/en/ranking/bm25.html).

Documents and queries are tokenized alike: Unicode NFKC, lowercase, accents removed, split at
every character that is not a letter or digit; no stemming (the schema says `stemming: none`).
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

_WORD = re.compile(r"[^\W_]+")
K1 = 1.2
B = 0.75


def tokenize(text: str) -> list[str]:
    norm = unicodedata.normalize("NFKC", text).lower()
    if not norm.isascii():
        decomposed = unicodedata.normalize("NFD", norm)
        norm = unicodedata.normalize(
            "NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        )
    return _WORD.findall(norm)


class TextIndex:
    """Positional inverted index of one string field (rows are segment rows)."""

    def __init__(self) -> None:
        self.postings: dict[str, dict[int, int]] = {}  # term -> row -> term frequency
        self.tokens: dict[int, list[str]] = {}  # row -> tokens, for phrases and removal
        self.total_length = 0

    def add(self, row: int, text: str | None) -> None:
        toks = tokenize(text) if text else []
        if not toks:
            return
        self.tokens[row] = toks
        self.total_length += len(toks)
        for t in toks:
            p = self.postings.setdefault(t, {})
            p[row] = p.get(row, 0) + 1

    def remove(self, row: int) -> None:
        toks = self.tokens.pop(row, None)
        if not toks:
            return
        self.total_length -= len(toks)
        for t in set(toks):
            p = self.postings[t]
            del p[row]
            if not p:
                del self.postings[t]

    def rows_with(self, term: str) -> dict[int, int]:
        return self.postings.get(term, {})

    def phrase_rows(self, terms: list[str]) -> set[int]:
        """Rows where the terms occur consecutively."""
        if not terms:
            return set()
        rows = set(self.rows_with(terms[0]))
        for t in terms[1:]:
            rows &= set(self.rows_with(t))
        out = set()
        n = len(terms)
        for r in rows:
            toks = self.tokens[r]
            if any(toks[i : i + n] == terms for i in range(len(toks) - n + 1)):
                out.add(r)
        return out

    def avg_length(self) -> float:
        """Average token count over the documents whose field has tokens."""
        return self.total_length / len(self.tokens) if self.tokens else 0.0

    def bm25(self, rows: np.ndarray, terms: list[str], n_docs: int) -> np.ndarray:
        """bm25 of `terms` (each occurrence counts once per distinct term) for `rows`."""
        out = np.zeros(len(rows), dtype=np.float64)
        if not terms or len(rows) == 0:
            return out
        avgdl = self.avg_length() or 1.0
        pos = {int(r): i for i, r in enumerate(rows)}
        for term in dict.fromkeys(terms):
            posting = self.rows_with(term)
            n_t = len(posting)
            if n_t == 0:
                continue
            idf = math.log(1 + (n_docs - n_t + 0.5) / (n_t + 0.5))
            for row, tf in posting.items():
                i = pos.get(row)
                if i is None:
                    continue
                dl = len(self.tokens[row])
                out[i] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
        return out
