"""A reid training checkpoint → its config, validated against the schema like a user's config
file, and its embedding model. Here, above both: the schema (``config.py``) names the models'
components, and the models' checkpoint reader (``models/checkpoint.py``) knows no schema."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .config import config_from_dict
from .models.checkpoint import (
    build_embedding_model,
    checkpoint_file,
    load_embedding_state,
    prefixed,
    read_checkpoint,
)
from .models.reid_model import ReIDModel


def stored_config(checkpoint: dict, path: str | Path) -> DictConfig:
    """The checkpoint's config, validated against the schema like a user's config file."""
    return config_from_dict(checkpoint["config"], f"{path} (its stored config)")


def load_model(path: str | Path) -> tuple[ReIDModel, DictConfig]:
    """The embedding model of a training checkpoint (eval mode) and its resolved config."""
    checkpoint = read_checkpoint(path)
    cfg = stored_config(checkpoint, checkpoint_file(path))
    model = build_embedding_model(cfg.model)
    load_embedding_state(model, prefixed(checkpoint["module"], "model."), str(path))
    return model.eval(), cfg
