"""Every file kind reid reads, mutated from a valid one: one line, nothing written or deleted.

For each kind (index manifest, save journal, ownership ledger, checkpoint, export sidecar,
features file, CSV manifest, study grid, config), a valid file is mutated every way the
mutation generator knows: each key deleted, each value's type changed, an unknown key added,
each name that becomes a path turned into ``..``, a nested or an absolute path, the file
truncated, a name duplicated. The reader must either accept the file (a key that is optional)
or refuse it with one :class:`~reid.errors.ReidError` line naming the file; never another
exception, and never a file written or deleted, inside the folder or beside it (a victim file
planted next to the folder survives every case). A few mutations must be refused whatever
(required keys, names that escape): those are asserted by name.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from reid.errors import ReidError

NAME_ATTACKS = ("..", "../victim.txt", "sub/x", "/etc/passwd", "")


def _other_type(value):
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return str(value) + "x"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return "not a list"
    if isinstance(value, dict):
        return ["not", "a", "mapping"]
    return "unexpected"


def _paths(data, prefix=(), depth=3):
    """Every key path into nested dicts (lists: their first item), to ``depth`` levels."""
    if depth == 0:
        return
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key), depth - 1)
    elif isinstance(data, list) and data and isinstance(data[0], (dict, list)):
        yield from _paths(data[0], (*prefix, 0), depth - 1)


def _get_parent(data, path):
    for key in path[:-1]:
        data = data[key]
    return data


def mutations(data, name_keys=(), name_values=(), only=None):
    """``(label, mutated)`` pairs of a JSON-like document; ``name_keys``: paths to dicts whose
    keys are file names; ``name_values``: paths to values that are file names; ``only``: a
    predicate on key paths (the rest is another reader's, tested there)."""
    for path in list(_paths(data)):
        if only is not None and not only(path):
            continue
        dotted = ".".join(map(str, path))
        deleted = copy.deepcopy(data)
        parent = _get_parent(deleted, path)
        if isinstance(parent, dict):
            del parent[path[-1]]
            yield f"delete {dotted}", deleted
        retyped = copy.deepcopy(data)
        parent = _get_parent(retyped, path)
        parent[path[-1]] = _other_type(parent[path[-1]])
        yield f"retype {dotted}", retyped
    if isinstance(data, dict):
        yield "unknown key", {**copy.deepcopy(data), "zz_unknown": 1}
    for path in name_keys:
        for attack in NAME_ATTACKS:
            renamed = copy.deepcopy(data)
            mapping = _get_parent(renamed, (*path, None))  # the dict at ``path``
            key = next(iter(mapping))
            mapping[attack] = mapping.pop(key)
            yield f"name key {'.'.join(map(str, path))} = {attack!r}", renamed
    for path in name_values:
        for attack in NAME_ATTACKS:
            renamed = copy.deepcopy(data)
            _get_parent(renamed, path)[path[-1]] = attack
            yield f"name {'.'.join(map(str, path))} = {attack!r}", renamed


def snapshot(*folders: Path) -> dict:
    """Every file under the folders (and the folders' neighbours), with its content hash."""
    out = {}
    for folder in folders:
        for root in {folder, folder.parent}:
            for path in sorted(root.rglob("*")) if root == folder else sorted(root.iterdir()):
                if path.is_file() and not path.is_symlink():
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def json_writer(path: Path):
    """``write(data)`` for ``check_kind``: the document as JSON at ``path`` (None: leave it)."""

    def write(data):
        if data is not None:
            path.write_text(json.dumps(data))

    return write


def outcome(read, source: Path) -> str:
    """``ok`` or ``refused``; anything but a one-line ReidError naming ``source`` fails."""
    try:
        read()
    except ReidError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), message
        named = (str(source), source.name, str(source.parent))
        assert any(name in message for name in named), message
        return "refused"
    return "ok"


