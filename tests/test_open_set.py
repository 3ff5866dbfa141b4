"""Calibrated open-set search and removal from an index (the "is this person here?" workflow)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from reid.data import load_dataset
from reid.errors import ReidError
from reid.index import GalleryIndex
from reid.index.gallery import IndexFormatError, index_file
from reid.index.stores import parse_store_options
from reid.workflows.index import ExportOptions, export_index, remove_from_index, search


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated") / "idx"
    info = export_index(
        str(tiny_checkpoint),
        str(synthetic_root),
        str(out),
        ExportOptions(calibrate=str(synthetic_root), far=0.05),
    )
    return out, info


def test_calibration_is_stored_with_the_model_and_meets_its_far(calibrated, tiny_checkpoint):
    out, info = calibrated
    c = GalleryIndex.load(out).manifest["calibration"]
    assert c["far"] == 0.05 and c["measured_far"] <= 0.05
    assert c["model_hash"] == GalleryIndex.load(out).manifest["model_hash"]
    assert c["queries"] == len(load_dataset(c["source"]).query)


def test_search_rejects_an_identity_that_is_not_in_the_gallery(
    calibrated, tiny_checkpoint, synthetic_root, tmp_path
):
    out, _ = calibrated
    local = tmp_path / "idx"
    shutil.copytree(out, local)
    query = sorted((synthetic_root / "query").glob("*.jpg"))[0]
    pid = int(query.name.split("_")[0])
    remove_from_index(str(local), [pid])
    found = search(str(local), [str(query)], str(tiny_checkpoint), topk=5)
    # its best score is an impostor score of the calibration data: never above τ at k = ⌊f·Q⌋
    assert found["no_match"] == [str(query)]
    assert not found["table"]["match"].any() and (found["table"]["pid"] != pid).all()


def test_a_threshold_from_another_model_is_refused(
    calibrated, tiny_checkpoint, synthetic_root, tmp_path
):
    out, _ = calibrated
    local = tmp_path / "idx"
    shutil.copytree(out, local)
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["calibration"]["model_hash"] = "0" * 64
    (local / "manifest.json").write_text(json.dumps(manifest))
    query = next((synthetic_root / "query").glob("*.jpg"))
    with pytest.raises(IndexFormatError, match="calibration was made with another model"):
        search(str(local), [str(query)], str(tiny_checkpoint))


def test_calibrating_on_a_feature_file_is_refused_before_any_work(
    tiny_checkpoint, synthetic_root, tmp_path
):
    with pytest.raises(ReidError, match="does not record which model made it"):
        export_index(
            str(tiny_checkpoint),
            str(synthetic_root),
            str(tmp_path / "i"),
            ExportOptions(calibrate="f.npz"),
        )
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    "factory, keep", [("Flat", False), ("IVF4,Flat", False), ("HNSW8", False), ("IVF4,PQ4x4", True)]
)
def test_removed_vectors_are_never_returned_again(
    tiny_checkpoint, synthetic_root, tmp_path, factory, keep
):
    out = tmp_path / "idx"
    export_index(
        str(tiny_checkpoint),
        str(synthetic_root),
        str(out),
        ExportOptions(store=parse_store_options(factory=factory), keep_features=keep),
    )
    before = GalleryIndex.load(out)
    pids = before.metadata["pid"].to_numpy()
    victim = int(pids[pids > 0][0])
    victim_paths = set(before.metadata.loc[before.metadata["pid"] == victim, "path"])
    listed = tmp_path / "forget.txt"
    other = before.metadata.loc[before.metadata["pid"] != victim, "path"].iloc[0]
    listed.write_text(other + "\n")
    done = remove_from_index(str(out), [victim], str(listed))
    after = GalleryIndex.load(out)
    assert done["removed"] == len(victim_paths) + 1 == len(before.metadata) - len(after.metadata)
    assert after.count == len(after.metadata) and list(after.metadata["row"]) == list(
        range(len(after.metadata))
    )
    gone = victim_paths | {other}
    assert gone.isdisjoint(after.metadata["path"])
    # the removed images themselves, as queries, over the whole index: never returned
    from reid.index.sources import Embedder

    queries = Embedder.open(tiny_checkpoint, "cpu")(sorted(gone))
    hits = after.search(queries, k=len(after.metadata), nprobe=64)  # IVF: every list
    assert gone.isdisjoint(hits["path"])
    if factory == "Flat":  # exact: every remaining vector comes back, and only those
        assert len(hits) == len(gone) * len(after.metadata)
    # the kept vectors are unchanged (exact ones where the index stores them)
    survivors = before.metadata["path"].isin(after.metadata["path"]).to_numpy()
    if keep:
        np.testing.assert_array_equal(after.features, before.features[survivors])


def test_pq_index_without_exact_vectors_refuses_removal(tiny_checkpoint, synthetic_root, tmp_path):
    out = tmp_path / "idx"
    export_index(
        str(tiny_checkpoint),
        str(synthetic_root),
        str(out),
        ExportOptions(store=parse_store_options(factory="IVF4,PQ4x4")),
    )
    before = index_file(out, "index").read_bytes()
    with pytest.raises(IndexFormatError, match="compressed vectors only"):
        remove_from_index(str(out), [int(GalleryIndex.load(out).metadata["pid"].max())])
    assert index_file(out, "index").read_bytes() == before  # untouched
