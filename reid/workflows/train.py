"""What ``reid train`` does: choose the run folder safely, then train or resume.

Run folders are never replaced silently:

* ``--output DIR`` that holds a run (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``config.yaml``)
  is refused unless ``overwrite=True``, which removes that run's files, those its ledger lists
  as written by reid, once every check of the new run has passed (a user's file under a run
  file's name is never removed: the run is refused); other files in the folder are kept;
* without ``--output`` the config's ``output.dir`` is used, and if it already holds a run the next
  free name ``DIR-2``, ``DIR-3``, … is taken and said.

``train_to_end`` (the study tool's runs) uses the same checks. Resume (``--resume RUN``) continues from ``RUN/last.pt`` with the run's own config. Only
``RESUMABLE`` keys may be overridden: ``train.epochs`` (to extend a run, never to shorten it below
the epochs done; the LR schedule is stretched to the new length), and bookkeeping that does not
change what is learned. Any other override is refused by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from ..config import ConfigError, config_from_dict, load_config, to_dict
from ..engine.checkpoint import load_checkpoint
from ..engine.trainer import RUN_FILES, fit, run_outputs
from ..errors import OutputError

log = logging.getLogger(__name__)

RESUMABLE = (
    "train.epochs", "eval.every", "data.workers", "train.threads", "train.compile",
    "output.tensorboard",
)  # fmt: skip


def holds_run(folder: Path) -> bool:
    return run_outputs(folder).kind() == "run" or any(
        (folder / name).exists() for name in RUN_FILES
    )


def choose_run_dir(cfg, output: str | None, overwrite: bool) -> Path:
    """The folder this run writes: see the module docstring."""
    explicit = output is not None
    run_dir = Path(output if explicit else cfg.output.dir)
    if not explicit and run_dir.is_dir() and holds_run(run_dir) and not overwrite:
        n = 2
        while Path(f"{run_dir}-{n}").exists():
            n += 1
        fresh = Path(f"{run_dir}-{n}")
        log.info("%s holds a run; this one goes to %s", run_dir, fresh)
        print(f"{run_dir} holds an earlier run: writing this one to {fresh}")
        return fresh
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"--output {run_dir}: exists and is not a folder")
    if run_dir.is_dir() and holds_run(run_dir) and not overwrite:
        present = [name for name in RUN_FILES if (run_dir / name).exists()]
        resumable = (run_dir / "last.pt").is_file()
        raise OutputError(
            f"--output {run_dir}: holds a training run's files ({', '.join(present) or 'its ledger'}"
            f"); pass --overwrite to replace them"
            + (f", --resume {run_dir} to continue the run" if resumable else "")
            + ", or choose another folder"
        )
    return run_dir


def _refuse_changes(run_dir: Path, keys) -> None:
    for key in keys:
        if key not in RESUMABLE:
            raise ConfigError(
                f"--resume {run_dir}: {key} cannot change on resume (it changes what the run "
                f"learns); may change: {', '.join(RESUMABLE)}. Start a new run instead"
            )


def _check_epochs(run_dir: Path, epochs: int, done: int) -> None:
    if epochs < done:
        raise ConfigError(
            f"--resume {run_dir}: train.epochs={epochs} is below the {done} epochs already done"
        )
    if epochs == done:
        raise ConfigError(
            f"--resume {run_dir}: the run already finished its {done} epochs; "
            f"extend it with train.epochs=N (N > {done})"
        )


def _flat(config) -> dict:
    return {f"{s}.{k}": v for s, section in to_dict(config).items() for k, v in section.items()}


def resume_config(run_dir: Path, overrides: list[str]):
    """The run's own config with the allowed overrides applied; refuses the others by name."""
    checkpoint = load_checkpoint(run_dir / "last.pt")
    _refuse_changes(run_dir, [item.split("=", 1)[0] for item in overrides])
    stored = config_from_dict(checkpoint["config"], f"--resume {run_dir}")
    cfg = config_from_dict(
        OmegaConf.to_container(OmegaConf.merge(stored, OmegaConf.from_dotlist(overrides))),
        f"--resume {run_dir}",
    )
    _check_epochs(run_dir, cfg.train.epochs, checkpoint["epoch"])
    return cfg


#: keys a resumed run never reads again (used before its first step only)
START_ONLY = ("model.init_from",)


def train_to_end(cfg, run_dir: Path, progress: bool = False) -> list[dict]:
    """Bring the run in ``run_dir`` to the end of ``cfg``'s schedule and return its history: a
    finished run as it is, a run killed mid-way resumed from ``last.pt`` (the same checks as
    ``--resume``: its stored config may differ from ``cfg`` only in ``RESUMABLE`` keys), a run
    killed before its first epoch ended started again (the study tool's runs)."""
    if not (run_dir / "last.pt").is_file():
        fit(cfg, run_dir, progress=progress, replace=run_dir.is_dir())
        return load_checkpoint(run_dir / "last.pt")["history"]
    checkpoint = load_checkpoint(run_dir / "last.pt")
    stored = _flat(config_from_dict(checkpoint["config"], f"--resume {run_dir}"))
    wanted = _flat(cfg)
    _refuse_changes(
        run_dir, [k for k in wanted if k not in START_ONLY and stored.get(k) != wanted[k]]
    )
    if checkpoint["epoch"] >= cfg.train.epochs:
        return checkpoint["history"]
    log.info("resuming %s from epoch %d", run_dir, checkpoint["epoch"])
    fit(cfg, run_dir, resume=True, progress=progress)
    return load_checkpoint(run_dir / "last.pt")["history"]


def train(
    config: str | None,
    overrides: list[str],
    output: str | None = None,
    overwrite: bool = False,
    resume: str | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Train a new run, or resume one; returns the run folder and the final metrics."""
    if resume:
        if config is not None or output is not None or overwrite:
            raise ConfigError(
                f"--resume {resume}: the run continues with its own config and folder; "
                "--config, --output and --overwrite cannot be combined with it"
            )
        run_dir = Path(resume)
        cfg = resume_config(run_dir, overrides)
        return run_dir, fit(cfg, run_dir, resume=True, progress=progress)
    return train_config(load_config(config, overrides), output, overwrite, progress)


def train_config(
    cfg, output: str | None = None, overwrite: bool = False, progress: bool = True
) -> tuple[Path, dict]:
    """Train a new run of a loaded config into the folder ``choose_run_dir`` picks."""
    run_dir = choose_run_dir(cfg, output, overwrite)
    replace = overwrite and run_dir.is_dir() and holds_run(run_dir)
    return run_dir, fit(cfg, run_dir, progress=progress, replace=replace)
