"""One run of a study: its config overrides, its parent (fine-tuning arms), its result file,
skipped when committed, resumed when killed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ...config import ConfigError, load_config
from ...machine import cpu_description
from ...outputs import OutputFolder, sha256
from ..train import train_to_end
from .grid import REFIT, Arm, Grid, run_id


def _overrides(grid: Grid, arm: Arm, rho: float, seed: int, out: Path) -> list[str]:
    items = [*grid.common, f"data.root={grid.data[rho]}", f"train.seed={seed}", *arm.overrides]
    if arm.init_from:
        items.append(f"model.init_from={parent_checkpoint(out, arm, rho, seed)}")
    return items


def parent_checkpoint(out: Path, arm: Arm, rho: float, seed: int) -> Path:
    """What fine-tuning run ``arm`` starts from: its parent's ``last.pt``, or, where that is not
    here, the parent's finished refit (``DIR/refit/runs/ID/last.pt``)."""
    parent = run_id(arm.init_from, rho, seed)
    own, refit = out / "runs" / parent, out / REFIT / "runs" / parent
    if not (own / "last.pt").is_file() and (refit / "result.json").is_file():
        return refit / "last.pt"
    return own / "last.pt"


#: where a fine-tuning run records the parent it started from
PARENT_RECORD = "parent.json"


def _record_parent(out: Path, cfg, arm: Arm, rho: float, seed: int, run_dir: Path, resumed: bool):
    """Which parent fine-tuning run ``arm`` starts from (the checkpoint its config loads), as
    ``run_dir/parent.json``: written when the run starts (a resumed run keeps the record of its
    start; a refit trained again on another machine may end elsewhere, so its siblings can have
    started from different parents). Returns the record, or None for a run resumed from before
    such records."""
    path = run_dir / PARENT_RECORD
    if resumed:
        return json.loads(path.read_text()) if path.is_file() else None
    checkpoint = Path(cfg.model.init_from)
    parent = json.loads((checkpoint.parent / "result.json").read_text())
    record = {
        "run": run_id(arm.init_from, rho, seed),
        "checkpoint": str(checkpoint.relative_to(out)),
        "sha256": sha256(checkpoint),
        "rank1": parent.get("rank1"),
        "mAP": parent.get("mAP"),
        "machine": parent.get("machine"),
    }
    OutputFolder(run_dir, "study").write_json(PARENT_RECORD, record)
    return record


def _result_from_history(history: list[dict], cfg, arm: Arm, rho, seed) -> dict:
    last = history[-1]
    first = history[0]
    return {
        "arm": arm.name,
        "head": cfg.head.name,
        "weights": cfg.head.weights,
        "rho": rho,
        "seed": seed,
        "init_from": arm.init_from or "",
        "rank1": last.get("rank1"),
        "mAP": last.get("mAP"),
        "mINP": last.get("mINP"),
        "wall_s": None,  # set by run_one: this invocation's wall time
        "center_angle_rare": last.get("center_angle_rare"),
        "center_angle_mid": last.get("center_angle_mid"),
        "center_angle_frequent": last.get("center_angle_frequent"),
        "center_angle_rare_first": first.get("center_angle_rare"),
        "epochs": cfg.train.epochs,
        "iters_per_epoch": cfg.train.max_iters_per_epoch,
    }


def _result_path(out: Path, arm: str, rho: float, seed: int) -> Path:
    return out / "runs" / run_id(arm, rho, seed) / "result.json"


def _parent_done(out: Path, arm: Arm, rho: float, seed: int) -> bool:
    """Whether ``arm`` may start: it fine-tunes from nothing, or its parent's run is done."""
    return not arm.init_from or _result_path(out, arm.init_from, rho, seed).is_file()


def run_one(
    grid: Grid,
    arm: Arm,
    rho: float,
    seed: int,
    out: Path,
    parallel: int = 1,
    for_checkpoint: bool = False,
) -> dict:
    """Bring one run to its end and return its result; a finished run is returned as it is,
    unless ``for_checkpoint`` (a refit) and its checkpoint is not here: then it trains again."""
    run_dir = out / "runs" / run_id(arm.name, rho, seed)
    result_path = run_dir / "result.json"
    if result_path.is_file() and not (for_checkpoint and not (run_dir / "last.pt").is_file()):
        return json.loads(result_path.read_text())
    if not _parent_done(out, arm, rho, seed):
        parent = run_id(arm.init_from, rho, seed)
        raise ConfigError(f"{run_id(arm.name, rho, seed)}: needs {parent} first")
    cfg = load_config(grid.config, _overrides(grid, arm, rho, seed, out))
    start = time.perf_counter()
    resumed = (run_dir / "last.pt").is_file()
    parent = _record_parent(out, cfg, arm, rho, seed, run_dir, resumed) if arm.init_from else None
    if arm.engine == "torchreid":
        from .torchreid_reference import train_torchreid  # optional peer, imported only here

        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = train_torchreid(cfg, run_dir)
        result = _result_from_history([metrics], cfg, arm, rho, seed)
    else:
        history = train_to_end(cfg, run_dir)
        result = _result_from_history(history, cfg, arm, rho, seed)
    # wall time of this invocation; a run resumed after a kill also lost the time before it
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["resumed"] = resumed
    result["parallel"] = parallel  # runs side by side: wall_s is shared time, not one run's cost
    # a grid may span machines (sessions): their speed and their float rounding differ
    result["machine"] = cpu_description()
    result["parent_mAP"] = parent["mAP"] if parent else None
    result["parent_machine"] = parent["machine"] if parent else None
    OutputFolder(run_dir, "study").write_json("result.json", result)
    return result
