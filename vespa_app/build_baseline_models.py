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
CONTEXT_DIM = 16  # query(ctx) tensor<float>(d0[1],d1[16])
TABLE_ROWS = 1024  # hashed item table of the baseline encoder (keeps the file small)
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


def history_encoder_model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
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
        helper.make_node("Add", ["emb_mean", "ctx_proj"], ["user_state"]),
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
    graph = helper.make_graph(
        nodes,
        "history_encoder",
        [
            helper.make_tensor_value_info("hist", TensorProto.INT64, [1, HISTORY_LEN]),
            helper.make_tensor_value_info("ctx", TensorProto.FLOAT, [1, CONTEXT_DIM]),
        ],
        [helper.make_tensor_value_info("user_state", TensorProto.FLOAT, [1, USER_STATE_DIM])],
        inits,
    )
    return _finish(graph)


def ranker_model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["cand", "w_cand"], ["cand_proj"]),  # (1, D)
        helper.make_node("Mul", ["user_state", "cand_proj"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "feat_axis"], ["score"], keepdims=1),  # (1, 1)
    ]
    inits = [
        numpy_helper.from_array(w["w_cand"], "w_cand"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "feat_axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "ranker",
        [
            helper.make_tensor_value_info("user_state", TensorProto.FLOAT, [1, USER_STATE_DIM]),
            helper.make_tensor_value_info("cand", TensorProto.FLOAT, [1, EMBEDDING_DIM]),
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
    """Write both models to `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w = baseline_weights()
    written = []
    for name, model in (("history_encoder", history_encoder_model(w)), ("ranker", ranker_model(w))):
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
