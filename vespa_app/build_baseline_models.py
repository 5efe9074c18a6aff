"""Build the baseline (non-learned, deterministic) ONNX models the `ranking` profile references.

Until the trained ranker exists these stand in for it with exactly the input/output names and
shapes of the spec §9 (vespa-subset.md), so the package deploys and the engine's ONNX path is
exercised end to end:

- history_encoder.onnx: hist int64[1, HISTORY_LEN] (item_idx, 0 = padding),
  ctx float[1, CONTEXT_DIM]
  -> user_state float[1, USER_STATE_DIM] = mean of a fixed item table over the non-padding ids
  (rows picked by item_idx mod TABLE_ROWS) + ctx @ W_ctx.
- ranker.onnx: user_state float[1, USER_STATE_DIM], cand float[1, EMBEDDING_DIM]
  -> score float[1, 1] = sum(user_state * (cand @ W_cand)).
- history_encoder_features.onnx (profile ``ranking_features``): the history encoder's inputs at
  FEATURES_HISTORY_LEN (the newest 100 events) plus one int64[1, FEATURES_HISTORY_LEN] code input
  per HISTORY_FEATURES name (hist_event, hist_hour, hist_device, hist_location; 0 = padding)
  -> user_state = the baseline encoder's output + the masked mean of a fixed code table (rows
  picked by code mod FEATURE_ROWS) per feature.
- ranker_features.onnx: user_state, cand float[1, EMBEDDING_DIM + len(CAND_FEATURES) +
  len(CAND_CODES)] (the embedding, then price, margin, popularity, freshness, then the seller
  and category codes) -> score = sum(user_state * (cand @ W)).

Rerunnable: `python -m vespa_app.build_baseline_models [--out DIR]` writes byte-identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The single place the package's vector widths are written; tests check the .sd files and the
# ONNX files against these.
EMBEDDING_DIM = 128  # product/user two-tower vectors: tensor<float>(x[128])
USER_STATE_DIM = 64  # history encoder output
HISTORY_LEN = 50  # query(hist) tensor<float>(d0[1],d1[50])
FEATURES_HISTORY_LEN = 100  # ranking_features: query(hist*) tensor<float>(d0[1],d1[100])
CONTEXT_DIM = 16  # query(ctx) tensor<float>(d0[1],d1[16])
TABLE_ROWS = 1024  # hashed item table of the baseline encoder (keeps the file small)
# The ranking_features profile: per-event code inputs hist_<name> and the extra cand columns
# (trainer.ranking.samples.HISTORY_FEATURES, trainer.ranking.features.CAND_FEATURES).
HISTORY_FEATURES = ("event", "hour", "device", "location")
CAND_FEATURES = ("price", "margin", "popularity", "freshness")
CAND_CODES = ("seller", "category")  # trainer.ranking.features.CAND_CODES (seller_idx, ...)
FEATURE_ROWS = 64  # hashed code table per history feature of the baseline encoder
SEED = 20240501
OPSET = 17

MODELS_DIR = Path(__file__).resolve().parent / "package" / "models"


def baseline_weights() -> dict[str, np.ndarray]:
    """The fixed weights of both baseline models (also used by tests as the numpy reference)."""
    rng = np.random.default_rng(SEED)
    return {
        "item_table": (rng.standard_normal((TABLE_ROWS, USER_STATE_DIM)) / 8).astype(np.float32),
        "w_ctx": (rng.standard_normal((CONTEXT_DIM, USER_STATE_DIM)) / 4).astype(np.float32),
        "w_cand": (
            rng.standard_normal((EMBEDDING_DIM, USER_STATE_DIM)) / np.sqrt(EMBEDDING_DIM)
        ).astype(np.float32),
    }


def _features_weights(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fixed extra weights of the features models, drawn after baseline_weights' own."""
    rng = np.random.default_rng(SEED + 1)
    out = {
        f"table_{name}": (rng.standard_normal((FEATURE_ROWS, USER_STATE_DIM)) / 8).astype(
            np.float32
        )
        for name in HISTORY_FEATURES
    }
    extra = rng.standard_normal((len(CAND_FEATURES), USER_STATE_DIM)) / np.sqrt(EMBEDDING_DIM)
    # Code columns carry indices (up to thousands): small weights keep the baseline's scores
    # in the embedding term's range.
    codes = rng.standard_normal((len(CAND_CODES), USER_STATE_DIM)) / 1e4
    out["w_cand_features"] = np.concatenate(
        [w["w_cand"], extra.astype(np.float32), codes.astype(np.float32)]
    )
    return out


