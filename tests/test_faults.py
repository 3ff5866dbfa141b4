"""Everyday mistakes: each test is one row of docs/FAULTS.md (case → what the user sees).

Data loss first: a tool replaces only what it can prove it wrote. Then: mistakes are found before
the work starts, and every expected failure is one ``error: …`` line with exit status 2.
Each test names its case in its docstring's first line; ``tests/fault_table.py`` builds the table
from them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reid.config import ConfigError, load_config
from reid.data.synthetic import SyntheticSpec, generate
from reid.engine.checkpoint import load_checkpoint
from reid.engine.trainer import NonFiniteLossError, fit
from reid.errors import OutputError, ReidError
from reid.index import GalleryIndex
from reid.workflows.index import export_index, search
from reid.workflows.train import train
from tests.conftest import REPO, TINY_TRAIN

SMALL = SyntheticSpec(ids=8, images_per_id=6, longtail_ratio=1, distractors=2, junk=1, seed=5)


def run_tool(tool: str, *args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, and stderr's last line is one ``error: …`` line holding every fragment."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in line, line
    return line


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def market_folder(root: Path, pids=(1, 2, 3), per_id: int = 4, make_jpeg=None) -> Path:
    from tests.conftest import write_jpeg

    n = 0
    for pid in pids:
        for i in range(per_id):
            n += 1
            write_jpeg(root / "bounding_box_train" / f"{pid:04d}_c{i % 3 + 1}s1_{n:06d}_01.jpg", n)
    return root


# --------------------------------------------------------------------------------- data loss


def test_export_index_refuses_a_run_folder(tiny_checkpoint, synthetic_root):
    """export_index --out RUN_FOLDER → refused, the run's checkpoints untouched."""
    run = tiny_checkpoint.parent
    before = snapshot(run)
    with pytest.raises(OutputError, match="holds files this tool did not write"):
        export_index(str(tiny_checkpoint), str(synthetic_root), str(run))
    assert snapshot(run) == before


def test_export_index_refuses_its_own_gallery(tiny_checkpoint, synthetic_root, tmp_path):
    """export_index --gallery photos --out photos → refused (overlap), photos untouched."""
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_root / "query", photos)
    before = snapshot(photos)
    result = run_tool(
        "export_index", "--checkpoint", tiny_checkpoint, "--gallery", photos, "--out", photos
    )
    one_error_line(result, "overlaps the input")
    assert snapshot(photos) == before


def test_export_index_replaces_an_index_and_cleans_killed_exports(
    tiny_checkpoint, synthetic_root, tmp_path
):
    """export_index over an existing index → replaced; a killed export's temporaries → removed."""
    out = tmp_path / "idx"
    export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    stale = tmp_path / ".idx.tmp-killed"
    stale.mkdir()
    (stale / "index.faiss").write_bytes(b"partial")
    user = tmp_path / ".idx.tmp-notes"  # a look-alike holding something else: kept
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    info = export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    assert info["count"] == GalleryIndex.load(out).index.ntotal
    assert not stale.exists() and (user / "notes.txt").read_text() == "mine"


def test_make_split_refuses_its_source(tmp_path):
    """make_split SRC --out SRC → refused; every real image is still a real file."""
    source = market_folder(tmp_path / "market")
    before = snapshot(source)
    result = run_tool("make_split", source, "--out", source, "--holdout-ids", 1)
    one_error_line(result, "overlaps the input")
    assert snapshot(source) == before
    assert not any(p.is_symlink() for p in source.rglob("*.jpg"))


def test_make_split_refuses_another_dataset(tmp_path):
    """make_split --out OTHER_DATASET → refused, OTHER_DATASET untouched; rerun over its own output → fine."""
    source = market_folder(tmp_path / "market")
    other = market_folder(tmp_path / "other", pids=(7, 8))
    before = snapshot(other)
    result = run_tool("make_split", source, "--out", other, "--holdout-ids", 1)
    one_error_line(result, "holds files this tool did not write")
    assert snapshot(other) == before
    out = tmp_path / "split"
    for _ in range(2):  # its own output may be rewritten
        assert run_tool("make_split", source, "--out", out, "--holdout-ids", 1).returncode == 0


