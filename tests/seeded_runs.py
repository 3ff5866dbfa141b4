"""Seeded short training runs whose numbers must not change when the code is reorganised.

``python -m tests.seeded_runs --record`` trains each run of ``RUNS`` on the suite's synthetic set
and writes this machine kind's record into ``tests/golden/seeded_runs.json`` (one record per
kind: architecture, CPU model and vendor, the kernel-choosing ISA flags, torch version; the
others are kept; records from before the CPU was part of the kind match no machine exactly and
serve as cross-kind references): per epoch every loss term,
accuracy and center angles, and the final R1/mAP/mINP. A new kind is added by ``--record``
only after ``test_seeded_runs.py`` passed on it against an existing kind within the cross-kind
tolerance, so that a new record cannot carry in a change of numbers. ``test_seeded_runs.py``
trains them again and compares (see there for the tolerance). Record only when a change is meant
to change the numbers, and say so in the commit.

One intra-op thread, no loader workers: a run's numbers then do not depend on the core count.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from reid.machine import cpu_flags, cpuinfo_field

GOLDEN = Path(__file__).parent / "golden" / "seeded_runs.json"

#: the demo config's recipe at test size (2 epochs), and the IR form the study ranks first
COMMON = [
    "data.image_size=[64,32]",
    "data.workers=0",
    "sampler.batch_size=16",
    "sampler.num_instances=4",
    "train.epochs=2",
    "train.max_iters_per_epoch=4",
    "optim.warmup_epochs=1",
    "eval.every=1",
    "eval.batch_size=64",
    "train.log_every=0",
]
RUNS = {
    "demo_softmax": ["head.name=softmax", "head.weights=learned"],
    "asoftmax_ir": [
        "head.name=sphereface",
        "head.weights=centers",
        "head.beta_fixed=10",
        "head.ir_weight=0.1",
        "head.aux_softmax=1.0",
        "centers.refresh=1",
    ],
    "cosface_ir_ema_pull": [
        "head.name=cosface",
        "head.weights=centers",
        "centers.update=ema",
        "centers.pull=0.5",
        "loss.center=0.0005",
    ],
}
#: what a record keeps of each epoch (floats), as the trainer names them
KEYS = ("loss", "acc", "center_angle_rare", "center_angle_mid", "center_angle_frequent")
FINAL = ("rank1", "mAP", "mINP")


#: CPU features the math libraries choose their kernels by (oneDNN, MKL and OpenBLAS dispatch on
#: them): two CPUs that differ in one sum floats in another order
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def machine() -> dict:
    """This machine's kind: what decides how its kernels round. AVX-512 alone was not enough:
    an AMD EPYC and an Intel Xeon, both with AVX-512, differed in the 4th decimal of a loss."""
    flags = cpu_flags()
    return {
        "machine": platform.machine(),
        "cpu": cpuinfo_field("model name") or platform.processor(),
        "vendor": cpuinfo_field("vendor_id"),
        "isa": [f for f in KERNEL_FLAGS if f in flags],
        "avx512": "avx512f" in flags,
        "torch": torch.__version__.split("+")[0],
    }


def train_run(name: str, root: Path, out: Path) -> dict:
    """Train run ``name`` on ``root`` into ``out``; returns its record."""
    from reid.config import load_config
    from reid.engine.trainer import fit

    from .conftest import REPO

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(
            REPO / "configs/synthetic/demo.yaml", [f"data.root={root}", *COMMON, *RUNS[name]]
        )
        fit(cfg, out, progress=False)
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [
        {k: v for k, v in line.items() if k.startswith("loss") or k in KEYS + FINAL}
        for line in lines
    ]
    return {"epochs": epochs}


def synthetic(root: Path) -> Path:
    """The suite's synthetic set (the same spec as ``conftest.synthetic_root``)."""
    from reid.data.synthetic import SyntheticSpec, generate

    from .conftest import SYNTHETIC_SPEC

    generate(root, SyntheticSpec(**SYNTHETIC_SPEC))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {GOLDEN}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic(Path(tmp) / "synthetic")
        runs = {name: train_run(name, root, Path(tmp) / name) for name in RUNS}
    record = {"machine": machine(), "runs": runs}
    if args.record:
        others = [r for r in records() if r["machine"] != record["machine"]]
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"records": [*others, record]}, indent=1) + "\n")
        print(f"wrote {GOLDEN}: {1 + len(others)} machine kinds")
    else:
        print(json.dumps(record, indent=1))


def records() -> list[dict]:
    """Every recorded machine kind (the file's first format held one record)."""
    if not GOLDEN.is_file():
        return []
    data = json.loads(GOLDEN.read_text())
    return data["records"] if "records" in data else [data]


if __name__ == "__main__":
    main()
