"""The machine a figure was measured on: for a study run's result and a benchmark's results file
(machines differ between sessions, and so do their float results and their speed)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpuinfo_field(name: str) -> str:
    """The first ``name : value`` of ``/proc/cpuinfo`` (``model name``, ``vendor_id``,
    ``flags``), or "" where there is none (not Linux)."""
    for line in _cpuinfo().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ``amx_tile`` …); empty where unknown."""
    return set(cpuinfo_field("flags").split())


def cpu_name() -> str:
    """The CPU model and core count, e.g. ``Intel(R) Xeon(R) Processor (2 cores)``."""
    model = cpuinfo_field("model name")
    if model:
        return f"{model} ({os.cpu_count()} cores)"
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """:func:`cpu_name` and its vector units, e.g. ``AMD EPYC (2 cores), AVX-512``: float results
    and speed differ between kinds (AMX, Intel's matrix unit, runs bf16 far faster)."""
    flags = cpu_flags()
    units = "AVX-512" if "avx512f" in flags else "no AVX-512"
    if "amx_tile" in flags:
        units += " + AMX"
    return f"{cpu_name()}, {units}"
