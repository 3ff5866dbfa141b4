"""The GPU check script rehearsed on the CPU (``--dry-run``), so that it cannot rot between the
rare sessions that are lent a CUDA device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_covers_every_head_form(tmp_path):
    from reid.heads import HEADS

    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"].startswith("dry-run") and report["ok"], report
    assert {(r["head"], r["weights"]) for r in report["heads"]} == {
        (h, w) for h in HEADS for w in ("learned", "centers")
    }
    assert report["evaluator"]["ok"] and report["distributed"]["backend"] == "gloo"
    assert all(r["images_per_s"] > 0 for r in report["throughput"])
