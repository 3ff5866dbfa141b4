"""int8 post-training quantization of an exported ONNX embedding model (``reid export-model
--precision int8``), and the per-node sensitivity that decides which nodes stay in fp32.

Static quantization in the QDQ format, weights int8 per output channel (symmetric), activations
uint8 (asymmetric, MinMax over the calibration crops): the format both onnxruntime and OpenVINO
run with int8 kernels (VNNI / AMX where the CPU has them). onnxruntime's ``quant_pre_process``
is not run: its symbolic shape inference fails on the graph the ``torch.export``-based exporter
writes (an ``Expand`` node), and ``quantize_static`` does not need it.

Mixed precision: :func:`sensitivity` runs the fp32 and the int8 model side by side on a few
crops and measures, at every quantized node's output, how much signal-to-noise (SQNR, dB) the
int8 model loses there against its input — the damage that node adds. The export keeps the
worst ones in fp32 (``nodes_to_exclude``) until the verified mAP loss is within the bound.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..optional import require

INPUT = "images"
METHOD = "static QDQ, weights int8 per channel (symmetric), activations uint8 (MinMax)"


def _reader(batches: Sequence[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{INPUT: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

        def get_next(self):
            return next(self.items, None)

    return Batches()


def quantize_int8(fp32: Path, out: Path, batches: Sequence[np.ndarray], exclude=()) -> None:
    """Write the int8 QDQ model of ``fp32`` to ``out``, calibrated on ``batches`` (preprocessed
    float32 crops, ``(N, 3, H, W)`` each); the nodes named in ``exclude`` stay fp32."""
    require("onnxruntime", "--precision int8")
    with _quiet():  # onnxruntime's advice on pre-processing goes to the root logger
        _quantize_static(fp32, out, batches, exclude)


def _quantize_static(fp32, out, batches, exclude) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(fp32),
        str(out),
        _reader(batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=list(exclude),
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


def sensitivity(fp32: Path, int8: Path, batches: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """The quantized nodes of ``int8``, worst first: each with the SQNR (dB, fp32 model as the
    reference) its output loses against its inputs'."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(float_aug))
        modify_model_output_intermediate_tensors(str(int8), str(qdq_aug))
        float_acts = collect_activations(str(float_aug), _reader(batches))
        qdq_acts = collect_activations(str(qdq_aug), _reader(batches))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    sqnr = {name: e["xmodel_err"] for name, e in errors.items() if "xmodel_err" in e}
    graph = onnx.load(str(int8), load_external_data=False).graph
    produced_by = {o: n for n in graph.node for o in n.output}

    def source(tensor: str) -> str:
        """A quantized input's float tensor: DequantizeLinear ← QuantizeLinear ← the tensor."""
        node = produced_by.get(tensor)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            tensor = node.input[0]
            node = produced_by.get(tensor)
        return tensor

    ranked = []
    for node in graph.node:
        quantized = any(
            i in produced_by and produced_by[i].op_type == "DequantizeLinear" for i in node.input
        )
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not quantized:
            continue
        if not node.output or node.output[0] not in sqnr:
            continue
        before = [sqnr[t] for t in map(source, node.input) if t in sqnr]
        drop = (min(before) if before else float(np.inf)) - sqnr[node.output[0]]
        ranked.append((node.name, float(drop) if np.isfinite(drop) else 1e3))
    return sorted(ranked, key=lambda item: -item[1])


@contextmanager
def _quiet():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
