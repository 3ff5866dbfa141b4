"""The runtime seam: the one place that turns preprocessed batches into embeddings.

A runtime runs an exported embedding model (``reid export-model``) on a float32 batch
``(N, 3, H, W)`` already resized and normalised as the export's sidecar says, and returns
``(N, D)`` embeddings (unit vectors: the export normalises). Every runtime sees the same
tensors: preprocessing comes from the sidecar and runs in :class:`~reid.models.FeatureExtractor`,
the one embedding path, whatever runs the model.

* ``torch`` — a ``.pt2`` program or legacy ``.ts`` (a checkpoint runs eager PyTorch, CPU or CUDA,
  without this module);
* ``onnxruntime`` — an ``.onnx`` model (fp32 or int8 QDQ), CPU execution provider;
* ``openvino`` — the same ``.onnx`` file, compiled for the CPU; its precision is the export's:
  ``fp32`` pins f32 inference (OpenVINO's default on a BF16 CPU is bf16), ``bf16`` asks for it
  (only where the CPU has it), ``int8`` runs the QDQ model's int8 kernels.

Threads follow the machine: as many as this process may use (``os.sched_getaffinity``). A
runtime that is not installed is one line naming its extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ReidError
from ..optional import require

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: the runtimes each exported format runs on (the first: its default)
FORMAT_RUNTIMES = {".pt2": ("torch",), ".ts": ("torch",), ".onnx": ("onnxruntime", "openvino")}
#: the runtimes each precision runs on
PRECISION_RUNTIMES = {
    "fp32": ("torch", "onnxruntime", "openvino"),
    "bf16": ("openvino",),
    "int8": ("onnxruntime", "openvino"),
}


class RuntimeChoiceError(ReidError):
    """A runtime that cannot run this model (format, precision, CPU), named in one line."""


class RuntimeModule(torch.nn.Module):
    """A runtime behind the ``nn.Module`` interface :class:`~reid.models.FeatureExtractor`
    batches through (so that preprocessing, batching and the checks are the same for all)."""

    def __init__(self, run: Callable):
        super().__init__()
        self.run = run

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.run(images.contiguous())))


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), as OpenVINO reports it."""
    try:
        import openvino
    except ImportError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_runtime(path: Path, precision: str, runtime: str | None, verified: str | None) -> str:
    """The runtime for the export at ``path``: the one asked for, else the one its export was
    verified with, else the format's default; refused (one line) where it cannot run it."""
    formats = FORMAT_RUNTIMES.get(path.suffix)
    if formats is None:
        raise RuntimeChoiceError(
            f"{path}: export format from the suffix: .pt2, .onnx or .ts (legacy)"
        )
    allowed = [r for r in formats if r in PRECISION_RUNTIMES[precision]]
    chosen = runtime or (verified if verified in allowed else allowed[0] if allowed else None)
    if chosen not in allowed:
        raise RuntimeChoiceError(
            f"--runtime {chosen}: a {precision} {path.suffix} model runs on "
            f"{', '.join(allowed) or 'no runtime'}"
        )
    if precision != "fp32" and verified is not None and chosen != verified:
        # the same QDQ graph is not the same model everywhere: onnxruntime 1.32 turns a
        # mixed-precision MobileNetV2 (an fp32 conv between int8 ones) into noise (cosine
        # −0.24 to fp32) where OpenVINO keeps 0.98 (docs/deployment.md)
        raise RuntimeChoiceError(
            f"{path}: this {precision} model's accuracy was verified on {verified}; run it there, "
            f"or export it again with --runtime {chosen} (verified on that runtime)"
        )
    return chosen


def check_checkpoint_runtime(runtime: str | None, path) -> None:
    """A training checkpoint runs on torch; another runtime needs an export of it."""
    if runtime not in (None, "torch"):
        raise RuntimeChoiceError(
            f"--runtime {runtime}: a training checkpoint runs on torch; export it first "
            f"(reid export-model --checkpoint {path} --out model.onnx)"
        )


def open_runtime(path: str | Path, runtime: str, precision: str = "fp32") -> Callable:
    """A callable ``images (N, 3, H, W) float32 tensor → embeddings (N, D) numpy``."""
    path = Path(path)
    if runtime == "torch":
        if path.suffix == ".pt2":
            module = torch.export.load(str(path)).module()
        else:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda x: module(x).detach().numpy()
    if runtime == "onnxruntime":
        return _onnxruntime(path)
    if runtime == "openvino":
        return _openvino(path, precision)
    raise RuntimeChoiceError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")


def _onnxruntime(path: Path) -> Callable:
    require("onnxruntime", f"{path} on onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x.numpy())})[0]


def _openvino(path: Path, precision: str) -> Callable:
    require("openvino", f"{path} on openvino")
    import openvino

    if precision == "bf16" and not cpu_has_bf16():
        raise RuntimeChoiceError(
            f"{path}: a bf16 model needs a CPU with bf16 (AVX-512 BF16 or AMX); this one has "
            "none: run the fp32 or int8 export"
        )
    core = openvino.Core()
    config = {
        "INFERENCE_NUM_THREADS": usable_cores(),
        "PERFORMANCE_HINT": "LATENCY",
        # f32 unless bf16 is asked for: OpenVINO's default on a BF16 CPU is bf16
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: np.array(request.infer({0: np.ascontiguousarray(x.numpy())})[0], copy=True)
