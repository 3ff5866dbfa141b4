"""Checkpoint files, written through the one atomic-write path (``reid/atomic.py``).

A crash (even SIGKILL) mid-write leaves the previous checkpoint intact; readers never see a
half-written file under the final name; a full disk is one line naming the checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..models.checkpoint import plain, read_checkpoint


def atomic_save(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (``models.checkpoint.read_checkpoint``: read without running code,
    every field ``--resume`` needs checked)."""
    return read_checkpoint(path, training=True)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party augmentations may use it
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Every random generator's state, for an exact resume."""
    return {
        "python": random.getstate(),
        "numpy": plain(np.random.get_state()),  # noqa: NPY002 - keys as a tensor
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]  # keys: saved as an int64 tensor (``plain``)
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
