"""Atomic checkpoint files: write to a temporary file in the same folder, fsync, rename.

A crash (even SIGKILL) mid-write leaves the previous checkpoint intact; readers never see a
half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_save(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise FileNotFoundError(f"{path}: not a readable checkpoint ({exc})") from None
