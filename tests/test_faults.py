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
import torch

from reid.config import ConfigError, load_config
from reid.data.records import DatasetError
from reid.data.synthetic import SyntheticSpec, generate
from reid.engine.checkpoint import load_checkpoint
from reid.engine.trainer import NonFiniteLossError, fit
from reid.errors import OutputError, ReidError
from reid.index import GalleryIndex
from reid.index.stores import parse_store_options
from reid.workflows.index import ExportOptions, NoMatch, export_index, search
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
    """Exit 2, and stderr ends in one ``error: …`` line holding every fragment (a reason that
    lists files may continue on indented lines below it)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, result.stderr[-2000:]
    tail = lines[starts[-1] :]
    assert all(line.startswith("  ") for line in tail[1:]), result.stderr[-2000:]
    line = "\n".join(tail)
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


def test_export_index_into_a_run_folder_keeps_the_run(tiny_checkpoint, synthetic_root, tmp_path):
    """export_index --out RUN_FOLDER (twice) → the index is written beside the run; every file of the run untouched."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    before = snapshot(run)
    for _ in range(2):  # a new index, then its replacement
        export_index(str(run / "last.pt"), str(synthetic_root), str(run))
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert GalleryIndex.load(run).count > 0


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


def dead_pid() -> int:
    """A process id that no process has (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_export_index_replaces_an_index_and_cleans_killed_exports(
    tiny_checkpoint, synthetic_root, tmp_path
):
    """export_index over an index → replaced, the folder's other files kept; a killed export's temps and orphans removed, a live one's kept."""
    out = tmp_path / "idx"
    export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    (out / "notes.txt").write_text("mine")  # the user's file beside the index
    dead, live = dead_pid(), os.getpid()
    # what a save killed between writing its data and committing the manifest leaves behind:
    # its journal (a pending manifest naming the new files), a renamed data file, a temp
    orphan = out / "index.deadbeef.faiss"
    orphan.write_bytes(b"written, never committed")
    (out / f".~reid.{dead}.abcdef.pending.json").write_text(json.dumps({"files": [orphan.name]}))
    (out / f".~reid.{dead}.123456.parquet").write_bytes(b"partial")
    in_flight = out / f".~reid.{live}.654321.faiss"  # a live writer's temp: never touched
    in_flight.write_bytes(b"in flight")
    look_alike = out / "index.cafe.faiss"  # named like ours, but no journal names it: kept
    look_alike.write_bytes(b"mine too")
    old_files = set(json.loads((out / "manifest.json").read_text())["files"])
    info = export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    assert info["count"] == GalleryIndex.load(out).count
    names = {p.name for p in out.iterdir()}
    assert not orphan.exists() and not any(f".~reid.{dead}." in n for n in names)
    assert (
        in_flight.is_file() and look_alike.is_file() and (out / "notes.txt").read_text() == "mine"
    )
    assert not old_files & names  # the previous generation is gone, the new one is listed
    assert set(json.loads((out / "manifest.json").read_text())["files"]) <= names


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
    one_error_line(result, "not written by make_split")
    assert snapshot(other) == before
    out = tmp_path / "split"
    for _ in range(2):  # its own output may be rewritten
        assert run_tool("make_split", source, "--out", out, "--holdout-ids", 1).returncode == 0


