"""The study grid (``GRID.yaml``): its schema (``GridFile``, ``Arm``), the runs it declares
(``Grid.runs``) and their ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from omegaconf import OmegaConf
from pydantic import Field, model_validator

from ...boundary import Strict, parse
from ...config import ConfigError
from ...errors import ReidError, first_line


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


#: where ``refit_parents`` trains again the parents whose checkpoints are not here
REFIT = "refit"
