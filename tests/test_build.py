"""Config → objects (engine/build.py), IR center initialisation, backbones, init_from, layering."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from reid.config import load_config
from reid.data import load_dataset
from reid.data.samplers import SAMPLERS
from reid.engine.build import (
    build_optimizer,
    build_sampler,
    build_scheduler,
    build_training_module,
    feature_pass,
    head_kwargs,
    init_from_checkpoint,
)
from reid.engine.centers import init_head_centers
from reid.errors import CheckpointError
from reid.heads import HEADS
from reid.models import FeatureExtractor, ReIDModel
from tests.conftest import REPO, TINY_TRAIN

SHARED_WEIGHTS = REPO.parent / "shared/weights/mobilenet_v2_imagenet.pth"


def test_optimizer_puts_no_weight_decay_on_bn_and_biases():
    cfg = load_config(None, ["model.backbone=resnet18", "optim.weight_decay=0.01"])
    module = build_training_module(cfg, 5)
    decay, no_decay = build_optimizer(cfg, module).param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "model.neck.weight" in no_decay_names and "model.backbone.body.1.bias" in no_decay_names
    assert "head.weight" in {names[id(p)] for p in decay["params"]}
    # the BNNeck's frozen bias is not optimised at all
    assert "model.neck.bias" not in no_decay_names


@pytest.mark.parametrize("scheduler", ["multistep", "cosine"])
def test_scheduler_values_at_given_epochs(scheduler):
    cfg = load_config(
        None,
        [
            "model.backbone=resnet18",
            f"optim.scheduler={scheduler}",
            "optim.lr=1.0",
            "optim.warmup_epochs=2",
            "optim.warmup_factor=0.1",
            "optim.milestones=[4,6]",
            "optim.gamma=0.5",
            "train.epochs=8",
        ],
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    iters = 10
    schedule = build_scheduler(cfg, optimizer, iters)
    lrs = []
    for _ in range(8 * iters):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1 + 0.9 * 10 / 20)
    if scheduler == "multistep":
        assert lrs[20] == 1.0 and lrs[40] == 0.5 and lrs[60] == 0.25 and lrs[79] == 0.25
    else:
        progress = (50 - 20) / (80 - 20)
        assert lrs[50] == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
        assert lrs[20] == pytest.approx(1.0) and lrs[79] < 0.01


@pytest.mark.parametrize("name", [*SAMPLERS, "random"])
def test_build_sampler_by_name(name):
    cfg = load_config(None, [f"sampler.name={name}", "sampler.batch_size=8"])
    pids = torch.arange(6).repeat_interleave(5).numpy()
    sampler = build_sampler(cfg, pids, pids % 3, 0, 1)
    if name == "random":
        assert sampler is None
    else:
        assert isinstance(sampler, SAMPLERS[name])
        assert all(len(batch) == 8 for batch in sampler)


def test_head_options_route_to_the_chosen_head_only():
    cfg = load_config(None, ["head.name=cosface", "head.scale=20", "head.margin=0.2"])
    assert head_kwargs(cfg) == {"weights": "learned", "scale": 20.0, "margin": 0.2}
    cfg = load_config(None, ["head.name=sphereface", "head.margin=3", "head.beta_fixed=10"])
    built = HEADS["sphereface"](4, 3, **head_kwargs(cfg))
    assert built.margin == 3 and isinstance(built.margin, int)
    cfg = load_config(None, ["head.name=arcface", "head.weights=centers"])
    assert head_kwargs(cfg)["centers"].update == "authors" and "scale" not in head_kwargs(cfg)
    for name, head in HEADS.items():  # every declared option is a constructor argument
        built = head(4, 3, **{k: o.default for k, o in head.OPTIONS.items()})
        assert built.num_classes == 3, name


def test_image_folder_records(tmp_path, make_jpeg):
    from reid.index.sources import image_folder_records

    make_jpeg(tmp_path / "a" / "0007_c2s1_000001_01.jpg")
    make_jpeg(tmp_path / "a" / "-1_c1s1_000002_01.jpg")  # Market junk: left out
    make_jpeg(tmp_path / "b" / "holiday.png")
    (tmp_path / "b" / "notes.txt").write_text("x")
    records = image_folder_records(tmp_path)
    assert [(Path(r.path).name, r.pid, r.camid) for r in records] == [
        ("0007_c2s1_000001_01.jpg", 7, 1),
        ("holiday.png", -1, -1),
    ]


# --------------------------------------------------------------------------- IR centers


def _pairwise_cosine(centers: torch.Tensor) -> float:
    c = F.normalize(centers, dim=1)
    off = (c @ c.T)[~torch.eye(len(c), dtype=torch.bool)]
    return float(off.mean())


def test_centers_of_an_untrained_network_start_apart(synthetic_root):
    """The old initialisation (eval-mode BNNeck features of an untrained network) put every
    center along nearly the same direction; train-mode BN statistics must not."""
    cfg = load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN, "head.weights=centers"])
    torch.manual_seed(0)
    records = load_dataset(synthetic_root).train
    module = build_training_module(cfg, len({r.pid for r in records}))
    init_head_centers(module, records, feature_pass(cfg), torch.device("cpu"))
    new = _pairwise_cosine(module.head.centers.weight)
    old_features = FeatureExtractor(module.model, (64, 32), "cpu", 64, 0).extract_records(records)
    module.head.centers.init_from_features(
        torch.from_numpy(old_features), torch.tensor([r.pid for r in records])
    )
    old = _pairwise_cosine(module.head.centers.weight)
    assert old > 0.9  # the trap this guards against is real on this data
    assert new < 0.5, f"initial centers nearly parallel: mean pairwise cosine {new:.3f}"
    assert module.training  # the pass leaves the module in train mode …


def test_train_mode_pass_leaves_bn_statistics_untouched(synthetic_root):
    cfg = load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN, "head.weights=centers"])
    records = load_dataset(synthetic_root).train
    module = build_training_module(cfg, len({r.pid for r in records}))
    before = {k: v.clone() for k, v in module.state_dict().items() if "running" in k}
    init_head_centers(module, records, feature_pass(cfg), torch.device("cpu"))
    for key, value in before.items():
        torch.testing.assert_close(module.state_dict()[key], value, rtol=0, atol=0, msg=key)


# ---------------------------------------------------------------------- backbones, init_from


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason=f"{SHARED_WEIGHTS} not present")
def test_mobilenet_v2_loads_every_features_tensor_from_the_shared_file():
    state = torch.load(SHARED_WEIGHTS, map_location="cpu", weights_only=True)
    model = ReIDModel("mobilenet_v2", last_stride=1, pretrained=str(SHARED_WEIGHTS))
    body = model.backbone.body.state_dict()
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    assert len(features) == len(body) == 312 and model.feature_dim == 1280
    for key, value in features.items():
        torch.testing.assert_close(body[key[len("features.") :]], value, rtol=0, atol=0)
    assert model.backbone(torch.zeros(1, 3, 128, 64)).shape[-2:] == (8, 4)  # last stride 1


def test_mobilenet_v2_rejects_weights_of_another_network(tmp_path):
    from reid.models import PretrainedWeightsError

    torch.save(ReIDModel("resnet18").backbone.body.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match="does not fit torchvision mobilenet_v2"):
        ReIDModel("mobilenet_v2", pretrained=str(tmp_path / "r18.pth"))


def test_init_from_loads_backbone_neck_and_optionally_the_head(tiny_checkpoint, synthetic_root):
    source = torch.load(tiny_checkpoint, weights_only=False)["module"]
    num_classes = source["head.weight"].shape[0]
    cfg = load_config(
        None,
        [
            f"data.root={synthetic_root}",
            *TINY_TRAIN,
            f"model.init_from={tiny_checkpoint}",
            "model.init_head=true",
        ],
    )
    module = build_training_module(cfg, num_classes)
    init_from_checkpoint(module, cfg)
    for key, value in module.state_dict().items():
        if key.startswith(("model.", "head.")):
            torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    other = load_config(
        None,
        [f"data.root={synthetic_root}", *TINY_TRAIN[1:], "model.backbone=resnet34",
         f"model.init_from={tiny_checkpoint}"],
    )  # fmt: skip
    with pytest.raises(
        CheckpointError, match="its model.backbone is 'resnet18', this run's is 'resnet34'"
    ):
        init_from_checkpoint(build_training_module(other, num_classes), other)


#: the house, bottom up: a package imports nothing from its own layer or a later one. The
#: README's "Layout" section names the packages in this order (checked below).
LAYERS = [
    ["reid.data"],
    ["reid.models", "reid.heads", "reid.losses", "reid.evaluation", "reid.optim"],
    ["reid.index"],
    ["reid.engine"],
    ["reid.workflows"],
    ["reid.service"],
    ["reid.cli"],
]


def test_layers_do_not_import_upwards():
    """Each package of ``LAYERS`` imports nothing from its siblings or from later layers
    (checked in a fresh interpreter per package; the interpreters run at once)."""
    checks = []
    for i, layer in enumerate(LAYERS):
        later = [p for upper in LAYERS[i + 1 :] for p in upper]
        for package in layer:
            forbidden = tuple(later + [p for p in layer if p != package])
            code = (
                "import sys, importlib, pkgutil\n"
                f"pkg = importlib.import_module({package!r})\n"
                "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
                "    importlib.import_module(m.name)\n"
                f"print(' '.join(sorted(n for n in sys.modules if n.startswith({forbidden!r}))))\n"
            )
            process = subprocess.Popen(
                [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            checks.append((package, process))
    for package, process in checks:
        out, err = process.communicate()
        assert process.returncode == 0, f"{package}: {err[-2000:]}"
        assert out.strip() == "", f"{package} imports {out.strip()}"


def test_the_architecture_page_describes_the_same_house():
    text = (REPO / "docs" / "architecture.md").read_text()
    named = [f"reid.{m}" for m in re.findall(r"`reid/(\w+)/`", text)]
    assert named == [p for layer in LAYERS for p in layer]


def _documents():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
            REPO / "benchmarks" / "README.md", REPO / "datasets" / "README.md"]  # fmt: skip


def test_every_link_and_file_path_in_the_docs_exists():
    """Docs that cannot rot: every relative link (and its #anchor) and every repository path
    named in code spans (``reid/…``, ``tests/…``, ``benchmarks/…``, ``docs/…``, ``configs/…``)
    in README, docs/ and the benchmark and dataset READMEs points to something that exists."""
    missing = []
    for doc in _documents():
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                missing.append(f"{doc.name}: link {target}")
            elif anchor and file.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
                if anchor not in slugs:
                    missing.append(f"{doc.name}: anchor {target}")
        for span in re.findall(r"`((?:reid|tests|benchmarks|docs|configs|tools)/[^`\s*]+)`", text):
            candidate = span.split("::")[0].rstrip(".,:;)")
            if "NAME" in candidate or "{" in candidate or "…" in candidate:
                continue
            if not (REPO / candidate).exists():
                missing.append(f"{doc.name}: path {span}")
    assert not missing, "\n".join(missing)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_is_read_in_five_minutes_and_names_no_missing_reference():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for doc in _documents():
        assert "METHODS.md" not in doc.read_text(), f"{doc.name} cites a file not in the repository"


def test_the_readmes_python_snippet_runs_as_written(synthetic_root, tmp_path):
    """The README's Python snippet, run as written in an empty folder whose
    datasets/synthetic is the suite's synthetic set (sizes cut to a few steps)."""
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    small = snippet.replace(
        '"train.epochs=4"',
        '"train.epochs=1", "train.max_iters_per_epoch=2", "eval.every=1", "data.image_size=[64,32]"',
    )
    assert small != snippet
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "synthetic").symlink_to(synthetic_root)
    (tmp_path / "snippet.py").write_text(small)
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "query_path" in done.stdout and "vectors" in done.stdout


