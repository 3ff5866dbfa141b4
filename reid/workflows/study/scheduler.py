"""Running a study: pre-flight checks of the pending runs, parents refitted where their
checkpoints are missing, runs one after another or side by side in processes of their own."""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import traceback
from pathlib import Path

import pandas as pd

from ...config import ConfigError, load_config
from ...errors import ReidError
from ...outputs import OutputFolder
from .grid import REFIT, Arm, Grid, StudyError, run_id
from .runs import (
    PARENT_RECORD,
    _overrides,
    _parent_done,
    _result_path,
    parent_checkpoint,
    run_one,
)
from .summary import (
    STUDY_FILES,
    summarise,
)

log = logging.getLogger(__name__)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_pending(
    grid: Grid, pending: list, out: Path, parallel: int, grid_path, refit_parents: bool = False
) -> list:
    """Every check a run would make at its start, for every run still to do, before the first
    one trains: each config loads, each fine-tuning parent is done or scheduled before it and,
    when done, has its checkpoint here (or ``refit_parents``), and ``parallel`` runs of their
    ``train.threads`` fit the usable cores. Returns the parents to train again, as
    (arm, ρ, seed)."""
    scheduled, refits = set(), []
    cores = usable_cores()
    arms = {a.name: a for a in grid.arms}
    for arm, rho, seed in pending:
        rid = run_id(arm.name, rho, seed)
        if arm.init_from and not _parent_done(out, arm, rho, seed):
            parent = run_id(arm.init_from, rho, seed)
            if parent not in scheduled:
                raise ConfigError(
                    f"{grid_path}: {rid} fine-tunes from {parent}, which is neither done nor "
                    f"among the runs to do (--only leaves it out?)"
                )
        elif arm.init_from and not parent_checkpoint(out, arm, rho, seed).is_file():
            parent = run_id(arm.init_from, rho, seed)
            if not refit_parents:
                raise ConfigError(
                    f"{grid_path}: {rid} fine-tunes from {parent}, which is done but whose "
                    f"checkpoint {out / 'runs' / parent / 'last.pt'} is not here (checkpoints are "
                    "not committed with a study's results): --refit-parents trains it again "
                    f"under {out / REFIT}, or --only leaves the fine-tuning arms out"
                )
            if arms[arm.init_from].init_from:
                raise ConfigError(
                    f"{grid_path}: {parent}, the parent of {rid}, is itself a fine-tuning run: "
                    "--refit-parents trains again only parents trained from the start"
                )
            if (arms[arm.init_from], rho, seed) not in refits:
                refits.append((arms[arm.init_from], rho, seed))
        if arm.init_from:  # a user's file under the parent record's name is not replaced
            OutputFolder(out / "runs" / rid, "study").check([PARENT_RECORD])
        scheduled.add(rid)
        cfg = load_config(grid.config, _overrides(grid, arm, rho, seed, out))
        if parallel > 1:
            threads = cfg.train.threads
            if threads == 0:
                raise ConfigError(
                    f"--parallel {parallel}: {rid} leaves train.threads=0 (torch's default, one "
                    f"thread per core), so {parallel} runs would each take all {cores} cores; pin "
                    f"it in the grid's common overrides (train.threads={max(1, cores // parallel)})"
                )
            if threads * parallel > cores:
                raise ConfigError(
                    f"--parallel {parallel}: {parallel} runs x train.threads={threads} of {rid} "
                    f"need {threads * parallel} cores; this process may use {cores}"
                )
    return refits


def _refit(grid: Grid, arm: Arm, rho: float, seed: int, out: Path) -> None:
    """Train finished run ``arm`` again under ``DIR/refit`` for its checkpoint (a killed refit
    resumes), and say how its numbers compare with the committed run's."""
    rid = run_id(arm.name, rho, seed)
    (out / REFIT / "runs").mkdir(parents=True, exist_ok=True)
    log.info("%s again, for its checkpoint (refit) …", rid)
    # a refit whose result was committed without its checkpoint (a fresh clone) trains again
    earlier_path = _result_path(out / REFIT, arm.name, rho, seed)
    earlier = json.loads(earlier_path.read_text()) if earlier_path.is_file() else None
    result = run_one(grid, arm, rho, seed, out / REFIT, for_checkpoint=True)
    committed = json.loads(_result_path(out, arm.name, rho, seed).read_text())
    log.info(
        f"refit {rid}: R1 {100 * result['rank1']:.2f} mAP {100 * result['mAP']:.2f}; "
        f"committed R1 {100 * committed['rank1']:.2f} mAP {100 * committed['mAP']:.2f} "
        f"(on {committed.get('machine', 'a machine not recorded')})"
        + (
            f"; the earlier refit R1 {100 * earlier['rank1']:.2f} mAP {100 * earlier['mAP']:.2f} "
            f"(on {earlier.get('machine', 'a machine not recorded')})"
            if earlier is not None and earlier != result
            else ""
        )
        + (
            "; fine-tuning runs from the earlier refit and from this one do not share a parent"
            if earlier is not None and earlier["mAP"] != result["mAP"]
            else ""
        ),
    )


