"""Optional packages: a clear one-line error, naming the setting and the extra to install.

A plain ``pip install reid`` brings what training, evaluation, indexing and search need. The
extras: ``reid[serve]`` (the HTTP service: FastAPI, uvicorn, python-multipart), ``reid[export]``
(ONNX export and runtime: onnx, onnxscript, onnxruntime), ``reid[milvus]`` (the Milvus client),
``reid[torchreid]`` (the peer: zoo backbones ``torchreid:NAME``, the study's reference engine),
``reid[tensorboard]`` (``output.tensorboard=true``), and ``reid[dev]`` (all of them and the
test tools: what ``make setup`` installs).
"""

from __future__ import annotations

import importlib.util

from .errors import ReidError

#: importable module → the extra that installs it
EXTRAS = {
    "torchreid": "torchreid",
    "tensorboard": "tensorboard",
    "fastapi": "serve",
    "uvicorn": "serve",
    "python_multipart": "serve",
    "prometheus_client": "serve",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "openvino": "export",
    "pymilvus": "milvus",
}


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class MissingExtra(ReidError, ImportError):
    """An optional package that is not installed: one line naming the extra. An ``ImportError``
    too, so that code walking the package (``pkgutil``) treats the module as not importable."""


def require(module: str, what: str) -> None:
    """Raise, naming ``what`` needs it, unless ``module`` can be imported."""
    if not available(module):
        extra = EXTRAS.get(module, module)
        raise MissingExtra(
            f"{what} needs the optional package {module}: pip install 'reid[{extra}]' "
            "(make setup installs every extra)"
        )


def require_torchreid(what: str) -> None:
    require("torchreid", what)
