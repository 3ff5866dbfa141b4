"""The peers' evaluators as their users run them, for the benchmarks (never a runtime dependency).

* fast-reid: its released package (``fastreid`` 1.4.0 on the registry) ships the Cython source
  ``fastreid/evaluation/rank_cylib/rank_cy.pyx`` with its ``setup.py`` (the file credits
  torchreid's ``rank_cy.pyx``). ``build_fastreid_cython`` downloads the wheel with pip, unpacks
  that folder into a temporary directory and runs the package's own ``setup.py build_ext
  --inplace`` (what fast-reid's ``make`` does); needs the ``bench`` extra (Cython) and a C
  compiler. Its users compute distances with ``fastreid.utils.compute_dist``
  (``1 - normalize(q) @ normalize(g).T`` in torch), reproduced in ``fastreid_cosine_distance``
  because the package itself pins torch 1.13 and cannot be installed beside ours.
* torchreid: the released package (0.2.5, wheel and sdist) ships ``rank_cylib/setup.py`` but no
  ``rank_cy.pyx``, so its users get the pure-Python ``evaluate_rank`` (with a warning): that is
  what is measured, with torchreid's own ``compute_distance_matrix``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

FASTREID = "fastreid==1.4.0"
CYLIB = "fastreid/evaluation/rank_cylib/"


def build_fastreid_cython(workdir: Path, wheel: Path | None = None) -> Path:
    """Build fast-reid's ``rank_cy`` extension under ``workdir``; returns the built module file."""
    workdir.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", FASTREID, "-d", workdir],
            check=True,
        )
        wheel = next(workdir.glob("fastreid-*.whl"))
    source = workdir / "rank_cylib"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(CYLIB) and not name.endswith("/"):
                target = source / name[len(CYLIB) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=source,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return next(source.glob("rank_cy*.so"))


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("rank_cy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def fastreid_cosine_distance(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """fast-reid's ``compute_cosine_distance`` (fastreid/utils/compute_dist.py), restated."""
    query = torch.nn.functional.normalize(query, p=2, dim=1)
    gallery = torch.nn.functional.normalize(gallery, p=2, dim=1)
    return (1 - torch.mm(query, gallery.t())).cpu().numpy()


def fastreid_evaluate(module, distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """``evaluate_cy`` as fast-reid's ``evaluate_rank`` calls it: (cmc, mAP, mINP)."""
    cmc, all_ap, all_inp = module.evaluate_cy(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, False
    )
    return np.asarray(cmc), float(np.mean(all_ap)), float(np.mean(all_inp))


def torchreid_python(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid 0.2.5's ``evaluate_rank`` as installed (no compiled module): (cmc, mAP)."""
    import warnings

    from torchreid.reid.metrics import evaluate_rank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)


@torch.no_grad()
def torchreid_cosine_distance(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    from torchreid.reid.metrics import compute_distance_matrix

    return compute_distance_matrix(query, gallery, metric="cosine").numpy()
