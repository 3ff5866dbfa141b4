"""A resumable grid of training runs on real data: ``reid study GRID.yaml --out DIR``.

The grid (YAML) declares a base config, the datasets per imbalance level ρ, the seeds, and the
arms (each a set of config overrides; optionally ``init_from: ARM`` to fine-tune from that arm's
run of the same ρ and seed, ``pair: ARM`` naming the learned-weights arm an IR arm is compared
with, ``rhos: [...]`` to restrict it, and ``engine: torchreid`` for the peer's reference engine).
Every run writes ``DIR/runs/ID/result.json`` when done; a rerun skips those, resumes a run killed
mid-way from its ``last.pt``, and restarts one killed before its first epoch ended. After every
run the summaries are rewritten: ``results.csv`` (one row per run), ``results.md`` (mean ± std
per arm and ρ, and the paired IR − learned differences) and ``map_vs_rho.png`` (per ρ, each
arm's mAP: a dot per seed, a bar at the mean).

A fine-tuning run starts from its parent's ``last.pt``. Checkpoints are not committed with a
study's results, so in a fresh clone a finished parent has none: such a run is refused before
any run trains, unless ``refit_parents`` (``--refit-parents``) trains the parent again, with its
own config and seed, under ``DIR/refit/runs/ID`` (never touching the committed run) and the
child starts from that; the refit's numbers are printed beside the committed ones. A refit is
the same to the bit on the same kind of machine, not across kinds (their float rounding differs),
so each fine-tuning run records the parent it started from (``parent.json``: the run, checkpoint,
its hash and numbers; ``parent_mAP`` in results.csv), and the paired tables mark a pair of
fine-tuning runs whose parents differ.

``parallel=N`` (``--parallel N``) trains N runs side by side, each in a process of its own; a
fine-tuning run starts once its parent has finished. The runs' own ``train.threads`` says how many
threads each uses, so a run's numbers do not depend on N or on what runs beside it; N runs of
``train.threads`` each must fit the cores this process may use (checked before any run starts).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from pydantic import Field, model_validator

from ..boundary import Strict, parse
from ..config import ConfigError, load_config
from ..errors import ReidError, first_line
from ..machine import cpu_description
from ..outputs import OutputFolder, sha256
from .train import train_to_end

log = logging.getLogger(__name__)

COLUMNS = [
    "arm", "head", "weights", "rho", "seed", "init_from", "rank1", "mAP", "mINP", "wall_s",
    "center_angle_rare", "center_angle_mid", "center_angle_frequent",
    "center_angle_rare_first", "epochs", "iters_per_epoch", "resumed", "parallel", "machine",
    "parent_mAP", "parent_machine",
]  # fmt: skip


STUDY_FILES = ("results.csv", "results.md", "map_vs_rho.png")
#: where ``refit_parents`` trains again the parents whose checkpoints are not here
REFIT = "refit"


class StudyError(ReidError):
    """A run that ended without a result (its process died), or whose failure did not pickle."""


ArmName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
Seeds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)]


class Arm(Strict):
    """One arm of a grid, as its YAML declares it (checked where the grid is read)."""

    name: ArmName
    overrides: list[str] = []
    init_from: str | None = None
    pair: str | None = None
    rhos: Annotated[list[float], Field(min_length=1)] | None = None
    engine: Literal["reid", "torchreid"] = "reid"
    #: this arm's seeds, when they differ from the grid's (e.g. a third seed for the decisive pair)
    seeds: Seeds | None = None

    @model_validator(mode="after")
    def _unique_seeds(self):
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: a seed is listed twice")
        return self


class GridFile(Strict):
    """A study grid as its YAML declares it. Arm names become run folders (``ARM_rhoR_sS``):
    letters, digits, ``_.-``, no path; two arms of one name would share their runs."""

    description: str | None = None
    config: str | None  # the base config file; null: the defaults
    data: Annotated[dict[Annotated[float, Field(gt=0, strict=False)], str], Field(min_length=1)]
    seeds: Seeds
    arms: Annotated[list[Arm], Field(min_length=1)]
    common: list[str] = []

    @model_validator(mode="after")
    def _consistent(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: a seed is listed twice")
        names = [arm.name for arm in self.arms]
        for i, arm in enumerate(self.arms):
            if arm.name in names[:i]:
                raise ValueError(f"arms[{i}]: a second arm named {arm.name!r}")
            for key in ("init_from", "pair"):
                ref = getattr(arm, key)
                if ref is not None and ref not in names:
                    raise ValueError(f"arms[{i}].{key}: no arm named {ref!r}")
            for rho in arm.rhos or []:
                if rho not in self.data:
                    raise ValueError(f"arms[{i}].rhos: {rho:g} is not one of data's levels")
        return self


@dataclass
class Grid:
    config: str
    data: dict
    seeds: list
    arms: list[Arm]
    common: list[str] = field(default_factory=list)
    order: str = "rho"

    @classmethod
    def load(cls, path: str | Path) -> Grid:
        """The grid file, parsed (``GridFile``): one line naming the field when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: grid file not found")
        try:
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception as exc:
            raise ConfigError(f"{path}: not a readable YAML grid ({first_line(exc)})") from None
        spec = parse(GridFile, raw, path, ConfigError)
        return cls(
            spec.config,
            dict(spec.data),
            list(spec.seeds),
            list(spec.arms),
            list(spec.common),
        )

    def runs(self) -> list[tuple[Arm, float, int]]:
        """Every (arm, ρ, seed), in the order the grid lists ρ, then seeds (the grid's, then
        arms' extra ones), then arms."""
        out = []
        extra = sorted({s for arm in self.arms for s in (arm.seeds or [])} - set(self.seeds))
        for rho in self.data:
            for seed in [*self.seeds, *extra]:
                for arm in self.arms:
                    if arm.rhos is None or rho in [float(r) for r in arm.rhos]:
                        if seed in (arm.seeds if arm.seeds is not None else self.seeds):
                            out.append((arm, rho, seed))
        return out


