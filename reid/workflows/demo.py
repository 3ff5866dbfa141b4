"""The README's main job: synthetic data → train → evaluate → export index → search, on CPU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.synthetic import SyntheticSpec, contact_sheet, generate
from .evaluate import Drawing, run_evaluation
from .index import ExportOptions, export_index, remove_from_index, search
from .train import train

#: the demo's operating point, the most lenient one calibrated: with ~100 calibration queries
#: FAR 1e-3 is the single highest impostor score, which rejects this small model's true matches
DEMO_FAR = 1e-1


def run_demo(
    data: str,
    run: str,
    config: str = "configs/synthetic/demo.yaml",
    overrides: list[str] | None = None,
    overwrite: bool = False,
    far: float = DEMO_FAR,
) -> dict:
    """``overwrite``: replace the run (and its index) that ``run`` holds from an earlier demo."""
    timings, start = {}, time.perf_counter()
    data_path, run_path = Path(data), Path(run)
    if not (data_path / "bounding_box_train").is_dir():
        generate(data_path, SyntheticSpec())
        contact_sheet(data_path, data_path / "contact_sheet.png")
    timings["data_s"] = time.perf_counter() - start
    run_path, _ = train(
        config, [f"data.root={data}", *(overrides or [])], run, overwrite, progress=True
    )
    run = str(run_path)
    timings["train_s"] = time.perf_counter() - start - timings["data_s"]
    t = time.perf_counter()
    evaluation = run_evaluation(
        checkpoint=str(run_path / "best.pt"),
        out=str(run_path / "eval"),
        drawing=Drawing(ranked=6),
    )
    timings["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # calibrated on the synthetic test split itself (a deployment calibrates on its own labelled
    # data); thresholds for FAR 1e-1 … 1e-4 are stored and the search uses ``far``'s
    export_index(str(run_path / "best.pt"), data, str(run_path / "index"),
                 ExportOptions(calibrate=data, far=far))  # fmt: skip
    # two queries: the one the model identifies most confidently in the evaluation above (right
    # at rank 1, with the highest true-match score), which should be matched, and one of
    # another identity that is then removed from the index ("forgotten"), which should be
    # answered "no match"
    verification, paths = evaluation["verification"], evaluation["query_paths"]
    mated = np.where(verification.rank1_correct, verification.mated_scores, -np.inf)
    best = int(np.argmax(mated))
    known = Path(paths[best])
    other = next(Path(p) for p in paths if Path(p).name.split("_")[0] != known.name.split("_")[0])
    query = [known, other]
    forgotten = int(other.name.split("_")[0])
    remove_from_index(str(run_path / "index"), [forgotten])
    found = search(
        str(run_path / "index"),
        [str(q) for q in query],
        str(run_path / "best.pt"),
        topk=5,
        exclude_same_camera=True,
        out=str(run_path / "search"),
    )
    found["forgotten_pid"] = forgotten
    found["queries"] = [str(q) for q in query]
    found["operating_points"] = found.get("threshold", {}).get("operating_points", [])
    timings["index_and_search_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    return {"evaluation": evaluation, "search": found, "timings": timings}
