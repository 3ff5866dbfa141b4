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

from .grid import REFIT, Arm, Grid, GridFile, StudyError, run_id
from .runs import _overrides, parent_checkpoint, run_one
from .scheduler import _outcome, run_study, usable_cores
from .summary import COLUMNS, STUDY_FILES, _against_best_learned, summarise

__all__ = [
    "COLUMNS",
    "STUDY_FILES",
    "REFIT",
    "StudyError",
    "Arm",
    "GridFile",
    "Grid",
    "run_id",
    "_overrides",
    "parent_checkpoint",
    "run_one",
    "summarise",
    "_against_best_learned",
    "usable_cores",
    "_outcome",
    "run_study",
]
