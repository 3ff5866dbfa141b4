"""The study tool's scheduling: runs side by side give the same numbers as one at a time, a
fine-tuning run waits for its parent, and every refusal comes before the first run trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reid.config import ConfigError
from reid.machine import cpu_description
from reid.outputs import sha256
from reid.workflows import study as study_module

from .conftest import TINY_TRAIN

#: what a run's numbers are: everything in result.json but the time it took and how it ran
NUMBERS = ("rank1", "mAP", "mINP", "center_angle_rare", "center_angle_rare_first")


def write_grid(tmp_path: Path, root: Path, common: list[str], arms: list[dict]) -> Path:
    grid = tmp_path / "grid.yaml"
    spec = {
        "config": None,
        "data": {4: str(root)},
        "seeds": [0],
        "common": [*TINY_TRAIN, *common],
        "arms": arms,
    }
    grid.write_text(json.dumps(spec))  # JSON is YAML
    return grid


ARMS = [
    {"name": "learned", "overrides": ["head.name=softmax"]},
    {"name": "ir", "pair": "learned", "overrides": ["head.name=softmax", "head.weights=centers"]},
    {"name": "ft", "init_from": "learned", "overrides": ["head.name=cosface"]},
]


def results(out: Path) -> dict:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted((out / "runs").glob("*/result.json"))
    }


def write_result(out: Path, arm: str, seed: int = 0, drop=(), **fields) -> None:
    """A finished run's result.json under ``out`` as the summaries read it (arm ``arm`` at ρ 4):
    every column 0.5 but the identity columns and ``fields``; ``drop``: columns left out, as in
    files written before they existed."""
    run = out / f"runs/{arm}_rho4_s{seed}"
    run.mkdir(parents=True)
    result = {c: 0.5 for c in study_module.COLUMNS}
    result.update(arm=arm, head="softmax", weights="learned", rho=4.0, seed=seed, init_from="")
    result.update({"resumed": False, "machine": "m", "parallel": 1, **fields})
    for column in drop:
        del result[column]
    (run / "result.json").write_text(json.dumps(result))


def test_side_by_side_runs_have_the_numbers_of_runs_one_at_a_time(synthetic_root, tmp_path):
    """Three runs (one fine-tuning from another) two at a time, each in its own process, against
    the same grid one run at a time in this process: the same numbers to the bit (one
    computation: the same code with the same pinned thread count), summaries for all three."""
    grid = write_grid(tmp_path, synthetic_root, ["train.threads=1"], ARMS)
    study_module.run_study(grid, tmp_path / "one", parallel=1)
    table = study_module.run_study(grid, tmp_path / "two", parallel=2)
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert sorted(one) == sorted(two) == ["ft_rho4_s0", "ir_rho4_s0", "learned_rho4_s0"]
    for rid in one:
        assert {k: one[rid][k] for k in NUMBERS} == {k: two[rid][k] for k in NUMBERS}, rid
        assert one[rid]["parallel"] == 1 and two[rid]["parallel"] == 2
    assert len(table) == 3 and (tmp_path / "two/results.md").is_file()
    assert list(table["parallel"]) == [2, 2, 2]
    assert set(table["machine"]) == {cpu_description()}  # every run says where it ran
    assert f"Machines: {cpu_description()} (3 runs)." in (tmp_path / "two/results.md").read_text()


def test_summaries_read_runs_from_before_parallel(tmp_path):
    """result.json files written before ``parallel`` existed are one-at-a-time runs, and those
    from before ``machine`` say that theirs was not recorded."""
    grid = write_grid(tmp_path, tmp_path, [], [{"name": "learned"}])
    write_result(tmp_path / "out", "learned", drop=("parallel", "machine"))
    table = study_module.summarise(study_module.Grid.load(grid), tmp_path / "out")
    assert list(table["parallel"]) == [1]
    assert list(table["machine"]) == ["not recorded"]


def test_wall_per_run_counts_only_runs_trained_in_one_go(tmp_path):
    """A resumed run's wall time covers only what was left of it, so the summary's cost per
    run is the mean over whole runs and says how many those were."""
    grid = write_grid(tmp_path, tmp_path, [], [{"name": "learned", "seeds": [0, 1, 2]},
                                               {"name": "ir"}])  # fmt: skip
    runs = [("learned", 0, 600.0, False), ("learned", 1, 60.0, True), ("learned", 2, 720.0, False),
            ("ir", 0, 90.0, True)]  # fmt: skip
    for arm, seed, wall, resumed in runs:
        write_result(tmp_path / "out", arm, seed, wall_s=wall, resumed=resumed)
    study_module.summarise(study_module.Grid.load(grid), tmp_path / "out")
    rows = {line.split(" | ")[0][2:]: line.rsplit(" | ", 1)[1]
            for line in (tmp_path / "out/results.md").read_text().splitlines()
            if line.startswith(("| learned |", "| ir |"))}  # fmt: skip
    assert rows == {"learned": "11.0 min (2 of 3) |", "ir": "— (every run resumed) |"}


def test_the_best_recipe_is_set_against_the_peer_engine(tmp_path):
    """The issue's target, the best recipe against torchreid's engine at equal budget: the best
    of our arms from ImageNet (IR or learned, here the IR arm) minus the peer, paired by seed; a
    fine-tuned arm (twice the images) is not a candidate however high it scores."""
    arms = [{"name": "learned"}, {"name": "ir"}, {"name": "peer", "engine": "torchreid"},
            {"name": "ft", "init_from": "learned"}]  # fmt: skip
    grid = write_grid(tmp_path, tmp_path, [], arms)
    maps = {"learned": 0.60, "ir": 0.70, "peer": 0.55, "ft": 0.90}
    for arm, mAP in maps.items():
        write_result(tmp_path / "out", arm, mAP=mAP, rank1=mAP,
                     weights="centers" if arm == "ir" else "learned",
                     init_from="learned" if arm == "ft" else "")  # fmt: skip
    study_module.summarise(study_module.Grid.load(grid), tmp_path / "out")
    text = (tmp_path / "out/results.md").read_text()
    assert "| ir | peer | 4 | 1 | +15.00 | +15.00 | +15.00 |" in text


@pytest.mark.parametrize(
    "common, parallel, only, message",
    [
        ([], 2, None, r"--parallel 2: learned_rho4_s0 leaves train.threads=0"),
        (["train.threads=64"], 2, None, r"--parallel 2: 2 runs x train.threads=64 .* need 128 cores"),
        (["train.threads=1"], 1, ["ft"], r"ft_rho4_s0 fine-tunes from learned_rho4_s0, which is neither"),
        (["train.threads=1"], 1, ["nope"], r"--only nope: not an arm of .*its arms: learned, ir, ft"),
        (["data.pad=-1"], 1, None, r"data.pad"),
    ],
)  # fmt: skip
def test_refusals_come_before_any_run(synthetic_root, tmp_path, common, parallel, only, message):
    """Each refusal names the setting, and nothing is written: no run folder, no summary."""
    grid = write_grid(tmp_path, synthetic_root, common, ARMS)
    with pytest.raises(ConfigError, match=message):
        study_module.run_study(grid, tmp_path / "out", only=only, parallel=parallel)
    assert not (tmp_path / "out").exists()


def test_after_a_failure_no_new_run_starts_and_the_running_ones_finish(
    synthetic_root, tmp_path, monkeypatch
):
    """A run that fails (here: its fine-tuning parent's checkpoint is not a checkpoint) is
    reported; the run beside it finishes and is summarised; the first failure is raised."""
    arms = [
        {"name": "learned", "overrides": ["head.name=softmax"]},
        {"name": "broken", "overrides": ["model.init_from=/nonexistent.pt"]},
        {"name": "later", "overrides": ["train.seed=5"]},
    ]
    grid = write_grid(tmp_path, synthetic_root, ["train.threads=1"], arms)
    with pytest.raises(Exception, match="nonexistent"):
        study_module.run_study(grid, tmp_path / "out", parallel=2)
    done = results(tmp_path / "out")
    assert "learned_rho4_s0" in done and "broken_rho4_s0" not in done
    assert "later_rho4_s0" not in done  # queued behind the failure: never started


def test_a_run_pins_its_threads_and_gives_them_back(monkeypatch, tmp_path):
    """``train.threads`` holds while the run trains (also torchreid's engine arm); the process's
    own setting comes back after it (a study trains many runs in one process)."""
    import torch

    from reid.config import load_config
    from reid.engine import trainer
    from reid.workflows import torchreid_reference

    seen = []
    monkeypatch.setattr(trainer, "_fit", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(
        torchreid_reference, "_train_torchreid", lambda *a: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    trainer.fit(load_config(None, ["train.threads=1"]), tmp_path / "run", progress=False)
    torchreid_reference.train_torchreid(load_config(None, ["train.threads=1"]), tmp_path)
    trainer.fit(load_config(None, []), tmp_path / "run", progress=False)
    assert seen == [1, 1, before] and torch.get_num_threads() == before


def test_a_run_whose_process_dies_without_a_result_is_a_failure_naming_it():
    """A run's process killed (OOM, a signal) before it sent its result: a failure that names
    the run and says how to resume it, not a hang and not a success."""
    import multiprocessing
    import os

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=os._exit, args=(3,))
    process.start()
    send.close()
    process.join()
    status, error = study_module._outcome(process, receive, "x_rho4_s0")
    assert status == "failed" and isinstance(error, study_module.StudyError)
    assert "x_rho4_s0: its process ended (exit code 3) without a result; rerun" in str(error)


def test_ir_arms_are_compared_with_the_best_learned_arm_they_are_comparable_with():
    """Whatever its head form: the best learned arm by mean mAP among the runs of the same ρ,
    budget and start (a fine-tuned arm, which saw twice the images, or a longer run is not a
    from-scratch arm's rival), paired by seed (a seed the best arm lacks is left out); a group
    without learned arms has no rows."""
    import pandas as pd

    rows = [
        ("softmax_learned", "learned", 50, 0, 0.60, ""), ("softmax_learned", "learned", 50, 1, 0.62, ""),
        ("cosface_learned", "learned", 50, 0, 0.70, ""), ("cosface_learned", "learned", 50, 1, 0.50, ""),
        ("ft_cosface_learned", "learned", 50, 0, 0.90, "softmax_learned"),
        ("ft_cosface_learned", "learned", 50, 1, 0.90, "softmax_learned"),
        ("ft_cosface_ir", "centers", 50, 0, 0.80, "softmax_learned"),
        ("asoftmax_ir", "centers", 50, 0, 0.55, ""), ("asoftmax_ir", "centers", 50, 1, 0.66, ""),
        ("asoftmax_ir", "centers", 50, 2, 0.99, ""), ("asoftmax_ir", "centers", 1, 0, 0.5, ""),
    ]  # fmt: skip
    table = pd.DataFrame(
        [
            dict(
                arm=a,
                weights=w,
                rho=float(r),
                seed=s,
                mAP=m,
                rank1=m,
                init_from=i,
                epochs=6,
                iters_per_epoch=40,
            )
            for a, w, r, s, m, i in rows
        ]  # fmt: skip
    )
    longer = table[table.arm == "cosface_learned"].assign(arm="cosface_learned_b2", epochs=12)
    table = pd.concat([table, longer.assign(mAP=0.95)], ignore_index=True)
    body = [line for line in study_module._against_best_learned(table) if line.startswith("| ")]
    # softmax's mean 0.61 beats CosFace's 0.60, though CosFace has the best single run
    assert body[1:] == [
        "| asoftmax_ir | softmax_learned | 50 | 2 | -5.00, +4.00 | -0.50 | -0.50 |",
        "| ft_cosface_ir | ft_cosface_learned | 50 | 1 | -10.00 | -10.00 | -10.00 |",
    ]


def test_paired_fine_tuning_runs_from_different_parents_are_marked(tmp_path):
    """Two fine-tuning runs of one seed that started from different parents (a refit trained
    again on a machine that rounds differently) are marked where they are paired, with both
    parents' mAP; runs from one parent, or from before parents were recorded, are not."""
    arms = [{"name": "ft_learned", "init_from": "learned"},
            {"name": "ft_ir", "init_from": "learned", "pair": "ft_learned"}]  # fmt: skip
    grid = write_grid(tmp_path, tmp_path, [], [{"name": "learned"}, *arms])
    out = tmp_path / "out"
    parents = {("ft_learned", 0): 0.6784, ("ft_ir", 0): 0.6740, ("ft_learned", 1): 0.67,
               ("ft_ir", 1): 0.67, ("ft_learned", 2): None, ("ft_ir", 2): None}  # fmt: skip
    for (arm, seed), parent in parents.items():
        write_result(out, arm, seed, init_from="learned", parent_mAP=parent,
                     weights="centers" if arm == "ft_ir" else "learned",
                     mAP=0.62 if arm == "ft_ir" else 0.60)  # fmt: skip
    study_module.summarise(study_module.Grid.load(grid), out)
    text = (out / "results.md").read_text()
    assert "| ft_ir | ft_learned | 4 | 3 | +2.00 (parents 67.40 vs 67.84), +2.00, +2.00 |" in text


def test_a_parent_without_its_checkpoint_is_refused_first_or_refit(synthetic_root, tmp_path):
    """Checkpoints are not committed with a study's results, so in a fresh clone a finished
    parent has none: its fine-tuning run is refused before anything trains, naming both; with
    ``refit_parents`` the parent trains again under refit/ (the committed run untouched; on the
    same machine and threads, to the same numbers), the child starts from it, and the refit is
    no row of the summaries."""
    arms = [ARMS[0], ARMS[2]]  # learned, and ft fine-tuning from it
    grid = write_grid(tmp_path, synthetic_root, ["train.threads=1"], arms)
    out = tmp_path / "out"
    study_module.run_study(grid, out, only=["learned"])
    parent = out / "runs/learned_rho4_s0"
    (parent / "last.pt").unlink()  # as a clone of the committed results has it
    committed = (parent / "result.json").read_bytes()
    with pytest.raises(ConfigError, match=r"ft_rho4_s0 fine-tunes from learned_rho4_s0, which is "
                       r"done but whose checkpoint .*last.pt is not here.*--refit-parents"):  # fmt: skip
        study_module.run_study(grid, out)
    assert not (out / "runs/ft_rho4_s0").exists() and not (out / "refit").exists()
    table = study_module.run_study(grid, out, refit_parents=True)
    refit = json.loads((out / "refit/runs/learned_rho4_s0/result.json").read_text())
    assert (parent / "result.json").read_bytes() == committed and not (parent / "last.pt").exists()
    assert {k: refit[k] for k in NUMBERS} == {k: json.loads(committed)[k] for k in NUMBERS}
    child = (out / "runs/ft_rho4_s0/config.yaml").read_text()
    assert str(out / "refit/runs/learned_rho4_s0/last.pt") in child
    # the child says which parent it started from: the refit, its checkpoint and numbers
    started = json.loads((out / "runs/ft_rho4_s0/parent.json").read_text())
    assert started["checkpoint"] == "refit/runs/learned_rho4_s0/last.pt"
    assert started["sha256"] == sha256(out / started["checkpoint"])
    assert (started["mAP"], started["machine"]) == (refit["mAP"], refit["machine"])
    assert table.set_index("arm").loc["ft", "parent_mAP"] == refit["mAP"]
    assert sorted(table["arm"]) == ["ft", "learned"]
    # a clone of results committed with the refit's numbers but not its checkpoint, and a
    # fine-tuning run still to do: the refit trains again (to the same numbers), not skipped
    refit_dir = out / "refit/runs/learned_rho4_s0"
    (refit_dir / "last.pt").unlink()
    shutil.rmtree(out / "runs/ft_rho4_s0")
    study_module.run_study(grid, out, refit_parents=True)
    again = json.loads((refit_dir / "result.json").read_text())
    assert {k: again[k] for k in NUMBERS} == {k: refit[k] for k in NUMBERS}
    assert (refit_dir / "last.pt").is_file() and (out / "runs/ft_rho4_s0/result.json").is_file()
