"""The README's main job: synthetic data → train → evaluate → export index → search, on CPU."""

from __future__ import annotations

import time
from pathlib import Path

from ..data.synthetic import SyntheticSpec, contact_sheet, generate
from .evaluate import run_evaluation
from .index import export_index, remove_from_index, search
from .train import train


def run_demo(
    data: str,
    run: str,
    config: str = "configs/synthetic/demo.yaml",
    overrides: list[str] | None = None,
    overwrite: bool = False,
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
        ranked=6,
        worst_first=False,
    )
    timings["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # calibrated on the synthetic test split itself (a deployment calibrates on its own labelled
    # data): at FAR 1e-3 with fewer than 1,000 queries τ is the highest impostor score
    export_index(str(run_path / "best.pt"), data, str(run_path / "index"), calibrate=data)
    firsts: dict[str, Path] = {}  # one query of each of the first three identities
    for path in sorted((data_path / "query").glob("*.jpg")):
        firsts.setdefault(path.name.split("_")[0], path)
    query = list(firsts.values())[:3]
    # "forget" the third query's identity: the search must now answer "no match" for it
    forgotten = int(query[2].name.split("_")[0])
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
    timings["index_and_search_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    return {"evaluation": evaluation, "search": found, "timings": timings}