def test_make_synthetic_refuses_a_folder_it_did_not_write(tmp_path, make_jpeg):
    """make_synthetic --out FOLDER_WITH_USER_JPEGS → refused, the user's JPEGs kept."""
    mine = tmp_path / "mine"
    make_jpeg(mine / "query" / "holiday.jpg")
    with pytest.raises(OutputError, match="query/holiday.jpg not written by the synthetic"):
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
    """train --output FOLDER_OF_OTHER_FILES (with or without --overwrite) → the run is written beside them; every other file kept."""
    make_jpeg(tmp_path / "photos" / "a.jpg")
    before = snapshot(tmp_path / "photos")
    for overwrite in (False, True):
        train(
            None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "photos"), overwrite
        )
        after = snapshot(tmp_path / "photos")
        assert {k: v for k, v in after.items() if k in before} == before and "last.pt" in after


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
        ("train.epochs=0", r"train.epochs=0: must be an integer in \[1, 100000\]"),
        ("optim.lr=-0.1", r"optim.lr=-0.1: must be a number in \(0, 10\]"),
        ("data.image_size=[128]", "data.image_size=\\[128\\]: must be \\[H, W\\]"),
        (
            "data.image_size=[128,0]",
            r"data.image_size=\[128, 0\]: every item must be an integer in \[16, 2048\]",
        ),
        ("model.embedding_dim=-5", r"model.embedding_dim=-5: must be an integer in \[0, 65536\]"),
        ("data.random_erasing=5", r"data.random_erasing=5.0: must be a number in \[0, 1\]"),
        ("model.backbone=resnet19", "model.backbone='resnet19': unknown backbone; valid: resnet18"),
        ("train.device=cpufoo", "train.device='cpufoo': valid devices are cpu, cuda, cuda:N"),
        ("train.device=tpu", "train.device='tpu': valid devices are cpu, cuda, cuda:N"),
        ("centers.init=bogus", "centers.init='bogus': unknown value; valid: features"),
        (
            "eval.ap=official",
            "eval.ap='official': unknown value; valid: torchreid, market-official",
        ),
        ("sampler.name=pkk", "sampler.name='pkk': unknown value"),
        ("head.margin=0.3", "head.margin=0.3: not an option of head 'softmax'"),
        ("centers.update=cumulative", "centers.update='cumulative': unknown value"),
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
    """search --topk 0 → one error line from the argument parser, exit 2 (every numeric flag: tests/test_arguments.py)."""
    export_index(str(tiny_checkpoint), str(synthetic_root), str(tmp_path / "idx"))
    query = next((synthetic_root / "query").glob("*.jpg"))
    result = run_tool(
        "search", "--index", tmp_path / "idx", "--checkpoint", tiny_checkpoint, "--topk", 0, query
    )
    one_error_line(result, "argument --topk: must be an integer in [1, 100000], got '0'")


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


# ------------------------------------------------------- safe by construction (the probe)


def test_append_and_removal_keep_the_index_folders_other_files(
    tiny_checkpoint, synthetic_root, tmp_path
):
    """export_index --append / --remove-pids on an index folder holding the user's notes.txt → the notes kept."""
    out = tmp_path / "idx"
    half = tmp_path / "half"
    shutil.copytree(synthetic_root / "bounding_box_test", half)
    for path in sorted(half.glob("*.jpg"))[::2]:
        path.unlink()
    export_index(str(tiny_checkpoint), str(half), str(out))
    (out / "notes.txt").write_text("mine")
    export_index(str(tiny_checkpoint), str(synthetic_root), str(out), append=True)
    pid = int(GalleryIndex.load(out).metadata["pid"].max())
    from reid.workflows.index import remove_from_index

    remove_from_index(str(out), [pid])
    assert (out / "notes.txt").read_text() == "mine"
    assert pid not in set(GalleryIndex.load(out).metadata["pid"])


def test_overwrite_with_a_bad_setting_keeps_the_old_run(synthetic_root, tmp_path):
    """train --overwrite data.root=/nonexistent → one error line; the old run's checkpoints untouched."""
    run_dir, _ = train(None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "run"))
    before = snapshot(run_dir)
    result = run_tool(
        "train", "--output", run_dir, "--overwrite", "data.root=/nonexistent", *TINY_TRAIN
    )
    one_error_line(result, "/nonexistent")
    assert snapshot(run_dir) == before