def test_make_synthetic_refuses_a_folder_it_did_not_write(tmp_path, make_jpeg):
    """make_synthetic --out FOLDER_WITH_USER_JPEGS → refused, the user's JPEGs kept."""
    mine = tmp_path / "mine"
    make_jpeg(mine / "query" / "holiday.jpg")
    with pytest.raises(OutputError, match="holds files this tool did not write"):
        generate(mine, SMALL)
    assert (mine / "query" / "holiday.jpg").is_file()
    own = tmp_path / "own"
    generate(own, SMALL)
    generate(own, SMALL)  # its own output: replaced
    assert (own / ".reid-output.json").is_file()


def test_train_refuses_a_finished_run_without_overwrite(synthetic_root, tmp_path):
    """train --output FINISHED_RUN → refused; --overwrite → replaced, metrics not appended."""
    args = [f"data.root={synthetic_root}", *TINY_TRAIN]
    run_dir, _ = train(None, args, str(tmp_path / "run"), progress=False)
    before = snapshot(run_dir)
    with pytest.raises(OutputError, match="pass --overwrite"):
        train(None, args, str(run_dir), progress=False)
    assert snapshot(run_dir) == before
    train(None, args, str(run_dir), overwrite=True, progress=False)
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]


def test_train_default_folder_gets_a_fresh_name(synthetic_root, tmp_path):
    """train with overrides into a config's output.dir that holds a run → a fresh DIR-2."""
    args = [f"data.root={synthetic_root}", *TINY_TRAIN, f"output.dir={tmp_path / 'demo'}"]
    first, _ = train(None, args, progress=False)
    second, _ = train(None, [*args, "head.name=cosface"], progress=False)
    assert (first, second) == (tmp_path / "demo", tmp_path / "demo-2")
    assert (first / "last.pt").is_file() and (second / "last.pt").is_file()


def test_train_refuses_a_folder_that_is_not_a_run(synthetic_root, tmp_path, make_jpeg):
    """train --output FOLDER_OF_OTHER_FILES → refused, even with --overwrite."""
    make_jpeg(tmp_path / "photos" / "a.jpg")
    with pytest.raises(OutputError, match="not a run folder"):
        train(None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "photos"), True)


# ------------------------------------------------------------------ fail before the work


def _dataset_without_positives(root: Path) -> Path:
    generate(root, SMALL)
    for path in (root / "bounding_box_test").glob("*.jpg"):
        if not path.name.startswith(("0000", "-1")):
            path.unlink()  # only distractors and junk left: no query has a positive
    return root


