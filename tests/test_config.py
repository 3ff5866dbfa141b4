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


def test_moved_center_keys_still_load_under_their_new_names():
    """``head.center_*`` became the ``centers:`` section: old overrides, files and checkpoints'
    stored configs load, with the value under the new key."""
    from reid.config import MOVED, config_from_dict, to_dict

    values = {"update": "ema", "momentum": 0.7, "lr": 0.3, "lam": 2.0, "pull": 0.1,
              "init": "batches", "refresh": 3}  # fmt: skip
    old = {key: values[new.split(".")[1]] for key, new in MOVED.items()}
    cfg = load_config(None, [f"{k}={v}" for k, v in old.items()])
    assert dict(cfg.centers) == values
    stored = to_dict(load_config(None))
    del stored["centers"]
    stored["head"].update({k.split(".")[1]: v for k, v in old.items()})
    assert dict(config_from_dict(stored).centers) == values


def test_choice_words_yaml_reads_as_booleans_are_kept(tmp_path):
    """``train.amp=off`` and ``data.cache=off`` (YAML 1.1 reads ``off`` as false) mean the choice
    ``off``, on the command line and in a file; other keys' booleans are untouched."""
    from reid.config import CHOICES, load_config

    offs = [key for key, valid in CHOICES.items() if "off" in valid]
    assert {"train.amp", "data.cache"} <= set(offs)
    cfg = load_config(None, [f"{key}=off" for key in offs])
    assert all(cfg[k.split(".")[0]][k.split(".")[1]] == "off" for k in offs)
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\ndata:\n  cache: off\n")
    cfg = load_config(path)
    assert cfg.train.amp == "off" and cfg.data.cache == "off"
    with pytest.raises(Exception, match="train.amp='True'|unknown value"):
        load_config(None, ["train.amp=yes"])  # no "on" choice: still refused, naming the key