def test_ivf_with_more_lists_than_images_fails_before_embedding(
    tiny_checkpoint, synthetic_root, tmp_path, monkeypatch
):
    """export_index --index IVF1024,Flat on a small gallery → one error line before the embedding pass."""
    from reid.index.sources import Embedder

    monkeypatch.setattr(Embedder, "__call__", lambda *a, **k: pytest.fail("embedded first"))
    with pytest.raises(ReidError, match="1024 IVF lists need at least as many gallery images"):
        export_index(
            str(tiny_checkpoint),
            str(synthetic_root),
            str(tmp_path / "i"),
            ExportOptions(store=parse_store_options(factory="IVF1024,Flat")),
        )
    with pytest.raises(ReidError, match="not a FAISS factory string for"):
        export_index(
            str(tiny_checkpoint),
            str(synthetic_root),
            str(tmp_path / "i"),
            ExportOptions(store=parse_store_options(factory="Flatt")),
        )
    assert not (tmp_path / "i").exists()


def test_append_with_another_model_fails_before_embedding(
    tiny_checkpoint, synthetic_root, tmp_path, monkeypatch
):
    """export_index --append with a model of another dimension → one error line before embedding the new images."""
    from reid.engine.trainer import fit
    from reid.index.sources import Embedder

    out = tmp_path / "idx"
    export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    other = tmp_path / "other"
    fit(
        load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN, "model.embedding_dim=16"]),
        other,
        progress=False,
    )
    monkeypatch.setattr(Embedder, "__call__", lambda *a, **k: pytest.fail("embedded first"))
    with pytest.raises(ReidError, match="embedding dimension 16 does not match the index"):
        export_index(str(other / "last.pt"), str(synthetic_root), str(out), append=True)


@pytest.mark.parametrize(
    "target, fragment",
    [("/sys/m.pt2", "cannot write there"), ("m.pt", "format comes from the suffix"),
     ("x" * 252 + ".pt2", "file name too long")],
)  # fmt: skip
def test_export_model_bad_targets_are_one_line_before_the_conversion(
    tiny_checkpoint, tmp_path, target, fragment
):
    """export_model --out /sys/m.pt2, m.pt, a name too long for its sidecar → one error line before the conversion."""
    result = run_tool(
        "export_model", "--checkpoint", tiny_checkpoint, "--out", target, cwd=tmp_path
    )
    one_error_line(result, fragment)
    assert "Converting" not in result.stderr and not list(tmp_path.iterdir())


def test_export_model_into_a_missing_folder_and_onnx_data_named_after_the_model(
    tiny_checkpoint, tmp_path
):
    """export_model --out missing_dir/m.onnx → the folder is made; every file is named after m.onnx, none temporary."""
    from reid.models.export import load_exported

    out = tmp_path / "missing_dir" / "m.onnx"
    result = run_tool("export_model", "--checkpoint", tiny_checkpoint, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in out.parent.iterdir())
    assert all(n.startswith("m.onnx") for n in names if n != ".reid-output.json"), names
    moved = tmp_path / "moved"  # the files alone, elsewhere: the model still loads its data
    moved.mkdir()
    for name in names:
        shutil.copy(out.parent / name, moved / name)
    import torch

    assert load_exported(moved / "m.onnx")(torch.zeros(1, 3, 64, 32)).shape[0] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system (tmpfs), where a checkpoint or an index does not fit."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_while_saving_a_checkpoint_or_an_index_is_one_line(
    synthetic_root, tiny_checkpoint, small_disk
):
    """disk full while saving a checkpoint (torch's RuntimeError) or an index (FAISS) → one error line naming the user's file; no temp left."""
    result = run_tool(
        "train", "--output", small_disk / "run", f"data.root={synthetic_root}", *TINY_TRAIN
    )
    line = one_error_line(result, ".pt: cannot write (no space left on the device)")
    assert f"{small_disk / 'run'}/" in line and ".~reid." not in line  # the user's checkpoint
    from reid.index import GalleryIndex as Index

    rng = np.random.default_rng(0)
    index = Index.build(
        rng.normal(size=(20000, 64)).astype(np.float32), [f"{i}.jpg" for i in range(20000)]
    )
    with pytest.raises(OutputError, match="no space left on the device"):
        index.save(small_disk / "idx")
    leftovers = [p.name for p in small_disk.rglob("*") if p.name.startswith(".~reid.")]
    assert not leftovers, leftovers


