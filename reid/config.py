"""One typed configuration (OmegaConf structured config), at most two levels deep.

YAML files hold only what differs from these defaults; a file may name a parent with
``_base_: relative/path.yaml``. Command-line overrides are ``section.key=value``. Unknown
sections or keys are errors naming the key and the valid ones. ``save_config`` writes the
resolved configuration next to every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .data import LOADERS
from .data.samplers import SAMPLERS
from .errors import ReidError
from .evaluation.rank import AP_MODES, METRICS
from .heads import ALL_HEAD_OPTIONS, CENTER_UPDATES, HEADS, WEIGHT_MODES
from .models.pooling import POOLINGS


@dataclass
class DataConfig:
    root: str = "datasets/synthetic"  # Market-format root, MSMT17 root or CSV manifest
    kind: str = "auto"
    image_size: list[int] = field(default_factory=lambda: [256, 128])
    workers: int = 2
    flip: bool = True
    pad: int = 10
    random_erasing: float = 0.5
    color_jitter: float = 0.0
    verify_images: bool = False


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    last_stride: int = 1
    pooling: str = "avg"
    embedding_dim: int = 0
    bnneck: bool = True
    pretrained: str | None = None  # "imagenet" or a path to a torchvision state dict
    init_from: str | None = (
        None  # a reid checkpoint: start from its backbone + BNNeck (fine-tuning)
    )
    init_head: bool = False  # with init_from: also its learned head weights (same head, classes)


@dataclass
class HeadConfig:
    name: str = "softmax"
    weights: str = "learned"  # learned | centers (IR-Softmax)
    # the head's own options (None: the head's documented default; set only for heads that use them)
    scale: float | None = None  # normface, cosface, arcface, circle
    margin: float | None = None  # cosface, arcface, circle, sphereface (integer m)
    virtual_clamp: float | None = None  # virtual
    beta_fixed: float | None = None  # sphereface: fixed β instead of annealing (IR authors: 10)
    # IR-Softmax centers (head.weights=centers), reid/heads/centers.py
    center_update: str = "authors"  # authors | ema | grad
    center_momentum: float = 0.5  # ema: weight of the old center per update
    center_lr: float = 0.5  # grad
    center_lambda: float = 1.0  # grad, center_pull
    center_pull: float = 0.0  # weight of the center term's pull on the features (paper: unstated)
    center_init: str = "features"  # features (train-mode BN pass over the train set) | batches
    center_refresh: int = 0  # every N epochs re-initialise the centers from a feature pass; 0 = off
    # loss mix: the head's own loss weight, and an auxiliary learned softmax
    # (the authors' code: ir_weight 0.1 with aux_softmax 1.0)
    ir_weight: float = 1.0
    aux_softmax: float = 0.0


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    triplet: float = 1.0  # weight; 0 disables
    triplet_margin: float | None = 0.3  # None: soft margin
    center: float = 0.0  # center-loss weight (BoT: 5e-4)


@dataclass
class SamplerConfig:
    name: str = "pk"  # pk | balanced | power | repeat | random
    batch_size: int = 64
    num_instances: int = 4
    power: float = 0.5
    repeat_threshold: float = 0.01


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    scheduler: str = "multistep"  # multistep | cosine
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 120
    device: str = "auto"
    amp: str = "auto"  # auto | off | fp16 | bf16 (auto: fp16 on CUDA, off on CPU)
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False
    max_iters_per_epoch: int = 0  # 0 = the sampler's epoch
    log_every: int = 20  # iterations between progress lines when the log is not a terminal; 0: off


@dataclass
class EvalConfig:
    every: int = 10  # epochs; 0 = only at the end
    metric: str = "cosine"
    ap: str = "torchreid"
    flip: bool = False
    rerank: bool = False
    batch_size: int = 128


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    tensorboard: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


class ConfigError(ReidError):
    """Bad configuration: unknown key, wrong type or value, unreadable file."""


#: choice fields and their valid values, taken from the registries that use them
CHOICES = {
    "data.kind": ("auto", *LOADERS),
    "model.pooling": tuple(POOLINGS),
    "head.name": tuple(HEADS),
    "head.weights": WEIGHT_MODES,
    "head.center_update": CENTER_UPDATES,
    "head.center_init": ("features", "batches"),
    "sampler.name": (*SAMPLERS, "random"),
    "optim.name": ("adam", "adamw", "sgd"),
    "optim.scheduler": ("multistep", "cosine"),
    "train.amp": ("auto", "off", "fp16", "bf16"),
    "eval.metric": METRICS,
    "eval.ap": AP_MODES,
}


def _get(config: DictConfig, key: str):
    section, name = key.split(".")
    return config[section][name]


def validate(config: DictConfig, source: str = "config") -> None:
    """Reject values the code cannot use, naming the key: unknown choices, a head option the
    chosen head does not use, impossible numbers, CUDA without CUDA."""

    def bad(key: str, why: str):
        raise ConfigError(f"{source}: {key}={_get(config, key)!r}: {why}")

    for key, valid in CHOICES.items():
        if _get(config, key) not in valid:
            bad(key, f"unknown value; valid: {', '.join(valid)}")
    used = HEADS[config.head.name].OPTIONS
    for option in ALL_HEAD_OPTIONS:
        if config.head[option] is not None and option not in used:
            bad(
                f"head.{option}",
                f"not an option of head {config.head.name!r} "
                f"(its options: {', '.join(used) or 'none'})",
            )
    size = config.data.image_size
    if len(size) != 2 or any(int(v) <= 0 for v in size):
        raise ConfigError(
            f"{source}: data.image_size={list(size)}: must be two positive integers [H, W]"
        )
    positive = {
        "train.epochs": config.train.epochs,
        "sampler.batch_size": config.sampler.batch_size,
        "sampler.num_instances": config.sampler.num_instances,
        "eval.batch_size": config.eval.batch_size,
        "optim.lr": config.optim.lr,
    }
    for key, value in positive.items():
        if not value > 0:
            bad(key, "must be positive")
    non_negative = (
        "optim.weight_decay", "optim.warmup_epochs", "optim.grad_clip", "data.workers",
        "eval.every", "train.max_iters_per_epoch", "train.log_every", "head.center_refresh", "head.ir_weight",
        "head.aux_softmax", "head.center_pull", "loss.triplet", "loss.center",
        "loss.label_smoothing",
    )  # fmt: skip
    for key in non_negative:
        if _get(config, key) < 0:
            bad(key, "must not be negative")
    if not 0 <= config.head.center_momentum < 1:
        bad("head.center_momentum", "must be in [0, 1)")
    if config.model.init_head and not config.model.init_from:
        bad("model.init_head", "needs model.init_from (the checkpoint to take the head from)")
    device = config.train.device
    if device != "auto" and not device.startswith(("cpu", "cuda")):
        bad("train.device", "valid: auto, cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            bad("train.device", "CUDA is not available on this machine; use cpu or auto")


def _valid_keys(key: str) -> str:
    schema = OmegaConf.structured(Config)
    section = key.split(".")[0]
    if section in schema and "." in key:
        return f"valid keys of {section!r}: {', '.join(schema[section].keys())}"
    return f"valid sections: {', '.join(schema.keys())}"


def _merge(base: DictConfig, other, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = exc.full_key or str(exc)
        raise ConfigError(f"{source}: unknown key {key!r}; {_valid_keys(key)}") from None
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc.full_key}: {exc.msg}") from None


def _read_yaml(path: Path) -> list:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    layers = []
    if "_base_" in data:
        layers += _read_yaml((path.parent / str(data.pop("_base_"))).resolve())
    return layers + [(data, str(path))]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    config = OmegaConf.structured(Config)
    if path is not None:
        for layer, source in _read_yaml(Path(path)):
            config = _merge(config, layer, source)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        config = _merge(config, OmegaConf.from_dotlist([item]), f"override {item!r}")
    validate(config, str(path) if path is not None else "config")
    OmegaConf.set_readonly(config, True)
    return config


def config_from_dict(data: dict, source: str = "checkpoint") -> DictConfig:
    """Re-validate a stored (resolved) configuration against the schema."""
    config = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    validate(config, source)
    OmegaConf.set_readonly(config, True)
    return config


def save_config(config: DictConfig, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(config))


def to_dict(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)
