"""ONNX export of the sequence models' user encoders: one self-contained file, dynamic batch and
sequence length, and onnxruntime parity with PyTorch at shapes other than the export example."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trainer.models.bert4rec import BERT4Rec, BERT4RecConfig
from trainer.models.export import (
    OUTPUT_NAME,
    example_inputs,
    export_user_encoder,
    input_names,
    reference_user_vectors,
)
from trainer.models.sasrec import SASRec, SASRecConfig

EXPORT_LEN = 12
CHECKS = [(1, 5), (3, 7), (3, 20), (1, 1)]  # (batch, length); the export example is (2, 12)

CASES = {
    "sasrec-context": lambda: SASRec(
        SASRecConfig(
            max_len=20,
            dim=16,
            features=("event", "gap", "hour", "device", "location"),
            query_features=("gap", "hour", "device", "location"),
        ),
        5,
        40,
    ),
    "bert4rec-context": lambda: BERT4Rec(
        BERT4RecConfig(max_len=21, dim=16, features=("hour", "device"), query_features=("hour",)),
        5,
        40,
    ),
    "sasrec-local": lambda: SASRec(
        SASRecConfig(max_len=20, dim=16, attention="local", block_size=4), 5, 40
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check_parity(model, path):
    onnx_model = onnx.load(str(path))
    assert not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in onnx_model.graph.initializer
    ), "weights must be inside the file"
    assert list(path.parent.iterdir()) == [path], "no side files (external data)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == input_names(model)
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    for batch, length in CHECKS:
        inputs = example_inputs(model, batch, length, seed=batch * 100 + length)
        got = session.run(None, inputs)[0]
        want = reference_user_vectors(model, inputs)
        assert got.shape == (batch, model.config.dim)
        assert np.abs(got - want).max() <= 1e-4, (batch, length)


@pytest.mark.parametrize("case", ["sasrec-context", "bert4rec-context"])
def test_user_encoder_exports_to_one_file_with_parity(case, tmp_path):
    model = CASES[case]()
    check_parity(model, export_user_encoder(model, tmp_path / "user_encoder.onnx", 2, EXPORT_LEN))


@pytest.mark.slow
def test_local_attention_encoder_exports_with_parity(tmp_path):
    model = CASES["sasrec-local"]()
    check_parity(model, export_user_encoder(model, tmp_path / "user_encoder.onnx", 2, EXPORT_LEN))