def test_a_long_legal_output_name_is_written(tmp_path):
    """an output name of 255 characters (the longest legal one) → written; the temp name does not grow with it."""
    from reid.atomic import write_text

    target = tmp_path / ("n" * 250 + ".json")
    write_text(target, "{}")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_yaml_whose_top_level_is_a_list_is_one_line(tmp_path):
    """a config YAML whose top level is a list → one error line naming the file."""
    config = tmp_path / "c.yaml"
    config.write_text("- data\n- model\n")
    one_error_line(
        run_tool("train", "--config", config), f"{config}: the top level must be a mapping"
    )


def test_ctrl_c_during_training_names_the_last_good_checkpoint(synthetic_root, tmp_path):
    """Ctrl-C during training → one error line naming last.pt (the last good state) and how to resume; exit 130."""
    import signal
    import time

    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tools/train.py"), "--output", str(run), "--no-progress",
         f"data.root={synthetic_root}", *TINY_TRAIN, "train.epochs=50"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        # as in a terminal: a suite started in the background (`cmd &` in a script) inherits
        # SIGINT ignored, and Python then installs no Ctrl-C handler at all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 240
    while not (run / "last.pt").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: interrupted in epoch") and "last.pt (epoch" in line, line
    assert f"--resume {run}" in line and load_checkpoint(run / "last.pt")["epoch"] >= 1


def test_null_nan_or_fractional_pids_in_a_features_file_are_one_line(tmp_path):
    """a parquet features file with a null, NaN or 31.7 pid, or a split typo (galery) → one error line naming the file, the row and the value."""
    import pandas as pd

    base = {"features": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "camids": [0, 1, 1],
            "split": ["query", "gallery", "gallery"]}  # fmt: skip
    for pids, fragment in (
        ([1, None, 2], "pids row 1 is missing (null or NaN)"),
        ([1.0, float("nan"), 2.0], "pids row 1 is missing (null or NaN)"),
        ([31.7, 1.0, 2.0], "pids row 0 is 31.7, not an integer"),
    ):
        path = tmp_path / "f.parquet"
        pd.DataFrame({**base, "pids": pids}).to_parquet(path)
        one_error_line(run_tool("evaluate", "--features", path, "--out", tmp_path / "e"), fragment)
    path = tmp_path / "g.parquet"
    pd.DataFrame({**base, "pids": [1, 1, 2], "split": ["query", "galery", "gallery"]}).to_parquet(
        path
    )
    one_error_line(
        run_tool("evaluate", "--features", path, "--out", tmp_path / "e"), "'galery' (1 rows)"
    )


def test_a_16_bit_png_decodes_to_its_real_values(tmp_path):
    """a 16-bit PNG → decoded to its real grey values (it was all white) and --verify-images reads it."""
    from PIL import Image

    from reid.data.images import read_image

    ramp = (np.arange(64 * 32).reshape(64, 32) * 31).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    decoded = np.asarray(read_image(str(tmp_path / "deep.png")))[..., 0].astype(float)
    np.testing.assert_allclose(decoded, ramp / 257.0, atol=0.5 + 1e-9)


def test_calibration_without_a_positive_writes_strict_json(tiny_checkpoint, tmp_path):
    """export_index --calibrate on a split where no query has a match → manifest.json is strict JSON (null, never NaN)."""
    data = _dataset_without_positives(tmp_path / "data")
    out = tmp_path / "idx"
    export_index(str(tiny_checkpoint), str(data), str(out), ExportOptions(calibrate=str(data)))

    def refuse(token):
        raise AssertionError(f"{token} in manifest.json")

    manifest = json.loads((out / "manifest.json").read_text(), parse_constant=refuse)
    assert manifest["calibration"]["dir_at_far"] is None


def test_stale_temps_of_a_live_writer_are_never_removed(tmp_path):
    """two writers in one parent (a live process's temps beside a dead one's) → only the dead writer's temps are removed."""
    from reid.atomic import clean_stale_temps

    live = tmp_path / f".~reid.{os.getpid()}.aaaaaa.new"
    live.mkdir()
    (live / "index.faiss").write_bytes(b"in flight")
    dead = tmp_path / f".~reid.{dead_pid()}.bbbbbb.new"
    dead.mkdir()
    clean_stale_temps(tmp_path)
    assert live.is_dir() and not dead.exists()


def test_a_second_training_into_the_same_folder_is_refused(synthetic_root, tmp_path):
    """a second train --output SAME while the first is still setting up → one error line; the first run is unharmed."""
    from reid.outputs import lock_folder

    run = tmp_path / "run"
    with lock_folder(run, "training run"):  # the first run, holding its folder
        result = run_tool("train", "--output", run, f"data.root={synthetic_root}", *TINY_TRAIN)
    one_error_line(result, "another training run is writing this folder right now")
    assert not (run / "last.pt").exists()


def test_evaluate_reads_a_test_only_market_folder(tiny_checkpoint, synthetic_root, tmp_path):
    """evaluate --data ROOT with only query/ and bounding_box_test/ → evaluated (no bounding_box_train needed)."""
    test_only = tmp_path / "test_only"
    for name in ("query", "bounding_box_test"):
        shutil.copytree(synthetic_root / name, test_only / name)
    result = run_tool("evaluate", "--checkpoint", tiny_checkpoint, "--data", test_only,
                      "--out", tmp_path / "e", "--ranked", 0)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "e/result.json").read_text())["queries"] > 0


