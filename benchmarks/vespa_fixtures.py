"""Benchmark-side fixtures for the embedded Vespa engine (benchmarks never import tests/).

- `catalogue`: the deterministic conformance catalogue (spec §10 fixture: ~2,000 products
  without score ties, 3 sellers, categories home, home/kitchen, toys) that
  benchmarks/vespa_search.py times and the search tests query (with
  `vespa_app.engine.memory_store.MemoryStore`).
- `write_scale_package(dir, dim)`: a minimal application package for the scale benchmark: one
  `product` schema with an HNSW-indexed `tensor<float>(x[dim])` (prenormalized-angular,
  max-links-per-node 16, neighbors-to-explore-at-insert 200, as the project package), an int
  `bucket` attribute for filters of known selectivity (`bucket < 10` keeps 10%, `bucket < 1`
  keeps 1%), and a rank profile `retrieval` (closeness plus a popularity prior).
- `scale_vectors(n, dim, kind)`: deterministic unit-norm vectors, `clustered` (anchors §5.3:
  2,000 centres, realistic embeddings are clustered) or `isotropic` (the structureless hard
  case), generated in chunks so 1M x 384 never needs a float64 copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOW = 1_760_000_000  # fixed `ranking.freshness` so freshness features are reproducible
PROJECT_PACKAGE = Path(__file__).resolve().parents[1] / "vespa_app" / "package"
BUCKETS = 100  # bucket = a uniform integer in [0, 100): `bucket < p` keeps p% of documents
CENTRES = 2000

SERVICES = """<?xml version="1.0" encoding="utf-8"?>
<services version="1.0">
  <container id="default" version="1.0">
    <search/>
    <document-api/>
  </container>
  <content id="shop" version="1.0">
    <redundancy>1</redundancy>
    <documents>
      <document type="product" mode="index"/>
    </documents>
  </content>
</services>
"""

SCHEMA = """schema product {{
    document product {{
        field product_id type string {{
            indexing: summary | attribute
            attribute: fast-search
        }}
        field bucket type int {{
            indexing: summary | attribute
        }}
        field popularity type float {{
            indexing: summary | attribute
        }}
        field embedding type tensor<float>(x[{dim}]) {{
            indexing: attribute | index
            attribute {{
                distance-metric: prenormalized-angular
            }}
            index {{
                hnsw {{
                    max-links-per-node: 16
                    neighbors-to-explore-at-insert: 200
                }}
            }}
        }}
    }}

    document-summary ids {{
        summary product_id {{}}
    }}

    rank-profile retrieval {{
        inputs {{
            query(q) tensor<float>(x[{dim}])
        }}
        first-phase {{
            expression: closeness(field, embedding) + 0.000001 * attribute(popularity)
        }}
    }}
}}
"""


def write_scale_package(directory: Path, dim: int) -> Path:
    """Write the scale benchmark's application package into `directory`; returns it."""
    directory = Path(directory)
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    (directory / "services.xml").write_text(SERVICES)
    (directory / "schemas" / "product.sd").write_text(SCHEMA.format(dim=dim))
    return directory


def scale_vectors(n: int, dim: int, kind: str, seed: int = 0) -> np.ndarray:
    """`n` deterministic unit-norm float32 vectors, clustered or isotropic (see module doc)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    centres = None
    if kind == "clustered":
        centres = rng.standard_normal((CENTRES, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    elif kind != "isotropic":
        raise ValueError(f"vector kind must be clustered or isotropic, not {kind!r}")
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is not None:
            # noise of norm ~0.5 around a unit centre: clusters overlap at their edges
            chunk = centres[rng.integers(0, CENTRES, m)] + noise * (0.5 / np.sqrt(dim))
        else:
            chunk = noise
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + m] = chunk
    return out


def scale_queries(vectors: np.ndarray, n: int, kind: str, seed: int = 1) -> np.ndarray:
    """Queries drawn like the documents: near a random document (clustered) or isotropic."""
    rng = np.random.default_rng(seed)
    dim = vectors.shape[1]
    if kind == "clustered":
        q = vectors[rng.integers(0, len(vectors), n)] + rng.standard_normal(
            (n, dim), dtype=np.float32
        ) * (0.5 / np.sqrt(dim))
    else:
        q = rng.standard_normal((n, dim), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def scale_buckets(n: int, seed: int = 2) -> np.ndarray:
    """bucket per document, independent of the vectors."""
    return np.random.default_rng(seed).integers(0, BUCKETS, n)


def scale_document(i: int, vector: np.ndarray, bucket: int) -> dict:
    """The fields of product i in the scale package (pyvespa `fields` form)."""
    return {
        "product_id": f"P{i}",
        "bucket": int(bucket),
        "popularity": float((i * 7919) % 1000) / 1000,
        "embedding": vector.tolist(),
    }


# -- the conformance catalogue (used by benchmarks/vespa_search.py and the tests) ----------------


WORDS = [
    "lavender", "face", "serum", "chef", "knife", "wooden", "spoon", "toy", "robot", "puzzle",
    "ceramic", "bowl", "steel", "pan", "soft", "blanket", "kids", "train", "garden", "lamp",
]  # fmt: skip


def catalogue(n: int = 2000, seed: int = 7, dim: int | None = None) -> list[tuple[str, dict]]:
    """Deterministic products; popularity, prices and vectors are distinct (no score ties)."""
    if dim is None:
        from vespa_app.build_baseline_models import EMBEDDING_DIM

        dim = EMBEDDING_DIM
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cats = [["home"], ["home", "home/kitchen"], ["toys"]]
    pop = rng.permutation(n).astype(np.float64) / 10 + 0.05
    docs = []
    for i in range(n):
        words = [WORDS[j] for j in rng.choice(len(WORDS), size=3, replace=False)]
        docs.append(
            (
                f"P{i}",
                {
                    "product_id": f"P{i}",
                    "title": " ".join(words),
                    "description": " ".join(WORDS[j] for j in rng.choice(len(WORDS), size=6)),
                    "category_path": cats[i % 3],
                    "seller_id": f"s{i % 3}",
                    "price": round(5 + (i * 7.31) % 200, 2),
                    "margin": round(0.1 + (i % 17) / 50, 3),
                    "created_at": NOW - 3600 * ((i * 37) % 2000),
                    "in_stock": i % 5 != 0,
                    "popularity": float(pop[i]),
                    "embedding": vecs[i],
                },
            )
        )
    return docs