def test_a_plain_install_runs_without_the_optional_packages():
    """Every module imports with every extra's packages absent (a plain ``pip install reid``),
    or, for the service (the ``serve`` extra), refuses in one line naming the extra; the
    settings and commands that need an extra say which one to install."""
    code = """
import sys, pkgutil, importlib
for name in ("torchreid", "tensorboard", "cv2", "gdown", "pymilvus", "milvus", "fastapi",
             "uvicorn", "python_multipart", "starlette", "onnx", "onnxruntime", "onnxscript",
             "prometheus_client", "openvino"):
    sys.modules[name] = None  # import fails, as when not installed
import reid
from reid.errors import ReidError
for module in pkgutil.walk_packages(reid.__path__, "reid."):
    if module.name == "reid.__main__":
        continue
    try:
        importlib.import_module(module.name)
    except ReidError as exc:
        print(module.name, exc)
from reid.config import ConfigError, load_config
for override in ("model.backbone=torchreid:osnet_x1_0", "output.tensorboard=true"):
    try:
        load_config(None, [override])
    except ConfigError as exc:
        print(exc)
from reid.models.export import load_exported
try:
    load_exported("m.onnx")
except ReidError as exc:
    print(exc)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    service = [line for line in lines if line.startswith("reid.service")]
    assert service and all("pip install 'reid[serve]'" in line for line in service)
    lines = [line for line in lines if not line.startswith("reid.service")]
    assert "needs the optional package torchreid: pip install 'reid[torchreid]'" in lines[0]
    assert "needs the optional package tensorboard: pip install 'reid[tensorboard]'" in lines[1]
    assert "needs the optional package onnxruntime: pip install 'reid[export]'" in lines[2]
    assert len(lines) == 3, lines


def test_the_reid_command_lists_every_tool_and_each_ends_its_help_with_an_example():
    """``reid --help`` lists every subcommand with one line, ``reid --version`` prints the
    version, each subcommand's ``--help`` ends with an example, an unknown one is one line."""
    import subprocess
    import sys

    from reid.cli.commands import COMMANDS

    def run(*args):
        return subprocess.run([sys.executable, "-m", "reid", *args], capture_output=True,
                              text=True, timeout=300, cwd=REPO)  # fmt: skip

    listing = run("--help")
    assert listing.returncode == 0
    for name in COMMANDS:
        line = next(x for x in listing.stdout.splitlines() if x.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10, line
    assert run("--version").stdout.startswith("reid ")
    for name in COMMANDS:
        helped = run(name, "--help")
        assert helped.returncode == 0, helped.stderr
        assert f"usage: reid {name}" in helped.stdout
        tail = helped.stdout.strip().split("\n\n")[-1]
        assert "example" in tail and f"reid {name}" in tail, (name, tail)
    wrong = run("trian")
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: unknown command 'trian'")


def test_the_configuration_reference_is_current():
    """docs/configuration.md is generated from the config schema; regenerate it with
    ``python -m tests.config_reference`` after changing a key."""
    from tests.config_reference import PAGE, render

    assert PAGE.read_text() == render(), "run: python -m tests.config_reference"


def test_the_readmes_quick_start_commands_run(synthetic_root, tmp_path):
    """Every ``reid`` command of the README's quick start, run as written at tiny sizes: the
    data root is the suite's synthetic set, training takes two steps of ResNet-18 without
    downloaded weights, and ``reid serve`` (a server: tests/test_service.py) is only parsed."""
    import shlex
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [c.split("  #")[0].strip() for c in block.replace("\\\n", " ").splitlines()]
    commands = [c for c in commands if c.startswith("reid ")]
    assert len(commands) >= 5
    tiny = ["model.backbone=resnet18", "model.pretrained=null", "data.image_size=[64,32]",
            "data.workers=0", "sampler.batch_size=16", "train.epochs=1",
            "train.max_iters_per_epoch=2", "eval.every=1"]  # fmt: skip
    for command in commands:
        args = shlex.split(command.replace("/data/market1501", str(synthetic_root)))[1:]
        args = [a.replace("query/", str(synthetic_root / "query")) for a in args]
        if args[0] == "train":
            args += tiny
        if args[0] == "serve" or args[0].startswith("-"):
            args = [args[0], "--help"]
        done = subprocess.run([sys.executable, "-m", "reid", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, (command, done.stderr[-2000:])


def _reid_modules() -> dict[str, Path]:
    modules = {}
    for path in (REPO / "reid").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Every reid module ``name`` imports, at any depth of its code (function-level imports
    included), with the packages whose ``__init__`` that import runs (not its own)."""
    import ast

    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            while target.startswith("reid"):
                if target in modules and target != name and not name.startswith(target + "."):
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def test_no_import_cycle_in_reid_function_level_imports_included():
    modules = _reid_modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_function_takes_more_than_ten_parameters():
    import ast

    too_many = []
    for name, path in _reid_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
                params += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
                count = len([p for p in params if p not in ("self", "cls")])
                if count > 10:
                    too_many.append(f"{name}.{node.name} ({count})")
    assert too_many == [], "pass FeatureSet or a small option object: " + ", ".join(too_many)


def test_the_index_and_the_layers_above_it_name_no_store():
    """The store seam: a backend is named only in its own file and the registry."""
    from reid.index.stores import STORES

    allowed = {"reid/index/stores.py", *(f"reid/index/{n}_store.py" for n in STORES)}
    for path in [*(REPO / "reid").rglob("*.py")]:
        rel = str(path.relative_to(REPO))
        if rel in allowed or not rel.startswith(
            ("reid/index/", "reid/workflows/", "reid/service/", "reid/cli/")
        ):
            continue
        code = re.sub(r'""".*?"""|#.*', "", path.read_text(), flags=re.S)
        for name in STORES:
            assert not re.search(rf"\b{name}_store\b|Store\.|\b{name.capitalize()}Store\b", code), (
                rel
            )
            assert f'"{name}"' not in code and f"'{name}'" not in code, f"{rel} names {name!r}"


def test_create_app_is_short():
    import ast

    tree = ast.parse((REPO / "reid" / "service" / "app.py").read_text())
    node = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "create_app"
    )
    assert node.end_lineno - node.lineno + 1 <= 60