def test_verify_images_lists_every_broken_file(tmp_path):
    """dataset_stats --verify-images with broken images → the error lists each file, not just the count."""
    root = tmp_path / "data"
    generate(root, SMALL)
    broken = sorted((root / "query").glob("*.jpg"))[:2]
    for path in broken:
        path.write_bytes(b"not a jpeg")
    result = run_tool("dataset_stats", root, "--verify-images", "--plot", tmp_path / "h.png")
    block = one_error_line(result, "2 of")
    assert all(path.name in block for path in broken), block


def test_an_explicit_junk_named_query_is_searched(tiny_checkpoint, synthetic_root, tmp_path):
    """search with a query file named like Market junk (-1_c1s1_….jpg) given by name → searched (it was dropped: "dimension 0")."""
    export_index(str(tiny_checkpoint), str(synthetic_root), str(tmp_path / "idx"))
    junk = tmp_path / "-1_c1s1_000001_01.jpg"
    shutil.copy(next((synthetic_root / "query").glob("*.jpg")), junk)
    found = search(str(tmp_path / "idx"), [str(junk)], str(tiny_checkpoint), topk=2)
    assert list(found["table"]["query_path"].unique()) == [str(junk)]


def test_search_operating_points(tiny_checkpoint, synthetic_root, tmp_path):
    """search --far F (calibrated), --threshold T, --no-threshold; an uncalibrated --far → one error line listing the stored rates."""
    out = tmp_path / "idx"
    export_index(
        str(tiny_checkpoint),
        str(synthetic_root),
        str(out),
        ExportOptions(calibrate=str(synthetic_root)),
    )
    points = GalleryIndex.load(out).manifest["calibration"]["operating_points"]
    assert [p["far"] for p in points] == [0.1, 0.01, 0.001, 0.0001]
    query = [str(next((synthetic_root / "query").glob("*.jpg")))]
    for p in points:
        found = search(
            str(out), query, str(tiny_checkpoint), topk=3, no_match=NoMatch(far=p["far"])
        )
        assert found["threshold"]["threshold"] == p["threshold"]
        assert (found["table"]["match"] == (found["table"]["score"] > p["threshold"])).all()
    found = search(str(out), query, str(tiny_checkpoint), topk=3, no_match=NoMatch(threshold=-1.0))
    assert found["table"]["match"].all() and not found["no_match"]
    found = search(str(out), query, str(tiny_checkpoint), topk=3, no_match=NoMatch(none=True))
    assert "match" not in found["table"] and "threshold" not in found
    result = run_tool(
        "search", "--index", out, "--checkpoint", tiny_checkpoint, "--far", 0.05, query[0]
    )
    one_error_line(
        result, "--far 0.05: not calibrated for this index (stored: 0.1, 0.01, 0.001, 0.0001)"
    )


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
    count = GalleryIndex.load(tmp_path / "idx").count
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