def run_id(arm: str, rho: float, seed: int) -> str:
    return f"{arm}_rho{rho:g}_s{seed}"


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


def summarise(grid: Grid, out: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["parallel"] = table["parallel"].fillna(1).astype(int)  # runs from before --parallel
    table["machine"] = table["machine"].astype(object).fillna("not recorded")  # runs before it
    outputs = OutputFolder(out, "study")
    outputs.write("results.csv", lambda tmp: table.to_csv(tmp, index=False))
    if table.empty:
        return table
    order = {a.name: i for i, a in enumerate(grid.arms)}
    lines = ["| arm | ρ | seeds | R1 | mAP | mINP | rare-class center angle (first → last epoch) | wall per whole run |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (arm, rho), g in sorted(
        table.groupby(["arm", "rho"]), key=lambda kv: (kv[0][1], order.get(kv[0][0], 99))
    ):

        def ms(col, scale=100.0, g=g):
            v = g[col].astype(float) * scale
            return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"

        angle = (
            f"{g['center_angle_rare_first'].astype(float).mean():.1f}° → {g['center_angle_rare'].astype(float).mean():.1f}°"
            if g["center_angle_rare"].notna().all()
            else "—"
        )
        lines.append(
            f"| {arm} | {rho:g} | {len(g)} | {ms('rank1')} | {ms('mAP')} | {ms('mINP')} | {angle} | "
            f"{_wall_per_run(g)} |"
        )
    lines += ["", "Paired differences, IR − the learned arm the grid pairs it with (its head form, or its "
              "recipe), same ρ and seed, in mAP points:", "",
              "| IR arm | learned arm | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm in grid.arms:
        if arm.pair is None:
            continue
        for rho in sorted(table["rho"].unique()):
            at = table[table.rho == rho]
            lines += _paired_row(at, arm.name, arm.pair, rho)
    lines += _against_best_learned(table)
    lines += _against_peer_engine(table, [a.name for a in grid.arms if a.engine == "torchreid"])
    machines = table["machine"].value_counts()
    runs = {m: f"{n} run" + ("s" if n > 1 else "") for m, n in machines.items()}
    lines += ["", "Machines: " + "; ".join(f"{m} ({n})" for m, n in runs.items()) + ".",
              "", "Wall per whole run: the mean over the runs trained start to end in one go "
              "(a resumed run's time covers only its rest), on whichever machine ran each; "
              "each run's own is in results.csv with its machine."]  # fmt: skip
    outputs.write_text("results.md", "\n".join(lines) + "\n")
    outputs.write("map_vs_rho.png", lambda tmp: _plot(table, grid, tmp))
    return table


def _wall_per_run(g: pd.DataFrame) -> str:
    """Mean wall time of the runs of ``g`` that trained from start to end in one invocation: a
    resumed run's time covers only the rest."""
    whole = g[~g["resumed"].fillna(False).astype(bool)]["wall_s"].astype(float)
    if whole.empty:
        return "— (every run resumed)"
    return f"{whole.mean() / 60:.1f} min" + (
        f" ({len(whole)} of {len(g)})" if len(whole) < len(g) else ""
    )


def _paired_row(at: pd.DataFrame, ir: str, learned: str, rho: float) -> list[str]:
    """One table row: arm ``ir`` − arm ``learned`` in ``at`` (one ρ), paired by seed; no row
    when they share no seed."""
    a, b = (at[at.arm == name].set_index("seed") for name in (ir, learned))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return []
    d = [100 * (a.loc[s, "mAP"] - b.loc[s, "mAP"]) for s in seeds]
    r = [100 * (a.loc[s, "rank1"] - b.loc[s, "rank1"]) for s in seeds]
    cells = [f"{x:+.2f}" + _parents_differ(a.loc[s], b.loc[s]) for x, s in zip(d, seeds)]
    return [
        f"| {ir} | {learned} | {rho:g} | {len(seeds)} | "
        f"{', '.join(cells)} | {np.mean(d):+.2f} | {np.mean(r):+.2f} |"
    ]


def _parents_differ(a: pd.Series, b: pd.Series) -> str:
    """A note for a pair of fine-tuning runs that started from different parents (a refit trained
    again on a machine that rounds differently): their difference is not one start's."""
    pa, pb = a.get("parent_mAP"), b.get("parent_mAP")
    if pd.isna(pa) or pd.isna(pb) or pa == pb:
        return ""
    return f" (parents {100 * pa:.2f} vs {100 * pb:.2f})"


def _against_best_learned(table: pd.DataFrame) -> list[str]:
    """The study's question: each IR arm against the *best* learned arm among the runs it is
    comparable with (highest mean mAP of the arms with learned weights, any head form, recipe or
    engine), paired by seed. Comparable: the same ρ and budget (epochs × iterations), and the same
    start: from ImageNet, or fine-tuned from a parent run (which doubles the images seen). The
    same-form table above answers a narrower question."""
    lines = ["", "IR − the best learned arm of the same ρ, budget and start (from ImageNet or "
             "fine-tuned), by mean mAP, paired by seed, in mAP points:", "",
             "| IR arm | best learned arm | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    start = table["init_from"].fillna("").astype(str) != ""
    keys = [table["rho"], table["epochs"], table["iters_per_epoch"], start]
    for (rho, *_), at in table.groupby(keys, sort=True):
        learned = at[at.weights == "learned"].groupby("arm")["mAP"].mean()
        if learned.empty:
            continue
        for arm in at[at.weights == "centers"]["arm"].unique():
            lines += _paired_row(at, arm, learned.idxmax(), rho)
    return lines


def _against_peer_engine(table: pd.DataFrame, peers: list[str]) -> list[str]:
    """The best recipe (highest mean mAP of our arms trained from ImageNet, any head or weights)
    against each peer-engine arm of the same ρ and budget, paired by seed."""
    if not peers or not table["arm"].isin(peers).any():
        return []
    lines = ["", "The best recipe (our arms from ImageNet, by mean mAP) − torchreid's engine, same ρ "
             "and budget, paired by seed, in mAP points:", "",
             "| best recipe | peer engine | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    scratch = table[table["init_from"].fillna("").astype(str) == ""]
    for (rho, *_), at in scratch.groupby(["rho", "epochs", "iters_per_epoch"], sort=True):
        ours = at[~at["arm"].isin(peers)].groupby("arm")["mAP"].mean()
        if ours.empty:
            continue
        for peer in at[at["arm"].isin(peers)]["arm"].unique():
            lines += _paired_row(at, ours.idxmax(), peer, rho)
    return lines


def _plot(table: pd.DataFrame, grid: Grid, path: Path) -> None:
    """One panel per ρ (one mAP scale for all): every arm's held-out mAP, one dot per seed and a
    bar at the mean, best arm on top; IR arms, learned arms and peer engines in their own
    colours, fine-tuned arms (twice the images) as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    arms = {arm.name: arm for arm in grid.arms}
    rhos = sorted(table["rho"].unique())
    rows = max(table[table.rho == rho]["arm"].nunique() for rho in rhos)
    fig, axes = plt.subplots(
        1, len(rhos), figsize=(4.4 * len(rhos) + 0.6, 0.3 * rows + 1.6), dpi=100, squeeze=False
    )
    colours = {"ir": "tab:orange", "learned": "tab:blue", "peer": "tab:gray"}

    def kind(name: str, g: pd.DataFrame) -> str:
        if arms.get(name) is not None and arms[name].engine != "reid":
            return "peer"
        return "ir" if (g["weights"] == "centers").any() else "learned"

    for ax, rho in zip(axes[0], rhos):
        at = table[table.rho == rho]
        order = at.groupby("arm")["mAP"].mean().sort_values().index
        for y, name in enumerate(order):
            g = at[at.arm == name]
            colour = colours[kind(name, g)]
            marker = "s" if g["init_from"].fillna("").astype(str).ne("").any() else "o"
            ax.barh(y, 100 * g["mAP"].mean(), color=colour, alpha=0.25, height=0.6)
            ax.scatter(100 * g["mAP"], [y] * len(g), color=colour, marker=marker, s=18, zorder=3)
        ax.set_yticks(range(len(order)), list(order), fontsize=8)
        ax.set_xlim(
            max(0.0, 100 * table["mAP"].min() - 5), min(100.0, 100 * table["mAP"].max() + 3)
        )
        ax.set_xlabel("held-out mAP (%)")
        ax.set_title(f"ρ = {rho:g}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker="o", linestyle="", label=label)
        for label, c in (
            ("IR centers", colours["ir"]),
            ("learned weights", colours["learned"]),
            ("peer engine", colours["peer"]),
        )
    ] + [Line2D([], [], color="k", marker="s", linestyle="", label="fine-tuned (2× images)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Market-1501 held-out split: mAP per arm (dots: seeds, bars: mean)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


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
    print(f"[study] {rid} again, for its checkpoint (refit) …", flush=True)
    # a refit whose result was committed without its checkpoint (a fresh clone) trains again
    earlier_path = _result_path(out / REFIT, arm.name, rho, seed)
    earlier = json.loads(earlier_path.read_text()) if earlier_path.is_file() else None
    result = run_one(grid, arm, rho, seed, out / REFIT, for_checkpoint=True)
    committed = json.loads(_result_path(out, arm.name, rho, seed).read_text())
    print(
        f"[study] refit {rid}: R1 {100 * result['rank1']:.2f} mAP {100 * result['mAP']:.2f}; "
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
        flush=True,
    )


def _side_by_side(grid_path: Path, out: Path, arm: str, rho, seed, parallel: int, pipe) -> None:
    """One run in a process of its own (``run_study`` with ``parallel > 1``): sends back
    ``("done", result)`` or ``("failed", exception)``."""
    from ..logging_utils import setup_logging

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
    print(
        f"[study] {rid}: R1 {100 * result['rank1']:.2f} mAP {100 * result['mAP']:.2f} "
        f"({result['wall_s'] / 60:.1f} min)",
        flush=True,
    )


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
                print(f"[study] {rid} … (side by side: {parallel})", flush=True)
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
                    print(f"[study] {rid} failed: {value}", flush=True)
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
        print(f"[study] {rid} …", flush=True)
        _report(rid, run_one(grid, arm, rho, seed, out))
        summarise(grid, out)
    return summarise(grid, out)
