"""Planted files, for every tool that writes: a user's file under each output name is refused
with one line and left as it was, and an unrelated file beside the outputs survives the first
run and the replacement that a second run makes. The list of output flags is read from the
parsers, so a new output-writing tool or flag fails here until it has its case."""

from __future__ import annotations

import argparse
import shutil

import pytest

from tests.conftest import REPO, TINY_TRAIN
from tests.test_arguments import TOOLS, flags, load_tool, parser_of
from tests.test_faults import one_error_line, snapshot


def run_tool(tool: str, *args):
    """The tool's ``tool_main`` in this process (no interpreter start, no torch import per
    run): the same exit status and stderr as from the command line."""
    import contextlib
    import io
    import subprocess
    import sys

    from reid.logging_utils import tool_main

    module = load_tool(tool)

    err, argv = io.StringIO(), sys.argv
    sys.argv = [f"{tool}.py", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            tool_main(module.main, module.get_args_parser())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


OUTPUT_FLAGS = ("--out", "--output", "--plot", "--save-features", "--run")


def output_flags() -> set[tuple[str, str]]:
    found = set()
    for tool in TOOLS:
        for action in flags(parser_of(tool)):
            for option in action.option_strings:
                if option in OUTPUT_FLAGS and action.nargs != argparse.ZERO_OR_MORE:
                    found.add((tool, option))
    return found


@pytest.fixture(scope="module")
def world(tiny_checkpoint, synthetic_root, tmp_path_factory):
    """A checkpoint, its index, a query image and a small split source, shared by the cases."""
    from reid.workflows.index import export_index

    base = tmp_path_factory.mktemp("world")
    index = base / "index"
    export_index(str(tiny_checkpoint), str(synthetic_root), str(index))
    source = base / "market"
    shutil.copytree(synthetic_root / "bounding_box_train", source / "bounding_box_train")
    grid = base / "grid.yaml"
    grid.write_text(
        f"config: {REPO / 'configs/synthetic/demo.yaml'}\ncommon: {[*TINY_TRAIN]}\n".replace(
            "'", '"'
        )
        + f"data:\n  1: {synthetic_root}\nseeds: [0]\narms:\n  - name: a\n"
        + "  - {name: b, init_from: a}\n"  # a fine-tuning run: it writes its parent record
    )
    import numpy as np
    import torch

    state = torch.load(tiny_checkpoint, weights_only=True)  # as an older reid wrote it
    name, keys, *rest = state["rng"]["numpy"]
    state["rng"]["numpy"] = (name, keys.numpy().astype(np.uint32), *rest)
    torch.save(state, base / "old.pt")
    return {
        "old": base / "old.pt",
        "ck": tiny_checkpoint,
        "data": synthetic_root,
        "index": index,
        "query": sorted((synthetic_root / "query").glob("*.jpg"))[0],
        "source": source,
        "grid": grid,
    }


# (tool, flag) → (arguments given the output path, the output folder, the names it writes there)
def case(tool: str, flag: str, w: dict, out):
    ck, data = w["ck"], w["data"]
    if (tool, flag) == ("evaluate", "--out"):
        return ["--checkpoint", ck, "--out", out, "--ranked", 2], out, [
            "result.json", "cmc.png", "verification.png", "ranked_lists.png"]  # fmt: skip
    if (tool, flag) == ("evaluate", "--save-features"):
        return ["--checkpoint", ck, "--out", out / "e", "--save-features", out / "f.npz",
                "--ranked", 0], out, ["f.npz"]  # fmt: skip
    if (tool, flag) == ("export_index", "--out"):
        return ["--checkpoint", ck, "--gallery", data, "--out", out], out, ["manifest.json"]
    if (tool, flag) == ("search", "--out"):
        return ["--index", w["index"], "--checkpoint", ck, "--out", out, w["query"]], out, [
            "results.csv", "results.json", "results.png"]  # fmt: skip
    if (tool, flag) == ("export_model", "--out"):
        return ["--checkpoint", ck, "--out", out / "m.pt2"], out, ["m.pt2", "m.pt2.json"]
    if (tool, flag) == ("dataset_stats", "--plot"):
        return [data, "--plot", out / "h.png"], out, ["h.png"]
    if (tool, flag) == ("diagnose_weights", "--out"):
        return ["--checkpoint", ck, "--out", out], out, ["angles.csv", "angles.png"]
    if (tool, flag) == ("make_synthetic", "--out"):
        return ["--out", out, "--ids", 6, "--images-per-id", 4, "--distractors", 1,
                "--junk", 1], out, ["contact_sheet.png", "query/0001_c1s1_000001_01.jpg"]  # fmt: skip
    if (tool, flag) == ("make_split", "--out"):
        return [w["source"], "--out", out, "--holdout-ids", 3], out, [
            "split.json", "bounding_box_train/0001_c1s1_000001_01.jpg"]  # fmt: skip
    if (tool, flag) == ("train", "--output"):
        return ["--output", out, "--overwrite", f"data.root={data}", *TINY_TRAIN], out, [
            "config.yaml", "last.pt", "metrics.jsonl"]  # fmt: skip
    if (tool, flag) == ("study", "--out"):
        return [w["grid"], "--out", out], out, [
            "results.csv", "results.md", "runs/b_rho1_s0/parent.json"]  # fmt: skip
    if (tool, flag) == ("convert_checkpoint", "--out"):
        return [w["old"], "--out", out / "new.pt"], out, ["new.pt"]
    if (tool, flag) == ("demo", "--run"):
        pytest.skip("the demo's run folder is train --output's (same code path), tested there")
    raise AssertionError(f"no planted-file case for {tool} {flag}: add one")


def test_every_output_flag_has_a_case():
    known = {
        ("evaluate", "--out"), ("evaluate", "--save-features"), ("export_index", "--out"),
        ("search", "--out"), ("export_model", "--out"), ("dataset_stats", "--plot"),
        ("diagnose_weights", "--out"), ("make_synthetic", "--out"), ("make_split", "--out"),
        ("train", "--output"), ("study", "--out"), ("demo", "--run"),
        ("convert_checkpoint", "--out"),
    }  # fmt: skip
    assert output_flags() <= known, (
        f"output flags without a planted-file case: {output_flags() - known}"
    )


@pytest.mark.parametrize("tool, flag", sorted(output_flags()))
def test_planted_files_survive_every_run(tool, flag, world, tmp_path):
    argv, folder, names = case(tool, flag, world, tmp_path / "out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "unrelated.txt").write_text("the user's")
    for name in names:  # a user's file under each output name: refused, nothing changed
        plant = folder / name
        plant.parent.mkdir(parents=True, exist_ok=True)
        plant.write_text("the user's")
        before = snapshot(folder)
        one_error_line(run_tool(tool, *argv), name.split("/")[-1])
        assert snapshot(folder) == before, f"{tool} changed the folder while refusing"
        plant.unlink()
    for attempt in range(2):  # the first write, then the replacement of its own files
        result = run_tool(tool, *argv)
        assert result.returncode == 0, (attempt, result.stderr[-2000:])
        assert (folder / "unrelated.txt").read_text() == "the user's"