def test_an_atomic_write_beside_a_socket_a_fifo_and_an_unreadable_file(tmp_path):
    """Output folder also holding a socket, a FIFO, an unreadable file (like /tmp) → the write succeeds, those entries are never opened.

    The folder is synced as a folder (its entry table), not file by file."""
    import socket

    from reid import atomic

    folder = tmp_path / "shared"
    folder.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "app.sock"))
    os.mkfifo(folder / "pipe")
    locked = folder / "locked.txt"
    locked.write_text("not ours")
    locked.chmod(0)
    try:
        atomic.write_json(folder / "out.json", {"ok": True})
        staged = folder / "tree"
        with atomic.atomic_path(staged) as tmp:
            (tmp / "a").mkdir(parents=True)
            (tmp / "a" / "b.txt").write_text("x")
        assert json.loads((folder / "out.json").read_text()) == {"ok": True}
        assert (staged / "a" / "b.txt").read_text() == "x"
    finally:
        server.close()
        locked.chmod(0o600)


def test_resume_of_a_run_whose_last_pt_is_a_link_is_refused_before_training(
    synthetic_root, tmp_path
):
    """--resume RUN whose last.pt is a symbolic link → one error line before any epoch trains (it trained a whole epoch first)."""
    run_dir, _ = train(None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "r"))
    real = tmp_path / "elsewhere.pt"
    os.replace(run_dir / "last.pt", real)
    os.symlink(real, run_dir / "last.pt")
    metrics = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(OutputError, match="last.pt already exists"):
        train(None, ["train.epochs=2"], resume=str(run_dir), progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == metrics  # no epoch trained
    assert (run_dir / "last.pt").is_symlink() and real.is_file()


def test_a_model_whose_embeddings_are_not_finite_fails_on_its_first_batch(
    tiny_checkpoint, synthetic_root, tmp_path
):
    """a checkpoint whose model produces NaN embeddings → evaluate and export_index give one error line naming it, after the first batch (it was a traceback, or a refusal after the whole pass)."""
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    module = {
        k: (v * float("nan") if v.is_floating_point() else v)
        for k, v in checkpoint["module"].items()
    }
    torch.save({**checkpoint, "module": module}, tmp_path / "nan.pt")
    for tool, args in (
        ("evaluate", ["--checkpoint", tmp_path / "nan.pt", "--data", synthetic_root]),
        ("export_index", ["--checkpoint", tmp_path / "nan.pt", "--gallery", synthetic_root,
                          "--out", tmp_path / "idx"]),
    ):  # fmt: skip
        line = one_error_line(run_tool(tool, *args), "nan.pt", "NaN or infinite embeddings")
        assert "batch of" in line
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_a_folder_holding_only_a_config_is_not_called_a_run(synthetic_root, tmp_path):
    """train --output FOLDER holding only config.yaml → names the file it holds; no --resume offered (it said "a finished or running training run")."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("data: {}\n")
    with pytest.raises(OutputError) as caught:
        train(None, [f"data.root={synthetic_root}", *TINY_TRAIN], str(tmp_path / "r"))
    assert "(config.yaml)" in str(caught.value) and "--resume" not in str(caught.value)


def test_a_csv_manifest_with_an_empty_path_or_a_float_pid_names_the_line(tmp_path):
    """a CSV manifest row with an empty path, or pids written as 3.0 → one line naming the line (it was a TypeError, or "first bad value on line ?")."""
    from reid.data.manifest import load_manifest

    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,pid,split\na.jpg,1,train\n,2,train\n")
    with pytest.raises(DatasetError, match="column 'path' is empty on line 3"):
        load_manifest(tmp_path / "m.csv", check_files=False)
    (tmp_path / "m.csv").write_text("path,pid,split\na.jpg,1.0,train\na.jpg,2.5,query\n")
    with pytest.raises(DatasetError, match=r"column 'pid' must hold integers \(line 3: 2.5\)"):
        load_manifest(tmp_path / "m.csv", check_files=False)
