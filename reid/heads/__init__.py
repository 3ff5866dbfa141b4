"""Classifier heads (one per file) and ``build_head``; every head supports IR-Softmax centers."""

from __future__ import annotations

from .arcface import ArcFaceHead
from .base import WEIGHT_MODES, ClassifierHead
from .centers import INITS as CENTER_INITS
from .centers import UPDATES as CENTER_UPDATES
from .centers import CenterSettings, ClassCenters
from .circle import CircleHead
from .cosface import CosFaceHead
from .normface import NormFaceHead
from .softmax import SoftmaxHead
from .sphereface import SphereFaceHead
from .virtual import VirtualSoftmaxHead

HEADS = {
    "softmax": SoftmaxHead,
    "normface": NormFaceHead,
    "cosface": CosFaceHead,
    "arcface": ArcFaceHead,
    "sphereface": SphereFaceHead,
    "circle": CircleHead,
    "virtual": VirtualSoftmaxHead,
}


def build_head(
    name: str, in_features: int, num_classes: int, weights: str = "learned", **options
) -> ClassifierHead:
    """Build a head by name; ``weights="centers"`` turns it into its IR-Softmax variant."""
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; valid: {', '.join(HEADS)}")
    return HEADS[name](in_features, num_classes, weights=weights, **options)


def head_options(name: str) -> dict:
    """The options the head ``name`` declares, with their defaults."""
    return {key: option.default for key, option in HEADS[name].OPTIONS.items()}


#: every head option of any head (config keys under ``head.``)
ALL_HEAD_OPTIONS = sorted({key for head in HEADS.values() for key in head.OPTIONS})


__all__ = [
    "HEADS",
    "build_head",
    "head_options",
    "ALL_HEAD_OPTIONS",
    "ClassifierHead",
    "ClassCenters",
    "WEIGHT_MODES",
    "CENTER_UPDATES",
    "CENTER_INITS",
    "CenterSettings",
] + [c.__name__ for c in HEADS.values()]