def _side_by_side(grid_path: Path, out: Path, arm: str, rho, seed, parallel: int, pipe) -> None:
    """One run in a process of its own (``run_study`` with ``parallel > 1``): sends back
    ``("done", result)`` or ``("failed", exception)``."""
    from ...logging_utils import setup_logging

    setup_logging()
    try:
        grid = Grid.load(grid_path)
        chosen = next(a for a in grid.arms if a.name == arm)
        pipe.send(("done", run_one(grid, chosen, rho, seed, out, parallel)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the scheduler
        if not isinstance(exc, ReidError):
            traceback.print_exc()  # a bug: its traceback from where it happened
        try:
            pipe.send(("failed", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            pipe.send(("failed", StudyError(f"{type(exc).__name__}: {exc}")))
    finally:
        pipe.close()


def _report(rid: str, result: dict) -> None:
    log.info(
        "%s: R1 %.2f mAP %.2f (%.1f min)",
        rid, 100 * result["rank1"], 100 * result["mAP"], result["wall_s"] / 60,
    )  # fmt: skip


def _outcome(process, pipe, rid: str):
    """What a finished run's process sent; a process that died before sending (its end of the
    pipe closed: EOF) is a failure (its ``last.pt`` stays: the next study resumes the run)."""
    try:
        return pipe.recv()
    except (EOFError, OSError):
        process.join()
        return "failed", StudyError(
            f"{rid}: its process ended (exit code {process.exitcode}) without a result; "
            "rerun the study to resume it"
        )


def _run_side_by_side(grid_path, grid: Grid, pending: list, out: Path, parallel: int) -> None:
    """``parallel`` runs at a time, each in a fresh process; a run waits for its fine-tuning
    parent. After a failure no new run starts; those running finish, then the first failure is
    raised (a killed study resumes every run from its ``last.pt``)."""
    context = multiprocessing.get_context("spawn")  # no threads or torch state inherited
    queue, running, failure = list(pending), {}, None
    try:
        while queue or running:
            while failure is None and len(running) < parallel:
                ready = next((r for r in queue if _parent_done(out, *r)), None)
                if ready is None:
                    break
                queue.remove(ready)
                arm, rho, seed = ready
                rid = run_id(arm.name, rho, seed)
                log.info("%s … (side by side: %d)", rid, parallel)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(
                    target=_side_by_side,
                    args=(Path(grid_path), out, arm.name, rho, seed, parallel, send),
                )
                process.start()
                send.close()  # the child holds the sending end
                running[receive] = (process, rid)
            if not running:
                break  # what is left waits for a parent that failed
            # a pipe is ready when its run sent its outcome or its process died (EOF)
            for receive in multiprocessing.connection.wait(list(running)):
                process, rid = running.pop(receive)
                status, value = _outcome(process, receive, rid)
                process.join()
                receive.close()
                if status == "done":
                    _report(rid, value)
                    summarise(grid, out)
                else:
                    log.error("%s failed: %s", rid, value)
                    failure = failure or value
    finally:
        for process, _rid in running.values():  # interrupted: the runs stop with us
            process.join()
    if failure is not None:
        raise failure


def run_study(
    grid_path: str | Path,
    out: str | Path,
    only: list[str] | None = None,
    parallel: int = 1,
    refit_parents: bool = False,
) -> pd.DataFrame:
    grid = Grid.load(grid_path)
    out = Path(out)
    unknown = sorted(set(only or []) - {a.name for a in grid.arms})
    if unknown:
        raise ConfigError(
            f"--only {' '.join(unknown)}: not an arm of {grid_path} "
            f"(its arms: {', '.join(a.name for a in grid.arms)})"
        )
    pending = [
        (arm, rho, seed)
        for arm, rho, seed in grid.runs()
        if (not only or arm.name in only) and not _result_path(out, arm.name, rho, seed).is_file()
    ]
    refits = _check_pending(grid, pending, out, parallel, grid_path, refit_parents)
    OutputFolder(out, "study").prepare(STUDY_FILES)  # the summaries are the study's own
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for arm, rho, seed in refits:
        _refit(grid, arm, rho, seed, out)
    if parallel > 1 and len(pending) > 1:
        _run_side_by_side(grid_path, grid, pending, out, parallel)
        return summarise(grid, out)
    for arm, rho, seed in pending:
        rid = run_id(arm.name, rho, seed)
        log.info("%s …", rid)
        _report(rid, run_one(grid, arm, rho, seed, out))
        summarise(grid, out)
    return summarise(grid, out)