def check_kind(
    tmp_path, valid, write, read, source, must_refuse=(), name_keys=(), name_values=(), only=None
):
    """Run every mutation of ``valid`` through ``write`` then ``read``; returns the outcomes."""
    folder = source.parent
    (folder.parent / "victim.txt").write_text("the user's file")
    results = {}
    cases = list(mutations(valid, name_keys, name_values, only))
    cases.append(("truncated", None))
    for label, mutated in cases:
        write(mutated)
        if mutated is None:  # truncate the valid file's bytes
            write(valid)
            data = source.read_bytes()
            source.write_bytes(data[: len(data) // 2])
        before = snapshot(folder)
        results[label] = outcome(read, source)
        after = snapshot(folder)
        assert before == after, f"{label}: files changed: {set(before) ^ set(after)}"
        assert (folder.parent / "victim.txt").read_text() == "the user's file", label
    write(valid)
    assert outcome(read, source) == "ok"
    for label in must_refuse:
        assert results[label] == "refused", f"{label} was accepted"
    for label, result in results.items():
        if label.startswith("name") or label == "truncated":
            assert result == "refused", f"{label} was accepted"
    return results


# ---------------------------------------------------------------------------- index manifest
@pytest.fixture
def small_index(tmp_path):
    from reid.index import GalleryIndex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    out = tmp_path / "idx" / "index"
    index = GalleryIndex.build(x, [f"/g/{i}.jpg" for i in range(20)], rng.integers(1, 5, 20),
                               rng.integers(0, 3, 20), keep_features=True)  # fmt: skip
    index.save(out)
    return out


def test_every_mutated_index_manifest_is_refused_or_read_and_deletes_nothing(small_index):
    """Load (search) and a removal (which deletes the previous generation's files by the
    manifest's names) on every mutation; ``files`` and ``dim`` are required, and a name that
    leaves the folder is refused before anything is opened or deleted."""
    from reid.index import GalleryIndex
    from reid.workflows.index import remove_from_index

    path = small_index / "manifest.json"
    valid = {
        **json.loads(path.read_text()),
        "embedding": {"runtime": "openvino", "precision": "int8"},
    }

    write = json_writer(path)
    write(valid)

    def read():
        GalleryIndex.load(small_index)

    check_kind(
        small_index.parent, valid, write, read, path,
        must_refuse=("delete files", "delete dim", "delete roles", "retype count", "unknown key"),
        name_keys=[("files",)], name_values=[("roles", "metadata")],
    )  # fmt: skip

    # the attack of the issue: a manifest that lists a file outside the folder, then a removal
    victim = small_index.parent / "victim.txt"
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    write({**valid, "files": {**valid["files"], "../victim.txt": digest}})
    with pytest.raises(ReidError, match=r"files.*not a plain file name"):
        remove_from_index(str(small_index), pids=[1])
    assert victim.read_text() == "the user's file"


def test_a_journal_naming_a_file_outside_the_folder_deletes_nothing(small_index):
    """A killed save's journal names its orphans; one that names ``../victim.txt`` (or any
    path) licenses nothing, and the next writer leaves the victim alone."""
    from reid.atomic import TEMP_PREFIX
    from reid.index import GalleryIndex
    from reid.workflows.index import remove_from_index

    victim = small_index.parent / "victim.txt"
    victim.write_text("the user's file")
    pids = sorted(set(GalleryIndex.load(small_index).metadata["pid"].tolist()))
    for attack, pid in zip(NAME_ATTACKS[1:4], pids):
        journal = small_index / f"{TEMP_PREFIX}999999.abcdef.pending.json"
        journal.write_text(json.dumps({"files": [attack, str(victim)]}))
        remove_from_index(str(small_index), pids=[pid])
        assert victim.read_text() == "the user's file"
        assert not journal.exists()  # the dead writer's journal is cleaned up


# ---------------------------------------------------------------------------- ownership ledger
def test_every_mutated_ledger_is_refused_or_read_and_licenses_nothing_outside(tmp_path):
    from reid.outputs import OutputFolder

    folder = tmp_path / "out" / "folder"
    outputs = OutputFolder(folder, "test")
    outputs.prepare(["a.txt"])
    outputs.write_text("a.txt", "mine")
    ledger = folder / ".reid-output.json"
    valid = json.loads(ledger.read_text())

    write = json_writer(ledger)

    def read():
        OutputFolder(folder, "test").check(["a.txt", "b.txt"])

    results = check_kind(
        tmp_path / "out", valid, write, read, ledger,
        must_refuse=("unknown key", "retype files"), name_keys=[("files",)],
    )  # fmt: skip
    assert results["delete files"] == "refused"  # a.txt is then not provably ours


def test_the_ledger_is_replaced_atomically(tmp_path, monkeypatch):
    """A full disk while the ledger is rewritten leaves the old ledger whole (it was rewritten
    in place: broken JSON, and every file of the folder then counted as not reid's)."""
    import errno

    from reid import atomic
    from reid.outputs import OutputFolder

    outputs = OutputFolder(tmp_path / "f", "test")
    outputs.write_text("a.txt", "one")
    before = (tmp_path / "f" / ".reid-output.json").read_text()

    def full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_bytes", full)
    with pytest.raises(OSError):
        outputs.record(["a.txt"])
    monkeypatch.undo()
    assert (tmp_path / "f" / ".reid-output.json").read_text() == before
    assert OutputFolder(tmp_path / "f", "test").owned("a.txt")


# ---------------------------------------------------------------------------- checkpoint
def test_every_mutated_checkpoint_is_refused_or_read(tmp_path, tiny_checkpoint):
    """Top-level fields and the stored config's architecture, each deleted and retyped: the
    model readers (evaluate, export, search, serve) and --resume's reader give one line. (The
    stored config's other keys go through the config schema, whose every key and range the
    generated tests of test_arguments.py walk.)"""
    from reid.engine.checkpoint import load_checkpoint
    from reid.loading import load_model

    folder = tmp_path / "ck" / "run"
    folder.mkdir(parents=True)
    path = folder / "model.pt"
    valid = torch.load(tiny_checkpoint, weights_only=True)
    light = {k: v for k, v in valid.items() if k not in ("module", "optimizer")}

    def write(data):
        if data is not None:
            torch.save({**data, "module": valid["module"], "optimizer": valid["optimizer"]}, path)

    def read():
        load_model(path)
        load_checkpoint(path)

    check_kind(
        tmp_path / "ck", light, write, read, path,
        must_refuse=("delete config", "delete num_classes", "delete config.model",
                     "delete config.model.backbone", "retype config.model.embedding_dim",
                     "delete epoch", "delete rng", "retype history"),
        only=lambda path: len(path) == 1 or path[:2] == ("config", "model")
        or path in (("config", "data"), ("config", "optim", "lr")),
    )  # fmt: skip
    for label, module in (("no module", None), ("module retyped", "weights")):
        data = {**light, "optimizer": valid["optimizer"]}
        if module is not None:
            data["module"] = module
        torch.save(data, path)
        assert outcome(lambda: load_model(path), path) == "refused", label


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it(
    tmp_path, tiny_checkpoint
):
    """The issue's attack (``Evil.__reduce__`` runs a command on load): every reader refuses
    the file in one line naming it, and the callable never runs."""
    from reid.engine.checkpoint import load_checkpoint
    from reid.index.sources import Embedder
    from reid.loading import load_model
    from reid.models.checkpoint import read_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": Evil(marker)}, evil)
    inside = tmp_path / "inside.pt"
    valid = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({**valid, "history": [Evil(marker)]}, inside)
    for path in (evil, inside):
        for reader in (load_model, read_checkpoint, load_checkpoint, Embedder.open):
            with pytest.raises(ReidError, match="pickled Python objects .* refused"):
                reader(path)
    assert not marker.exists()


def test_an_older_checkpoint_converts_by_the_explicit_command_and_resumes_the_same(
    tmp_path, tiny_checkpoint
):
    """A checkpoint of the earlier form (its NumPy random state a pickled array) is refused with
    the command that converts it; the converted file is read by the safe reader with the same
    weights and random state."""
    from reid.engine.checkpoint import load_checkpoint
    from reid.models.checkpoint import convert_checkpoint, read_checkpoint

    valid = torch.load(tiny_checkpoint, weights_only=True)
    name, keys, *rest = valid["rng"]["numpy"]
    old = {**valid, "rng": {**valid["rng"], "numpy": (name, keys.numpy().astype(np.uint32), *rest)}}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ReidError, match="older reid checkpoint.*reid convert-checkpoint"):
        read_checkpoint(tmp_path / "old.pt")
    convert_checkpoint(tmp_path / "old.pt", tmp_path / "new.pt")
    new = load_checkpoint(tmp_path / "new.pt")
    assert all(torch.equal(new["module"][k], valid["module"][k]) for k in valid["module"])
    assert torch.equal(new["rng"]["numpy"][1], valid["rng"]["numpy"][1])
    with pytest.raises(ReidError, match="overlaps the input"):  # never over the source
        convert_checkpoint(tmp_path / "old.pt", tmp_path / "old.pt")


# ---------------------------------------------------------------------------- export sidecar
def test_every_mutated_export_sidecar_is_refused_or_read(tmp_path):
    from reid.models.export import read_sidecar

    folder = tmp_path / "exp" / "m"
    folder.mkdir(parents=True)
    model = folder / "model.onnx"
    model.write_bytes(b"onnx")
    sidecar = folder / "model.onnx.json"
    valid = {"format": "onnx", "image_size": [64, 32], "mean": [0.485, 0.456, 0.406],
             "std": [0.229, 0.224, 0.225], "dim": 16, "source_hash": "ab",
             "output": "l2-normalised", "precision": "int8", "runtime": "openvino",
             "calibration": {"folder": "/data", "crops": 64, "method": "m", "fp32_nodes": ["a"]},
             "verification": {"split": "s", "runtime": "openvino", "queries": 3, "gallery": 9,
                              "fp32": {"rank1": 90.0, "mAP": 80.0},
                              "reduced": {"rank1": 89.0, "mAP": 79.5}, "map_loss": 0.5,
                              "max_map_loss": 1.0, "top10_overlap": 0.9,
                              "worst_cosine_gap": 0.01}}  # fmt: skip

    write = json_writer(sidecar)

    check_kind(
        tmp_path / "exp", valid, write, lambda: read_sidecar(model), sidecar,
        must_refuse=("delete image_size", "delete dim", "retype dim", "unknown key"),
    )  # fmt: skip


# ---------------------------------------------------------------------------- features file
def test_every_mutated_features_file_is_refused_or_read(tmp_path):
    from reid.evaluation.features_io import load_features

    folder = tmp_path / "feat" / "f"
    folder.mkdir(parents=True)
    path = folder / "features.npz"
    rng = np.random.default_rng(0)
    n = 12
    valid = {
        "features": rng.normal(size=(n, 4)).astype(np.float32),
        "pids": np.repeat(np.arange(1, 5), 3),
        "camids": np.tile(np.arange(3), 4),
        "paths": np.array([f"/x/{i}.jpg" for i in range(n)]),
        "split": np.array(["query", "gallery", "gallery"] * 4),
    }
    cases = {"valid": valid}
    for key in valid:
        cases[f"delete {key}"] = {k: v for k, v in valid.items() if k != key}
        cases[f"one row short: {key}"] = {**valid, key: valid[key][:-1]}
        cases[f"retype {key}"] = {**valid, key: np.array(["word"] * n)}
    cases["unknown array"] = {**valid, "extra": np.zeros(n)}
    cases["pid 1e20"] = {**valid, "pids": np.array([1e20] + [1.0] * (n - 1))}
    cases["pid nan"] = {**valid, "pids": np.array([np.nan] + [1.0] * (n - 1))}
    cases["nan feature"] = {**valid, "features": np.full((n, 4), np.nan, np.float32)}
    (tmp_path / "feat" / "victim.txt").write_text("x")
    for label, arrays in cases.items():
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        before = snapshot(folder)
        result = outcome(lambda: load_features(path), path)
        assert snapshot(folder) == before
        expected = "ok" if label in ("valid", "delete paths", "retype paths") else "refused"
        assert result == expected, label


# ---------------------------------------------------------------------------- CSV manifest
def test_every_mutated_csv_manifest_is_refused_or_read(tmp_path, make_jpeg):
    from reid.data.manifest import load_manifest

    folder = tmp_path / "csv" / "data"
    for i in range(6):
        make_jpeg(folder / f"{i}.jpg", seed=i)
    rows = [("0.jpg", 1, "train", 0), ("1.jpg", 1, "train", 1), ("2.jpg", 2, "query", 0),
            ("3.jpg", 2, "gallery", 1), ("4.jpg", 3, "train", 0), ("5.jpg", 3, "train", 1)]  # fmt: skip
    path = folder / "manifest.csv"
    header = ["path", "pid", "split", "camid"]

    def text(table):
        return "\n".join(",".join(map(str, r)) for r in table) + "\n"

    cases = {"valid": [header, *rows]}
    for i, column in enumerate(header):
        cases[f"delete column {column}"] = [
            [v for j, v in enumerate(r) if j != i] for r in [header, *rows]
        ]
        cases[f"empty {column}"] = [
            header,
            *[r if k else (*r[:i], "", *r[i + 1 :]) for k, r in enumerate(rows)],
        ]
    cases["retype pid"] = [header, ("0.jpg", "one", "train", 0), *rows[1:]]
    cases["fractional camid"] = [header, ("0.jpg", 1, "train", 0.5), *rows[1:]]
    cases["pid 1e20"] = [header, ("0.jpg", "1e20", "train", 0), *rows[1:]]
    cases["unknown column"] = [[*header, "note"], *[(*r, "x") for r in rows]]
    cases["duplicate path"] = [header, *rows, rows[0]]
    cases["truncated"] = None
    (tmp_path / "csv" / "victim.txt").write_text("x")
    for label, table in cases.items():
        if table is None:
            path.write_text(text(cases["valid"])[:9])
        else:
            path.write_text(text(table))
        before = snapshot(folder)
        result = outcome(lambda: load_manifest(path), path)
        assert snapshot(folder) == before
        ok = label in ("valid", "delete column camid", "empty camid")
        assert result == ("ok" if ok and label != "empty camid" else "refused"), label


# ---------------------------------------------------------------------------- study grid
def test_every_mutated_study_grid_is_refused_or_read(tmp_path):
    """Arm names become run folders: ``..``, paths and duplicates are refused; so are the
    issue's typo'd arm key, a grid without arms, ``seeds: 0`` and an arm given as a string."""
    import yaml

    from reid.workflows.study import Grid

    folder = tmp_path / "grid" / "g"
    folder.mkdir(parents=True)
    path = folder / "grid.yaml"
    valid = {
        "description": "a grid",
        "config": "configs/study/base_mnv2.yaml",
        "common": ["train.epochs=1"],
        "data": {50: "datasets/a", 1: "datasets/b"},
        "seeds": [0, 1],
        "arms": [
            {"name": "softmax_learned", "overrides": ["head.name=softmax"]},
            {"name": "asoftmax_ir", "pair": "softmax_learned", "rhos": [50], "seeds": [0]},
        ],
    }

    def write(data):
        if data is not None:
            path.write_text(yaml.safe_dump(data))

    results = check_kind(
        tmp_path / "grid", valid, write, lambda: Grid.load(path), path,
        must_refuse=("delete arms", "delete seeds", "retype seeds",
                     "unknown key", "retype arms.0.name"),
        name_values=[("arms", 0, "name")],
    )  # fmt: skip
    assert results["delete description"] == "ok"
    for label, data in {
        "two arms of one name": {**valid, "arms": [valid["arms"][0], valid["arms"][0]]},
        "typo in an arm key": {**valid, "arms": [{**valid["arms"][0], "overides": []}]},
        "pair to no arm": {**valid, "arms": [{**valid["arms"][1], "pair": "nope"}]},
        "rho not in data": {**valid, "arms": [{**valid["arms"][0], "rhos": [7]}]},
        "no arms": {**valid, "arms": []},
        "seeds 0": {**valid, "seeds": 0},
        "arm as a string": {**valid, "arms": ["softmax_learned"]},
    }.items():
        write(data)
        assert outcome(lambda: Grid.load(path), path) == "refused", label


# ---------------------------------------------------------------------------- config
def test_a_config_with_an_unresolvable_interpolation_is_one_line(tmp_path):
    from reid.config import load_config

    for text in ("data:\n  root: ${nope.key}\n", "data:\n  root: ${oc.env:REID_NOT_SET_X}\n"):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        os.environ.pop("REID_NOT_SET_X", None)
        with pytest.raises(ReidError, match=r"c.yaml: data.root: cannot resolve its interpolation"):
            load_config(path)


def test_a_checkpoint_config_with_an_unknown_or_unresolvable_key_is_one_line(
    tmp_path, tiny_checkpoint
):
    from reid.loading import load_model

    valid = torch.load(tiny_checkpoint, weights_only=True)
    for label, config in (
        ("unknown key", {**valid["config"], "zz": {"a": 1}}),
        (
            "interpolation",
            {**valid["config"], "data": {**valid["config"]["data"], "root": "${x.y}"}},
        ),
        ("a range", {**valid["config"], "optim": {**valid["config"]["optim"], "lr": -1.0}}),
    ):
        torch.save({**valid, "config": config}, tmp_path / "c.pt")
        assert outcome(lambda: load_model(tmp_path / "c.pt"), tmp_path / "c.pt") == "refused", label
