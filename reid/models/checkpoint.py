"""Reading reid training checkpoints: the one place that turns a checkpoint into a model.

Used by evaluation, index export and search, model export, diagnostics and fine-tuning
(``model.init_from``). A checkpoint holds ``module`` (the training module's state: ``model.*``
embedding model, ``head.*``), ``config`` (the resolved config as a dict) and ``num_classes``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..data.transforms import MEAN, STD
from ..errors import CheckpointError
from .reid_model import ReIDModel

#: config keys of ``model`` that define the embedding network's shape
ARCHITECTURE_KEYS = ("backbone", "last_stride", "pooling", "embedding_dim", "bnneck")


def read_checkpoint(path: str | Path, require_model: bool = True) -> dict:
    """The checkpoint dict of ``path`` (a ``.pt`` file, or a run folder: its ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if require_model and (
        not isinstance(checkpoint, dict) or "module" not in checkpoint or "config" not in checkpoint
    ):
        raise CheckpointError(f"{path}: not a reid training checkpoint (no module/config)")
    return checkpoint


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


def load_model(path: str | Path) -> tuple[ReIDModel, DictConfig]:
    """The embedding model of a training checkpoint (eval mode) and its resolved config."""
    checkpoint = read_checkpoint(path)
    cfg = OmegaConf.create(checkpoint["config"])
    model = build_embedding_model(cfg.model)
    load_embedding_state(model, prefixed(checkpoint["module"], "model."), str(path))
    return model.eval(), cfg


def preprocessing(image_size) -> dict:
    """How images must be prepared for a model (recorded in index manifests and exports)."""
    return {"image_size": list(image_size), "resize": "bilinear", "mean": MEAN, "std": STD}
