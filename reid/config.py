"""One typed configuration (OmegaConf structured config), at most two levels deep.

YAML files hold only what differs from these defaults; a file may name a parent with
``_base_: relative/path.yaml``. Command-line overrides are ``section.key=value``. Unknown
sections or keys are errors naming the key and the valid ones. ``save_config`` writes the
resolved configuration next to every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError


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


@dataclass
class HeadConfig:
    name: str = "softmax"
    weights: str = "learned"  # learned | centers (IR-Softmax)
    scale: float | None = None  # None: the head's documented default
    margin: float | None = None
    center_update: str = "ema"  # ema | grad | cumulative
    center_momentum: float = 0.9
    center_lr: float = 0.5
    center_lambda: float = 1.0
    center_pull: float = 0.0  # weight of the center term's pull on the features (paper: unstated)
    center_init: str = "features"  # features (one pass over the train set) | batches
    aux_softmax: float = (
        0.0  # weight of an auxiliary learned softmax (authors' code: 1.0 with 0.1·IR)
    )
    ir_weight: float = 1.0  # weight of the head's own loss
    virtual_clamp: float | None = None
    beta_fixed: float | None = None  # A-Softmax: fixed β instead of annealing


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


class ConfigError(ValueError):
    """Bad configuration: unknown key, wrong type, unreadable file."""


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
    OmegaConf.set_readonly(config, True)
    return config


def config_from_dict(data: dict, source: str = "checkpoint") -> DictConfig:
    """Re-validate a stored (resolved) configuration against the schema."""
    config = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    OmegaConf.set_readonly(config, True)
    return config


def save_config(config: DictConfig, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(config))


def to_dict(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)
