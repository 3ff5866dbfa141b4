"""Bring your own model: a checkpoint saved by torchreid (``torchreid:NAME`` and its weights
file) as an embedding model, exactly as torchreid's own ``FeatureExtractor`` runs it — the zoo
model built by name, its weights loaded, eval mode, its whole forward (OSNet's ``fc`` included),
the same resize and ImageNet normalisation — so that ``reid export-model --checkpoint
torchreid:NAME --weights FILE`` exports it and everything after (calibration, int8, indexes,
search, the service) takes it like a reid checkpoint.

The weights file is read with ``torch.load(weights_only=True)`` (``load_safely``): a file that
pickles code is refused, never run. A torchreid ``save_checkpoint`` file keeps the weights under
``state_dict`` (a DataParallel model's keys start with ``module.``); the classifier is left out
(a re-ID embedding does not use it), every other weight must fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..optional import require_torchreid
from .checkpoint import load_safely

PREFIX = "torchreid:"
#: torchreid's FeatureExtractor default input size (height, width)
IMAGE_SIZE = (256, 128)


def is_torchreid(source: str) -> bool:
    return str(source).startswith(PREFIX)


def load_torchreid(source: str, weights: str | Path) -> nn.Module:
    """The torchreid zoo model ``source`` (``torchreid:NAME``) with the weights of ``weights``,
    in eval mode: ``model(images)`` is torchreid's feature (not normalised)."""
    name = source[len(PREFIX) :]
    require_torchreid(f"--checkpoint {source}")
    from torchreid.reid import models

    if name not in models.__model_factory:
        raise CheckpointError(f"--checkpoint {source}: not a torchreid model "
                              f"({', '.join(sorted(models.__model_factory))})")  # fmt: skip
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"--weights {weights}: file not found")
    state = load_safely(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"--weights {weights}: not a torchreid state dict or checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = models.build_model(name, num_classes=1, pretrained=False, use_gpu=False)
    own = model.state_dict()
    missing = [k for k in own if not k.startswith("classifier.") and k not in state]
    wrong = [k for k in own if k in state and not k.startswith("classifier.")
             and state[k].shape != own[k].shape]  # fmt: skip
    if missing or wrong:
        shown = (missing or wrong)[:3]
        raise CheckpointError(
            f"--weights {weights}: does not fit torchreid model {name} "
            f"({'missing' if missing else 'other shapes for'} {', '.join(shown)}"
            f"{', …' if len(missing or wrong) > 3 else ''})"
        )
    kept = {k: v for k, v in state.items() if k in own and not k.startswith("classifier.")}
    model.load_state_dict({**own, **kept})
    return model.eval()
