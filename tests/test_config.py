"""Typed config: YAML layers, overrides, unknown keys, saved resolved config."""

from __future__ import annotations

import pytest

from reid.config import ConfigError, config_yaml, load_config
from tests.conftest import REPO


def test_shipped_configs_load():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        load_config(path)
    ir = load_config(REPO / "configs/market1501/ir_r50.yaml")
    assert (ir.model.backbone, ir.model.last_stride, ir.head.weights, ir.sampler.batch_size) == (
        "resnet50",
        1,
        "centers",
        64,
    )
    assert ir.output.dir == "runs/ir_r50"  # child overrides parent


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(
        REPO / "configs/synthetic/demo.yaml",
        ["head.name=arcface", "train.epochs=2", "data.image_size=[64,32]"],
    )
    assert (
        cfg.head.name == "arcface"
        and cfg.train.epochs == 2
        and list(cfg.data.image_size) == [64, 32]
    )
    (tmp_path / "config.yaml").write_text(config_yaml(cfg))
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["head.nme=arcface"], r"unknown key 'head.nme'; valid keys of 'head': name, weights"),
        (["optimiser.lr=1"], r"unknown key 'optimiser'; valid sections: data, model, head"),
        (["train.epochs=many"], "train.epochs"),
        (["train.epochs"], "must look like section.key=value"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "x.yaml").write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown key 'model.backbon'"):
        load_config(tmp_path / "x.yaml")