def history_encoder_model(
    w: dict[str, np.ndarray], features: tuple[str, ...] = ()
) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Mod", ["hist", "rows"], ["row"]),  # (1, L) int64
        helper.make_node("Gather", ["item_table", "row"], ["emb"], axis=0),  # (1, L, D)
        helper.make_node("Greater", ["hist", "zero"], ["valid"]),  # (1, L) bool
        helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["valid_f", "last_axis"], ["mask"]),  # (1, L, 1)
        helper.make_node("Mul", ["emb", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["emb_sum"], keepdims=0),  # (1, D)
        helper.make_node("ReduceSum", ["valid_f", "seq_axis"], ["count"], keepdims=1),  # (1, 1)
        helper.make_node("Max", ["count", "one"], ["count_safe"]),
        helper.make_node("Div", ["emb_sum", "count_safe"], ["emb_mean"]),
        helper.make_node("MatMul", ["ctx", "w_ctx"], ["ctx_proj"]),  # (1, D)
        helper.make_node("Add", ["emb_mean", "ctx_proj"], ["user_state" if not features else "s0"]),
    ]
    extra = _features_weights(w) if features else {}
    for i, name in enumerate(features):
        code, last = f"hist_{name}", i == len(features) - 1
        nodes += [
            helper.make_node("Mod", [code, "feature_rows"], [f"{name}_row"]),
            helper.make_node("Gather", [f"table_{name}", f"{name}_row"], [f"{name}_emb"], axis=0),
            helper.make_node("Mul", [f"{name}_emb", "mask"], [f"{name}_masked"]),
            helper.make_node(
                "ReduceSum", [f"{name}_masked", "seq_axis"], [f"{name}_sum"], keepdims=0
            ),
            helper.make_node("Div", [f"{name}_sum", "count_safe"], [f"{name}_mean"]),
            helper.make_node(
                "Add", [f"s{i}", f"{name}_mean"], ["user_state" if last else f"s{i + 1}"]
            ),
        ]
    inits = [
        numpy_helper.from_array(w["item_table"], "item_table"),
        numpy_helper.from_array(w["w_ctx"], "w_ctx"),
        numpy_helper.from_array(np.array(TABLE_ROWS, dtype=np.int64), "rows"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "seq_axis"),
    ]
    if features:
        inits.append(
            numpy_helper.from_array(np.array(FEATURE_ROWS, dtype=np.int64), "feature_rows")
        )
        inits += [numpy_helper.from_array(extra[f"table_{n}"], f"table_{n}") for n in features]
    length = FEATURES_HISTORY_LEN if features else HISTORY_LEN
    graph = helper.make_graph(
        nodes,
        "history_encoder_features" if features else "history_encoder",
        [
            helper.make_tensor_value_info("hist", TensorProto.INT64, [1, length]),
            helper.make_tensor_value_info("ctx", TensorProto.FLOAT, [1, CONTEXT_DIM]),
            *(
                helper.make_tensor_value_info(f"hist_{n}", TensorProto.INT64, [1, length])
                for n in features
            ),
        ],
        [helper.make_tensor_value_info("user_state", TensorProto.FLOAT, [1, USER_STATE_DIM])],
        inits,
    )
    return _finish(graph)


def ranker_model(w: dict[str, np.ndarray], with_features: bool = False) -> onnx.ModelProto:
    weights = _features_weights(w)["w_cand_features"] if with_features else w["w_cand"]
    nodes = [
        helper.make_node("MatMul", ["cand", "w_cand"], ["cand_proj"]),  # (1, D)
        helper.make_node("Mul", ["user_state", "cand_proj"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "feat_axis"], ["score"], keepdims=1),  # (1, 1)
    ]
    inits = [
        numpy_helper.from_array(weights, "w_cand"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "feat_axis"),
    ]
    width = EMBEDDING_DIM + (len(CAND_FEATURES) + len(CAND_CODES) if with_features else 0)
    graph = helper.make_graph(
        nodes,
        "ranker_features" if with_features else "ranker",
        [
            helper.make_tensor_value_info("user_state", TensorProto.FLOAT, [1, USER_STATE_DIM]),
            helper.make_tensor_value_info("cand", TensorProto.FLOAT, [1, width]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vespa_app.baseline"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build(out_dir: Path = MODELS_DIR) -> list[Path]:
    """Write the models to `out_dir` (the ``ranking`` pair first, then the ``ranking_features``
    pair); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w = baseline_weights()
    written = []
    models = (
        ("history_encoder", history_encoder_model(w)),
        ("ranker", ranker_model(w)),
        ("history_encoder_features", history_encoder_model(w, HISTORY_FEATURES)),
        ("ranker_features", ranker_model(w, with_features=True)),
    )
    for name, model in models:
        path = out_dir / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=MODELS_DIR,
        help="output folder (default: the package's models/)",
    )
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
