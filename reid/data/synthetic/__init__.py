"""Synthetic pedestrians in the exact Market-1501 layout and file naming (real Market-1501
cannot be shipped: the demo, the tests and the benchmarks run on people drawn here).

``render.py`` draws one person in one camera frame (what an identity fixes and what a camera
and frame add); ``writer.py`` writes the dataset (layout, names, long-tail caps, the contact
sheet). Deterministic for a seed.
"""

from .render import Camera, Identity, draw_person, render, sample_camera, sample_identity
from .writer import SPLIT_FOLDERS, SyntheticSpec, contact_sheet, generate

__all__ = [
    "Camera",
    "Identity",
    "SPLIT_FOLDERS",
    "SyntheticSpec",
    "contact_sheet",
    "draw_person",
    "generate",
    "render",
    "sample_camera",
    "sample_identity",
]
