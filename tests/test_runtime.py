"""The runtime seam and reduced precision: every runtime × precision embeds the same synthetic
images with the agreement it claims (fp32 runtimes within 1e-5 of eager PyTorch; bf16 and int8
by ranking overlap, never exact floats), the export's verification is in its sidecar, an export
past ``--max-map-loss`` is refused with nothing written, a missing runtime is one line, and an
index searched by another precision of its model works and says so while another model is
refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from reid.errors import ReidError
from reid.index.sources import Embedder, image_folder_records
from reid.models.export import ExportError, read_sidecar
from reid.models.runtime import cpu_has_bf16
from reid.workflows.export import Reduction, export_models
from reid.workflows.index import ExportOptions, Runs, export_index, search

FP32_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, synthetic_root, tmp_path_factory):
    """The tiny model exported at every precision this machine runs (one export each)."""
    out = tmp_path_factory.mktemp("exports")
    made = {"fp32.onnx": out / "m.onnx", "fp32.pt2": out / "m.pt2"}
    export_models(str(tiny_checkpoint), [str(made["fp32.onnx"]), str(made["fp32.pt2"])])
    for name, runtime in (("int8", "onnxruntime"), ("int8.ov", "openvino")):
        made[name] = out / f"m.{name}.onnx"
        export_models(str(tiny_checkpoint), [str(made[name])],
                      Reduction("int8", str(synthetic_root), 64, max_map_loss=100,
                                runtime=runtime))  # fmt: skip
    if cpu_has_bf16():
        made["bf16"] = out / "m.bf16.onnx"
        export_models(str(tiny_checkpoint), [str(made["bf16"])],
                      Reduction("bf16", verify=str(synthetic_root), max_map_loss=100))  # fmt: skip
    return made


def embed(model, paths, runtime=None):
    return Embedder.open(str(model), "cpu", 16, runtime)(paths)


def top10(queries, gallery):
    return np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]


def test_every_runtime_and_precision_agrees_as_it_claims(exports, tiny_checkpoint, synthetic_root):
    query = [r.path for r in image_folder_records(synthetic_root / "query")][:24]
    gallery = [r.path for r in image_folder_records(synthetic_root / "bounding_box_test")][:200]
    eager_q, eager_g = embed(tiny_checkpoint, query), embed(tiny_checkpoint, gallery)
    fp32 = [(exports["fp32.pt2"], "torch"), (exports["fp32.onnx"], "onnxruntime"),
            (exports["fp32.onnx"], "openvino")]  # fmt: skip
    for model, runtime in fp32:
        got = embed(model, query, runtime)
        assert np.abs(got - eager_q).max() < FP32_TOLERANCE, (model.name, runtime)
    reduced = [(exports["int8"], "onnxruntime"), (exports["int8.ov"], "openvino")]
    if "bf16" in exports:
        reduced.append((exports["bf16"], "openvino"))
    reference = top10(eager_q, eager_g)
    for model, runtime in reduced:
        found = top10(embed(model, query, runtime), embed(model, gallery, runtime))
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(reference, found)])
        assert overlap >= 0.8, (model.name, runtime, overlap)


def test_a_reduced_export_records_its_verification(exports):
    meta = read_sidecar(exports["int8"])
    assert meta.precision == "int8" and meta.runtime == "onnxruntime"
    v = meta.verification
    assert v.queries > 0 and v.gallery > 0 and 0 <= v.top10_overlap <= 1
    assert v.map_loss == pytest.approx(v.fp32.mAP - v.reduced.mAP, abs=0.011)
    assert meta.calibration.crops == 64 and "per channel" in meta.calibration.method
    assert read_sidecar(exports["fp32.onnx"]).precision == "fp32"


def test_past_the_bound_the_export_is_refused_and_nothing_is_written(
    tiny_checkpoint, synthetic_root, tmp_path
):
    target = tmp_path / "m.int8.onnx"
    with pytest.raises(ExportError, match=r"more than --max-map-loss .*nothing written"):
        export_models(str(tiny_checkpoint), [str(target)],
                      Reduction("int8", str(synthetic_root), 32, max_map_loss=-1000))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


def test_reduced_precision_checks_come_before_any_work(tiny_checkpoint, synthetic_root, tmp_path):
    cases = {
        "a int8 export is an .onnx model": ([str(tmp_path / "m.pt2")], Reduction("int8", str(synthetic_root))),
        "needs --calibrate": ([str(tmp_path / "m.onnx")], Reduction("int8")),
        "--calibrate, --verify: for --precision int8 or bf16": ([str(tmp_path / "m.onnx")], Reduction(verify=str(synthetic_root))),
        "verified on a labelled split": ([str(tmp_path / "m.onnx")], Reduction("int8", str(synthetic_root / "query"))),
        "--runtime torch: int8 runs on onnxruntime, openvino": ([str(tmp_path / "m.onnx")], Reduction("int8", str(synthetic_root), runtime="torch")),
    }  # fmt: skip
    for message, (outs, reduction) in cases.items():
        with pytest.raises(ReidError, match=message):
            export_models("no-such-checkpoint.pt", outs, reduction)
    if not cpu_has_bf16():
        with pytest.raises(ReidError, match="this CPU has no bf16"):
            export_models(
                "x.pt", [str(tmp_path / "m.onnx")], Reduction("bf16", verify=str(synthetic_root))
            )


def test_a_missing_runtime_is_one_line_naming_its_extra(exports, tiny_checkpoint, monkeypatch):
    import reid.optional

    real = reid.optional.available
    monkeypatch.setattr(reid.optional, "available", lambda m: m != "openvino" and real(m))
    with pytest.raises(
        ReidError, match=r"needs the optional package openvino: pip install 'reid\[export\]'"
    ):
        Embedder.open(str(exports["fp32.onnx"]), runtime="openvino")
    with pytest.raises(ReidError, match="a training checkpoint runs on torch"):
        Embedder.open(str(tiny_checkpoint), runtime="onnxruntime")
    with pytest.raises(ReidError, match="--runtime onnxruntime: a fp32 .pt2 model runs on torch"):
        Embedder.open(str(exports["fp32.pt2"]), runtime="onnxruntime")


def test_another_precision_of_the_model_is_reported_another_model_refused(
    exports, tiny_checkpoint, synthetic_root, tmp_path
):
    out = tmp_path / "idx"
    export_index(str(tiny_checkpoint), str(synthetic_root), str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embedding"] == {"runtime": "torch", "precision": "fp32"}
    query = [str(synthetic_root / "query")]
    same = search(str(out), query, str(tiny_checkpoint), topk=3)
    assert same["embedding"]["same"] and "note" not in same["embedding"]
    with pytest.raises(ReidError, match="accuracy was verified on onnxruntime; run it there"):
        search(str(out), query, str(exports["int8"]), topk=3, runs=Runs(runtime="openvino"))
    int8 = search(str(out), query, str(exports["int8.ov"]), topk=3)
    assert int8["embedding"]["queries"] == {"runtime": "openvino", "precision": "int8"}
    assert "the same model" in int8["embedding"]["note"] and len(int8["table"]) == len(
        same["table"]
    )
    with pytest.raises(ReidError, match="append with the same runtime and precision"):
        export_index(str(exports["int8"]), str(synthetic_root / "query"), str(out),
                     ExportOptions(), append=True)  # fmt: skip
    other = tmp_path / "other.onnx"  # the same graph, said to come from another checkpoint
    shutil.copy(exports["fp32.onnx"], other)
    data = exports["fp32.onnx"].parent / "m.onnx.data"  # external weights keep their name
    if data.exists():
        shutil.copy(data, tmp_path / data.name)
    sidecar = json.loads((exports["fp32.onnx"].parent / "m.onnx.json").read_text())
    (tmp_path / "other.onnx.json").write_text(json.dumps({**sidecar, "source_hash": "f" * 64}))
    with pytest.raises(ReidError, match="embeddings of different models are not comparable"):
        search(str(out), query, str(other), topk=3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_model_torchreid_saved_exports_indexes_and_searches_like_ours(synthetic_root, tmp_path):
    """torchreid builds and saves an OSNet (no download); exported by reid, its embeddings equal
    torchreid's own FeatureExtractor's (L2-normalised) to 1e-5 on the same images, and the export
    indexes and searches like a reid model."""
    torch = pytest.importorskip("torch")
    from torchreid.reid import models
    from torchreid.reid.utils import FeatureExtractor, save_checkpoint

    from reid.workflows.export import Foreign

    torch.manual_seed(0)
    model = models.build_model("osnet_x0_25", num_classes=12, pretrained=False, use_gpu=False)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 3, "rank1": 0.5},
                    str(tmp_path / "trained"))  # fmt: skip
    weights = tmp_path / "trained" / "model.pth.tar-3"
    out = tmp_path / "osnet.onnx"
    export_models("torchreid:osnet_x0_25", [str(out)], foreign=Foreign(str(weights), (128, 64)))
    paths = [r.path for r in image_folder_records(synthetic_root / "query")][:12]
    theirs = FeatureExtractor("osnet_x0_25", str(weights), image_size=(128, 64), device="cpu",
                              verbose=False)(paths).numpy()  # fmt: skip
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    for runtime in ("onnxruntime", "openvino"):
        assert np.abs(embed(out, paths, runtime) - theirs).max() < FP32_TOLERANCE, runtime
    index = tmp_path / "idx"
    export_index(str(out), str(synthetic_root), str(index))
    found = search(str(index), paths[:2], str(out), topk=3)
    assert len(found["table"]) == 6 and found["embedding"]["same"]
    with pytest.raises(ReidError, match="--weights goes with --checkpoint torchreid:NAME"):
        export_models("torchreid:osnet_x0_25", [str(tmp_path / "x.onnx")])


def test_the_service_serves_an_export_and_says_what_embeds(
    exports, index_dir, synthetic_root, tmp_path
):
    """``reid serve --model m.int8.onnx``: searches answer; ``/gallery`` names the index's
    embedding and the queries'; an enrolment that would mix two kinds of vector is refused."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from reid.service.app import ServiceSettings, create_app

    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    app = create_app(ServiceSettings(str(index), str(exports["int8"]), "t0ken-0123456789abcdef",
                                     runtime="onnxruntime"))  # fmt: skip
    client = TestClient(app)
    auth = {"Authorization": "Bearer t0ken-0123456789abcdef"}
    query = sorted((synthetic_root / "query").glob("*.jpg"))[0]
    files = [("files", (query.name, query.read_bytes(), "image/jpeg"))]
    answer = client.post("/search", files=files, headers=auth)
    assert answer.status_code == 200 and len(answer.json()["results"][0]["hits"]) == 10
    info = client.get("/gallery", headers=auth).json()
    assert info["embedding"] == {"runtime": "torch", "precision": "fp32"}
    assert info["queries_embedding"] == {"runtime": "onnxruntime", "precision": "int8"}
    refused = client.post(
        "/gallery/enrol", files=files, data={"pid": 4242, "camid": 1}, headers=auth
    )
    assert (
        refused.status_code == 409
        and "one index holds one kind of vector" in refused.json()["detail"]
    )


def test_evaluate_runs_an_export_on_its_runtime(exports, tiny_checkpoint, synthetic_root, tmp_path):
    """``reid evaluate --model m.onnx --runtime openvino --data SPLIT`` gives the checkpoint's
    numbers (fp32: the same embeddings within 1e-5); an export without ``--data`` is one line."""
    from reid.workflows.evaluate import Extraction, run_evaluation

    eager = run_evaluation(checkpoint=str(tiny_checkpoint), data=str(synthetic_root),
                           out=str(tmp_path / "a"))["result"]  # fmt: skip
    exported = run_evaluation(checkpoint=str(exports["fp32.onnx"]), data=str(synthetic_root),
                              out=str(tmp_path / "b"),
                              extraction=Extraction(runtime="openvino"))["result"]  # fmt: skip
    assert exported.mAP == pytest.approx(eager.mAP, abs=1e-4)
    assert exported.rank(1) == pytest.approx(eager.rank(1), abs=1e-2)
    with pytest.raises(ReidError, match="--data: .* is an exported model; name the split"):
        run_evaluation(checkpoint=str(exports["fp32.onnx"]), out=str(tmp_path / "c"))