@pytest.mark.parametrize("case", ["empty_query", "no_positive"])
def test_unevaluable_sets_fail_before_training(tmp_path, case):
    """an empty query/gallery or no query with a positive → refused before the first step."""
    root = tmp_path / "data"
    if case == "empty_query":
        generate(root, SMALL)
        for path in (root / "query").glob("*.jpg"):
            path.unlink()
        match = "query: folder holds no images"  # the parser finds it, before training
    else:
        _dataset_without_positives(root)
        match = "no query has a positive"
    with pytest.raises(ReidError, match=match):
        fit(load_config(None, [f"data.root={root}", *TINY_TRAIN]), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was trained or written


@pytest.mark.parametrize(
    "override, match",
    [
        ("sampler.num_instances=16", "sampler.num_instances=16 is larger than every identity"),
        ("sampler.batch_size=4096", "sampler.batch_size: P = 1024 identities"),
    ],
)
def test_infeasible_sampler_fails_before_training(synthetic_root, tmp_path, override, match):
    """K larger than every identity, or a batch larger than the data → refused up front."""
    cfg = load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN, override])
    with pytest.raises(ReidError, match=match):
        fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epochs=0", "train.epochs=0: must be positive"),
        ("optim.lr=-0.1", "optim.lr=-0.1: must be positive"),
        ("data.image_size=[128]", "data.image_size=\\[128\\]: must be two positive integers"),
        ("data.image_size=[128,0]", "must be two positive integers"),
        ("head.center_init=bogus", "head.center_init='bogus': unknown value; valid: features"),
        (
            "eval.ap=official",
            "eval.ap='official': unknown value; valid: torchreid, market-official",
        ),
        ("sampler.name=pkk", "sampler.name='pkk': unknown value"),
        ("head.margin=0.3", "head.margin=0.3: not an option of head 'softmax'"),
        ("head.center_update=cumulative", "head.center_update='cumulative': unknown value"),
    ],
)
def test_bad_values_fail_at_load(override, match):
    """bad values, unknown choices, an option the head does not use → refused when loaded."""
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has CUDA: nothing to refuse"
)
def test_cuda_without_cuda_is_one_line(tmp_path):
    """train.device=cuda on a machine without CUDA → one error line, exit 2, at once."""
    result = run_tool("train", "train.device=cuda", "--output", tmp_path / "run")
    one_error_line(result, "train.device='cuda': CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_resume_allows_only_extending_and_refuses_the_rest(synthetic_root, tmp_path):
    """--resume with train.epochs=N, other overrides, --config, a finished run → N extends it; the rest refused by name."""
    run_dir, _ = train(None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="already finished its 1 epochs; extend it"):
        train(None, [], resume=str(run_dir))
    with pytest.raises(ConfigError, match="optim.lr cannot change on resume"):
        train(None, ["train.epochs=2", "optim.lr=0.1"], resume=str(run_dir))
    with pytest.raises(ConfigError, match="cannot be combined"):
        train("configs/synthetic/demo.yaml", [], resume=str(run_dir))
    train(None, ["train.epochs=2"], resume=str(run_dir), progress=False)
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


# ------------------------------------------------------------------ one way to report


def test_non_finite_loss_in_the_first_epoch_claims_no_checkpoint(
    synthetic_root, tmp_path, monkeypatch
):
    """a NaN loss before any checkpoint → says no checkpoint was written (not "last.pt is good")."""
    from reid.engine import build

    original = build.Losses.forward

    def poisoned(self, module, out, labels):
        terms = original(self, module, out, labels)
        terms["ce"] = terms["ce"] * float("nan")
        return terms

    monkeypatch.setattr(build.Losses, "forward", poisoned)
    cfg = load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN])
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_failing_evaluation_keeps_the_epoch_just_trained(synthetic_root, tmp_path, monkeypatch):
    """an evaluation that fails after an epoch → the epoch's last.pt is kept, then the error."""
    from reid.engine import trainer

    def broken(run):
        raise ReidError("evaluation broke")

    monkeypatch.setattr(trainer, "_evaluate_now", broken)
    cfg = load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN])
    with pytest.raises(ReidError, match="evaluation broke"):
        fit(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_search_topk_zero_is_one_line(tiny_checkpoint, synthetic_root, tmp_path):
    """search --topk 0 → one error line, exit 2."""
    export_index(str(tiny_checkpoint), str(synthetic_root), str(tmp_path / "idx"))
    query = next((synthetic_root / "query").glob("*.jpg"))
    result = run_tool(
        "search", "--index", tmp_path / "idx", "--checkpoint", tiny_checkpoint, "--topk", 0, query
    )
    one_error_line(result, "--topk 0: must be at least 1")


def test_non_integer_pid_in_a_features_file_is_one_line(tmp_path):
    """a features file with a non-integer pid → one error line naming the file and the value."""
    path = tmp_path / "f.npz"
    np.savez(
        path,
        features=np.eye(4, dtype=np.float32),
        pids=np.array(["1", "2", "x7", "2"]),
        camids=np.array([0, 1, 0, 1]),
        split=np.array(["query", "query", "gallery", "gallery"]),
    )
    result = run_tool("evaluate", "--features", path, "--out", tmp_path / "eval")
    one_error_line(result, "f.npz: pids must be integers, found 'x7'")


def test_checkpoint_not_matching_its_config_is_one_line(tiny_checkpoint, tmp_path):
    """a checkpoint whose weights do not fit its config → one error line naming the file."""
    import torch

    checkpoint = torch.load(tiny_checkpoint, weights_only=False)
    checkpoint["config"]["model"]["backbone"] = "resnet34"
    bad = tmp_path / "bad.pt"
    torch.save(checkpoint, bad)
    result = run_tool("evaluate", "--checkpoint", bad, "--out", tmp_path / "eval")
    one_error_line(result, "bad.pt: weights do not match the checkpoint's model config")


def test_error_in_a_dataloader_worker_is_one_line_naming_the_file(tmp_path):
    """a corrupt image read inside a DataLoader worker → one error line naming the image."""
    root = tmp_path / "data"
    generate(root, SMALL)
    broken = sorted((root / "bounding_box_train").glob("*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")
    result = run_tool(
        "train",
        "--output",
        tmp_path / "run",
        "--no-progress",
        f"data.root={root}",
        *TINY_TRAIN[:2],
        "data.workers=1",
        "sampler.batch_size=8",
        "sampler.num_instances=2",
        "train.epochs=1",
        "eval.every=0",
    )
    one_error_line(result, broken.name)


def test_unwritable_export_path_is_one_line(tiny_checkpoint, synthetic_root, tmp_path):
    """an export into a path that cannot be written → one error line, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_tool(
        "export_index",
        "--checkpoint",
        tiny_checkpoint,
        "--gallery",
        synthetic_root,
        "--out",
        blocker / "idx",
    )
    one_error_line(result, "file")


# ---------------------------------------------------------------------------------- also


def test_index_paths_work_from_any_working_directory(tiny_checkpoint, synthetic_root, tmp_path):
    """an index searched from another working directory → hits open (absolute paths, said in the manifest)."""
    relative = os.path.relpath(synthetic_root, REPO)
    result = run_tool(
        "export_index",
        "--checkpoint",
        tiny_checkpoint,
        "--gallery",
        relative,
        "--out",
        tmp_path / "idx",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    index = GalleryIndex.load(tmp_path / "idx")
    assert index.manifest["paths"] == "absolute"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    try:
        query = next((synthetic_root / "query").glob("*.jpg"))
        found = search(str(tmp_path / "idx"), [str(query)], str(tiny_checkpoint), topk=3)
        assert all(Path(p).is_file() for p in found["table"]["path"])
    finally:
        os.chdir(REPO)


def test_append_skips_images_already_in_the_index(tiny_checkpoint, synthetic_root, tmp_path):
    """export_index --append of images already indexed → skipped and said; all of them → refused."""
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_root / "query", photos)
    export_index(str(tiny_checkpoint), str(photos), str(tmp_path / "idx"))
    count = GalleryIndex.load(tmp_path / "idx").index.ntotal
    with pytest.raises(ReidError, match="already in the index"):
        export_index(str(tiny_checkpoint), str(photos), str(tmp_path / "idx"), append=True)
    extra = sorted((synthetic_root / "bounding_box_test").glob("0*.jpg"))[-3:]
    for path in extra:
        shutil.copy(path, photos / path.name)
    info = export_index(str(tiny_checkpoint), str(photos), str(tmp_path / "idx"), append=True)
    assert (info["added"], info["skipped"], info["count"]) == (3, count, count + 3)


def test_rerank_on_sets_smaller_than_k_equals_torchreid():
    """re-ranking on fewer images than k1 → works (k clamped), equal to torchreid's."""
    from torchreid.reid.utils.rerank import re_ranking

    from reid.evaluation.rerank import rerank_distances

    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    ours = rerank_distances(q, g, metric="euclidean")
    d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
    theirs = re_ranking(d(q, g), d(q, q), d(g, g))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_dataset_stats_leaves_distractors_out_and_writes_where_told(tmp_path):
    """dataset_stats → identity statistics without distractors/junk; plot where told, titled."""
    root = tmp_path / "data"
    generate(root, SMALL)
    result = run_tool("dataset_stats", root, "--plot", tmp_path / "hist.png")
    assert result.returncode == 0, result.stderr[-2000:]
    gallery = next(line for line in result.stdout.splitlines() if line.startswith("gallery"))
    # 4 identities; the 2 distractors counted apart (junk is dropped by the parser)
    assert gallery.split()[1] == "4" and gallery.split()[-1] == "2"
    assert (tmp_path / "hist.png").is_file() and not (root / "images_per_id.png").exists()
    default = run_tool("dataset_stats", root, cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "data_images_per_id.png").is_file()


def test_fault_table_is_current():
    """docs/FAULTS.md out of date with these tests → regenerate with python -m tests.fault_table."""
    from tests.fault_table import TABLE, render

    assert TABLE.read_text() == render()
