"""Losses: label-smoothed cross-entropy, batch-hard triplet, center loss."""

from .center import CenterLoss
from .cross_entropy import CrossEntropyLabelSmooth
from .triplet import TripletLoss

__all__ = ["CrossEntropyLabelSmooth", "TripletLoss", "CenterLoss"]
