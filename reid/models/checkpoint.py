"""Reading reid training checkpoints: the one place that turns a checkpoint file into a model.

Used by evaluation, index export and search, model export, diagnostics, fine-tuning
(``model.init_from``) and ``--resume``. A checkpoint holds ``module`` (the training module's
state: ``model.*`` embedding model, ``head.*``), ``config`` (the resolved config as a dict) and
``num_classes``; a training checkpoint also the optimizer, scheduler, scaler, sampler and random
generators' states, the epoch and the evaluation history.

**A checkpoint cannot run code.** Checkpoints are what people download and share, and a pickle
can call any function while it is read. reid writes tensors and plain types only (``plain``) and
reads with ``torch.load(weights_only=True)``, whose unpickler builds tensors, containers and
numbers and nothing else. A file that needs any other object (a pickled callable, or a reid
checkpoint written before this rule: its NumPy random state) is refused with one line, before
anything of it runs; ``convert_checkpoint`` rewrites an older checkpoint the user trusts.
Then the content is parsed (:class:`ModelCheckpoint`, :class:`TrainingCheckpoint`) and the
stored config validated against the schema, so a file with missing or mistyped fields is one
line naming the field.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from ..boundary import Open, parse
from ..data.transforms import MEAN, STD
from ..errors import CheckpointError, first_line
from .reid_model import ReIDModel

#: config keys of ``model`` that define the embedding network's shape
ARCHITECTURE_KEYS = ("backbone", "last_stride", "pooling", "embedding_dim", "bnneck")


class Architecture(Open):
    backbone: str
    last_stride: int = Field(ge=1, le=2)
    pooling: str
    embedding_dim: int = Field(ge=0)
    bnneck: bool


class StoredConfig(Open):
    model: Architecture


class ModelCheckpoint(Open):
    """What every reader of a checkpoint needs: the weights, the config, the class count."""

    module: dict[str, torch.Tensor]
    config: StoredConfig
    num_classes: int = Field(ge=1)


class RandomState(Open):
    python: tuple
    numpy: tuple
    torch: torch.Tensor
    cuda: list | None = None


class TrainingCheckpoint(ModelCheckpoint):
    """What ``--resume`` needs beyond the model."""

    optimizer: dict
    scheduler: dict
    scaler: dict
    epoch: int = Field(ge=0)
    sampler: dict | None
    rng: RandomState
    history: list[dict]
    best_map: float


def plain(value):
    """``value`` as tensors and plain types only (what ``weights_only`` reads back): NumPy
    arrays become tensors, NumPy scalars Python numbers; containers are converted through."""
    if isinstance(value, np.ndarray):
        wide = _TENSOR_DTYPE.get(value.dtype.kind, value.dtype)
        return torch.from_numpy(np.ascontiguousarray(value).astype(wide))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


#: NumPy integer kinds torch has no tensor type for (uint32, the random state's keys) widen
_TENSOR_DTYPE = {"u": np.int64}


def load_safely(path: Path):
    """``torch.load`` with ``weights_only=True``: tensors, containers and plain types; a file
    that would import other globals is refused in one line naming them (never run)."""
    return _open(Path(path))


def _open(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        unsafe = _unsafe_globals(path)
        if unsafe:
            more = f", … ({len(unsafe)} in all)" if len(unsafe) > 3 else ""
            shown = ", ".join(unsafe[:3]) + more
            if set(unsafe) <= _OLD_REID_GLOBALS:
                hint = (
                    "an older reid checkpoint (its NumPy random state); if you trust where it "
                    f"came from, convert it: reid convert-checkpoint {path} --out NEW.pt"
                )
            else:
                hint = "not a reid checkpoint: never load it unless you made it yourself"
            raise CheckpointError(
                f"{path}: holds pickled Python objects ({shown}) that loading could run as "
                f"code; refused ({hint})"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None


#: what an older reid checkpoint pickled beyond tensors: its NumPy random state
_OLD_REID_GLOBALS = (
    {
        f"numpy.{core}.multiarray.{name}"
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    }
    | {"numpy.ndarray", "numpy.dtype"}
    | {f"numpy.dtypes.{t}DType" for t in ("UInt32", "Float64", "Int64")}
)


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint's pickle would import, read without running it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or a run folder's ``last.pt``; refuses a missing file."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: str | Path, require_model: bool = True, training: bool = False) -> dict:
    """The checkpoint dict of ``path`` (a ``.pt`` file, or a run folder: its ``last.pt``),
    read without running code and parsed: a model checkpoint (``require_model``) or a training
    checkpoint (``training``: everything ``--resume`` needs)."""
    path = checkpoint_file(path)
    checkpoint = _open(path)
    _require_reid(checkpoint, path)
    if training:
        parse(TrainingCheckpoint, checkpoint, path, CheckpointError)
    elif require_model:
        parse(ModelCheckpoint, checkpoint, path, CheckpointError)
    return checkpoint


def _require_reid(checkpoint, path: Path) -> None:
    if not isinstance(checkpoint, dict) or not {"module", "config"} <= set(checkpoint):
        raise CheckpointError(f"{path}: not a reid training checkpoint (no module/config)")


def prefixed(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix`` (e.g. ``model.``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def build_embedding_model(model_cfg, pretrained: str | None = None) -> ReIDModel:
    """The embedding network a ``model`` config section describes (of a checkpoint, or of a new
    run with its ``pretrained`` start): the one model builder."""
    return ReIDModel(*(model_cfg[key] for key in ARCHITECTURE_KEYS), pretrained)


def load_embedding_state(model: ReIDModel, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: weights do not match the checkpoint's model config ({str(exc).splitlines()[0]})"
        ) from None


def preprocessing(image_size) -> dict:
    """How images must be prepared for a model (recorded in index manifests and exports)."""
    return {"image_size": list(image_size), "resize": "bilinear", "mean": MEAN, "std": STD}


def convert_checkpoint(source: str | Path, out: str | Path) -> dict:
    """Rewrite a checkpoint **the user trusts** (one written by an earlier reid, whose NumPy
    random state is a pickled array) as tensors and plain types, to ``out``: the one place that
    reads a checkpoint with ``weights_only=False``, run only on the user's explicit command.
    The result is checked by the safe reader before it is final; ``source`` is never changed."""
    from ..outputs import check_no_overlap, output_file

    source = checkpoint_file(source)
    folder, name = output_file(out, "convert_checkpoint", "--out")
    check_no_overlap(out, [source])
    folder.prepare([name])
    try:
        checkpoint = torch.load(
            source, map_location="cpu", weights_only=False
        )  # trusted: see above
    except Exception as exc:
        raise CheckpointError(f"{source}: not a readable checkpoint ({first_line(exc)})") from None
    _require_reid(checkpoint, source)
    converted = {
        key: value if key in ("module", "optimizer") else plain(value)
        for key, value in checkpoint.items()
    }
    converted.setdefault("num_classes", _num_classes(converted["module"], source))
    parse(ModelCheckpoint, converted, source, CheckpointError)
    path = folder.write(name, lambda tmp: torch.save(converted, tmp))
    try:
        read_checkpoint(path, training="optimizer" in converted)
    except CheckpointError:
        folder.remove([name])
        raise
    return {"out": str(path), "keys": sorted(converted)}


def _num_classes(module: dict, source: Path) -> int:
    weight = module.get("head.weight")
    if weight is None:
        raise CheckpointError(f"{source}: field num_classes: missing (and no head.weight to count)")
    return int(weight.shape[0])
